//! Notification secrets: where the destinations that agents' configs name
//! (`notifications[].url_secret`) deliver. Write-only: listed by name.
//!
//! A secret named `GROUP/NAME` is for the agents configured in that
//! top-level group's projects; one named `NAME` alone is kas-wide, for
//! kas's settings file only (see [`tether_agent_config::policy::may_use_secret`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tether_api::{NotificationSecretRequest, NotificationSecretView};
use tether_store::NotificationSecret;
use tether_store::time::{now, to_rfc3339};

use super::ApiState;
use super::error::ApiError;

pub async fn set(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Json(request): Json<NotificationSecretRequest>,
) -> Result<Json<NotificationSecretView>, ApiError> {
    if let Some(reason) = tether_agent_config::notification_secret_name_problem(&name) {
        return Err(ApiError::Invalid(format!(
            "{name:?} is not a secret name ({reason}): GROUP/NAME for the agents of one \
             top-level group, or NAME alone for kas's settings file"
        )));
    }
    let url = request.url.trim().to_owned();
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(ApiError::Invalid("url must be an http(s) URL".into()));
    }
    let secret = NotificationSecret {
        name: name.clone(),
        url,
        signing_key: request
            .signing_key
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty()),
        created_at: now(),
    };
    let created_at = secret.created_at;
    state.store.set_notification_secret(secret).await?;
    tracing::info!(secret = %name, "notification secret set");
    Ok(Json(NotificationSecretView {
        name,
        created_at: to_rfc3339(created_at),
    }))
}

pub async fn list(
    State(state): State<ApiState>,
) -> Result<Json<Vec<NotificationSecretView>>, ApiError> {
    let secrets = state.store.list_notification_secrets().await?;
    Ok(Json(
        secrets
            .into_iter()
            .map(|(name, at)| NotificationSecretView {
                name,
                created_at: to_rfc3339(at),
            })
            .collect(),
    ))
}

pub async fn remove(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_notification_secret(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
