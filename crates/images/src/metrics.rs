//! Image automation's Prometheus metrics (`tether_kas_image_…`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Result {
    pub result: &'static str,
}

#[derive(Clone, Debug)]
pub struct ImageMetrics {
    /// Repository scans by result (ok, error).
    pub scans: Family<Result, Counter>,
    /// Time one repository's listing takes.
    pub scan_seconds: Histogram,
    /// Registry requests made (token requests included).
    pub registry_requests: Counter,
    /// Tags kept in the store, all repositories.
    pub tags_kept: Gauge,
    /// Write-backs by result (pushed, up_to_date, failed).
    pub updates: Family<Result, Counter>,
}

impl Default for ImageMetrics {
    fn default() -> Self {
        ImageMetrics {
            scans: Family::default(),
            scan_seconds: Histogram::new([
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            registry_requests: Counter::default(),
            tags_kept: Gauge::default(),
            updates: Family::default(),
        }
    }
}

impl ImageMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "image_scans",
            "Image repository scans by result",
            self.scans.clone(),
        );
        registry.register(
            "image_scan_seconds",
            "Time one image repository's tag listing takes",
            self.scan_seconds.clone(),
        );
        registry.register(
            "image_registry_requests",
            "Requests made to image registries, token requests included",
            self.registry_requests.clone(),
        );
        registry.register(
            "image_tags_kept",
            "Tags kept in the store for the repositories policies name",
            self.tags_kept.clone(),
        );
        registry.register(
            "image_updates",
            "Image write-backs by result (pushed, up_to_date, failed)",
            self.updates.clone(),
        );
    }
}
