//! `/api/v1/projects`: git repositories kas reads. A project's id is
//! path-like (`team/platform-config`); in a URL its `/` is written `%2F`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tether_store::{NewProject, Project};

use super::{ApiError, ApiState};
use crate::repos::RefreshError;
use crate::time_format::{now, to_rfc3339};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub credentials_ref: Option<String>,
    /// Branch, tag or commit to read; absent: the default branch.
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProjectView {
    pub id: String,
    pub url: String,
    pub credentials_ref: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub created_at: String,
}

impl From<Project> for ProjectView {
    fn from(p: Project) -> Self {
        ProjectView {
            id: p.id,
            url: p.url,
            credentials_ref: p.credentials_ref,
            git_ref: p.git_ref,
            created_at: to_rfc3339(p.created_at),
        }
    }
}

pub async fn create(
    State(state): State<ApiState>,
    Json(body): Json<CreateProject>,
) -> Result<(StatusCode, Json<ProjectView>), ApiError> {
    let project = state
        .store
        .create_project(NewProject {
            id: body.id,
            url: body.url,
            credentials_ref: body.credentials_ref,
            created_at: now(),
            git_ref: body.git_ref.filter(|r| !r.trim().is_empty()),
        })
        .await?;
    tracing::info!(project = %project.id, "project registered");
    Ok((StatusCode::CREATED, Json(project.into())))
}

pub async fn list(State(state): State<ApiState>) -> Result<Json<Vec<ProjectView>>, ApiError> {
    let projects = state.store.list_projects().await?;
    Ok(Json(projects.into_iter().map(Into::into).collect()))
}

pub async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<ProjectView>, ApiError> {
    match state.store.get_project(&id).await? {
        Some(p) => Ok(Json(p.into())),
        None => Err(ApiError::NotFound(format!("project {id} not found"))),
    }
}

pub async fn remove(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_project(&id).await?;
    // Its access tokens went with it.
    state.proxy.forget_admissions();
    tracing::info!(project = %id, "project deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Refreshed {
    pub project: String,
    pub commit: String,
}

/// Polls the project now; its connected agents get any new configuration
/// as soon as the poll finishes, before this answers.
pub async fn refresh(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Refreshed>, ApiError> {
    match state.repos.refresh(&id).await {
        Ok(commit) => {
            tracing::info!(project = %id, commit = %commit, "project refreshed");
            Ok(Json(Refreshed {
                project: id,
                commit: commit.to_string(),
            }))
        }
        Err(RefreshError::NotFound(_)) => {
            Err(ApiError::NotFound(format!("project {id} not found")))
        }
        Err(RefreshError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::Upstream(format!("cannot read project {id}: {e}"))),
    }
}
