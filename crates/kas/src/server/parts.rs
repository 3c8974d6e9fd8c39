//! The parts of a running kas that [`super::Server::run`] composes, each
//! built from the settings and the parts it needs, and nothing else.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tether_channel::ChannelState;
use tether_channel::repos::Repos;
use tether_replicas::router::Router;
use tether_runtime::{Drain, Shutdown};
use tether_store::{ReplicaId, Replicas, Store};

use crate::admin;
use crate::changes::{Change, Changes};
use crate::listen::identity::ServingIdentity;
use crate::metrics::Metrics;
use crate::settings::Settings;

use super::data::DataDir;

/// The renderer of charts and kustomizations, or why kas has none, and
/// what `/readyz?verbose` says of it.
#[derive(Debug)]
pub struct Rendering {
    pub renderer: Result<Arc<tether_render::Renderer>, String>,
    pub tools: String,
    pub sandbox: String,
}

/// Without helm or kustomize kas still serves plain manifests; a project
/// that asks for a render is told why there is none.
pub async fn rendering(settings: &Settings, metrics: &Metrics) -> Rendering {
    let tools = render_tools(&settings.render).await;
    if settings.render.limits.sandbox == tether_render::SandboxMode::Off {
        tracing::warn!(
            "--render-sandbox=off: helm and kustomize run without the kernel's sandbox; a tenant's \
             chart or kustomization can read kas's files and reach its network"
        );
    }
    let renderer =
        match tether_render::Renderer::new(settings.render.clone(), &tools, metrics.render.clone())
        {
            Ok(renderer) => {
                tracing::info!(
                    tools = renderer.versions(),
                    "rendering charts and kustomizations"
                );
                Ok(Arc::new(renderer))
            }
            Err(e) => {
                tracing::warn!(error = %e, "charts and kustomizations cannot be rendered");
                Err(e.to_string())
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
    Rendering {
        renderer,
        tools: tools.summary(),
        sandbox,
    }
}

/// Readiness: the database answers, every listener accepts; the details
/// `/readyz?verbose` shows.
pub fn readiness(
    settings: &Settings,
    store: &Arc<dyn Store>,
    rendering: &Rendering,
    bound: Vec<(&'static str, std::net::SocketAddr)>,
) -> admin::Readiness {
    let store = store.clone();
    let database: admin::Check = Arc::new(move || {
        let store = store.clone();
        Box::pin(async move {
            store
                .admin_token()
                .await
                .map(|_| "answers".to_owned())
                .map_err(|e| e.to_string())
        })
    });
    admin::Readiness::default()
        .with_check("database", database)
        .with_check("listeners", super::serve::listeners_check(bound))
        .with_detail("render-tools", rendering.tools.clone())
        .with_detail("render-sandbox", rendering.sandbox.clone())
        .with_detail("egress", settings.render.egress.to_string())
}

/// The CA kubeconfigs carry and replicas trust: `--tls-ca`, or the
/// development CA when kas made its own certificate.
pub fn ca_pem(settings: &Settings, data: &DataDir) -> anyhow::Result<Option<String>> {
    let path = match (&settings.tls, &settings.tls_ca) {
        (_, Some(ca)) => Some(ca.clone()),
        (None, None) => Some(data.development_ca()),
        (Some(_), None) => None,
    };
    path.map(|p| {
        std::fs::read_to_string(&p).with_context(|| format!("cannot read CA {}", p.display()))
    })
    .transpose()
}

/// With replicas: this replica's router to the others.
pub fn router(
    settings: &Settings,
    replicas: Option<&Arc<dyn Replicas>>,
    ca_pem: Option<&str>,
    identity: &ServingIdentity,
    drain: &Drain,
) -> anyhow::Result<Option<Arc<Router>>> {
    let (Some(replication), Some(replicas)) = (&settings.replication, replicas) else {
        return Ok(None);
    };
    let me = ReplicaId {
        id: format!("{:032x}", rand::random::<u128>()),
        url: replication.url.clone(),
    };
    tracing::info!(replica = %me.id, url = %me.url, "running as one of several kas replicas");
    Router::new(
        replicas.clone(),
        me,
        replication.secret.clone(),
        replication.tunnel_wait,
        ca_pem.map(str::as_bytes),
        &identity.cert_pem,
        drain.clone(),
    )
    .map(Some)
}

/// The Kubernetes API proxy over this kas's tunnels (and, with replicas,
/// the others').
pub fn proxy(
    settings: &Settings,
    channel: &ChannelState,
    store: &Arc<dyn Store>,
    metrics: &Metrics,
    ca_pem: Option<String>,
    router: Option<Arc<Router>>,
    shutdown: &Shutdown,
) -> anyhow::Result<tether_proxy::Proxy> {
    Ok(tether_proxy::Proxy {
        oidc: tether_proxy::oidc::Oidc::new(settings.oidc_issuers.clone())?,
        ca_pem,
        elsewhere: router.map(|r| r as Arc<dyn tether_proxy::Elsewhere>),
        ..crate::proxy::over(
            channel.tunnels.clone(),
            channel.configs.clone(),
            store.clone(),
            settings.k8s_proxy_external_url.clone(),
            metrics.proxy.clone(),
            shutdown.clone(),
        )
    })
}

/// With a shared database: follows the other kas processes' changes (kas
/// is not ready while it does not) and tells them of its own; with
/// replicas, announces new git heads and tunnels, and tracks its tunnels.
pub fn among_others(
    changes: &Changes,
    readiness: admin::Readiness,
    channel: &ChannelState,
    repos: &Repos,
    router: Option<&Arc<Router>>,
    drain: &Drain,
) -> admin::Readiness {
    let mut readiness = readiness;
    if changes.is_shared() {
        let following = changes.following();
        readiness = readiness.with_check(
            "change-feed",
            Arc::new(move || {
                let following = following.load(std::sync::atomic::Ordering::SeqCst);
                Box::pin(async move {
                    match following {
                        true => Ok("following the other kas processes".to_owned()),
                        false => Err("not following the other kas processes' changes".to_owned()),
                    }
                })
            }),
        );
        drain.spawn(changes.clone().follow(drain.signal()));
        drain.spawn(crate::ui::tell_replicas(
            channel.live(),
            changes.clone(),
            drain.signal(),
        ));
    }
    if let Some(router) = router {
        let heads = repos.share_with(router.replicas().clone(), router.me().clone());
        drain.spawn(announce(heads, changes.clone(), drain.signal(), |head| {
            Change::NewHead {
                project: head.project,
                commit: head.commit,
            }
        }));
        let (tunnels_up, up) =
            tokio::sync::mpsc::channel(tether_replicas::tracker::ANNOUNCE_BUFFER);
        drain.spawn(announce(up, changes.clone(), drain.signal(), |agent| {
            Change::TunnelsUp { agent }
        }));
        drain.spawn(tether_replicas::tracker::run(
            router.clone(),
            channel.tunnels.clone(),
            tunnels_up,
            drain.signal(),
        ));
    }
    readiness
}

/// Image automation, running on the drain (one replica at a time, by
/// lease), and the secret registries' notifications carry.
#[allow(clippy::too_many_arguments)]
pub fn images(
    settings: &Settings,
    metrics: &Metrics,
    store: &Arc<dyn Store>,
    repos: &Arc<Repos>,
    channel: &ChannelState,
    notifier: &tether_notify::notifications::Notifier,
    router: Option<&Arc<Router>>,
    data: &DataDir,
    drain: &Drain,
) -> anyhow::Result<(Arc<tether_images::service::Service>, Option<Arc<str>>)> {
    let projects = Arc::new(tether_channel::followed::Followed::new(
        store.clone(),
        repos.clone(),
    ));
    let mut service = tether_images::service::Service::new(
        store.clone(),
        projects,
        tether_images::registry::Registries::new(settings.render.egress.clone()),
        tether_images::service::Settings {
            interval: settings.image_scan_interval,
            work: data.path().join("image-updates"),
            git_timeout: tether_git::DEFAULT_FETCH_TIMEOUT,
        },
    );
    if let Some(router) = router {
        service = service.with_peers(router.replicas().clone(), router.me().clone());
    }
    let (events, told) = tokio::sync::mpsc::channel(tether_images::service::EVENTS);
    let service = Arc::new(
        service
            .with_metrics(metrics.images.clone())
            .with_events(events),
    );
    drain.spawn(tell_image_events(
        told,
        store.clone(),
        channel.configs.clone(),
        notifier.clone(),
        drain.signal(),
    ));
    drain.spawn(service.clone().run(drain.clone()));
    let secret = match &settings.registry_hook_secret_file {
        None => None,
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| {
                format!("cannot read the registry hook secret {}", file.display())
            })?;
            let secret = text.trim();
            anyhow::ensure!(
                secret.len() >= 16,
                "the registry hook secret in {} must be at least 16 characters",
                file.display()
            );
            Some(Arc::from(secret))
        }
    };
    Ok((service, secret))
}

/// Image automation's updates and failures, told to the destinations of
/// the agents configured in the project (`image_updated`,
/// `image_update_failed`) and kas-wide ones.
async fn tell_image_events(
    mut told: tokio::sync::mpsc::Receiver<tether_images::service::ImageEvent>,
    store: Arc<dyn Store>,
    configs: Arc<tether_channel::configs::AgentConfigs>,
    notifier: tether_notify::notifications::Notifier,
    mut signal: Shutdown,
) {
    use tether_agent_config::NotificationEvent;
    use tether_images::service::ImageEvent;
    use tether_notify::notifications::{AgentDestinations, Notice};
    loop {
        let event = tokio::select! {
            event = told.recv() => match event { Some(event) => event, None => return },
            _ = signal.signalled() => return,
        };
        let (event, project, commit, message) = match event {
            ImageEvent::Updated {
                project,
                commit,
                branch,
                changes,
                pull_request,
            } => {
                let mut message = format!("{} on {branch}", changes.join(", "));
                if let Some(url) = pull_request {
                    message.push_str(&format!(" · {url}"));
                }
                (NotificationEvent::ImageUpdated, project, commit, message)
            }
            ImageEvent::Failed { project, error } => (
                NotificationEvent::ImageUpdateFailed,
                project,
                String::new(),
                error,
            ),
        };
        let agents = store.list_agents().await.unwrap_or_default();
        for agent in agents.iter().filter(|a| a.config_project == project) {
            let named = configs
                .in_use(&agent.name)
                .map(|c| c.notifications.clone())
                .unwrap_or_default();
            let (own, _) = AgentDestinations::of(&agent.name, &agent.config_project, &named);
            notifier.notify(
                &own,
                Notice {
                    event,
                    agent: agent.name.clone(),
                    project: project.clone(),
                    commit: commit.clone(),
                    object: String::new(),
                    message: message.clone(),
                },
            );
        }
    }
}

/// Notifications, with (on one replica) the hourly check of tokens about
/// to expire.
pub fn notifier(
    settings: &Settings,
    store: &Arc<dyn Store>,
    channel: &ChannelState,
    router: Option<&Arc<Router>>,
    drain: &Drain,
) -> anyhow::Result<tether_notify::notifications::Notifier> {
    let notifier = tether_notify::notifications::Notifier::new(
        store.clone(),
        settings.notifications.clone(),
        settings.notify_disconnected_after,
        None,
        drain.clone(),
    )?;
    if let Some(router) = router {
        let router = router.clone();
        notifier.set_elsewhere(Arc::new(move |agent: String| {
            let router = router.clone();
            Box::pin(async move { router.tunnels_elsewhere().await.contains_key(&agent) })
        }));
    }
    // One replica checks token expiry (the lease of a pseudo project); a
    // single kas always does.
    let router = router.cloned();
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
    drain.spawn(
        notifier
            .clone()
            .watch_token_expiry(destinations_of, lead, drain.signal()),
    );
    Ok(notifier)
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

/// Fleet rollouts: the driver (one replica at a time, by lease) and what
/// rollouts tell, to the notifications of the agents they reach and the
/// commit status `tether/rollout`.
#[allow(clippy::too_many_arguments)]
pub fn rollouts(
    fleet: &Arc<tether_rollouts::Fleet>,
    store: &Arc<dyn Store>,
    repos: &Arc<Repos>,
    channel: &ChannelState,
    notifier: &tether_notify::notifications::Notifier,
    statuses: &tether_notify::statuses::Statuses,
    changes: &Changes,
    router: Option<&Arc<Router>>,
    metrics: &Metrics,
    drain: &Drain,
) {
    let heads = Arc::new(tether_channel::followed::Followed::new(
        store.clone(),
        repos.clone(),
    ));
    let mut driver = tether_rollouts::driver::Driver::new(store.clone(), fleet.clone(), heads)
        .with_metrics(metrics.rollouts.clone());
    if let Some(router) = router {
        driver = driver.with_peers(router.replicas().clone(), router.me().clone());
    }
    let (tell, mut told_changes) = tokio::sync::mpsc::channel::<String>(256);
    let mut driver = driver.with_publish(Arc::new(move |project| {
        // Dropped when full: the others reload every few seconds anyway.
        let _ = tell.try_send(project);
    }));
    let told = driver.telling();
    let others = changes.clone();
    let mut stop = drain.signal();
    drain.spawn(async move {
        loop {
            let project = tokio::select! {
                p = told_changes.recv() => match p { Some(p) => p, None => return },
                _ = stop.signalled() => return,
            };
            others.tell_others(Change::FleetChanged { project }).await;
        }
    });
    drain.spawn(tell_rollout_events(
        told,
        store.clone(),
        channel.configs.clone(),
        notifier.clone(),
        statuses.clone(),
        drain.signal(),
    ));
    drain.spawn(driver.run(drain.signal()));
}

/// A rollout's events as the commit status `tether/rollout` and as
/// notifications: once to each destination the rollout's agents name,
/// and once to kas's own.
async fn tell_rollout_events(
    mut told: tokio::sync::mpsc::Receiver<tether_rollouts::driver::Told>,
    store: Arc<dyn Store>,
    configs: Arc<tether_channel::configs::AgentConfigs>,
    notifier: tether_notify::notifications::Notifier,
    statuses: tether_notify::statuses::Statuses,
    mut signal: Shutdown,
) {
    use tether_agent_config::NotificationEvent;
    use tether_notify::notifications::{AgentDestinations, Notice};
    use tether_notify::statuses::{State, StatusEvent};
    use tether_rollouts::advance::Event;
    loop {
        let told = tokio::select! {
            told = told.recv() => match told { Some(told) => told, None => return },
            _ = signal.signalled() => return,
        };
        let (event, state, message) = match &told.event {
            Event::Started => (
                NotificationEvent::RolloutStarted,
                State::Pending,
                told.summary.clone(),
            ),
            Event::WavePassed { wave } => (
                NotificationEvent::WavePassed,
                State::Pending,
                format!("wave {wave} passed · {}", told.summary),
            ),
            Event::Halted { failure } => (
                NotificationEvent::RolloutHalted,
                State::Failure,
                format!("halted: {failure}"),
            ),
            Event::RolledBack { why } => (
                NotificationEvent::RolloutRolledBack,
                State::Failure,
                format!("rolled back: {why}"),
            ),
            Event::Completed => (
                NotificationEvent::RolloutCompleted,
                State::Success,
                told.summary.clone(),
            ),
        };
        statuses.report(StatusEvent {
            project: told.project.clone(),
            commit: told.commit.clone(),
            agent: "rollout".to_owned(),
            state,
            description: message.clone(),
        });
        let agents = store.list_agents().await.unwrap_or_default();
        // A failure names another tenant's agent, object and error: told
        // in full to kas's own destinations and to those of agents of the
        // failing agent's top-level group; to the others, that a wave
        // failed.
        let group = |project: &str| project.split('/').next().unwrap_or_default().to_owned();
        let failing_group = told.failure.as_ref().and_then(|f| {
            agents
                .iter()
                .find(|a| a.name == f.agent)
                .map(|a| group(&a.config_project))
        });
        let redacted = match (&told.event, &told.failure) {
            (Event::Halted { .. }, Some(f)) => format!("halted: wave {} failed", f.wave),
            (Event::RolledBack { .. }, Some(f)) => {
                format!("rolled back: wave {} failed", f.wave)
            }
            _ => message.clone(),
        };
        let mut sent = std::collections::HashSet::new();
        let mut first = true;
        for agent in agents.iter().filter(|a| told.agents.contains(&a.name)) {
            let told_here = match &failing_group {
                Some(g) if *g != group(&agent.config_project) => redacted.clone(),
                _ => message.clone(),
            };
            let named = configs
                .in_use(&agent.name)
                .map(|c| c.notifications.clone())
                .unwrap_or_default();
            let (own, _) = AgentDestinations::of(&agent.name, &agent.config_project, &named);
            let own = own.not_in(&mut sent);
            let notice = |message: &str| Notice {
                event,
                agent: agent.name.clone(),
                project: told.project.clone(),
                commit: told.commit.clone(),
                object: String::new(),
                message: message.to_owned(),
            };
            // kas's own destinations once, in full.
            if std::mem::take(&mut first) {
                notifier.notify(&AgentDestinations::default(), notice(&message));
            }
            if !own.as_slice().is_empty() {
                notifier.notify_own(&own, notice(&told_here));
            }
        }
    }
}

/// Verdicts on heads of projects under a signature policy: the commit
/// status `tether/verify` (success with the signer, failure with why),
/// and, for a refused one, `commit_unverified` to kas's destinations and
/// to those of every agent that follows the project.
pub fn verdicts(
    repos: &Arc<Repos>,
    store: &Arc<dyn Store>,
    channel: &ChannelState,
    notifier: &tether_notify::notifications::Notifier,
    statuses: &tether_notify::statuses::Statuses,
    drain: &Drain,
) {
    drain.spawn(tell_verdicts(
        repos.verdicts(),
        store.clone(),
        channel.configs.clone(),
        notifier.clone(),
        statuses.clone(),
        drain.signal(),
    ));
}

async fn tell_verdicts(
    mut told: tokio::sync::mpsc::Receiver<tether_channel::repos::Verdict>,
    store: Arc<dyn Store>,
    configs: Arc<tether_channel::configs::AgentConfigs>,
    notifier: tether_notify::notifications::Notifier,
    statuses: tether_notify::statuses::Statuses,
    mut signal: Shutdown,
) {
    use tether_agent_config::NotificationEvent;
    use tether_notify::notifications::{AgentDestinations, Notice};
    use tether_notify::statuses::{State, StatusEvent};
    loop {
        let verdict = tokio::select! {
            told = told.recv() => match told { Some(told) => told, None => return },
            _ = signal.signalled() => return,
        };
        let (state, description) = match &verdict.outcome {
            Ok(signer) => (State::Success, format!("signed: {signer}")),
            Err(reason) => (State::Failure, format!("refused: {reason}")),
        };
        statuses.report(StatusEvent {
            project: verdict.project.clone(),
            commit: verdict.commit.clone(),
            agent: "verify".to_owned(),
            state,
            description,
        });
        let Err(reason) = &verdict.outcome else {
            continue;
        };
        let notice = |agent: &str| Notice {
            event: NotificationEvent::CommitUnverified,
            agent: agent.to_owned(),
            project: verdict.project.clone(),
            commit: verdict.commit.clone(),
            object: String::new(),
            message: format!("not given to agents, which keep the last verified commit: {reason}"),
        };
        notifier.notify(&AgentDestinations::default(), notice("(all)"));
        let agents = store.list_agents().await.unwrap_or_default();
        let mut sent = std::collections::HashSet::new();
        for agent in &agents {
            let Some(config) = configs.in_use(&agent.name) else {
                continue;
            };
            let follows = agent.config_project == verdict.project
                || config.gitops.manifest_projects.iter().any(|p| {
                    p.id.as_deref().unwrap_or(agent.config_project.as_str()) == verdict.project
                });
            if !follows {
                continue;
            }
            let (own, _) =
                AgentDestinations::of(&agent.name, &agent.config_project, &config.notifications);
            let own = own.not_in(&mut sent);
            if !own.as_slice().is_empty() {
                notifier.notify_own(&own, notice(&agent.name));
            }
        }
    }
}
