//! The proxy's Prometheus metrics; kas registers them with its own.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a proxied request: what kind of caller, and the answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyLabels {
    /// `ci`, `user`, `routed`, or `none` when authentication failed.
    pub caller: &'static str,
    pub code: u16,
    /// `local` (served from a tunnel here), `forwarded` (to the replica
    /// holding the agent's tunnels) or `from_peer` (served here for
    /// another replica).
    pub route: &'static str,
}

/// Cheap handles (an `Arc` inside each): clones count into the same metric.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    /// Requests by caller kind and status code.
    pub requests: Family<ProxyLabels, Counter>,
    /// Time from a request to its response headers (a watch counts until
    /// its stream starts), by route.
    pub request_seconds: Family<RouteLabel, Histogram>,
}

/// A proxied request's route alone, for the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// `local`, `forwarded` or `from_peer`, as [`ProxyLabels::route`].
    pub route: &'static str,
}

fn latency_buckets() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
    ])
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        ProxyMetrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_buckets),
        }
    }
}

impl ProxyMetrics {
    /// Adds the metrics to `registry` (as `…proxy_requests` and
    /// `…proxy_request_seconds` under its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "proxy_requests",
            "Kubernetes API proxy requests by caller kind and status code",
            self.requests.clone(),
        );
        registry.register(
            "proxy_request_seconds",
            "Time from a Kubernetes API proxy request to its response headers",
            self.request_seconds.clone(),
        );
    }
}
