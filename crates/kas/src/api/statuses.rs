//! `PUT`/`GET`/`DELETE /api/v1/projects/{id}/statuses`: where kas posts
//! the commit statuses of a project's syncs (see [`crate::statuses`]). The
//! token is write-only: it is stored, sent to the git host, and never shown.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tether_api::{StatusTargetRequest, StatusTargetView};
use tether_store::StatusTarget;
use tether_store::time::{now, to_rfc3339};

use super::ApiState;
use super::error::ApiError;

const PROVIDERS: [&str; 4] = ["github", "gitlab", "gitea", "forgejo"];

pub async fn set(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Json(request): Json<StatusTargetRequest>,
) -> Result<Json<StatusTargetView>, ApiError> {
    if !PROVIDERS.contains(&request.provider.as_str()) {
        return Err(ApiError::Invalid(format!(
            "provider {:?}: one of {}",
            request.provider,
            PROVIDERS.join(", ")
        )));
    }
    let api_url = request.api_url.trim().trim_end_matches('/').to_owned();
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        return Err(ApiError::Invalid(format!(
            "api_url {api_url:?} is not an http(s) URL"
        )));
    }
    let repository = request.repository.trim().to_owned();
    let shaped = !repository.is_empty()
        && !repository.starts_with('/')
        && !repository
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        && repository
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'));
    if !shaped {
        return Err(ApiError::Invalid(format!(
            "repository {repository:?} is not owner/name (or GitLab's project path or id)"
        )));
    }
    if request.token.trim().is_empty() {
        return Err(ApiError::Invalid("a token is required".into()));
    }
    let target = StatusTarget {
        provider: request.provider,
        api_url,
        repository,
        token: request.token.trim().to_owned(),
        created_at: now(),
    };
    state.store.set_status_target(&id, target.clone()).await?;
    tracing::info!(project = %id, provider = %target.provider, "commit status target set");
    Ok(Json(view(id, target)))
}

pub async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<StatusTargetView>, ApiError> {
    let target = state
        .store
        .status_target(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("project {id} posts no commit statuses")))?;
    Ok(Json(view(id, target)))
}

pub async fn remove(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_status_target(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn view(project: String, t: StatusTarget) -> StatusTargetView {
    StatusTargetView {
        project,
        provider: t.provider,
        api_url: t.api_url,
        repository: t.repository,
        created_at: to_rfc3339(t.created_at),
    }
}
