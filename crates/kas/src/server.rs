//! `kas serve` as a value: [`Server::run`] opens the store, starts every
//! listener and background task, and owns them until the drain signal, when
//! each stops accepting, finishes what is in flight within its grace, and
//! returns. Nothing kas runs outlives it.
//!
//! The tasks: the REST API, the admin listener (health, metrics), the agent
//! endpoint (sessions and tunnels), the Kubernetes API proxy; with a shared
//! database, the change-feed follower; with replicas, the private listener,
//! the tunnel tracker and the announcer of new git heads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tether_runtime::Shutdown;
use tether_store::{ChangeFeed, PgStore, ReplicaId, Replicas, Sealer, SqliteStore, Store};

use crate::changes::{Change, Changes};
use crate::metrics::Metrics;
use crate::settings::{Database, Settings};
use crate::{admin, admin_token, api, listen, proxy};
use tether_channel::repos::Repos;
use tether_channel::{AgentChannelService, ChannelState};
use tether_replicas as replicas;

/// How long kas waits, once its listeners are closed, for the tasks on its
/// drain (sessions telling agents to move, pollers, queued statuses and
/// notices): within Kubernetes' default grace period of 30 s.
const DRAIN_TASKS: Duration = Duration::from_secs(20);

/// kas's records, and with PostgreSQL, what the replicas share through it.
struct Stores {
    store: Arc<dyn Store>,
    feed: Option<Arc<dyn ChangeFeed>>,
    replicas: Option<Arc<dyn Replicas>>,
}

async fn open(database: &Database, sealer: Sealer) -> anyhow::Result<Stores> {
    Ok(match database {
        Database::Sqlite(path) => Stores {
            store: Arc::new(
                SqliteStore::open(path)
                    .with_context(|| format!("cannot open database {}", path.display()))?
                    .sealed_with(sealer),
            ),
            feed: None,
            replicas: None,
        },
        Database::Postgres(url) => {
            let pg = Arc::new(
                PgStore::connect(url)
                    .await
                    .with_context(|| format!("cannot open database {}", database.describe()))?
                    .sealed_with(sealer),
            );
            Stores {
                store: pg.clone(),
                feed: Some(pg.clone()),
                replicas: Some(pg),
            }
        }
    })
}

/// The data folder: the SQLite database, the admin token, git mirrors and
/// the development certificate. kas's user only.
#[derive(Clone, Debug)]
pub struct DataDir(std::path::PathBuf);

impl DataDir {
    pub fn create(path: &std::path::Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create data folder {}", path.display()))?;
        // It holds token hashes and the admin token.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .with_context(|| format!("cannot restrict data folder {}", path.display()))?;
        Ok(DataDir(path.to_owned()))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn git_mirrors(&self) -> std::path::PathBuf {
        self.0.join("git-mirrors")
    }

    pub fn development_ca(&self) -> std::path::PathBuf {
        self.0.join("agent-ca.crt")
    }
}

/// A running kas.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Runs kas with `settings` until `shutdown`, then drains.
    pub async fn run(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
        let data = DataDir::create(&settings.data_dir)?;
        let Stores {
            store,
            feed,
            replicas,
        } = open(&settings.database, secrets_sealer(&settings, data.path())?).await?;
        if settings.database.is_shared() && settings.tls.is_none() {
            tracing::warn!(
                "the database is shared with other kas replicas, but no --tls-cert/--tls-key is given: \
                 this kas generates a development CA of its own, which agents and clients of the other \
                 replicas do not trust; give every replica the same certificate"
            );
        }
        let admin_token = admin_token::load_or_create(&settings.admin_token_file)?;
        let metrics = Metrics::default();
        // The agent endpoint's parts, each handed below to what needs it.
        // Every long task of kas runs on this drain; it is waited for below.
        let drain = tether_runtime::Drain::new(shutdown.clone());
        let channel = ChannelState::new(metrics.channel.clone());
        let repos = Repos::new(
            store.clone(),
            data.git_mirrors(),
            settings.poll_interval,
            metrics.channel.clone(),
            drain.clone(),
        );
        // Without helm or kustomize kas still serves plain manifests; a
        // project that asks for a render is told why there is none.
        let tools = render_tools(&settings.render).await;
        if settings.render.limits.sandbox == tether_render::SandboxMode::Off {
            tracing::warn!(
                "--render-sandbox=off: helm and kustomize run without the kernel's sandbox; a tenant's \
                 chart or kustomization can read kas's files and reach its network"
            );
        }
        let renderer = match tether_render::Renderer::new(
            settings.render.clone(),
            &tools,
            metrics.render.clone(),
        ) {
            Ok(renderer) => {
                tracing::info!(
                    tools = renderer.versions(),
                    "rendering charts and kustomizations"
                );
                Ok(Arc::new(renderer))
            }
            Err(e) => {
                tracing::warn!(error = %e, "charts and kustomizations cannot be rendered");
                Err(e)
            }
        };
        let sandbox = match (settings.render.limits.sandbox, &renderer) {
            (tether_render::SandboxMode::Off, _) => "off (--render-sandbox=off)".to_owned(),
            (_, Ok(_)) => match tether_render::sandbox::kernel::landlock_abi() {
                Ok(abi) => format!("kernel (Landlock ABI {abi}, seccomp)"),
                Err(e) => e.to_string(),
            },
            (_, Err(e)) => format!("no renders: {e}"),
        };
        let database: admin::Check = {
            let store = store.clone();
            Arc::new(move || {
                let store = store.clone();
                Box::pin(async move {
                    store
                        .admin_token()
                        .await
                        .map(|_| "answers".to_owned())
                        .map_err(|e| e.to_string())
                })
            })
        };
        let readiness = admin::Readiness::default()
            .with_check("database", database)
            .with_detail("render-tools", tools.summary())
            .with_detail("render-sandbox", sandbox)
            .with_detail("egress", settings.render.egress.to_string());
        let identity = crate::listen::identity::load_or_generate(
            settings.tls.as_ref().map(|(cert, _)| cert.as_path()),
            settings.tls.as_ref().map(|(_, key)| key.as_path()),
            &settings.hostnames,
            data.path(),
        )?;
        let ca_path = match (&settings.tls, &settings.tls_ca) {
            (_, Some(ca)) => Some(ca.clone()),
            (None, None) => Some(data.development_ca()),
            (Some(_), None) => None,
        };
        let ca_pem = ca_path
            .map(|p| {
                std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read CA {}", p.display()))
            })
            .transpose()?;
        let router = match (&settings.replication, &replicas) {
            (Some(replication), Some(replicas)) => {
                let me = ReplicaId {
                    id: format!("{:032x}", rand::random::<u128>()),
                    url: replication.url.clone(),
                };
                tracing::info!(replica = %me.id, url = %me.url, "running as one of several kas replicas");
                Some(replicas::router::Router::new(
                    replicas.clone(),
                    me,
                    replication.secret.clone(),
                    replication.tunnel_wait,
                    ca_pem.as_deref().map(str::as_bytes),
                    &identity.cert_pem,
                    drain.clone(),
                )?)
            }
            _ => None,
        };
        let proxy = Arc::new(tether_proxy::Proxy {
            oidc: tether_proxy::oidc::Oidc::new(settings.oidc_issuers.clone())?,
            ca_pem,
            elsewhere: router
                .clone()
                .map(|r| r as Arc<dyn tether_proxy::Elsewhere>),
            ..proxy::over(
                channel.tunnels.clone(),
                channel.configs.clone(),
                store.clone(),
                settings.k8s_proxy_external_url.clone(),
                metrics.proxy.clone(),
                shutdown.clone(),
            )
        });
        let mut changes = Changes::new(
            channel.live(),
            channel.control(),
            proxy.clone(),
            store.clone(),
        )
        .with_repos(repos.clone());
        if let Some(router) = &router {
            changes = changes.with_router(router.clone());
        }
        let mut readiness = readiness.with_check("listeners", listeners_check(&settings));
        if let Some(feed) = feed {
            changes = changes.with_feed(feed);
            let following = changes.following();
            readiness = readiness.with_check(
                "change-feed",
                Arc::new(move || {
                    let following = following.load(std::sync::atomic::Ordering::SeqCst);
                    Box::pin(async move {
                        match following {
                            true => Ok("following the other kas processes".to_owned()),
                            false => {
                                Err("not following the other kas processes' changes".to_owned())
                            }
                        }
                    })
                }),
            );
            drain.spawn(changes.clone().follow(shutdown.clone()));
            drain.spawn(crate::ui::tell_replicas(
                channel.live(),
                changes.clone(),
                shutdown.clone(),
            ));
        }
        if let Some(router) = &router {
            let heads = repos.share_with(router.replicas().clone(), router.me().clone());
            drain.spawn(announce(heads, changes.clone(), shutdown.clone(), |head| {
                Change::NewHead {
                    project: head.project,
                    commit: head.commit,
                }
            }));
            let (tunnels_up, up) = tokio::sync::mpsc::channel(replicas::tracker::ANNOUNCE_BUFFER);
            drain.spawn(announce(up, changes.clone(), shutdown.clone(), |agent| {
                Change::TunnelsUp { agent }
            }));
            drain.spawn(replicas::tracker::run(
                router.clone(),
                channel.tunnels.clone(),
                tunnels_up,
                shutdown.clone(),
            ));
        }
        let notifier = tether_notify::notifications::Notifier::new(
            store.clone(),
            settings.notifications.clone(),
            settings.notify_disconnected_after,
            None,
            drain.clone(),
        )?;
        if let Some(router) = &router {
            let router = router.clone();
            notifier.set_elsewhere(Arc::new(move |agent: String| {
                let router = router.clone();
                Box::pin(async move { router.tunnels_elsewhere().await.contains_key(&agent) })
            }));
        }
        {
            // One replica checks token expiry (the lease of a pseudo
            // project); a single kas always does.
            let router = router.clone();
            let lead = move || {
                let router = router.clone();
                async move {
                    match &router {
                        None => true,
                        Some(r) => r
                            .replicas()
                            .lead_poll(
                                "tether:notify-token-expiry",
                                r.me(),
                                Duration::from_secs(7200),
                            )
                            .await
                            .unwrap_or(false),
                    }
                }
            };
            let configs = channel.configs.clone();
            let destinations_of = move |agent: &str| configs.destinations(agent);
            drain.spawn(notifier.clone().watch_token_expiry(
                destinations_of,
                lead,
                shutdown.clone(),
            ));
        }
        let admin =
            admin_token::AdminAuth::start(store.clone(), &settings.admin_token_file, &admin_token)
                .await?;
        let sessions = ui_sessions(&settings, data.path())?;
        let state = api::ApiState {
            store: store.clone(),
            admin,
            ui_sessions: sessions.clone(),
            live: channel.live(),
            configs: channel.configs.clone(),
            tunnels: channel.tunnels.clone(),
            plans: channel.plans.clone(),
            agent_external_address: settings.agent_external_address.clone(),
            repos: repos.clone(),
            drain: drain.clone(),
            changes: changes.clone(),
            proxy: proxy.clone(),
            renderer: renderer.clone(),
            router: router.clone(),
            webhook_limiter: std::sync::Arc::default(),
            webhook_sources: std::sync::Arc::new(tether_webhooks::Limiter::per_source()),
        };
        let ui = crate::ui::UiState {
            api: state.clone(),
            sessions,
            streams: Arc::new(tokio::sync::Semaphore::new(crate::ui::MAX_EVENT_STREAMS)),
            // As the API listener below decides.
            api_scheme: match settings.api_listen.ip().is_loopback() {
                true => "http",
                false => "https",
            },
        };
        drop(admin_token);
        let private = match (&settings.replication, &router) {
            (Some(replication), Some(router)) => Some(proxy::private::serve(
                replication.listen,
                identity.acceptor()?,
                proxy.clone(),
                router.clone(),
                api::router(state.clone()),
                shutdown.clone(),
            )),
            _ => None,
        };
        let private = async move {
            match private {
                Some(serving) => serving.await,
                None => Ok(()),
            }
        };
        let k8s_proxy = proxy::serve(
            settings.k8s_proxy_listen,
            identity.acceptor()?,
            proxy,
            shutdown.clone(),
        );
        // The REST API carries the admin token: beyond loopback it is
        // served over TLS only, with the agent endpoint's certificate.
        let api_tls = match settings.api_listen.ip().is_loopback() {
            true => None,
            false => Some(identity.acceptor()?),
        };
        let api = listen::http::serve(
            "api",
            settings.api_listen,
            api_tls,
            listen::caps::API,
            shutdown.clone(),
            listen::http::router_service(api::router(state).merge(crate::ui::router(ui))),
        );
        let health = listen::http::serve(
            "admin",
            settings.admin_listen,
            None,
            listen::caps::ADMIN,
            shutdown.clone(),
            listen::http::router_service(admin::router(metrics, readiness)),
        );
        let agents = serve_agents(
            settings.agent_listen,
            identity,
            AgentChannelService::new(store.clone(), channel, repos, drain.clone())
                .with_renderer(renderer)
                .with_statuses(tether_notify::statuses::Statuses::new(
                    store,
                    None,
                    drain.clone(),
                )?)
                .with_notifier(notifier),
            drain.clone(),
        );
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            data = %data.path().display(),
            database = %settings.database.describe(),
            "kas started"
        );
        let served = tokio::try_join!(api, health, agents, k8s_proxy, private);
        // The listeners are done; every task on the drain saw the same
        // signal and ends, or hands over what it holds (queued statuses and
        // notices are sent), within the grace period.
        let running = drain.running();
        match drain.wait(DRAIN_TASKS).await {
            0 => tracing::info!(tasks = running, "every task ended"),
            left => tracing::warn!(
                left,
                "tasks still running at exit: the grace period is over"
            ),
        }
        served?;
        tracing::info!("kas stopped");
        Ok(())
    }
}

/// A live check that every listener accepts connections: a TCP connect to
/// each configured address (the loopback address of its family when it
/// listens on all; one with port 0 is not checked).
fn listeners_check(settings: &Settings) -> admin::Check {
    let mut listeners = vec![
        ("api", settings.api_listen),
        ("agent", settings.agent_listen),
        ("k8s-proxy", settings.k8s_proxy_listen),
    ];
    if let Some(replication) = &settings.replication {
        listeners.push(("private", replication.listen));
    }
    let listeners: Vec<(&'static str, std::net::SocketAddr)> = listeners
        .into_iter()
        .filter(|(_, addr)| addr.port() != 0)
        .map(|(name, mut addr)| {
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            (name, addr)
        })
        .collect();
    let listeners = Arc::new(listeners);
    Arc::new(move || {
        let listeners = listeners.clone();
        Box::pin(async move {
            for (name, addr) in listeners.iter() {
                if tokio::net::TcpStream::connect(addr).await.is_err() {
                    return Err(format!(
                        "the {name} listener ({addr}) accepts no connection"
                    ));
                }
            }
            let names: Vec<&str> = listeners.iter().map(|(name, _)| *name).collect();
            Ok(names.join(", "))
        })
    })
}

/// helm and kustomize as `settings` name them, resolved on kas's own
/// `PATH` once, each logged with its path and version, or with why it
/// cannot be used.
async fn render_tools(settings: &tether_render::Settings) -> tether_render::RenderTools {
    let (helm, kustomize) = settings.wanted();
    let search = std::env::var_os("PATH");
    let tools = tether_render::RenderTools::resolve(helm, kustomize, search.as_deref()).await;
    for (name, tool) in [("helm", &tools.helm), ("kustomize", &tools.kustomize)] {
        match tool {
            Ok(tool) => tracing::info!(
                tool = name,
                path = %tool.path.display(),
                target = tool.target.as_ref().map(|t| t.display().to_string()),
                version = %tool.version,
                "render tool found"
            ),
            Err(e) => tracing::warn!(tool = name, error = %e, "render tool cannot be used"),
        }
    }
    tools
}

/// Announces what this replica found (new git heads, new tunnels) to the
/// others, as changes.
async fn announce<T>(
    mut found: tokio::sync::mpsc::Receiver<T>,
    changes: Changes,
    mut stop: Shutdown,
    change: impl Fn(T) -> Change,
) {
    loop {
        let next = tokio::select! {
            next = found.recv() => match next { Some(next) => next, None => return },
            _ = stop.signalled() => return,
        };
        changes.apply(change(next)).await;
    }
}

/// Serves the agent endpoint, gRPC over TLS and over WebSocket on the same
/// port, until the drain signal.
async fn serve_agents(
    addr: SocketAddr,
    identity: crate::listen::identity::ServingIdentity,
    service: AgentChannelService,
    drain: tether_runtime::Drain,
) -> anyhow::Result<()> {
    use tonic::transport::Server;
    let acceptor = identity.acceptor()?;
    let listener = listen::bind("agent", addr).await?;
    let incoming =
        listen::agent::incoming(listener, acceptor, service.tunnel_gate(), drain.clone());
    let mut signal = drain.signal();
    Server::builder()
        // An agent behind a silent partition sends no FIN: a PING after
        // 5 s without a frame, unanswered for 5 s more, ends its connection,
        // and with it the session, within 10 s (not the 30 s of the
        // session's own silence deadline). The same figures as agentk's
        // and the tunnels'. Adaptive windows keep the data queued ahead of
        // a PING to about one round trip, so a slow link streaming a big
        // report is not taken for a dead one.
        .http2_keepalive_interval(Some(tether_tunnel::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(tether_tunnel::KEEPALIVE_TIMEOUT))
        .http2_adaptive_window(Some(true))
        // agentk opens one session per connection; more is a client
        // pinning kas's memory.
        .max_concurrent_streams(Some(tether_channel::service::MAX_STREAMS_PER_CONNECTION))
        .add_service(tether_proto::v1::agent_channel_server::AgentChannelServer::new(service))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(incoming),
            async move { signal.signalled().await },
        )
        .await
        .context("agent listener failed")
}

/// The web UI's session signer: with replicas, keyed by their shared
/// secret (a session opened on one replica is read on every one); alone,
/// by a random key kept in the data folder (sessions survive a restart).
/// What stored secrets are sealed with: `--secrets-key-file`; else, with
/// replicas, their shared secret (every replica opens what another
/// sealed); else a key in the data folder, made on first start.
fn secrets_sealer(settings: &Settings, data: &std::path::Path) -> anyhow::Result<Sealer> {
    let key = match (&settings.secrets_key_file, &settings.replication) {
        (Some(path), _) => {
            let key = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the secrets key {}", path.display()))?;
            anyhow::ensure!(
                key.trim().len() >= 32,
                "the secrets key {} is shorter than 32 characters",
                path.display()
            );
            key.trim().to_owned()
        }
        (None, Some(replication)) => replication.secret.expose().to_owned(),
        (None, None) => {
            let path = data.join("secrets-key");
            match std::fs::read_to_string(&path) {
                Ok(key) if key.trim().len() >= 32 => key.trim().to_owned(),
                _ => {
                    let key = tether_credentials::hex::random::<32>();
                    tether_runtime::files::write_private(&path, &key)?;
                    key
                }
            }
        }
    };
    Ok(Sealer::new(key.as_bytes()))
}

fn ui_sessions(
    settings: &Settings,
    data: &std::path::Path,
) -> anyhow::Result<crate::ui::session::Sessions> {
    if let Some(replication) = &settings.replication {
        return Ok(crate::ui::session::Sessions::new(
            replication.secret.expose().as_bytes(),
        ));
    }
    let path = data.join("ui-session-key");
    let key = match std::fs::read_to_string(&path) {
        Ok(key) if key.trim().len() >= 32 => key.trim().to_owned(),
        _ => {
            let key = tether_credentials::hex::random::<32>();
            tether_runtime::files::write_private(&path, &key)?;
            key
        }
    };
    Ok(crate::ui::session::Sessions::new(key.as_bytes()))
}
