//! The door of the agent endpoint for tunnels: agentk asks to upgrade an
//! HTTP/1.1 connection (to `tether-tunnel/1`, or to a WebSocket with the
//! tunnel subprotocol over `wss://`) with its agent token; once the token is
//! checked the connection becomes one of the agent's tunnels (see
//! `tether_tunnel`).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tether_agent_config::AgentName;
use tether_tunnel::server::TunnelInfo;
use tether_tunnel::websocket::{self, Role, Ws, WsIo};

use crate::auth::{AgentAuth, Refusal};
use tether_tunnel::server::Tunnels;

/// Tunnels one agent may hold at once (agentk keeps two per pod); past it
/// a new one is refused, so one token cannot pin kas's memory with them.
pub const MAX_TUNNELS_PER_AGENT: usize = 64;

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
    auth: Arc<AgentAuth>,
    tunnels: Arc<Tunnels>,
    /// A tunnel's handshake runs on it, not detached from the drain.
    drain: tether_runtime::Drain,
}

impl std::fmt::Debug for TunnelGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelGate").finish_non_exhaustive()
    }
}

impl TunnelGate {
    pub fn new(auth: Arc<AgentAuth>, tunnels: Arc<Tunnels>, drain: tether_runtime::Drain) -> Self {
        Self {
            auth,
            tunnels,
            drain,
        }
    }

    /// Answers a tunnel upgrade: 101 and a new tunnel, or why not.
    pub async fn accept(
        &self,
        mut request: Request<Incoming>,
        peer: SocketAddr,
        framing: Framing,
    ) -> Response<Full<Bytes>> {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let admitted = match self.auth.admit(header, Some(peer.ip())).await {
            Ok(admitted) => admitted,
            Err(refusal) => {
                let (status, reason) = match refusal {
                    Refusal::Unauthenticated(r) => (StatusCode::UNAUTHORIZED, r),
                    Refusal::Throttled(r) => (StatusCode::TOO_MANY_REQUESTS, r),
                    Refusal::Unavailable(r) => (StatusCode::SERVICE_UNAVAILABLE, r),
                };
                tracing::info!(peer = %peer, reason = %reason, "tunnel refused");
                return text(status, reason);
            }
        };
        // The store holds only names that were checked when the agent was
        // created; one that no longer passes is refused, not trusted.
        let agent = match AgentName::new(&admitted.agent.name) {
            Ok(agent) => agent,
            Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let tunnels = self.tunnels.clone();
        if tunnels.count(&agent) >= MAX_TUNNELS_PER_AGENT {
            return text(
                StatusCode::TOO_MANY_REQUESTS,
                format!("agent {agent} already has {MAX_TUNNELS_PER_AGENT} tunnels"),
            );
        }
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
            agent,
            token_id: admitted.token_id,
            serves,
            expires_in: admitted.expires_in(),
        };
        let auth = self.auth.clone();
        self.drain.spawn(async move {
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
                return;
            }
            // A revocation between the token check and the attach found
            // nothing to close: check again now that it would.
            if auth.still_valid(&admitted).await.is_err() {
                tunnels.close_where(|t| t.token_id == info.token_id);
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
