//! The agent endpoint's Prometheus metrics; kas registers them beside its
//! others under `tether_kas_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Outcome label of a git poll.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollResult {
    pub result: &'static str,
}

/// Cheap handles (an `Arc` inside): each component updating one holds a
/// clone.
#[derive(Clone, Debug)]
pub struct ChannelMetrics {
    /// What each agent's last report says, under `tether_sync_…`.
    pub syncs: crate::sync_metrics::SyncMetrics,
    /// Git polls that found a new commit, and fetch time.
    pub git_fetch_seconds: Histogram,
    /// Agent sessions open now.
    pub agent_sessions: Gauge,
    /// Agent sessions opened since start.
    pub agent_sessions_opened: Counter,
    /// Connections refused for an unknown, revoked or expired token.
    pub auth_failures: Counter,
    /// Configurations sent to agents.
    pub configs_sent: Counter,
    /// Config files that failed to parse or validate (never sent).
    pub configs_rejected: Counter,
    /// Git polls by outcome.
    pub git_polls: Family<PollResult, Counter>,
    /// Time a git poll takes (fetch and resolve).
    pub git_poll_seconds: Histogram,
}

impl Default for ChannelMetrics {
    fn default() -> Self {
        ChannelMetrics {
            syncs: crate::sync_metrics::SyncMetrics::default(),
            git_fetch_seconds: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            agent_sessions: Gauge::default(),
            agent_sessions_opened: Counter::default(),
            auth_failures: Counter::default(),
            configs_sent: Counter::default(),
            configs_rejected: Counter::default(),
            git_polls: Family::default(),
            git_poll_seconds: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        }
    }
}

impl ChannelMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "agent_sessions",
            "Agent sessions open now",
            self.agent_sessions.clone(),
        );
        registry.register(
            "agent_sessions_opened",
            "Agent sessions opened since start",
            self.agent_sessions_opened.clone(),
        );
        registry.register(
            "agent_auth_failures",
            "Agent connections refused for an unknown, revoked or expired token",
            self.auth_failures.clone(),
        );
        registry.register(
            "agent_configs_sent",
            "Configurations sent to agents",
            self.configs_sent.clone(),
        );
        registry.register(
            "agent_configs_rejected",
            "Agent config files that did not parse or validate",
            self.configs_rejected.clone(),
        );
        registry.register("git_polls", "Git polls by result", self.git_polls.clone());
        registry.register(
            "git_fetch_seconds",
            "Time a git poll that found a new commit took, fetch and resolve",
            self.git_fetch_seconds.clone(),
        );
        registry.register(
            "git_poll_seconds",
            "Time a git poll takes, fetch and resolve",
            self.git_poll_seconds.clone(),
        );
    }
}
