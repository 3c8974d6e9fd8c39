//! API errors: the client gets a status and a message that names the thing;
//! internal causes go to the log only.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tether_store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    NotFound(String),
    Conflict(String),
    Invalid(String),
    /// Something kas depends on (a git server) failed; the message says what.
    Upstream(String),
    Internal(anyhow::Error),
}

impl ApiError {
    /// The status and the message a client is given (internal causes are
    /// logged here, not told).
    pub fn answer(self) -> (StatusCode, String) {
        match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "an admin token is required: Authorization: Bearer <admin token>".to_owned(),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::Invalid(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
            ApiError::Upstream(m) => (StatusCode::BAD_GATEWAY, m),
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the kas log".to_owned(),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = self.answer();
        (status, Json(json!({ "error": message }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Invalid(m) => ApiError::Invalid(m),
            e @ StoreError::Database(_) => ApiError::Internal(e.into()),
        }
    }
}
