//! The observability listener: the probes the install's Deployment uses,
//! and the metrics Prometheus scrapes.
//!
//! `/liveness` answers while the process runs; `/readiness` answers 200 only
//! while a session with kas is open, so `kubectl get pods` shows an agent cut
//! off from kas as not ready, and says why (kas refused the token, kas is
//! unreachable) as `kubectl describe pod` shows a probe's answer.
//! `/metrics`: sessions opened and ended by reason, GitOps leadership and
//! sets applied, under `tether_agentk_`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a session with kas ended, as a metric label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndLabel {
    /// `refused`, `drained`, `unreachable` or `failed`.
    pub reason: &'static str,
}

/// What agentk shows of itself; set by the connection loop and the GitOps
/// workers. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct Connected(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    connected: AtomicBool,
    /// Why the last session ended (or could not open), for `/readiness`.
    last_end: Mutex<String>,
    sessions_opened: Counter,
    sessions_ended: Family<EndLabel, Counter>,
    gitops_leader: Gauge,
    sets_received: Counter,
    sets_applied: Counter,
}

impl Connected {
    pub fn set(&self, connected: bool) {
        self.0.connected.store(connected, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.connected.load(Ordering::Relaxed)
    }

    /// kas welcomed a session.
    pub fn opened(&self) {
        self.set(true);
        self.0.sessions_opened.inc();
    }

    /// A session ended (or could not open) for `reason`, as `why` says.
    pub fn ended(&self, reason: &'static str, why: &str) {
        self.set(false);
        self.0
            .sessions_ended
            .get_or_create(&EndLabel { reason })
            .inc();
        *self.0.last_end.lock().unwrap_or_else(|p| p.into_inner()) = why.to_owned();
    }

    /// Whether this replica leads GitOps (1) or holds sets for the leader.
    pub fn set_leader(&self, leading: bool) {
        self.0.gitops_leader.set(i64::from(leading));
    }

    /// A complete set of manifests arrived from kas.
    pub fn set_received(&self) {
        self.0.sets_received.inc();
    }

    /// A set of manifests was applied to the cluster (synced or not).
    pub fn set_applied(&self) {
        self.0.sets_applied.inc();
    }

    fn encode(&self) -> String {
        let mut registry = Registry::with_prefix("tether_agentk");
        registry.register(
            "sessions_opened",
            "Sessions kas welcomed",
            self.0.sessions_opened.clone(),
        );
        registry.register(
            "sessions_ended",
            "Sessions with kas that ended, by reason",
            self.0.sessions_ended.clone(),
        );
        registry.register(
            "gitops_leader",
            "1 while this replica leads GitOps and applies, 0 while it holds sets",
            self.0.gitops_leader.clone(),
        );
        registry.register(
            "sets_received",
            "Complete sets of manifests received from kas",
            self.0.sets_received.clone(),
        );
        registry.register(
            "sets_applied",
            "Sets of manifests this replica applied to its cluster",
            self.0.sets_applied.clone(),
        );
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

pub fn router(connected: Connected) -> Router {
    Router::new()
        .route("/liveness", get(|| async { "ok\n" }))
        .route("/readiness", get(readiness))
        .route(
            "/metrics",
            get(|State(c): State<Connected>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    c.encode(),
                )
            }),
        )
        .with_state(connected)
}

async fn readiness(State(connected): State<Connected>) -> (StatusCode, String) {
    if connected.get() {
        return (StatusCode::OK, "ok\n".to_owned());
    }
    let why = connected
        .0
        .last_end
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let text = match why.is_empty() {
        true => "not connected to kas\n".to_owned(),
        false => format!("not connected to kas: {why}\n"),
    };
    (StatusCode::SERVICE_UNAVAILABLE, text)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn status(router: &Router, path: &str) -> StatusCode {
        let req = Request::get(path).body(Body::empty()).expect("request");
        router
            .clone()
            .oneshot(req)
            .await
            .expect("infallible")
            .status()
    }

    #[tokio::test]
    async fn ready_only_while_connected() {
        let connected = Connected::default();
        let router = router(connected.clone());
        assert_eq!(status(&router, "/liveness").await, StatusCode::OK);
        assert_eq!(
            status(&router, "/readiness").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        connected.opened();
        assert_eq!(status(&router, "/readiness").await, StatusCode::OK);
        connected.ended("refused", "kas rejected the agent token: revoked");
        let answer = router
            .clone()
            .oneshot(
                Request::get("/readiness")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = http_body_util::BodyExt::collect(answer.into_body())
            .await
            .expect("body")
            .to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("revoked"));
        let metrics = router
            .clone()
            .oneshot(
                Request::get("/metrics")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        let body = http_body_util::BodyExt::collect(metrics.into_body())
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("tether_agentk_sessions_opened_total 1"),
            "{text}"
        );
        assert!(
            text.contains("tether_agentk_sessions_ended_total{reason=\"refused\"} 1"),
            "{text}"
        );
    }
}
