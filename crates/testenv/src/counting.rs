//! A server that counts what reaches it: the forbidden address of tests
//! that show a refusal. It binds only loopback (127.0.0.0/8), answers
//! every connection with `200` and a small body (so that a client that
//! reached it would have succeeded), and counts connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Answers every connection with this body.
const BODY: &str = "{\"type\": \"object\"}";

/// The counting server; it runs as long as the test process.
#[derive(Debug)]
pub struct Counter {
    pub address: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Counter {
    /// A counter on `bind` (`127.0.0.2:0`, say).
    ///
    /// # Panics
    /// If `bind` is not a loopback address or cannot be bound.
    pub fn start(bind: &str) -> Self {
        let listener = TcpListener::bind(bind).expect("a loopback port");
        let address = listener.local_addr().expect("its address");
        assert!(address.ip().is_loopback(), "tests count only on loopback");
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = stream.read(&mut [0u8; 4096]);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{BODY}",
                    BODY.len()
                );
            }
        });
        Counter {
            address,
            connections,
        }
    }

    /// `http://<address>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Connections that reached it so far.
    pub fn count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}
