//! kas's Prometheus metrics, served on the admin listener at `/metrics`.
//!
//! Each metric is a cheap handle (an `Arc` inside); the components that
//! update one hold a clone, and [`Metrics::encode`] reads them all.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
