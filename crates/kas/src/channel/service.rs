//! One agent session: authenticate, handshake, then serve until the agent
//! leaves, falls silent, or its token or agent is taken away.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tether_credentials::{Token, TokenKind};
use tether_proto::v1::agent_channel_server::AgentChannel;
use tether_proto::v1::{AgentMessage, ServerMessage, Welcome, agent_message, server_message};
use tether_proto::{PROTOCOL_VERSION, v1};
use tether_store::{Store, TokenStatus};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::ratelimit::FailedAuthLimiter;
use super::registry::{ConnectionRegistry, ConnectionView, Registration};
use crate::time_format::{now, to_rfc3339};

/// How often agents ping; a session silent for three intervals is dropped.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
/// How long a new connection may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued towards one agent. Bounded, so that a stalled agent slows
/// only its own session, never kas.
const OUTBOUND_QUEUE: usize = 16;

/// The `AgentChannel` service.
#[derive(Clone)]
pub struct AgentChannelService {
    store: Arc<dyn Store>,
    registry: Arc<ConnectionRegistry>,
    failures: Arc<FailedAuthLimiter>,
}

impl std::fmt::Debug for AgentChannelService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentChannelService")
            .finish_non_exhaustive()
    }
}

type ServerStream = Pin<Box<dyn Stream<Item = Result<ServerMessage, Status>> + Send>>;

impl AgentChannelService {
    pub fn new(store: Arc<dyn Store>, registry: Arc<ConnectionRegistry>) -> Self {
        Self {
            store,
            registry,
            failures: Arc::default(),
        }
    }

    /// The agent and token a request is authenticated as, or why not.
    async fn authenticate<T>(
        &self,
        request: &Request<T>,
    ) -> Result<(tether_store::Agent, i64), Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated("no agent token: send authorization: Bearer <agent token>")
            })?;
        let token = Token::from_bearer(header)
            .ok()
            .filter(|t| t.kind() == TokenKind::Agent)
            .ok_or_else(|| Status::unauthenticated("malformed agent token"))?;
        let status = self
            .store
            .authenticate(&token.hash(), now())
            .await
            .map_err(|e| {
                tracing::error!(error = ?e, "cannot check an agent token");
                Status::unavailable("kas cannot check tokens right now")
            })?;
        match status {
            TokenStatus::Active { agent, token } => Ok((agent, token.id)),
            TokenStatus::Revoked { revoked_at } => Err(Status::unauthenticated(format!(
                "agent token was revoked at {}",
                to_rfc3339(revoked_at)
            ))),
            TokenStatus::Expired { expired_at } => Err(Status::unauthenticated(format!(
                "agent token expired at {}",
                to_rfc3339(expired_at)
            ))),
            TokenStatus::Unknown => Err(Status::unauthenticated("unknown agent token")),
        }
    }
}

#[tonic::async_trait]
impl AgentChannel for AgentChannelService {
    type SessionStream = ServerStream;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<ServerStream>, Status> {
        let peer = request.remote_addr();
        let ip = peer.map(|p| p.ip());
        if let Some(ip) = ip
            && let Err(retry_after) = self.failures.check(ip, std::time::Instant::now())
        {
            return Err(Status::resource_exhausted(format!(
                "too many failed authentications from {ip}; retry in {} s",
                retry_after.as_secs().max(1)
            )));
        }
        let (agent, token_id) = match self.authenticate(&request).await {
            Ok(ok) => {
                if let Some(ip) = ip {
                    self.failures.record_success(ip);
                }
                ok
            }
            Err(status) => {
                if let Some(ip) = ip
                    && status.code() == tonic::Code::Unauthenticated
                {
                    self.failures.record_failure(ip, std::time::Instant::now());
                }
                tracing::info!(peer = ?peer, reason = status.message(), "agent connection refused");
                return Err(status);
            }
        };
        let mut incoming = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, incoming.message()).await {
            Ok(Ok(Some(AgentMessage {
                message: Some(agent_message::Message::Hello(hello)),
            }))) => hello,
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10 s")),
            Ok(Ok(_)) => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "agent speaks protocol {}, this kas speaks {PROTOCOL_VERSION}; upgrade the older side",
                hello.protocol_version
            )));
        }
        let pod = hello.pod.clone().unwrap_or_default();
        let connected_at = to_rfc3339(now());
        let registration = self.registry.register(
            &agent.name,
            token_id,
            ConnectionView {
                pod_namespace: pod.namespace.clone(),
                pod_name: pod.name.clone(),
                agent_version: hello.agent_version.clone(),
                cluster_version: hello.cluster_version.clone(),
                config_commit: hello.config_commit.clone(),
                connected_at: connected_at.clone(),
                last_seen: connected_at,
            },
        );
        tracing::info!(
            agent = %agent.name,
            pod = %format!("{}/{}", pod.namespace, pod.name),
            agent_version = %hello.agent_version,
            cluster_version = %hello.cluster_version,
            "agent connected"
        );

        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let welcome = ServerMessage {
            message: Some(server_message::Message::Welcome(Welcome {
                protocol_version: PROTOCOL_VERSION,
                agent_id: agent.id,
                agent_name: agent.name.clone(),
                server_version: env!("CARGO_PKG_VERSION").to_owned(),
                ping_interval: Some(prost_types::Duration {
                    seconds: PING_INTERVAL.as_secs() as i64,
                    nanos: 0,
                }),
            })),
        };
        tx.send(Ok(welcome))
            .await
            .map_err(|_| Status::cancelled("agent left during the handshake"))?;
        tokio::spawn(run_session(agent.name, incoming, tx, registration));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn run_session(
    agent: String,
    mut incoming: Streaming<AgentMessage>,
    tx: mpsc::Sender<Result<ServerMessage, Status>>,
    registration: Registration,
) {
    let mut closed = registration.closed.clone();
    let reason = loop {
        tokio::select! {
            _ = closed.changed() => {
                let reason = closed.borrow().clone().unwrap_or_else(|| "closed by kas".into());
                // Tell the agent why, so it does not retry blindly.
                let _ = tx.send(Err(Status::unauthenticated(reason.clone()))).await;
                break reason;
            }
            _ = tx.closed() => break "agent went away".to_owned(),
            next = tokio::time::timeout(PING_INTERVAL * 3, incoming.message()) => match next {
                Err(_) => break "agent silent for three ping intervals".to_owned(),
                Ok(Ok(None)) => break "agent closed the session".to_owned(),
                Ok(Err(status)) => break format!("transport error: {}", status.message()),
                Ok(Ok(Some(message))) => {
                    registration.touch(&to_rfc3339(now()));
                    match message.message {
                        Some(agent_message::Message::Ping(ping)) => {
                            let pong = ServerMessage {
                                message: Some(server_message::Message::Pong(v1::Pong { sequence: ping.sequence })),
                            };
                            if tx.send(Ok(pong)).await.is_err() {
                                break "agent went away".to_owned();
                            }
                        }
                        Some(agent_message::Message::ConfigApplied(applied)) => {
                            registration.set_config_commit(&applied.commit_id);
                            tracing::info!(agent = %agent, commit = %applied.commit_id, "agent applied config");
                        }
                        Some(agent_message::Message::Hello(_)) | None => {}
                    }
                }
            },
        }
    };
    tracing::info!(agent = %agent, reason = %reason, "agent disconnected");
}
