//! One agent session: authenticate, handshake, then serve until the agent
//! leaves, falls silent, or its token or agent is taken away.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tether_credentials::{Token, TokenKind};
use tether_git::CommitId;
use tether_proto::v1::agent_channel_server::AgentChannel;
use tether_proto::v1::{AgentMessage, ServerMessage, Welcome, agent_message, server_message};
use tether_proto::{PROTOCOL_VERSION, v1};
use tether_store::{Store, TokenStatus};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::config::{self, ConfigProblem};
use super::manifests::{self, Follower, ManifestSpec};
use super::ratelimit::FailedAuthLimiter;
use super::registry::{ConnectionRegistry, ConnectionView, Registration};
use crate::repos::{Head, Repos};
use crate::time_format::{now, to_rfc3339};

/// How often agents ping; a session silent for three intervals is dropped.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
/// How long a new connection may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued towards one agent. Bounded, so that a stalled agent slows
/// only its own session, never kas.
const OUTBOUND_QUEUE: usize = 16;
/// How long a message may wait for room in a full outbound queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The `AgentChannel` service.
#[derive(Clone)]
pub struct AgentChannelService {
    store: Arc<dyn Store>,
    registry: Arc<ConnectionRegistry>,
    repos: Arc<Repos>,
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
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<ConnectionRegistry>,
        repos: Arc<Repos>,
    ) -> Self {
        Self {
            store,
            registry,
            repos,
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
            .and_then(|v| v.to_str().ok());
        authenticate_agent(self.store.as_ref(), header)
            .await
            .map_err(|refusal| match refusal {
                Refusal::Unauthenticated(reason) => Status::unauthenticated(reason),
                Refusal::Unavailable(reason) => Status::unavailable(reason),
            })
    }

    /// The door for tunnels: same store, same limit on failed attempts.
    pub fn tunnel_gate(&self) -> super::tunnels::TunnelGate {
        super::tunnels::TunnelGate::new(
            self.store.clone(),
            self.registry.clone(),
            self.failures.clone(),
        )
    }
}

/// Why an agent token was not accepted.
#[derive(Debug)]
pub enum Refusal {
    /// Say so to the agent: missing, malformed, unknown, revoked, expired.
    Unauthenticated(String),
    /// kas cannot check tokens right now.
    Unavailable(String),
}

/// The agent and token id of an `Authorization: Bearer <agent token>`
/// header, or why not.
pub async fn authenticate_agent(
    store: &dyn Store,
    header: Option<&str>,
) -> Result<(tether_store::Agent, i64), Refusal> {
    let header = header.ok_or_else(|| {
        Refusal::Unauthenticated("no agent token: send authorization: Bearer <agent token>".into())
    })?;
    let token = Token::from_bearer(header)
        .ok()
        .filter(|t| t.kind() == TokenKind::Agent)
        .ok_or_else(|| Refusal::Unauthenticated("malformed agent token".into()))?;
    let status = store
        .authenticate(&token.hash(), now())
        .await
        .map_err(|e| {
            tracing::error!(error = ?e, "cannot check an agent token");
            Refusal::Unavailable("kas cannot check tokens right now".into())
        })?;
    match status {
        TokenStatus::Active { agent, token } => Ok((agent, token.id)),
        TokenStatus::Revoked { revoked_at } => Err(Refusal::Unauthenticated(format!(
            "agent token was revoked at {}",
            to_rfc3339(revoked_at)
        ))),
        TokenStatus::Expired { expired_at } => Err(Refusal::Unauthenticated(format!(
            "agent token expired at {}",
            to_rfc3339(expired_at)
        ))),
        TokenStatus::Unknown => Err(Refusal::Unauthenticated("unknown agent token".into())),
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
                if status.code() == tonic::Code::Unauthenticated {
                    self.registry.metrics().auth_failures.inc();
                    if let Some(ip) = ip {
                        self.failures.record_failure(ip, std::time::Instant::now());
                    }
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
        let session = Session {
            head: self.repos.subscribe(&agent.config_project),
            repos: self.repos.clone(),
            followers: Vec::new(),
            synced: hello
                .synced
                .iter()
                .map(|s| (s.project_id.clone(), s.commit_id.clone()))
                .collect(),
            project: agent.config_project,
            agent: agent.name,
            registry: self.registry.clone(),
            sent_commit: hello.config_commit,
            read_commit: None,
            tx,
            registration,
        };
        let span = tracing::info_span!("session", agent = %session.agent);
        tokio::spawn(session.run(incoming).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A live session, after the handshake.
struct Session {
    agent: String,
    project: String,
    registry: Arc<ConnectionRegistry>,
    /// The head of the agent's configuration project.
    head: watch::Receiver<Head>,
    /// Commit of the configuration the agent has.
    sent_commit: String,
    /// Commit whose config file was last read for this agent.
    read_commit: Option<CommitId>,
    repos: Arc<Repos>,
    /// One per manifest project of the agent's config.
    followers: Vec<Follower>,
    /// Manifest commits the agent said it had synced, by project.
    synced: HashMap<String, String>,
    tx: mpsc::Sender<Result<ServerMessage, Status>>,
    registration: Registration,
}

impl Session {
    async fn run(mut self, mut incoming: Streaming<AgentMessage>) {
        let mut closed = self.registration.closed.clone();
        let mut following = true;
        let reason = loop {
            tokio::select! {
                _ = closed.changed() => {
                    let reason = closed.borrow().clone().unwrap_or_else(|| "closed by kas".into());
                    // Tell the agent why, so it does not retry blindly.
                    let _ = self.tx.send(Err(Status::unauthenticated(reason.clone()))).await;
                    break reason;
                }
                _ = self.tx.closed() => break "agent went away".to_owned(),
                changed = self.head.changed(), if following => {
                    if changed.is_err() {
                        following = false;
                        continue;
                    }
                    let head = self.head.borrow_and_update().clone();
                    if let Err(reason) = self.deliver(head).await {
                        break reason;
                    }
                }
                next = tokio::time::timeout(PING_INTERVAL * 3, incoming.message()) => match next {
                    Err(_) => break "agent silent for three ping intervals".to_owned(),
                    Ok(Ok(None)) => break "agent closed the session".to_owned(),
                    Ok(Err(status)) => break format!("transport error: {}", status.message()),
                    Ok(Ok(Some(message))) => {
                        self.registration.touch(&to_rfc3339(now()));
                        match message.message {
                            Some(agent_message::Message::Ping(ping)) => {
                                let pong = ServerMessage {
                                    message: Some(server_message::Message::Pong(v1::Pong { sequence: ping.sequence })),
                                };
                                if let Err(reason) = self.send(pong).await {
                                    break reason;
                                }
                            }
                            Some(agent_message::Message::ConfigApplied(applied)) => {
                                self.registration.set_config_commit(&applied.commit_id);
                                tracing::info!(commit = %applied.commit_id, "agent applied config");
                            }
                            Some(agent_message::Message::SyncReport(report)) => {
                                tracing::info!(
                                    project = %report.project_id,
                                    commit = %report.commit_id,
                                    state = ?report.state(),
                                    applied = report.applied,
                                    pruned = report.pruned,
                                    error = %report.error,
                                    "sync reported"
                                );
                                self.synced.insert(report.project_id.clone(), report.commit_id.clone());
                                self.registry.record_sync(&self.agent, report);
                            }
                            Some(agent_message::Message::Hello(_)) | None => {}
                        }
                    }
                },
            }
        };
        tracing::info!(reason = %reason, "agent disconnected");
    }

    /// Sends the agent its config from the project's new head, if that
    /// commit's file is valid and the agent does not have it yet.
    async fn deliver(&mut self, head: Head) -> Result<(), String> {
        if let Some(error) = head.error {
            self.registry.config_rejected(
                &self.agent,
                ConfigProblem {
                    commit: head.commit.as_ref().map(ToString::to_string),
                    file: None,
                    line: None,
                    column: None,
                    message: error,
                },
            );
            // Read the file again once the repository is back.
            self.read_commit = None;
            return Ok(());
        }
        let (Some(commit), Some(source)) = (head.commit, head.source) else {
            return Ok(());
        };
        if self.read_commit.as_ref() == Some(&commit) {
            return Ok(());
        }
        self.read_commit = Some(commit.clone());
        match config::load(source, commit.clone(), &self.agent, &self.project).await {
            Ok(loaded) => {
                let commit = commit.to_string();
                self.registry
                    .config_accepted(&self.agent, &commit, loaded.warnings, loaded.config);
                let specs = ManifestSpec::from_config(&loaded.message, &self.project);
                if commit != self.sent_commit {
                    let message = ServerMessage {
                        message: Some(server_message::Message::Configuration(loaded.message)),
                    };
                    self.send(message).await?;
                    self.registry.metrics().configs_sent.inc();
                    tracing::info!(commit = %commit, "configuration sent");
                    self.sent_commit = commit;
                }
                self.follow_manifests(specs);
            }
            Err(problem) => {
                tracing::warn!(
                    commit = %commit,
                    file = problem.file.as_deref().unwrap_or_default(),
                    line = problem.line,
                    error = %problem.message,
                    "config not sent: it does not validate"
                );
                self.registry.metrics().configs_rejected.inc();
                self.registry.config_rejected(&self.agent, problem);
            }
        }
        Ok(())
    }

    /// Keeps one follower per manifest project: unchanged specs keep theirs,
    /// new or changed ones start afresh (a changed glob may select other
    /// files at the same commit, so the agent's synced commit says nothing).
    fn follow_manifests(&mut self, specs: Vec<ManifestSpec>) {
        let mut old = std::mem::take(&mut self.followers);
        for spec in specs {
            if let Some(i) = old.iter().position(|f| f.spec == spec) {
                self.followers.push(old.swap_remove(i));
                continue;
            }
            let changed = old.iter().any(|f| f.spec.project == spec.project);
            let synced = match changed {
                true => None,
                false => self.synced.get(&spec.project).cloned(),
            };
            self.followers.push(manifests::follow(
                &self.repos,
                spec,
                synced,
                self.tx.clone(),
            ));
        }
        // What is left in `old` stops as it drops.
    }

    /// Queues `message` for the agent. An agent that does not read for
    /// SEND_TIMEOUT is dropped rather than allowed to pin its session.
    async fn send(&self, message: ServerMessage) -> Result<(), String> {
        match tokio::time::timeout(SEND_TIMEOUT, self.tx.send(Ok(message))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("agent went away".to_owned()),
            Err(_) => Err(format!("agent read nothing for {SEND_TIMEOUT:?}")),
        }
    }
}
