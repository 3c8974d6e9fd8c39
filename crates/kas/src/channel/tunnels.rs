//! The door of the agent endpoint for tunnels: agentk asks to upgrade an
//! HTTP/1.1 connection (to `tether-tunnel/1`, or to a WebSocket with the
//! tunnel subprotocol over `wss://`) with its agent token; once the token is
//! checked the connection becomes one of the agent's tunnels (see
//! `tether_tunnel`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tether_proto::websocket::{self, Role, Ws, WsIo};
use tether_store::Store;
use tether_tunnel::server::TunnelInfo;

use super::ratelimit::FailedAuthLimiter;
use super::registry::ConnectionRegistry;
use super::service::{Refusal, authenticate_agent};

/// How the tunnel's bytes travel after the upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// The raw connection.
    Raw,
    /// WebSocket binary messages.
    WebSocket,
}

/// Authenticates tunnel upgrades and registers the tunnels.
#[derive(Clone)]
pub struct TunnelGate {
    store: Arc<dyn Store>,
    registry: Arc<ConnectionRegistry>,
    failures: Arc<FailedAuthLimiter>,
}

impl std::fmt::Debug for TunnelGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelGate").finish_non_exhaustive()
    }
}

impl TunnelGate {
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<ConnectionRegistry>,
        failures: Arc<FailedAuthLimiter>,
    ) -> Self {
        Self {
            store,
            registry,
            failures,
        }
    }

    /// Answers a tunnel upgrade: 101 and a new tunnel, or why not.
    pub async fn accept(
        &self,
        mut request: Request<Incoming>,
        peer: SocketAddr,
        framing: Framing,
    ) -> Response<Full<Bytes>> {
        let ip = peer.ip();
        if let Err(retry_after) = self.failures.check(ip, Instant::now()) {
            return text(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many failed authentications from {ip}; retry in {} s",
                    retry_after.as_secs().max(1)
                ),
            );
        }
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let (agent, token_id) = match authenticate_agent(self.store.as_ref(), header).await {
            Ok(ok) => {
                self.failures.record_success(ip);
                ok
            }
            Err(Refusal::Unauthenticated(reason)) => {
                self.registry.metrics().auth_failures.inc();
                self.failures.record_failure(ip, Instant::now());
                tracing::info!(peer = %peer, reason = %reason, "tunnel refused");
                return text(StatusCode::UNAUTHORIZED, reason);
            }
            Err(Refusal::Unavailable(reason)) => {
                return text(StatusCode::SERVICE_UNAVAILABLE, reason);
            }
        };
        let mut response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade");
        match framing {
            Framing::Raw => {
                response = response.header(header::UPGRADE, tether_tunnel::UPGRADE_PROTOCOL);
            }
            Framing::WebSocket => {
                let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
                    return text(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key".into());
                };
                response = response
                    .header(header::UPGRADE, "websocket")
                    .header(
                        header::SEC_WEBSOCKET_ACCEPT,
                        websocket::derive_accept_key(key.as_bytes()),
                    )
                    .header(
                        header::SEC_WEBSOCKET_PROTOCOL,
                        tether_tunnel::WS_SUBPROTOCOL,
                    );
            }
        }
        let on_upgrade = hyper::upgrade::on(&mut request);
        let tunnels = self.registry.tunnels().clone();
        let serves = request
            .headers()
            .get(tether_tunnel::SERVES_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let info = TunnelInfo {
            agent: agent.name,
            token_id,
            serves,
        };
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => TokioIo::new(upgraded),
                Err(e) => {
                    tracing::debug!(error = %e, "tunnel upgrade failed");
                    return;
                }
            };
            let attached = match framing {
                Framing::Raw => tunnels.attach(info.clone(), upgraded).await,
                Framing::WebSocket => {
                    let ws = Ws::from_raw_socket(upgraded, Role::Server, Some(websocket::config()))
                        .await;
                    tunnels.attach(info.clone(), WsIo::new(ws)).await
                }
            };
            if let Err(e) = attached {
                tracing::warn!(agent = %info.agent, error = %e, "tunnel handshake failed");
            }
        });
        response
            .body(Full::default())
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "bad upgrade".into()))
    }
}

fn text(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message + "\n")));
    *response.status_mut() = status;
    response
}
