//! Why a request was not forwarded, as the client is told.

use http::{HeaderName, Response, StatusCode};
use tether_tunnel::{Body, status_response};

/// The header of a routed request's 503 that says the replica had no
/// tunnel of the agent after all (its tunnels moved): the replica that
/// sent it looks again instead of passing the 503 on.
pub const ROUTE_MISS: HeaderName = HeaderName::from_static("tether-route-miss");

/// Why a request was not forwarded: the status and message for the client.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    /// A routed request found no tunnel here after all: the replica that
    /// sent it looks again rather than passing this answer on.
    pub(crate) route_miss: bool,
}

impl Rejection {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Rejection {
            status,
            message: message.into(),
            route_miss: false,
        }
    }

    pub(crate) fn response(&self) -> Response<Body> {
        let reason = match self.status {
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::BAD_REQUEST => "BadRequest",
            StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
            _ => "InternalError",
        };
        let mut response = status_response(self.status, reason, &self.message);
        if self.route_miss {
            response
                .headers_mut()
                .insert(ROUTE_MISS, http::HeaderValue::from_static("no-tunnel"));
        }
        response
    }
}
