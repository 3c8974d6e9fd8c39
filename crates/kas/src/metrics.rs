//! kas's Prometheus metrics, served on the admin listener at `/metrics`.
//!
//! Each metric is a cheap handle (an `Arc` inside); the components that
//! update one hold a clone, and [`Metrics::encode`] reads them all.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A webhook delivery's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `github`, `gitlab`, `gitea`, `bitbucket`, `generic`, or `unknown`.
    pub provider: &'static str,
    /// `accepted`, `unauthorized`, `unknown_project`, `malformed`,
    /// `throttled` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// The Kubernetes API proxy's.
    pub proxy: tether_proxy::ProxyMetrics,
    /// Chart and kustomization renders.
    pub render: tether_render::RenderMetrics,
    /// The agent endpoint's: sessions, authentication, configs, git polls.
    pub channel: tether_channel::ChannelMetrics,
    /// Push webhook deliveries by provider and result.
    pub webhook_deliveries: Family<WebhookLabels, Counter>,
    /// Image automation's scans and write-backs.
    pub images: tether_images::metrics::ImageMetrics,
    /// Fleet rollouts: started, ended, waves passed.
    pub rollouts: tether_rollouts::metrics::RolloutMetrics,
    /// What the change feed from the other replicas brings, and how late.
    pub feed: FeedMetrics,
    /// When the TLS certificate and the agents' tokens expire.
    pub expiry: crate::expiry::ExpiryMetrics,
    /// The agents' tunnels here, counted at each scrape.
    pub tunnels:
        std::sync::Arc<std::sync::OnceLock<std::sync::Arc<tether_tunnel::server::Tunnels>>>,
    /// The shared database, whose pool's use is read at each scrape.
    pub database: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<tether_store::PgStore>>>,
}

/// The change feed's: changes heard from other replicas and their lag.
#[derive(Clone, Debug)]
pub struct FeedMetrics {
    /// From a replica's publish to this replica's receipt (across
    /// machines, clock skew included).
    pub lag_seconds: Histogram,
    /// Gaps (changes possibly lost, sessions re-checked).
    pub gaps: Counter,
}

impl Default for FeedMetrics {
    fn default() -> Self {
        FeedMetrics {
            lag_seconds: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            gaps: Counter::default(),
        }
    }
}

impl Metrics {
    /// The text exposition format, as `/metrics` serves it.
    pub fn encode(&self) -> String {
        // What agents report is `tether_sync_…`, the same name an agent's
        // series has whichever replica holds its session; the rest is
        // kas's own, `tether_kas_…`.
        let mut root = Registry::with_prefix("tether");
        self.channel.syncs.register(&mut root);
        let registry = root.sub_registry_with_prefix("kas");
        self.channel.register(registry);
        self.proxy.register(registry);
        self.render.register(registry);
        self.images.register(registry);
        self.rollouts.register(registry);
        registry.register(
            "webhook_deliveries",
            "Push webhook deliveries by provider and result",
            self.webhook_deliveries.clone(),
        );
        self.expiry.register(registry);
        if let Some(tunnels) = self.tunnels.get() {
            registry.register(
                "agent_tunnels",
                "Tunnels agents hold open to this replica now",
                ConstGauge::new(i64::try_from(tunnels.total()).unwrap_or(i64::MAX)),
            );
        }
        registry.register(
            "change_feed_lag_seconds",
            "Time from another replica's announcement of a change to its receipt here",
            self.feed.lag_seconds.clone(),
        );
        registry.register(
            "change_feed_gaps",
            "Times the change feed may have lost changes (sessions and tokens were re-checked)",
            self.feed.gaps.clone(),
        );
        if let Some(pg) = self.database.get() {
            let (open, idle, max) = pg.pool_use();
            registry.register(
                "database_connections_in_use",
                "Connections of the PostgreSQL pool in use now",
                ConstGauge::new(i64::from(open.saturating_sub(idle))),
            );
            registry.register(
                "database_connections_idle",
                "Connections of the PostgreSQL pool open and idle",
                ConstGauge::new(i64::from(idle)),
            );
            registry.register(
                "database_connections_max",
                "Most connections the PostgreSQL pool opens",
                ConstGauge::new(i64::from(max)),
            );
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &root);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_metric_with_its_value() {
        let m = Metrics::default();
        m.channel.agent_sessions.inc();
        m.channel
            .git_polls
            .get_or_create(&tether_channel::metrics::PollResult { result: "ok" })
            .inc();
        let text = m.encode();
        assert!(text.contains("tether_kas_agent_sessions 1"), "{text}");
        assert!(
            text.contains("tether_kas_git_polls_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tether_kas_git_poll_seconds_bucket"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
