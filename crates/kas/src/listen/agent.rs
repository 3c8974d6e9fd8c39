//! The agent endpoint's listener: one TLS port for both transports.
//!
//! After the TLS handshake, ALPN tells them apart: `h2` is gRPC directly;
//! `http/1.1` must be a WebSocket upgrade (`wss://host:port/any/path`), whose
//! messages then carry the same HTTP/2 bytes (see
//! [`tether_tunnel::websocket`]). Both kinds of connection are handed to one
//! tonic server as plain byte streams, so the gRPC service does not know or
//! care which transport an agent used.
//!
//! An HTTP/1.1 connection may instead ask for a tunnel (see
//! [`super::tunnels`]): an upgrade to `tether-tunnel/1`, or a WebSocket
//! offering the tunnel subprotocol. Those go to the [`TunnelGate`], not to
//! the gRPC server.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tether_tunnel::websocket::{self, Role, Ws, WsIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::listen::{self, HANDSHAKE_TIMEOUT};
use tether_channel::tunnels::{Framing, TunnelGate};

/// Connections accepted but not yet taken by the gRPC server.
const ACCEPT_QUEUE: usize = 1024;

/// An agent connection, whichever transport it came over.
// One value per connection, for its whole life: its size does not matter,
// and boxing would cost a pointer chase on every read and write.
#[allow(clippy::large_enum_variant)]
pub enum AgentIo {
    Grpc(TlsStream<TcpStream>),
    WebSocket(WsIo<TokioIo<hyper::upgrade::Upgraded>>, TcpConnectInfo),
}

impl std::fmt::Debug for AgentIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AgentIo::Grpc(_) => "AgentIo::Grpc",
            AgentIo::WebSocket(..) => "AgentIo::WebSocket",
        })
    }
}

/// Accepts connections on `listener` until the drain signal, yielding
/// each once its transport is established.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    gate: TunnelGate,
    drain: tether_runtime::Drain,
) -> mpsc::Receiver<io::Result<AgentIo>> {
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    // A connection's task ends once its transport is handed on: the linger
    // covers a handshake or an upgrade under way.
    let handoffs = drain.clone();
    drain.spawn(listen::accept_until(
        "agent",
        listener,
        drain.signal(),
        HANDSHAKE_TIMEOUT,
        listen::caps::AGENT,
        move |tcp, peer| {
            let (acceptor, tx, gate) = (acceptor.clone(), tx.clone(), gate.clone());
            let handoffs = handoffs.clone();
            async move {
                if let Err(e) = establish(tcp, peer, acceptor, tx, gate, handoffs).await {
                    tracing::debug!(peer = %peer, error = %e, "agent connection not established");
                }
            }
        },
    ));
    rx
}

async fn establish(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<io::Result<AgentIo>>,
    gate: TunnelGate,
    handoffs: tether_runtime::Drain,
) -> anyhow::Result<()> {
    let info = TcpConnectInfo {
        local_addr: tcp.local_addr().ok(),
        remote_addr: Some(peer),
    };
    let tls = listen::handshake(&acceptor, tcp)
        .await
        .context("TLS handshake")?;
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        if tx.send(Ok(AgentIo::Grpc(tls))).await.is_err() {
            anyhow::bail!("kas is stopping");
        }
        return Ok(());
    }
    // HTTP/1.1: serve exactly one request, which must be an upgrade.
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (tx, info, gate) = (tx.clone(), info.clone(), gate.clone());
        let handoffs = handoffs.clone();
        async move {
            Ok::<_, io::Error>(match tunnel_framing(&request) {
                Some(framing) => gate.accept(request, peer, framing).await,
                None => upgrade(request, tx, info, &handoffs),
            })
        }
    });
    tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tls), service)
            .with_upgrades(),
    )
    .await
    .context("WebSocket upgrade timed out")?
    .context("HTTP/1.1 connection failed")
}

/// Whether `request` asks for a tunnel, and how its bytes will travel.
fn tunnel_framing(request: &Request<Incoming>) -> Option<Framing> {
    let headers = request.headers();
    let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok())?;
    if upgrade.eq_ignore_ascii_case(tether_tunnel::UPGRADE_PROTOCOL) {
        return Some(Framing::Raw);
    }
    let tunnel_subprotocol = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == tether_tunnel::WS_SUBPROTOCOL);
    (upgrade.eq_ignore_ascii_case("websocket") && tunnel_subprotocol).then_some(Framing::WebSocket)
}

/// Answers a WebSocket upgrade with 101 and hands the upgraded connection
/// to the gRPC server; anything else gets a plain error.
fn upgrade(
    request: Request<Incoming>,
    tx: mpsc::Sender<io::Result<AgentIo>>,
    info: TcpConnectInfo,
    handoffs: &tether_runtime::Drain,
) -> Response<Full<Bytes>> {
    let headers = request.headers();
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key)) = (is_upgrade, key) else {
        return plain(
            StatusCode::UPGRADE_REQUIRED,
            "this is kas's agent endpoint: dial it with gRPC over TLS, or a WebSocket upgrade\n",
        );
    };
    let accept = websocket::derive_accept_key(key.as_bytes());
    let offers_subprotocol = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == websocket::SUBPROTOCOL);
    handoffs.spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let ws = Ws::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(websocket::config()),
                )
                .await;
                let _ = tx.send(Ok(AgentIo::WebSocket(WsIo::new(ws), info))).await;
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if offers_subprotocol {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, websocket::SUBPROTOCOL);
    }
    response
        .body(Full::default())
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "bad upgrade\n"))
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

impl Connected for AgentIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            AgentIo::Grpc(tls) => tls.get_ref().0.connect_info(),
            AgentIo::WebSocket(_, info) => info.clone(),
        }
    }
}

impl AsyncRead for AgentIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentIo::Grpc(s) => Pin::new(s).poll_read(cx, buf),
            AgentIo::WebSocket(s, _) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AgentIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AgentIo::Grpc(s) => Pin::new(s).poll_write(cx, buf),
            AgentIo::WebSocket(s, _) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentIo::Grpc(s) => Pin::new(s).poll_flush(cx),
            AgentIo::WebSocket(s, _) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentIo::Grpc(s) => Pin::new(s).poll_shutdown(cx),
            AgentIo::WebSocket(s, _) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
