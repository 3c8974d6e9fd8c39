//! `kas serve` as a value: [`Server::run`] composes kas from its parts
//! ([`parts`]), serves every listener ([`serve`]), and owns them until the
//! drain signal, when each stops accepting, finishes what is in flight
//! within its grace, and every task on the drain ends or hands over what
//! it holds. Nothing kas runs outlives it.
//!
//! - [`data`]: the data folder, the store, the sealing and session keys.
//! - [`parts`]: rendering, readiness, the router among replicas, the
//!   proxy, the change feed's tasks, notifications.
//! - [`serve`]: the agent endpoint's listener, the listeners' check.

pub mod data;
pub mod parts;
pub mod serve;

use std::sync::Arc;
use std::time::Duration;

use tether_channel::repos::Repos;
use tether_channel::{AgentChannelService, ChannelState};
use tether_runtime::{Drain, Shutdown};

use crate::changes::Changes;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::{admin, admin_token, api, listen};

pub use data::DataDir;

/// How long kas waits, once its listeners are closed, for the tasks on its
/// drain (sessions telling agents to move, pollers, queued statuses and
/// notices): within Kubernetes' default grace period of 30 s.
const DRAIN_TASKS: Duration = Duration::from_secs(20);

/// A running kas.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Runs kas with `settings` until `shutdown`, then drains.
    pub async fn run(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
        let data = DataDir::create(&settings.data_dir)?;
        let bound = serve::Bound::bind(&settings, data.path()).await?;
        let settings = settings.bound_to(&bound.addresses()?);
        let sealer = data::secrets_sealer(&settings, data.path())?;
        let stores = data::open(&settings.database, sealer).await?;
        let store = stores.store.clone();
        if settings.database.is_shared() && settings.tls.is_none() {
            tracing::warn!(
                "the database is shared with other kas replicas, but no --tls-cert/--tls-key is given: \
                 this kas generates a development CA of its own, which agents and clients of the other \
                 replicas do not trust; give every replica the same certificate"
            );
        }
        let admin_token = admin_token::load_or_create(&settings.admin_token_file)?;
        let metrics = Metrics::default();
        metrics
            .channel
            .syncs
            .set_per_agent(settings.metrics_per_agent);
        // Every long task of kas runs on this drain; it is waited for below.
        let drain = Drain::new(shutdown.clone());
        // The agent endpoint's parts, each handed below to what needs it.
        let channel = ChannelState::new(metrics.channel.clone());
        let repos = Repos::new(
            store.clone(),
            data.git_mirrors(),
            settings.poll_interval,
            metrics.channel.clone(),
            drain.clone(),
        );
        // A signature is a tenant's input to ssh-keygen and gpg: confined
        // as renders are.
        repos.set_verification_sandbox(settings.render.limits.sandbox);
        let rendering = parts::rendering(&settings, &metrics).await;
        let identity = listen::identity::load_or_generate(
            settings.tls.as_ref().map(|(cert, _)| cert.as_path()),
            settings.tls.as_ref().map(|(_, key)| key.as_path()),
            &settings.hostnames,
            data.path(),
        )?;
        if let Some(at) = crate::expiry::not_after(&identity.cert_pem) {
            let _ = metrics.expiry.certificate.set(at);
        }
        drain.spawn(
            metrics
                .expiry
                .clone()
                .follow_tokens(store.clone(), drain.signal()),
        );
        let ca_pem = parts::ca_pem(&settings, &data)?;
        let router = parts::router(
            &settings,
            stores.replicas.as_ref(),
            ca_pem.as_deref(),
            &identity,
            &drain,
        )?;
        let proxy = Arc::new(parts::proxy(
            &settings,
            &channel,
            &store,
            &metrics,
            ca_pem,
            router.clone(),
            &shutdown,
        )?);
        let mut changes = Changes::new(
            channel.live(),
            channel.control(),
            proxy.clone(),
            store.clone(),
        )
        .with_repos(repos.clone());
        // Every replica's view of the rollouts, woken when one changes.
        let fleet = tether_rollouts::Fleet::new(store.clone());
        let (fleet_changed, fleet_told) = tokio::sync::mpsc::channel(1);
        changes = changes.with_fleet(fleet_changed);
        drain.spawn(fleet.clone().follow(fleet_told, drain.signal()));
        if let Some(router) = &router {
            changes = changes.with_router(router.clone());
        }
        if let Some(feed) = stores.feed {
            changes = changes
                .with_feed(feed)
                .with_feed_metrics(metrics.feed.clone());
        }
        if let Some(pg) = stores.pg.clone() {
            let _ = metrics.database.set(pg);
        }
        let _ = metrics.tunnels.set(channel.tunnels.clone());
        let readiness = parts::readiness(&settings, &store, &rendering, bound.addresses()?);
        let readiness = parts::among_others(
            &changes,
            readiness,
            &channel,
            &repos,
            router.as_ref(),
            &drain,
        );
        let notifier = parts::notifier(&settings, &store, &channel, router.as_ref(), &drain)?;
        let statuses = tether_notify::statuses::Statuses::new(store.clone(), None, drain.clone())?;

        let (images, registry_hook_secret) = parts::images(
            &settings,
            &metrics,
            &store,
            &repos,
            &channel,
            &notifier,
            router.as_ref(),
            &data,
            &drain,
        )?;
        parts::rollouts(
            &fleet,
            &store,
            &repos,
            &channel,
            &notifier,
            &statuses,
            &changes,
            router.as_ref(),
            &metrics,
            &drain,
        );
        parts::verdicts(&repos, &store, &channel, &notifier, &statuses, &drain);
        let sessions = data::ui_sessions(&settings, data.path())?;
        let state = api::ApiState {
            store: store.clone(),
            admin: admin_token::AdminAuth::start(
                store.clone(),
                &settings.admin_token_file,
                &admin_token,
            )
            .await?,
            ui_sessions: sessions.clone(),
            live: channel.live(),
            configs: channel.configs.clone(),
            tunnels: channel.tunnels.clone(),
            plans: channel.plans.clone(),
            agent_external_address: settings.agent_external_address.clone(),
            repos: repos.clone(),
            drain: drain.clone(),
            changes,
            proxy: proxy.clone(),
            renderer: rendering.renderer.clone(),
            router: router.clone(),
            webhook_limiter: Arc::default(),
            metrics: metrics.clone(),
            webhook_sources: Arc::new(tether_webhooks::Limiter::per_source()),
            images,
            registry_hook_secret,
            fleet: fleet.clone(),
            trace_url: settings.trace_url.as_deref().map(Arc::from),
        };
        drop(admin_token);
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
        let agents = AgentChannelService::new(store, channel, repos, drain.clone())
            .with_renderer(rendering.renderer.map_err(tether_channel::NoRenderer::from))
            .with_statuses(statuses)
            .with_notifier(notifier)
            .with_fleet(fleet);

        let listeners = serve::Listeners {
            identity,
            api: api::router(state.clone()).merge(crate::ui::router(ui)),
            private: router.map(|router| (router, api::router(state))),
            proxy,
            admin: admin::router(metrics, readiness),
            agents,
        };
        let served = listeners.serve(&settings, bound, drain.clone());
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            data = %data.path().display(),
            database = %settings.database.describe(),
            "kas started"
        );
        let served = served.await;
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
