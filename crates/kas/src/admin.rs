//! The admin listener: liveness and readiness for probes and the demo.
//!
//! It is kept apart from the agent and API listeners so that a probe never
//! waits behind agent traffic, as in linkerd's admin server.

use axum::{Router, routing::get};

/// Routes of the admin listener.
pub fn router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
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
            ("/nope", StatusCode::NOT_FOUND),
        ] {
            let req = Request::get(path)
                .body(Body::empty())
                .expect("valid request");
            let res = router().oneshot(req).await.expect("router is infallible");
            assert_eq!(res.status(), want, "{path}");
        }
    }
}
