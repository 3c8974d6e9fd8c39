//! The observability listener: the probes the install's Deployment uses.
//!
//! `/liveness` answers while the process runs; `/readiness` answers 200 only
//! while a session with kas is open, so `kubectl get pods` shows an agent cut
//! off from kas as not ready.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// Whether a session with kas is open; set by the connection loop.
#[derive(Clone, Debug, Default)]
pub struct Connected(Arc<AtomicBool>);

impl Connected {
    pub fn set(&self, connected: bool) {
        self.0.store(connected, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

pub fn router(connected: Connected) -> Router {
    Router::new()
        .route("/liveness", get(|| async { "ok\n" }))
        .route("/readiness", get(readiness))
        .with_state(connected)
}

async fn readiness(State(connected): State<Connected>) -> (StatusCode, &'static str) {
    if connected.get() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not connected to kas\n")
    }
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
        connected.set(true);
        assert_eq!(status(&router, "/readiness").await, StatusCode::OK);
    }
}
