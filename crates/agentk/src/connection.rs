//! The agent's side of the channel: dial kas, authenticate, keep one session
//! open, and reconnect with backoff whenever it ends (sooner once a
//! partition heals; see [`crate::backoff`]).

use std::error::Error as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tether_credentials::{Token, TokenKind};
use tether_proto::v1::agent_channel_client::AgentChannelClient;
use tether_proto::v1::{
    AgentMessage, ClusterInfo, ConfigApplied, Hello, Ping, PodIdentity, agent_message,
    server_message,
};
use tether_proto::{PROTOCOL_VERSION, v1};
use tether_runtime::Shutdown;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::backoff::{self, Ended, Reconnect};
use crate::transport::{self, DialError, KasAddress};

/// Where kas is and how to prove who we are.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub kas_address: KasAddress,
    pub token: TokenSource,
    pub ca_cert: Option<PathBuf>,
    pub cluster_version: String,
    /// What the cluster serves, kept current (see [`crate::cluster_info`]).
    pub api_versions: tokio::sync::watch::Receiver<crate::cluster_info::ApiVersions>,
    pub pod: PodIdentity,
    /// Set while a session is open, for the readiness probe.
    pub connected: crate::observability::Connected,
    /// The configuration last applied, kept across sessions.
    pub config: crate::config::ConfigState,
    /// Syncs manifests; its reports wait in `reports` for a session.
    pub gitops: crate::gitops::GitOps,
    pub reports: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<v1::SyncReport>>>,
}

/// Where the token comes from; read again before every connection, so that a
/// rotated token file takes effect without a restart.
#[derive(Clone, Debug)]
pub enum TokenSource {
    File(PathBuf),
    Env(String),
}

impl TokenSource {
    pub fn read(&self) -> anyhow::Result<Token> {
        let (text, origin) = match self {
            TokenSource::File(path) => (
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read token file {}", path.display()))?,
                format!("token file {}", path.display()),
            ),
            TokenSource::Env(var) => (
                std::env::var(var).with_context(|| format!("{var} is not set"))?,
                var.clone(),
            ),
        };
        Token::parse_kind(&text, TokenKind::Agent)
            .with_context(|| format!("{origin} holds no agent token"))
    }
}

/// How a session ended.
enum End {
    Shutdown,
    /// kas refused the token; retrying soon would only be refused again.
    Refused(String),
    /// kas is shutting down and asked for a reconnect, at once.
    Drained,
    /// Nothing answered at kas's address, or the session's connection fell
    /// silent: the network is down between us.
    Unreachable(anyhow::Error),
    Failed(anyhow::Error),
}

/// Keeps a session with kas open until shutdown.
pub async fn run(options: ConnectOptions, mut shutdown: Shutdown) {
    let mut reconnect = Reconnect::default();
    loop {
        let started = Instant::now();
        let end = tokio::select! {
            end = session(&options, shutdown.clone()) => end,
            _ = shutdown.signalled() => End::Shutdown,
        };
        let lasted = started.elapsed();
        let wait = match end {
            End::Shutdown => {
                options.connected.set(false);
                return;
            }
            End::Refused(reason) => {
                options.connected.ended(
                    "refused",
                    &format!("kas rejected the agent token: {reason}"),
                );
                let wait = reconnect.wait_after(Ended::Refused, lasted);
                tracing::error!(reason = %reason, retry_in = ?wait.at_most(), "kas rejected the agent token");
                wait
            }
            End::Unreachable(e) => {
                options
                    .connected
                    .ended("unreachable", &format!("kas is unreachable: {e:#}"));
                let wait = reconnect.wait_after(Ended::Unreachable, lasted);
                tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in = ?wait.at_most(),
                    "kas is unreachable; retrying as soon as its address answers"
                );
                wait
            }
            End::Failed(e) => {
                options
                    .connected
                    .ended("failed", &format!("the connection to kas failed: {e:#}"));
                let wait = reconnect.wait_after(Ended::Failed, lasted);
                tracing::warn!(error = format!("{e:#}"), retry_in = ?wait.at_most(), "connection to kas failed");
                wait
            }
            End::Drained => {
                options
                    .connected
                    .ended("drained", "kas is shutting down; reconnecting");
                let wait = reconnect.wait_after(Ended::Drained, lasted);
                tracing::info!(retry_in = ?wait.at_most(), "kas is shutting down; reconnecting");
                wait
            }
        };
        tokio::select! {
            waited = backoff::wait_out(wait, || options.kas_address.probe()) => {
                if waited == backoff::Waited::Reachable {
                    tracing::info!(kas = options.kas_address.display(), "kas answers again; reconnecting");
                }
            }
            _ = shutdown.signalled() => return,
        }
    }
}

/// A session's stream that failed after this long without a message from
/// kas died of its HTTP/2 keepalive: hyper gives up on a connection only
/// after a PING interval without a read and a PING timeout without its
/// answer. The stream's own error ("broken pipe") no longer says so.
const SILENT_AFTER: Duration = Duration::from_secs(
    tether_tunnel::KEEPALIVE_INTERVAL.as_secs() + tether_tunnel::KEEPALIVE_TIMEOUT.as_secs(),
);

async fn session(options: &ConnectOptions, mut shutdown: Shutdown) -> End {
    let mut heard = None;
    match open_session(options, &mut shutdown, &mut heard).await {
        Ok(end) => end,
        Err(e) => match e.downcast_ref::<tonic::Status>() {
            Some(status) if status.code() == tonic::Code::Unauthenticated => {
                End::Refused(status.message().to_owned())
            }
            Some(status) if tether_proto::is_draining(status) => End::Drained,
            // A status with a source was made here, from a transport
            // error; one kas sent has none.
            Some(status)
                if transport::went_silent(status)
                    || (status.source().is_some()
                        && heard.is_some_and(|at: Instant| at.elapsed() >= SILENT_AFTER)) =>
            {
                End::Unreachable(e.context("kas went silent"))
            }
            _ => End::Failed(e),
        },
    }
}

/// Runs one session; `heard` is when kas was last heard from on it.
async fn open_session(
    options: &ConnectOptions,
    shutdown: &mut Shutdown,
    heard: &mut Option<Instant>,
) -> anyhow::Result<End> {
    // Whatever the last session left half received, kas sends again whole.
    options.gitops.drop_partial_sets();
    let token = options.token.read()?;
    let channel = match options
        .kas_address
        .connect(options.ca_cert.as_deref())
        .await
    {
        Ok(channel) => channel,
        Err(DialError::Unreachable(e)) => return Ok(End::Unreachable(e)),
        Err(DialError::Failed(e)) => return Err(e),
        Err(refused @ DialError::Refused(_)) => return Err(refused.into()),
    };
    // A manifest file may be up to 5 MiB; kas sends larger files alone.
    let mut client = AgentChannelClient::new(channel).max_decoding_message_size(16 << 20);

    let (tx, rx) = mpsc::channel(16);
    let mut api_versions = options.api_versions.clone();
    let hello = AgentMessage {
        message: Some(agent_message::Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            pod: Some(options.pod.clone()),
            cluster_version: options.cluster_version.clone(),
            config_commit: options.config.commit(),
            synced: options.gitops.synced(),
            api_versions: api_versions.borrow_and_update().to_vec(),
        })),
    };
    tx.send(hello)
        .await
        .context("session closed before Hello")?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let bearer = format!("Bearer {}", token.expose_secret())
        .parse()
        .context("token is not a valid header value")?;
    request.metadata_mut().insert("authorization", bearer);
    let mut inbound = client
        .session(request)
        .await
        .map_err(anyhow::Error::new)?
        .into_inner();
    *heard = Some(Instant::now());

    let mut ping = tokio::time::interval(Duration::from_secs(10));
    ping.tick().await;
    let mut sequence = 0u64;
    let mut agent_name = String::new();
    // One session at a time holds the reports; a report made while no
    // session was open goes up with the next one.
    let mut reports = options.reports.lock().await;
    loop {
        tokio::select! {
            _ = shutdown.signalled() => return Ok(End::Shutdown),
            Some(report) = reports.recv() => {
                let message = AgentMessage { message: Some(agent_message::Message::SyncReport(report)) };
                if tx.send(message).await.is_err() {
                    bail!("session closed");
                }
            }
            Ok(()) = api_versions.changed() => {
                let versions = api_versions.borrow_and_update().to_vec();
                let message = AgentMessage { message: Some(agent_message::Message::ClusterInfo(ClusterInfo { api_versions: versions })) };
                if tx.send(message).await.is_err() {
                    bail!("session closed");
                }
            }
            _ = ping.tick() => {
                sequence += 1;
                let message = AgentMessage { message: Some(agent_message::Message::Ping(Ping { sequence })) };
                if tx.send(message).await.is_err() {
                    bail!("session closed");
                }
            }
            next = inbound.message() => match next.map_err(anyhow::Error::new)?.inspect(|_| *heard = Some(Instant::now())) {
                None => bail!("kas ended the session"),
                Some(message) => match message.message {
                    Some(server_message::Message::Welcome(welcome)) => {
                        if let Some(interval) = welcome.ping_interval.and_then(|d| u64::try_from(d.seconds).ok()) {
                            ping = tokio::time::interval(Duration::from_secs(interval.max(1)));
                            ping.tick().await;
                        }
                        options.connected.opened();
                        agent_name = welcome.agent_name.clone();
                        for report in options.gitops.last_reports() {
                            let message = AgentMessage { message: Some(agent_message::Message::SyncReport(report)) };
                            if tx.send(message).await.is_err() {
                                bail!("session closed");
                            }
                        }
                        tracing::info!(
                            agent = %welcome.agent_name,
                            agent_id = welcome.agent_id,
                            kas_version = %welcome.server_version,
                            kas = options.kas_address.display(),
                            "connected to kas"
                        );
                    }
                    Some(server_message::Message::Configuration(config)) => {
                        match options.config.apply(&config) {
                            Ok(()) => {
                                let applied = AgentMessage {
                                    message: Some(agent_message::Message::ConfigApplied(ConfigApplied {
                                        commit_id: config.commit_id,
                                    })),
                                };
                                if tx.send(applied).await.is_err() {
                                    bail!("session closed");
                                }
                            }
                            Err(e) => tracing::error!(commit = %config.commit_id, error = %e, "unusable configuration; keeping the last one"),
                        }
                    }
                    Some(server_message::Message::Manifests(manifests)) => {
                        options.gitops.receive(&agent_name, manifests);
                    }
                    Some(server_message::Message::PlanRequest(request)) => {
                        if let Some(plan) = options.gitops.receive_plan(&agent_name, request) {
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                let report = plan.await;
                                let _ = tx.send(AgentMessage { message: Some(agent_message::Message::PlanReport(report)) }).await;
                            });
                        }
                    }
                    Some(server_message::Message::Pong(_)) | None => {}
                },
            },
        }
    }
}
