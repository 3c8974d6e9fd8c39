//! The observability listener: the probes the install's Deployment uses,
//! and the metrics Prometheus scrapes.
//!
//! `/liveness` answers while the process runs; `/readiness` answers 200 only
//! while a session with kas is open, so `kubectl get pods` shows an agent cut
//! off from kas as not ready, and says why (kas refused the token, kas is
//! unreachable) as `kubectl describe pod` shows a probe's answer.
//! `/metrics`, under `tether_agentk_`: sessions opened and ended by reason,
//! GitOps leadership, sets received and applied, apply durations, drift
//! corrections and prunes, the Kubernetes API requests agentk made by verb
//! and code, drift watch restarts, Events written and dropped, and the
//! process's resident memory.

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
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Why a session with kas ended, as a metric label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndLabel {
    /// `refused`, `drained`, `unreachable` or `failed`.
    pub reason: &'static str,
}

/// A Kubernetes API request's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequest {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: &'static str,
    /// The HTTP status, or `error` when no answer came.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// `Normal` or `Warning`.
    pub r#type: &'static str,
}

/// What agentk shows of itself; set by the connection loop and the GitOps
/// workers. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct Connected(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    connected: AtomicBool,
    /// Why the last session ended (or could not open), for `/readiness`.
    last_end: Mutex<String>,
    sessions_opened: Counter,
    sessions_ended: Family<EndLabel, Counter>,
    gitops_leader: Gauge,
    sets_received: Counter,
    sets_applied: Counter,
    apply_seconds: Family<ResultLabel, Histogram>,
    drift_corrections: Family<ResultLabel, Counter>,
    pruned: Counter,
    api_requests: Family<ApiRequest, Counter>,
    events: Family<TypeLabel, Counter>,
    events_dropped: Counter,
}

fn apply_buckets() -> Histogram {
    Histogram::new([
        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ])
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

    /// A set's apply took `took`, up to its health wait.
    pub fn applied_in(&self, ok: bool, took: std::time::Duration) {
        let result = if ok { "ok" } else { "error" };
        self.0
            .apply_seconds
            .get_or_create(&ResultLabel { result })
            .observe(took.as_secs_f64());
    }

    /// A drift correction was tried.
    pub fn drift_corrected(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.0
            .drift_corrections
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Objects deleted because they left git.
    pub fn pruned(&self, n: u64) {
        self.0.pruned.inc_by(n);
    }

    /// A Kubernetes API request was answered with `code` (or not at all).
    pub fn api_request(&self, verb: &'static str, code: String) {
        self.0
            .api_requests
            .get_or_create(&ApiRequest { verb, code })
            .inc();
    }

    /// A Kubernetes Event was written.
    pub fn event_written(&self, kind: crate::events::Kind) {
        self.0
            .events
            .get_or_create(&TypeLabel {
                r#type: kind.as_str(),
            })
            .inc();
    }

    /// An Event was not written: queue full, spam filter, or refused.
    pub fn event_dropped(&self) {
        self.0.events_dropped.inc();
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
        registry.register(
            "apply_seconds",
            "Time a set's apply took, from its arrival to the health wait, by result",
            self.0.apply_seconds.clone(),
        );
        registry.register(
            "drift_corrections",
            "Objects applied again after someone changed or deleted them, by result",
            self.0.drift_corrections.clone(),
        );
        registry.register(
            "pruned_objects",
            "Objects deleted because they left git",
            self.0.pruned.clone(),
        );
        registry.register(
            "api_requests",
            "Kubernetes API requests agentk made, by verb and status code",
            self.0.api_requests.clone(),
        );
        registry.register(
            "watch_restarts",
            "Drift and health watches reopened (the server ends each after its timeout)",
            prometheus_client::metrics::counter::ConstCounter::new(
                tether_gitops::drift::watch_restarts(),
            ),
        );
        registry.register(
            "events",
            "Kubernetes Events written on the objects agentk changed, by type",
            self.0.events.clone(),
        );
        registry.register(
            "events_dropped",
            "Kubernetes Events not written: rate-limited, queue full or refused",
            self.0.events_dropped.clone(),
        );
        registry.register_with_unit(
            "resident_memory",
            "Resident memory of the agentk process",
            prometheus_client::registry::Unit::Bytes,
            prometheus_client::metrics::gauge::ConstGauge::new(resident_bytes()),
        );
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// The process's resident set, from /proc (0 where there is none).
fn resident_bytes() -> i64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * i64::from(page.max(0) as i32)
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            connected: AtomicBool::default(),
            last_end: Mutex::default(),
            sessions_opened: Counter::default(),
            sessions_ended: Family::default(),
            gitops_leader: Gauge::default(),
            sets_received: Counter::default(),
            sets_applied: Counter::default(),
            apply_seconds: Family::new_with_constructor(apply_buckets),
            drift_corrections: Family::default(),
            pruned: Counter::default(),
            api_requests: Family::default(),
            events: Family::default(),
            events_dropped: Counter::default(),
        }
    }
}

pub fn router(connected: Connected) -> Router {
    Router::new()
        .route("/liveness", get(|| async { "ok\n" }))
        .route("/readiness", get(readiness))
        .route(
            "/metrics",
            get(
                |State(c): State<Connected>, headers: axum::http::HeaderMap| async move {
                    let accept = headers
                        .get(axum::http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok());
                    let (kind, text) = tether_runtime::exposition::negotiate(accept, c.encode());
                    ([(axum::http::header::CONTENT_TYPE, kind)], text)
                },
            ),
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

/// Counts the Kubernetes API requests of a `kube::Client` built with it
/// (`ClientBuilder::with_layer`), by verb and status code.
#[derive(Clone, Debug)]
pub struct CountRequests(pub Connected);

impl<S> tower::Layer<S> for CountRequests {
    type Service = CountedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountedService {
            inner,
            connected: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CountedService<S> {
    inner: S,
    connected: Connected,
}

impl<S, B, R> tower::Service<axum::http::Request<B>> for CountedService<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let verb = verb_of(request.method(), request.uri());
        let connected = self.connected.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            let code = match &answer {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "error".to_owned(),
            };
            connected.api_request(verb, code);
            answer
        })
    }
}

/// The Kubernetes verb of a request, as the API server's audit log names it.
fn verb_of(method: &axum::http::Method, uri: &axum::http::Uri) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        Method::GET => {
            let watch = uri
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
            if watch {
                return "watch";
            }
            // After /api/v1 or /apis/<group>/<version>: [namespaces, ns]
            // then a resource alone (a list) or with a name (a get).
            let parts: Vec<&str> = uri.path().split('/').filter(|p| !p.is_empty()).collect();
            let rest = match parts.first() {
                Some(&"api") => parts.get(2..),
                Some(&"apis") => parts.get(3..),
                _ => return "get",
            }
            .unwrap_or_default();
            let rest = match rest {
                ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
                other => other,
            };
            if rest.len() == 1 { "list" } else { "get" }
        }
        _ => "other",
    }
}

#[cfg(test)]
mod verb_tests {
    use super::*;

    #[test]
    fn verbs_are_told_apart_as_the_audit_log_names_them() {
        let v = |m: &str, u: &str| {
            verb_of(
                &axum::http::Method::from_bytes(m.as_bytes()).expect("a test value"),
                &u.parse().expect("a test value"),
            )
        };
        assert_eq!(v("GET", "/api/v1/namespaces/a/pods"), "list");
        assert_eq!(v("GET", "/api/v1/namespaces/a/pods/web"), "get");
        assert_eq!(v("GET", "/api/v1/namespaces/a"), "get");
        assert_eq!(v("GET", "/api/v1/namespaces"), "list");
        assert_eq!(v("GET", "/apis/apps/v1/deployments"), "list");
        assert_eq!(
            v("GET", "/apis/apps/v1/namespaces/a/deployments/web/status"),
            "get"
        );
        assert_eq!(
            v(
                "GET",
                "/apis/apps/v1/namespaces/a/deployments?watch=true&resourceVersion=0"
            ),
            "watch"
        );
        assert_eq!(
            v("PATCH", "/apis/apps/v1/namespaces/a/deployments/web"),
            "patch"
        );
        assert_eq!(v("GET", "/version"), "get");
    }
}
