//! Serving connections: the accept loop every listener of kas runs (a cap
//! on open connections, the TLS handshake bounded, a drain that accepts the
//! backlog and then lets connections finish), and [`http`] on top of it.
//!
//! A client that opens connections and stalls (slowloris) would otherwise
//! hold file descriptors forever, so the TLS handshake has a bound here,
//! once for all listeners; [`http`] adds the bound on a request's headers.
//! At the drain signal a listener accepts what is already in its backlog
//! (a load balancer counts those as connected), then closes before its
//! connections finish: the balancer's next connection is refused at once
//! and goes to another replica instead of waiting in the backlog of a
//! process that will never accept it.

pub mod http;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::Shutdown;

/// Time a client has for its TLS handshake (and, on the agent endpoint,
/// for its upgrade request after it).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server side of a TLS handshake, within [`HANDSHAKE_TIMEOUT`].
pub async fn handshake(acceptor: &TlsAcceptor, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// Accepts connections on `listener` until the drain signal, running
/// `connection` for each in a task of its own, at most `cap` at once;
/// then accepts the backlog, closes the listener and waits up to `linger`
/// for the connections' tasks to end.
pub async fn accept_until<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    shutdown: Shutdown,
    linger: Duration,
    cap: usize,
    connection: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut stop = shutdown;
    // Every connection's task, so that a stop waits for them.
    let mut connections = tokio::task::JoinSet::new();
    let mut stopping = false;
    let mut full = false;
    loop {
        if !stopping && connections.len() >= cap {
            if !full {
                tracing::warn!(
                    listener = name,
                    connections = connections.len(),
                    "at its connection cap: accepting again once one ends"
                );
                full = true;
            }
            tokio::select! {
                _ = stop.signalled() => stopping = true,
                _ = connections.join_next() => {}
            }
            continue;
        }
        full = false;
        let accepted = if stopping {
            match tokio::time::timeout(Duration::ZERO, listener.accept()).await {
                Ok(accepted) => accepted,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                _ = stop.signalled() => {
                    stopping = true;
                    continue;
                }
                // Reap finished connections as they end: the set stays as
                // large as what is open.
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = listener.accept() => accepted,
            }
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(_) if stopping => break,
            Err(e) => {
                // Out of file descriptors, usually: wait, do not spin.
                tracing::warn!(listener = name, error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        connections.spawn(connection(tcp, peer));
    }
    drop(listener);
    let in_flight = connections.len();
    let finished = tokio::time::timeout(linger, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    tracing::info!(
        listener = name,
        connections = in_flight,
        drained = finished.is_ok(),
        "stopped"
    );
}
