//! The admin listener: liveness and readiness for probes and the demo.
//!
//! It is kept apart from the agent and API listeners so that a probe never
//! waits behind agent traffic, as in linkerd's admin server.
//!
//! `/readyz` answers `ok`; `/readyz?verbose` lists what kas runs with, one
//! `[+]check detail` line each, as Kubernetes' API server does. Those
//! details never make kas unready: a missing render tool only means
//! charts and kustomizations fail with its reason, so it is said, not
//! failed.

use std::sync::Arc;

use axum::extract::RawQuery;
use axum::http::header::CONTENT_TYPE;
use axum::{Router, routing::get};

use crate::metrics::Metrics;

/// Details `/readyz?verbose` lists, fixed at start.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    details: Arc<Vec<(&'static str, String)>>,
}

/// Routes of the admin listener.
pub fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move |RawQuery(query): RawQuery| {
                let answer = readiness.answer(query.as_deref());
                async move { answer }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = metrics.encode();
                async move {
                    (
                        [(
                            CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
}

// === impl Readiness ===

impl Readiness {
    /// Adds a line `[+]check detail` to the verbose answer.
    pub fn with_detail(mut self, check: &'static str, detail: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.details).push((check, detail.into()));
        self
    }

    /// The body for `/readyz` with `query`: `ok`, or with `verbose` each
    /// detail and Kubernetes' closing line.
    fn answer(&self, query: Option<&str>) -> String {
        if !is_verbose(query) {
            return "ok\n".into();
        }
        let mut text = String::new();
        for (check, detail) in self.details.iter() {
            // One line each, whatever a tool's message holds.
            let detail = detail.replace(['\r', '\n'], " ");
            text.push_str(&format!("[+]{check} {detail}\n"));
        }
        text.push_str("readyz check passed\n");
        text
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
