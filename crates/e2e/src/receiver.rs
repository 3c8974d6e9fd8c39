//! A loopback HTTP receiver standing in for what kas posts to (a git host's
//! commit status API, a notification destination): it records every
//! request and answers 201. It listens on 127.0.0.1 only, on a port the
//! kernel picks, and stops when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Largest body kept; kas's requests are a few KiB.
const MAX_BODY: usize = 1 << 20;

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// The request target exactly as sent (path and query).
    pub target: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (null if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// A running receiver.
#[derive(Debug)]
pub struct Receiver {
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    /// Whether answers are held (see [`Receiver::held`]).
    gate: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub fn start() -> Self {
        Self::start_gated(false)
    }

    /// A receiver that records each request as it arrives but answers none
    /// until [`Receiver::release`]: its sender's queue fills behind the
    /// first request, as behind a slow host.
    pub fn held() -> Self {
        Self::start_gated(true)
    }

    fn start_gated(held: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new((Mutex::new(held), Condvar::new()));
        let (log, stopped, waiting) = (got.clone(), stop.clone(), gate.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let Some((request, mut stream)) = read(stream) else {
                    continue;
                };
                log.lock().expect("log").push(request);
                let (held, opened) = &*waiting;
                let mut held = held.lock().expect("gate");
                while *held && !stopped.load(Ordering::SeqCst) {
                    held = opened.wait(held).expect("gate");
                }
                drop(held);
                let _ = stream.write_all(
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                );
            }
        });
        Receiver {
            url,
            got,
            stop,
            gate,
            thread: Some(thread),
        }
    }

    /// Answers the held request and every later one.
    pub fn release(&self) {
        let (held, opened) = &*self.gate;
        *held.lock().expect("gate") = false;
        opened.notify_all();
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.got.lock().expect("log").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.release();
        // Wake the accept loop so that it sees the flag.
        if let Some(addr) = self.url.strip_prefix("http://") {
            let _ = TcpStream::connect(addr);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request from `stream`; the caller answers it.
fn read(stream: TcpStream) -> Option<(Received, TcpStream)> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_BODY);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((
        Received {
            method,
            target,
            headers,
            body,
        },
        reader.into_inner(),
    ))
}
