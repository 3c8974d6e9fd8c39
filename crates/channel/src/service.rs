//! One agent session: authenticate, handshake, then serve until the agent
//! leaves, falls silent, or its token or agent is taken away.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tether_git::CommitId;
use tether_proto::v1::agent_channel_server::AgentChannel;
use tether_proto::v1::{AgentMessage, ServerMessage, Welcome, agent_message, server_message};
use tether_proto::{PROTOCOL_VERSION, v1};
use tether_store::{Store, SyncRecord};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::auth::{AgentAuth, Refusal};
use crate::config::{self, ConfigProblem};
use crate::manifests::{self, Follower, ManifestSpec, NoRenderer};
use crate::outbound::{self, OUTBOUND_QUEUE, Outbound};
use crate::repos::{Head, Repos};
use crate::sessions::Registration;
use crate::state::ChannelState;
use tether_agent_config::AgentName;
use tether_agent_config::policy;
use tether_api::ConnectionView;
use tether_store::time::{now, to_rfc3339};

/// How often agents ping; a session silent for three intervals is dropped.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
/// How long a new connection may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Live sessions one agent may hold (one per agentk pod is normal; a few
/// more ride out a rolling update). Past it a new session is refused, so one
/// token cannot fill kas with sessions.
pub const MAX_SESSIONS_PER_AGENT: usize = 32;
/// Syncs kept per agent and manifest project (`GET …/gitops/history`).
pub const SYNC_HISTORY_PER_PROJECT: usize = 50;
/// Concurrent HTTP/2 streams (sessions) on one connection to the agent
/// endpoint; agentk opens one.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 8;

/// The `AgentChannel` service.
#[derive(Clone)]
pub struct AgentChannelService {
    store: Arc<dyn Store>,
    state: ChannelState,
    repos: Arc<Repos>,
    auth: Arc<AgentAuth>,
    /// Sessions run on it; when it starts they end, telling their agents
    /// to reconnect ([`tether_proto::draining`]), so that kas stops
    /// promptly and agents move before it is gone.
    drain: tether_runtime::Drain,
    /// Renders charts and kustomizations, or why kas cannot.
    renderer: Result<Arc<tether_render::Renderer>, NoRenderer>,
    /// Posts commit statuses of the agents' syncs.
    statuses: tether_notify::statuses::Statuses,
    /// Tells of the agents' events.
    notifier: tether_notify::notifications::Notifier,
    /// Which commit of each manifest project each agent is given.
    fleet: Arc<tether_rollouts::Fleet>,
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
        state: ChannelState,
        repos: Arc<Repos>,
        drain: tether_runtime::Drain,
    ) -> Self {
        let auth = Arc::new(AgentAuth::new(store.clone(), state.metrics.clone()));
        Self {
            store,
            state,
            repos,
            auth,
            drain,
            renderer: Err(NoRenderer::NotSetUp),
            statuses: tether_notify::statuses::Statuses::disabled(),
            notifier: tether_notify::notifications::Notifier::disabled(),
            fleet: tether_rollouts::Fleet::disabled(),
        }
    }

    /// Gives each agent the commit `fleet` decides (fleet rollouts).
    pub fn with_fleet(mut self, fleet: Arc<tether_rollouts::Fleet>) -> Self {
        self.fleet = fleet;
        self
    }

    /// Tells of the agents' events with `notifier`.
    pub fn with_notifier(mut self, notifier: tether_notify::notifications::Notifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// Posts commit statuses of the agents' syncs with `statuses`.
    pub fn with_statuses(mut self, statuses: tether_notify::statuses::Statuses) -> Self {
        self.statuses = statuses;
        self
    }

    /// Renders manifest projects' charts and kustomizations with
    /// `renderer`, or says why kas cannot.
    pub fn with_renderer(
        mut self,
        renderer: Result<Arc<tether_render::Renderer>, NoRenderer>,
    ) -> Self {
        self.renderer = renderer;
        self
    }

    /// The door for tunnels: the same token check and failure limits.
    pub fn tunnel_gate(&self) -> crate::tunnels::TunnelGate {
        crate::tunnels::TunnelGate::new(
            self.auth.clone(),
            self.state.tunnels.clone(),
            self.drain.clone(),
        )
    }
}

/// The gRPC status for a refused token.
fn status(refusal: Refusal) -> Status {
    match refusal {
        Refusal::Unauthenticated(reason) => Status::unauthenticated(reason),
        Refusal::Throttled(reason) => Status::resource_exhausted(reason),
        Refusal::Unavailable(reason) => Status::unavailable(reason),
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
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let admitted = match self.auth.admit(header, peer.map(|p| p.ip())).await {
            Ok(admitted) => admitted,
            Err(refusal) => {
                let status = status(refusal);
                tracing::info!(peer = ?peer, reason = status.message(), "agent connection refused");
                return Err(status);
            }
        };
        if self.state.sessions.session_count(&admitted.agent.name) >= MAX_SESSIONS_PER_AGENT {
            return Err(Status::resource_exhausted(format!(
                "agent {} already has {MAX_SESSIONS_PER_AGENT} sessions; close some first",
                admitted.agent.name
            )));
        }
        let (agent, token_id) = (admitted.agent.clone(), admitted.token_id);
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
        // The store holds only names that were checked when the agent was
        // created; one that no longer passes is refused, not trusted.
        let name =
            AgentName::new(&agent.name).map_err(|e| Status::failed_precondition(e.to_string()))?;
        let registration = self.state.sessions.register(
            &name,
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
        // A revocation between the token check and the registration closed
        // nothing (there was nothing registered yet): check again now that
        // any later one will find this session.
        self.auth.still_valid(&admitted).await.map_err(status)?;
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
        let plan_slot = self.state.plans.open(&agent.name, tx.clone());
        let api_versions = manifests::api_versions(hello.api_versions);
        registration.set_api_versions(api_versions.clone());
        let session = Session {
            _plans: plan_slot,
            drain: self.drain.signal(),
            store: self.store.clone(),
            grants: self.state.grants.watch(),
            specs: Vec::new(),
            expires_in: admitted.expires_in(),
            head: self.repos.subscribe(&agent.config_project),
            repos: self.repos.clone(),
            followers: Vec::new(),
            sent: Default::default(),
            traces: Default::default(),
            held: HashMap::new(),
            synced: hello
                .synced
                .iter()
                .map(|s| (s.project_id.clone(), s.commit_id.clone()))
                .collect(),
            project: agent.config_project,
            agent: name,
            state: self.state.clone(),
            rendering: manifests::Rendering {
                renderer: self.renderer.clone(),
                kube_version: hello.cluster_version.clone(),
                api_versions: api_versions.clone(),
            },
            sent_commit: hello.config_commit,
            read_commit: None,
            tx,
            registration,
            statuses: self.statuses.clone(),
            notifier: self.notifier.clone(),
            fleet: self.fleet.clone(),
            told: Default::default(),
        };
        let span = tracing::info_span!("session", agent = %session.agent);
        self.drain.spawn(session.run(incoming).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A live session, after the handshake.
struct Session {
    drain: tether_runtime::Shutdown,
    store: Arc<dyn Store>,
    /// Bumped whenever an administrator grants or revokes a manifest project.
    grants: watch::Receiver<u64>,
    /// The manifest projects the agent's config names, allowed or not.
    specs: Vec<ManifestSpec>,
    /// How its followers render charts and kustomizations.
    rendering: manifests::Rendering,
    /// Lets the session take plans while it lives.
    _plans: crate::plans::PlanSlot,
    /// Time left on the session's token, if it expires.
    expires_in: Option<Duration>,
    agent: AgentName,
    project: String,
    state: ChannelState,
    /// The head of the agent's configuration project.
    head: watch::Receiver<Head>,
    /// Commit of the configuration the agent has.
    sent_commit: String,
    /// Commit whose config file was last read for this agent.
    read_commit: Option<CommitId>,
    repos: Arc<Repos>,
    /// One per manifest project of the agent's config.
    followers: Vec<Follower>,
    /// The manifest commits the followers gave this session: the only
    /// ones its reports may speak of.
    sent: crate::sent::SentCommits,
    /// The traces of the commits given, open until their syncs finish.
    traces: crate::traces::SyncTraces,
    /// Reports that named a project or commit the session had not resolved
    /// yet: an agent reports its last state as soon as it connects, before
    /// the followers have read the refs. The newest per project, at most
    /// [`MAX_HELD_REPORTS`], each for [`HOLD_REPORTS_FOR`]; recorded once
    /// they match, dropped (as any unmatched report) when the time is up.
    held: HashMap<String, (tokio::time::Instant, v1::SyncReport)>,
    /// Manifest commits the agent said it had synced, by project.
    synced: HashMap<String, String>,
    tx: Outbound,
    registration: Registration,
    /// Commit statuses on the git host, for each sync.
    statuses: tether_notify::statuses::Statuses,
    notifier: tether_notify::notifications::Notifier,
    fleet: Arc<tether_rollouts::Fleet>,
    /// What this session told already: once per commit and event.
    told: std::collections::HashSet<(String, String, tether_agent_config::NotificationEvent)>,
}

/// Projects whose unmatched report a session holds at most.
const MAX_HELD_REPORTS: usize = 32;
/// How long an unmatched report waits for the session's followers.
const HOLD_REPORTS_FOR: Duration = Duration::from_secs(60);
/// How often held reports are tried again.
const HELD_RETRY: Duration = Duration::from_millis(500);

impl Session {
    async fn run(mut self, mut incoming: Streaming<AgentMessage>) {
        let mut closed = self.registration.closed.clone();
        let mut following = true;
        let silent_after = PING_INTERVAL * 3;
        // Only what the agent sends moves this; nothing kas does on its own
        // side (a poll, a grant) may keep a silent agent alive.
        let mut silence = Box::pin(tokio::time::sleep(silent_after));
        let mut held_retry = tokio::time::interval(HELD_RETRY);
        held_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let expiry = self.expires_in;
        let expired = async move {
            match expiry {
                Some(left) => tokio::time::sleep(left).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        let mut drain = self.drain.clone();
        let draining = async move { drain.signalled().await };
        tokio::pin!(draining);
        let reason = loop {
            tokio::select! {
                _ = &mut draining => {
                    let _ = self.tx.try_send(Err(tether_proto::draining()));
                    break "kas is shutting down".to_owned();
                }
                _ = closed.changed() => {
                    let reason = closed.borrow().clone().unwrap_or_else(|| "closed by kas".into());
                    // Tell the agent why, so it does not retry blindly.
                    let _ = self.tx.try_send(Err(Status::unauthenticated(reason.clone())));
                    break reason;
                }
                _ = &mut expired => {
                    let reason = "agent token expired".to_owned();
                    let _ = self.tx.try_send(Err(Status::unauthenticated(reason.clone())));
                    break reason;
                }
                _ = &mut silence => break "agent silent for three ping intervals".to_owned(),
                _ = held_retry.tick(), if !self.held.is_empty() => self.record_held().await,
                _ = self.tx.closed() => break "agent went away".to_owned(),
                changed = self.head.changed(), if following => {
                    if changed.is_err() {
                        following = false;
                        continue;
                    }
                    let head = self.head.borrow_and_update().clone();
                    if let Err(reason) = self.deliver(head).await {
                        break reason.to_string();
                    }
                }
                changed = self.grants.changed() => {
                    if changed.is_ok() {
                        self.follow_allowed().await;
                    }
                }
                next = incoming.message() => match next {
                    Ok(None) => break "agent closed the session".to_owned(),
                    Err(status) => break format!("transport error: {}", status.message()),
                    Ok(Some(message)) => {
                        silence.as_mut().reset(tokio::time::Instant::now() + silent_after);
                        self.registration.touch(&to_rfc3339(now()));
                        match message.message {
                            Some(agent_message::Message::Ping(ping)) => {
                                let pong = ServerMessage {
                                    message: Some(server_message::Message::Pong(v1::Pong { sequence: ping.sequence })),
                                };
                                if let Err(reason) = self.send(pong).await {
                                    break reason.to_string();
                                }
                            }
                            Some(agent_message::Message::ConfigApplied(applied)) => {
                                self.registration.set_config_commit(&applied.commit_id);
                                tracing::info!(commit = %applied.commit_id, "agent applied config");
                            }
                            Some(agent_message::Message::SyncReport(report)) => self.record(report).await,
                            Some(agent_message::Message::PlanReport(report)) => {
                                self.state.plans.answered(&self.agent, report);
                            }
                            Some(agent_message::Message::ClusterInfo(info)) => self.cluster_changed(info),
                            Some(agent_message::Message::Hello(_)) | None => {}
                        }
                    }
                },
            }
        };
        tracing::info!(reason = %reason, "agent disconnected");
        let sessions = self.state.sessions.clone();
        self.notifier.watch_disconnect(
            move |agent| sessions.session_count(agent) > 0,
            self.agent.to_string(),
            self.own_notifications(),
            reason,
        );
    }

    /// The notification destinations of the agent's config in use that it
    /// may use.
    fn own_notifications(&self) -> tether_notify::notifications::AgentDestinations {
        self.state.configs.destinations(&self.agent)
    }

    /// Keeps a sync report, if it is of a manifest project this agent
    /// follows and of a commit kas gave this session for it: the project
    /// and commit come from the agent, reports of other projects would let
    /// one token grow kas's memory without bound, and one of another
    /// commit would have kas post a status (with its own git host token)
    /// and tell of a sync on a commit it never sent, an unreviewed pull
    /// request's head say. Such a report is dropped whole: not kept, not
    /// told, no status.
    async fn record(&mut self, report: v1::SyncReport) {
        if let Err(why) = self.admits(&report) {
            let fresh = !self.held.contains_key(&report.project_id);
            if fresh && self.held.len() >= MAX_HELD_REPORTS {
                Self::drop_report(&self.agent, &report, why);
                return;
            }
            let project = report.project_id.clone();
            let since = self
                .held
                .get(&project)
                .map_or_else(tokio::time::Instant::now, |(since, _)| *since);
            self.held.insert(project, (since, report));
            return;
        }
        // A held report of the project is older than this one.
        self.held.remove(&report.project_id);
        self.keep(report).await;
    }

    /// Records the held reports that match now; drops those held too long.
    async fn record_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        for (project, (since, report)) in held {
            match self.admits(&report) {
                Ok(()) => self.keep(report).await,
                Err(why) if since.elapsed() >= HOLD_REPORTS_FOR => {
                    Self::drop_report(&self.agent, &report, why);
                }
                Err(_) => {
                    self.held.insert(project, (since, report));
                }
            }
        }
    }

    /// Whether the session may keep `report`, and if not, why.
    fn admits(&self, report: &v1::SyncReport) -> Result<(), &'static str> {
        if !self
            .followers
            .iter()
            .any(|f| f.spec.project == report.project_id)
        {
            return Err("not a manifest project kas sends this agent");
        }
        if !self.sent.contains(&report.project_id, &report.commit_id) {
            return Err(
                "not a commit kas sent this agent for this project (no commit status posted)",
            );
        }
        Ok(())
    }

    fn drop_report(agent: &str, report: &v1::SyncReport, why: &str) {
        tracing::warn!(
            agent = %agent,
            project = %report.project_id.chars().take(200).collect::<String>(),
            commit = %tether_notify::statuses::loggable(&report.commit_id),
            "sync report dropped: {why}"
        );
    }

    /// Keeps a report the session admits: statuses, notifications, store.
    async fn keep(&mut self, report: v1::SyncReport) {
        tracing::info!(
            project = %report.project_id,
            commit = %report.commit_id,
            state = ?report.state(),
            applied = report.applied,
            pruned = report.pruned,
            error = %report.error,
            "sync reported"
        );
        self.synced
            .insert(report.project_id.clone(), report.commit_id.clone());
        let own = self.own_notifications();
        for notice in tether_notify::notifications::of_report(&self.agent, &report, &mut self.told)
        {
            self.notifier.notify(&own, notice);
        }
        // An empty commit is a ref kas could not resolve: no commit to
        // post on.
        if !report.commit_id.is_empty() {
            let (state, description) = tether_notify::statuses::of_report(&report);
            self.statuses.report(tether_notify::statuses::StatusEvent {
                project: report.project_id.clone(),
                commit: report.commit_id.clone(),
                agent: self.agent.to_string(),
                state,
                description,
            });
        }
        let reported_at = now();
        self.state
            .metrics
            .syncs
            .observe(&self.agent, &report, reported_at as f64);
        self.traces.reported(
            &report.project_id,
            &report.commit_id,
            report.phase == "done"
                || matches!(
                    report.state(),
                    v1::SyncState::Failed | v1::SyncState::DryRun
                ),
            &report.error,
        );
        let view = super::reports::sync_view(report, reported_at);
        let record = SyncRecord {
            project: view.project.clone(),
            commit: view.commit.clone(),
            state: view.state.clone(),
            reported_at,
            report: serde_json::to_string(&view).unwrap_or_default(),
        };
        // Kept in the store, so that a restarted kas, or another replica,
        // shows the same.
        if let Err(e) = self
            .store
            .record_sync(&self.agent, record, SYNC_HISTORY_PER_PROJECT)
            .await
        {
            tracing::error!(error = ?e, "cannot record a sync report");
        }
        self.state.sessions.reported(&self.agent);
    }

    /// Stores what kas made of the agent's config, as the API shows it.
    async fn persist_config_status(&self) {
        let status = self.state.configs.status(&self.agent);
        let json = serde_json::to_string(&status).unwrap_or_default();
        if let Err(e) = self.store.set_config_status(&self.agent, json).await {
            tracing::error!(error = ?e, "cannot record the config status");
        }
    }

    /// Sends the agent its config from the project's new head, if that
    /// commit's file is valid and the agent does not have it yet. Fails
    /// only when the agent cannot be sent to: the session then ends.
    async fn deliver(&mut self, head: Head) -> Result<(), outbound::NotSent> {
        if let Some(error) = head.error {
            self.state.configs.rejected(
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
            self.persist_config_status().await;
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
                let specs = ManifestSpec::from_config(&loaded.config, &self.project);
                let (destinations, refused) = tether_notify::notifications::AgentDestinations::of(
                    &self.agent,
                    &self.project,
                    &loaded.config.notifications,
                );
                for reason in &refused {
                    tracing::warn!("{reason}");
                }
                let new_here = self.state.configs.accepted(
                    &self.agent,
                    &commit,
                    loaded.warnings,
                    loaded.config,
                );
                self.state
                    .configs
                    .set_destinations(&self.agent, destinations, refused);
                // A connect storm of the same commit costs no writes: the
                // store already has what this kas accepted before.
                if new_here {
                    let stored = tether_store::StoredConfig {
                        commit: commit.clone(),
                        source: loaded.source,
                    };
                    if let Err(e) = self.store.set_agent_config(&self.agent, stored).await {
                        tracing::error!(error = ?e, "cannot store the agent's config");
                    }
                }
                self.specs = specs;
                if commit != self.sent_commit {
                    let message = ServerMessage {
                        message: Some(server_message::Message::Configuration(loaded.message)),
                    };
                    self.send(message).await?;
                    self.state.metrics.configs_sent.inc();
                    tracing::info!(commit = %commit, "configuration sent");
                    self.sent_commit = commit;
                }
                self.follow_allowed().await;
            }
            Err(problem) => {
                tracing::warn!(
                    commit = %commit,
                    file = problem.file.as_deref().unwrap_or_default(),
                    line = problem.line,
                    error = %problem.message,
                    "config not sent: it does not validate"
                );
                self.state.metrics.configs_rejected.inc();
                self.state.configs.rejected(&self.agent, problem);
                self.persist_config_status().await;
            }
        }
        Ok(())
    }

    /// Follows the manifest projects the agent may read (see [`policy`]);
    /// the others are errors on the agent's config status, and nothing of
    /// them reaches the agent.
    async fn follow_allowed(&mut self) {
        let granted = match self
            .store
            .list_manifest_grants(None, Some(&self.agent))
            .await
        {
            Ok(grants) => grants.into_iter().map(|g| g.project).collect(),
            Err(e) => {
                // Without the grants, follow only what needs none.
                tracing::error!(error = ?e, "cannot read manifest grants");
                Default::default()
            }
        };
        let mut allowed = Vec::new();
        let mut refused = Vec::new();
        for spec in &self.specs {
            match policy::may_read(&self.agent, &self.project, &spec.project, &granted) {
                Ok(()) => allowed.push(spec.clone()),
                Err(reason) => {
                    tracing::warn!(project = %spec.project, "{reason}");
                    refused.push(reason.to_string());
                }
            }
        }
        self.state
            .configs
            .set_manifest_refusals(&self.agent, refused);
        self.persist_config_status().await;
        self.follow_manifests(allowed);
    }

    /// The agent's cluster serves other API versions now (a CRD came or
    /// went): charts and kustomizations are rendered again with them and
    /// sent, whatever the agent synced.
    fn cluster_changed(&mut self, info: v1::ClusterInfo) {
        let versions = manifests::api_versions(info.api_versions);
        if versions == self.rendering.api_versions {
            return;
        }
        tracing::info!(
            api_versions = versions.len(),
            "the agent's cluster serves other API versions"
        );
        self.registration.set_api_versions(versions.clone());
        self.rendering.api_versions = versions;
        let followers = std::mem::take(&mut self.followers);
        for follower in followers {
            if !follower.spec.renders() {
                self.followers.push(follower);
                continue;
            }
            let spec = follower.spec.clone();
            drop(follower);
            self.followers.push(manifests::follow(
                &self.repos,
                spec,
                None,
                self.rendering.clone(),
                self.recipient(),
            ));
        }
    }

    /// Where followers send, and on whose behalf.
    fn recipient(&self) -> manifests::Recipient {
        manifests::Recipient {
            tx: self.tx.clone(),
            agent: self.agent.to_string(),
            statuses: self.statuses.clone(),
            sent: self.sent.clone(),
            traces: self.traces.clone(),
            fleet: self.fleet.clone(),
        }
    }

    /// Keeps one follower per manifest project: unchanged specs keep theirs,
    /// new or changed ones start afresh (a changed glob may select other
    /// files at the same commit, so the agent's synced commit says nothing).
    fn follow_manifests(&mut self, specs: Vec<ManifestSpec>) {
        self.sent
            .retain_projects(|project| specs.iter().any(|s| s.project == project));
        self.traces
            .retain_projects(|project| specs.iter().any(|s| s.project == project));
        self.state
            .metrics
            .syncs
            .retain_projects(&self.agent, |project| {
                specs.iter().any(|s| s.project == project)
            });
        // A project the config no longer names: rollouts stop counting
        // the agent among its followers.
        for gone in self
            .followers
            .iter()
            .filter(|f| !specs.iter().any(|s| s.project == f.spec.project))
        {
            let (fleet, project, agent) = (
                self.fleet.clone(),
                gone.spec.project.clone(),
                self.agent.to_string(),
            );
            self.repos.drain().spawn(async move {
                fleet.forget_given(&project, &agent).await;
            });
        }
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
                self.rendering.clone(),
                self.recipient(),
            ));
        }
        // What is left in `old` stops as it drops.
    }

    /// Queues `message` for the agent. An agent that does not read for
    /// the send timeout is dropped rather than allowed to pin its session.
    async fn send(&self, message: ServerMessage) -> Result<(), outbound::NotSent> {
        outbound::send(&self.tx, message).await
    }
}
