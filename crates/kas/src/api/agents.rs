//! `/api/v1/agents`: agents and the project holding their config file.

use crate::changes::Change;
use axum::Json;
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use tether_store::Agent;

use super::{ApiError, ApiState};
pub use tether_api::{AgentView, CreateAgent, HistoryQuery};
use tether_channel::ConfigStatus;
use tether_store::time::{now, to_rfc3339};

/// `a` as the API shows it; `stored` is the config status in the store:
/// what any kas (this one before a restart, or another replica) made of
/// the config last.
fn agent_view(a: Agent, state: &ApiState, stored: Option<ConfigStatus>) -> AgentView {
    AgentView {
        id: a.id,
        config_path: tether_agent_config::config_path(&a.name),
        connections: state.live.connections(&a.name),
        config: state
            .configs
            .status_if_read(&a.name)
            .or(stored)
            .unwrap_or_default(),
        // A stored name that no longer passes has no tunnel: none is
        // attached under it.
        tunnels: tether_agent_config::AgentName::new(&a.name)
            .map_or(0, |name| state.tunnels.count(&name)),
        name: a.name,
        config_project: a.config_project,
        created_at: to_rfc3339(a.created_at),
        labels: a.labels,
    }
}

pub async fn create(
    State(state): State<ApiState>,
    Json(body): Json<CreateAgent>,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    // Checked here, where they enter.
    let name = tether_agent_config::AgentName::new(&body.name)
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let project = tether_agent_config::ProjectId::new(&body.config_project)
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    // `tether/rollout` is the rollouts' commit status: an agent of that
    // name would post on it.
    if name.as_str() == "rollout" {
        return Err(ApiError::Invalid(
            "the name rollout is kept for the rollouts' commit status (tether/rollout)".to_owned(),
        ));
    }
    check_labels(&body.labels)?;
    let mut agent = state.store.create_agent(&name, &project, now()).await?;
    if !body.labels.is_empty() {
        agent = state.store.set_agent_labels(&name, body.labels).await?;
    }
    tracing::info!(agent = %agent.name, project = %agent.config_project, "agent created");
    Ok((StatusCode::CREATED, Json(agent_view(agent, &state, None))))
}

/// Every agent's stored config status, by agent name.
async fn stored_statuses(state: &ApiState) -> Result<HashMap<String, ConfigStatus>, ApiError> {
    Ok(state
        .store
        .config_statuses()
        .await?
        .into_iter()
        .filter_map(|(agent, json)| Some((agent, serde_json::from_str(&json).ok()?)))
        .collect())
}

pub async fn list(State(state): State<ApiState>) -> Result<Json<Vec<AgentView>>, ApiError> {
    let agents = state.store.list_agents().await?;
    let mut stored = stored_statuses(&state).await?;
    Ok(Json(
        agents
            .into_iter()
            .map(|a| {
                let status = stored.remove(&a.name);
                agent_view(a, &state, status)
            })
            .collect(),
    ))
}

pub async fn show(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    match state.store.get_agent(&name).await? {
        Some(a) => {
            let status = stored_statuses(&state).await?.remove(&a.name);
            Ok(Json(agent_view(a, &state, status)))
        }
        None => Err(ApiError::NotFound(format!("agent {name} not found"))),
    }
}

pub async fn remove(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_agent(&name).await?;
    tracing::info!(agent = %name, "agent deleted");
    if let Err(e) = state.fleet.forget_agent(&name).await {
        tracing::warn!(agent = %name, error = %e, "cannot forget the agent's rollout records");
    }
    state.changes.apply(Change::AgentDeleted { name }).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/agents/{name}/gitops`: the last sync of each manifest
/// project, with its objects.
pub async fn gitops(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<tether_channel::SyncView>>, ApiError> {
    let syncs = state
        .store
        .latest_syncs(&name)
        .await
        .map_err(|e| not_found_agent(e, &name))?;
    Ok(Json(views(syncs)))
}

/// `GET /api/v1/agents/{name}/gitops/history?project=…`: the last syncs of
/// one manifest project, newest first.
pub async fn gitops_history(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<Vec<tether_channel::SyncView>>, ApiError> {
    let limit = query
        .limit
        .unwrap_or(tether_channel::service::SYNC_HISTORY_PER_PROJECT)
        .clamp(1, tether_channel::service::SYNC_HISTORY_PER_PROJECT);
    let syncs = state
        .store
        .sync_history(&name, &query.project, limit)
        .await
        .map_err(|e| not_found_agent(e, &name))?;
    Ok(Json(views(syncs)))
}

fn not_found_agent(e: tether_store::StoreError, name: &str) -> ApiError {
    match e {
        tether_store::StoreError::NotFound(_) => {
            ApiError::NotFound(format!("agent {name} not found"))
        }
        other => other.into(),
    }
}

/// Stored reports as the API shows them (an unreadable one is skipped).
fn views(records: Vec<tether_store::SyncRecord>) -> Vec<tether_channel::SyncView> {
    records
        .into_iter()
        .filter_map(|r| serde_json::from_str(&r.report).ok())
        .collect()
}

/// Labels as Kubernetes takes them, and no more than an agent may carry.
fn check_labels(labels: &std::collections::BTreeMap<String, String>) -> Result<(), ApiError> {
    use tether_agent_config::labels;
    if labels.len() > labels::MAX_LABELS {
        return Err(ApiError::Invalid(format!(
            "an agent carries at most {} labels",
            labels::MAX_LABELS
        )));
    }
    for (key, value) in labels {
        labels::check_key(key).map_err(|e| ApiError::Invalid(e.to_string()))?;
        labels::check_value(value).map_err(|e| ApiError::Invalid(e.to_string()))?;
    }
    Ok(())
}

/// `PATCH /api/v1/agents/{name}/labels`: sets and removes labels at once;
/// rollouts starting from now select by them, on every replica.
pub async fn label(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Json(body): Json<tether_api::LabelChanges>,
) -> Result<Json<AgentView>, ApiError> {
    let agent = state
        .store
        .get_agent(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("agent {name} not found")))?;
    let mut labels = agent.labels;
    for key in &body.remove {
        labels.remove(key);
    }
    labels.extend(body.set);
    let agent = set_labels(&state, &name, labels).await?;
    let stored = stored_statuses(&state).await?.remove(&name);
    Ok(Json(agent_view(agent, &state, stored)))
}

/// Replaces the agent's labels (checked), on every replica.
pub(crate) async fn set_labels(
    state: &ApiState,
    name: &str,
    labels: std::collections::BTreeMap<String, String>,
) -> Result<Agent, ApiError> {
    check_labels(&labels)?;
    let agent = state.store.set_agent_labels(name, labels).await?;
    tracing::info!(agent = %name, labels = ?agent.labels, "agent labels changed");
    state
        .changes
        .apply(Change::FleetChanged {
            project: String::new(),
        })
        .await;
    Ok(agent)
}
