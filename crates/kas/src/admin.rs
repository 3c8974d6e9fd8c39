//! The admin listener: liveness and readiness for probes and the demo.
//!
//! It is kept apart from the agent and API listeners so that a probe never
//! waits behind agent traffic, as in linkerd's admin server.

use axum::http::header::CONTENT_TYPE;
use axum::{Router, routing::get};

use crate::metrics::Metrics;

/// Routes of the admin listener.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn health_endpoints_answer_ok_and_others_404() {
        for (path, want) in [
            ("/healthz", StatusCode::OK),
            ("/readyz", StatusCode::OK),
            ("/metrics", StatusCode::OK),
            ("/nope", StatusCode::NOT_FOUND),
        ] {
            let req = Request::get(path)
                .body(Body::empty())
                .expect("valid request");
            let res = router(Metrics::default())
                .oneshot(req)
                .await
                .expect("router is infallible");
            assert_eq!(res.status(), want, "{path}");
        }
    }
}
