//! The renderer's Prometheus metrics; kas registers them with its own.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Cheap handles: clones count into the same metrics.
#[derive(Clone, Debug)]
pub struct RenderMetrics {
    /// Renders run (cache misses), by outcome.
    pub renders: Family<Outcome, Counter>,
    /// Asks answered from the cache (or from a render under way).
    pub cache_hits: Counter,
    /// Time a render takes, export and tools.
    pub render_seconds: Histogram,
    /// 1 while renders run unconfined (`--render-sandbox=off`), for an
    /// alert: it is the administrator's choice, never a silent fallback.
    pub sandbox_off: Gauge,
}

impl Default for RenderMetrics {
    fn default() -> Self {
        RenderMetrics {
            renders: Family::default(),
            cache_hits: Counter::default(),
            render_seconds: Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
            sandbox_off: Gauge::default(),
        }
    }
}

impl RenderMetrics {
    pub(crate) fn observe(&self, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.renders.get_or_create(&Outcome { result }).inc();
        self.render_seconds.observe(took.as_secs_f64());
    }

    pub(crate) fn looked_up(&self, hit: bool) {
        if hit {
            self.cache_hits.inc();
        }
    }

    /// Adds the metrics to `registry` under its prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "renders",
            "Chart and kustomization renders run, by result",
            self.renders.clone(),
        );
        registry.register(
            "render_cache_hits",
            "Renders answered from the cache or from a render under way",
            self.cache_hits.clone(),
        );
        registry.register(
            "render_seconds",
            "Time a manifest project's renders take",
            self.render_seconds.clone(),
        );
        registry.register(
            "render_sandbox_off",
            "1 while charts and kustomizations render without the kernel's sandbox (--render-sandbox=off)",
            self.sandbox_off.clone(),
        );
    }
}
