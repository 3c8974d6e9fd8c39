//! Every listener of kas, in one place: binding, the accept loop, the TLS
//! handshake and what a drain does to them.
//!
//! A client that opens connections and stalls (slowloris) would otherwise
//! hold file descriptors forever, so the TLS handshake has a bound here,
//! once for all listeners; [`http`] adds the bound on a request's headers.
//! At the drain signal a listener accepts what is already in its backlog
//! (a load balancer counts those as connected), then closes before its
//! connections finish: the balancer's next connection is refused at once
//! and goes to another replica instead of waiting in the backlog of a
//! process that will never accept it.
//!
//! The REST API, admin, Kubernetes API proxy and private listeners serve
//! HTTP ([`http::serve`]); the agent endpoint ([`agent`]) tells
//! gRPC from WebSocket and tunnel upgrades by ALPN on the same loop.

pub mod agent;
pub mod http;
pub mod identity;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tether_runtime::Shutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Time a client has for its TLS handshake (and, on the agent endpoint,
/// for its upgrade request after it).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections each listener holds at most; past it, it accepts no more
/// until one ends (the rest wait in the kernel's backlog), so a flood of
/// idle connections costs a bounded number of tasks and descriptors. The
/// agent endpoint is sized for a large fleet (a session and its tunnels
/// per agent), the proxy and private listeners for long watches.
pub mod caps {
    pub const API: usize = 4096;
    pub const ADMIN: usize = 256;
    pub const PROXY: usize = 16_384;
    pub const PRIVATE: usize = 16_384;
    pub const AGENT: usize = 65_536;
}

/// Binds `addr` for the listener called `name`.
pub async fn bind(name: &'static str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {name} address {addr}"))?;
    let local = listener
        .local_addr()
        .context("listener has no local address")?;
    tracing::info!(listener = name, addr = %local, "listening");
    Ok(listener)
}

/// The TLS settings of every listener: kas's certificate (chain) and key,
/// PEM; HTTP/2 and HTTP/1.1 by ALPN.
pub fn acceptor(cert_pem: &str, key_pem: &str) -> anyhow::Result<TlsAcceptor> {
    tether_runtime::tls::acceptor(cert_pem, key_pem).context("kas's listeners cannot serve TLS")
}

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
