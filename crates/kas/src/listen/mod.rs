//! Every listener of kas, in one place: binding, the accept loop, the TLS
//! handshake and what a drain does to them.
//!
//! The accept loop, the bounded TLS handshake and the drain are
//! `tether_runtime::serve`'s; here is what is kas's: the caps, binding,
//! kas's TLS settings, the agent port's split.
//!
//! The REST API, admin, Kubernetes API proxy and private listeners serve
//! HTTP ([`http::serve`]); the agent endpoint ([`agent`]) tells
//! gRPC from WebSocket and tunnel upgrades by ALPN on the same loop.

pub mod agent;
pub mod http;

pub use tether_runtime::serve::{HANDSHAKE_TIMEOUT, accept_until, handshake};
pub mod identity;

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

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
