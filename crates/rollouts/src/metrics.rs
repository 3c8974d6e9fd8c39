//! Rollouts' Prometheus metrics (`tether_kas_rollout_…`), counted by the
//! replica that drives them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How a rollout ended: completed, halted, rolled_back, superseded,
/// invalid or unneeded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Ended {
    pub phase: &'static str,
}

#[derive(Clone, Debug)]
pub struct RolloutMetrics {
    /// Rollouts started.
    pub started: Counter,
    /// Rollouts ended, by how.
    pub ended: Family<Ended, Counter>,
    /// Waves passed.
    pub waves_passed: Counter,
    /// From a wave's start to its pass, soak included.
    pub wave_seconds: Histogram,
    /// Operators' requests applied (pause, resume, promote, abort).
    pub requests: Counter,
}

impl Default for RolloutMetrics {
    fn default() -> Self {
        RolloutMetrics {
            started: Counter::default(),
            ended: Family::default(),
            waves_passed: Counter::default(),
            wave_seconds: Histogram::new([
                0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
            ]),
            requests: Counter::default(),
        }
    }
}

impl RolloutMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("rollouts_started", "Rollouts started", self.started.clone());
        registry.register(
            "rollouts_ended",
            "Rollouts ended, by phase (completed, halted, rolled_back, superseded, invalid, unneeded)",
            self.ended.clone(),
        );
        registry.register(
            "rollout_waves_passed",
            "Rollout waves passed",
            self.waves_passed.clone(),
        );
        registry.register(
            "rollout_wave_seconds",
            "Time from a wave's start to its pass, its soak included",
            self.wave_seconds.clone(),
        );
        registry.register(
            "rollout_requests",
            "Operators' requests applied to rollouts (pause, resume, promote, abort)",
            self.requests.clone(),
        );
    }
}
