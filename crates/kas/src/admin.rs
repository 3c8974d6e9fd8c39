//! The admin listener: liveness and readiness for probes and the demo.
//!
//! It is kept apart from the agent and API listeners so that a probe never
//! waits behind agent traffic, as in linkerd's admin server.
//!
//! `/readyz` answers `ok` while every live check passes (its database
//! answers, every listener accepts a connection, and with replicas it
//! follows the others' changes; within 2 s), and 503 naming the failed
//! check otherwise, so a
//! load balancer sends agents and clients to a replica that can serve
//! them. `/readyz?verbose` lists each check and what kas runs with, one
//! `[+]check detail` (or `[-]check reason`) line each, as Kubernetes' API
//! server does. The details never make kas unready: a missing render tool
//! only means charts and kustomizations fail with its reason, so it is
//! said, not failed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::{Router, routing::get};

use crate::metrics::Metrics;

/// How long a live check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A live check: `Ok` with a detail, or `Err` with why kas cannot serve.
pub type Check =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// What `/readyz` checks on each probe, and the details it lists.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Vec<(&'static str, Check)>>,
    details: Arc<Vec<(&'static str, String)>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field(
                "checks",
                &self.checks.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("details", &self.details)
            .finish()
    }
}

/// Routes of the admin listener.
pub fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move |RawQuery(query): RawQuery| {
                let readiness = readiness.clone();
                async move { readiness.answer(query.as_deref()).await }
            }),
        )
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let accept = headers
                    .get(axum::http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                let (kind, text) = tether_runtime::exposition::negotiate(accept, metrics.encode());
                async move { ([(CONTENT_TYPE, kind)], text) }
            }),
        )
}

// === impl Readiness ===

impl Readiness {
    /// Adds a live check, run on every probe (within [`CHECK_TIMEOUT`]).
    pub fn with_check(mut self, name: &'static str, check: Check) -> Self {
        Arc::make_mut(&mut self.checks).push((name, check));
        self
    }

    /// Adds a line `[+]check detail` to the verbose answer.
    pub fn with_detail(mut self, check: &'static str, detail: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.details).push((check, detail.into()));
        self
    }

    /// The answer to `/readyz` with `query`: 200 `ok` while every live
    /// check passes, 503 naming the failures otherwise; with `verbose`,
    /// each check and detail and Kubernetes' closing line.
    async fn answer(&self, query: Option<&str>) -> (StatusCode, String) {
        let mut lines = Vec::new();
        let mut failed = Vec::new();
        for (name, check) in self.checks.iter() {
            let outcome = tokio::time::timeout(CHECK_TIMEOUT, check())
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")));
            match outcome {
                Ok(detail) => lines.push(format!("[+]{name} {detail}")),
                Err(why) => {
                    lines.push(format!("[-]{name} {why}"));
                    failed.push(*name);
                }
            }
        }
        for (check, detail) in self.details.iter() {
            lines.push(format!("[+]{check} {detail}"));
        }
        let status = match failed.is_empty() {
            true => StatusCode::OK,
            false => StatusCode::SERVICE_UNAVAILABLE,
        };
        if !is_verbose(query) {
            return match failed.is_empty() {
                true => (status, "ok\n".into()),
                false => (status, format!("not ready: {}\n", failed.join(", "))),
            };
        }
        let mut text = String::new();
        for line in lines {
            // One line each, whatever a tool's message holds.
            text.push_str(&line.replace(['\r', '\n'], " "));
            text.push('\n');
        }
        text.push_str(match failed.is_empty() {
            true => "readyz check passed\n",
            false => "readyz check failed\n",
        });
        (status, text)
    }
}

/// `verbose`, `verbose=true` or `verbose=1` among the query's parameters.
fn is_verbose(query: Option<&str>) -> bool {
    query
        .unwrap_or_default()
        .split('&')
        .any(|pair| match pair.split_once('=') {
            None => pair == "verbose",
            Some((key, value)) => key == "verbose" && !matches!(value, "false" | "0"),
        })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let req = Request::get(path)
            .body(Body::empty())
            .expect("valid request");
        let res = router.oneshot(req).await.expect("router is infallible");
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn health_endpoints_answer_ok_and_others_404() {
        for (path, want) in [
            ("/healthz", StatusCode::OK),
            ("/readyz", StatusCode::OK),
            ("/metrics", StatusCode::OK),
            ("/nope", StatusCode::NOT_FOUND),
        ] {
            let (status, _) = get(router(Metrics::default(), Readiness::default()), path).await;
            assert_eq!(status, want, "{path}");
        }
    }

    #[tokio::test]
    async fn readyz_fails_while_a_live_check_fails_and_says_which() {
        let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probe = up.clone();
        let check: Check = Arc::new(move || {
            let up = probe.load(std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                match up {
                    true => Ok("answers".to_owned()),
                    false => Err("connection refused".to_owned()),
                }
            })
        });
        let app = router(
            Metrics::default(),
            Readiness::default().with_check("database", check),
        );
        assert_eq!(
            get(app.clone(), "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: database\n".into()
            )
        );
        assert_eq!(
            get(app.clone(), "/readyz?verbose").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "[-]database connection refused\nreadyz check failed\n".into()
            )
        );
        up.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(get(app, "/readyz").await, (StatusCode::OK, "ok\n".into()));
    }

    #[tokio::test]
    async fn readyz_stays_ok_and_lists_details_when_verbose() {
        let readiness = Readiness::default().with_detail(
            "render-tools",
            "helm=/usr/bin/helm v4.1.4 kustomize missing (kustomize not found: …)",
        );
        let app = router(Metrics::default(), readiness);
        assert_eq!(
            get(app.clone(), "/readyz").await,
            (StatusCode::OK, "ok\n".into())
        );
        let verbose = (
            StatusCode::OK,
            "[+]render-tools helm=/usr/bin/helm v4.1.4 kustomize missing (kustomize not found: …)\nreadyz check passed\n".to_owned(),
        );
        assert_eq!(get(app.clone(), "/readyz?verbose").await, verbose);
        assert_eq!(get(app.clone(), "/readyz?verbose=true").await, verbose);
        assert_eq!(
            get(app, "/readyz?verbose=false").await,
            (StatusCode::OK, "ok\n".into())
        );
    }
}
