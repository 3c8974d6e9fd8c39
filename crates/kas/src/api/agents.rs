//! `/api/v1/agents`: agents and the project holding their config file.

use crate::changes::Change;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tether_store::Agent;

use super::{ApiError, ApiState};
use crate::channel::{ConfigStatus, ConnectionView};
use crate::time_format::{now, to_rfc3339};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    pub name: String,
    pub config_project: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentView {
    pub id: i64,
    pub name: String,
    pub config_project: String,
    /// Where the agent's config file lives in its project.
    pub config_path: String,
    pub created_at: String,
    /// Live connections to this kas: one per connected agent pod.
    pub connections: Vec<ConnectionView>,
    /// The config commit given to the agent and, if the newest one could not
    /// be used, why.
    pub config: ConfigStatus,
    /// Tunnels the agent keeps open to this kas, for the API proxy.
    pub tunnels: usize,
}

impl AgentView {
    fn new(a: Agent, state: &ApiState) -> Self {
        AgentView {
            id: a.id,
            config_path: tether_agent_config::config_path(&a.name),
            connections: state.connections.connections(&a.name),
            config: state.connections.config(&a.name),
            tunnels: state.connections.tunnels().count(&a.name),
            name: a.name,
            config_project: a.config_project,
            created_at: to_rfc3339(a.created_at),
        }
    }
}

pub async fn create(
    State(state): State<ApiState>,
    Json(body): Json<CreateAgent>,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    let agent = state
        .store
        .create_agent(&body.name, &body.config_project, now())
        .await?;
    tracing::info!(agent = %agent.name, project = %agent.config_project, "agent created");
    Ok((StatusCode::CREATED, Json(AgentView::new(agent, &state))))
}

pub async fn list(State(state): State<ApiState>) -> Result<Json<Vec<AgentView>>, ApiError> {
    let agents = state.store.list_agents().await?;
    Ok(Json(
        agents
            .into_iter()
            .map(|a| AgentView::new(a, &state))
            .collect(),
    ))
}

pub async fn show(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    match state.store.get_agent(&name).await? {
        Some(a) => Ok(Json(AgentView::new(a, &state))),
        None => Err(ApiError::NotFound(format!("agent {name} not found"))),
    }
}

pub async fn remove(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_agent(&name).await?;
    tracing::info!(agent = %name, "agent deleted");
    state.changes.apply(Change::AgentDeleted { name });
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/agents/{name}/gitops`: the last sync of each manifest
/// project, with its objects.
pub async fn gitops(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<crate::channel::SyncView>>, ApiError> {
    if state.store.get_agent(&name).await?.is_none() {
        return Err(ApiError::NotFound(format!("agent {name} not found")));
    }
    Ok(Json(state.connections.syncs(&name)))
}
