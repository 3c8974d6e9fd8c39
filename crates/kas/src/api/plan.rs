//! `POST /api/v1/agents/{name}/plan`: what a commit of one of the agent's
//! manifest projects would change in its cluster. kas selects and renders
//! the commit's files as for a sync (the render cache serves both), an
//! agent's session here dry-runs them against the cluster, and the answer
//! lists each object to create, update (with its fields), leave alone or
//! prune. Nothing changes anywhere.
//!
//! Only the replica holding the agent's session can ask it; a replica
//! without one forwards the request (as it came, over the private
//! listener) to the others until one answers, and a forwarded request is
//! never forwarded again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use tether_api::{FieldChangeView, PlanRequest, PlanView, PlannedObjectView};

use super::ApiState;
use super::error::ApiError;
use tether_agent_config::policy;
use tether_channel::manifests::{self, ManifestSpec};
use tether_channel::plans::PlanError;

/// How long the agent may take to dry-run a commit.
const PLAN_TIMEOUT: Duration = Duration::from_secs(120);

/// Marks a plan request another replica forwarded here.
#[derive(Clone, Copy, Debug)]
pub struct RoutedByPeer;

/// Largest plan request read (a commit, a project id).
const MAX_REQUEST_BYTES: usize = 64 << 10;

/// Whether `path` is a plan request (the one API request the private
/// listener serves).
pub fn is_plan_path(path: &str) -> bool {
    path.strip_prefix("/api/v1/agents/")
        .and_then(|rest| rest.strip_suffix("/plan"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

pub async fn plan(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let routed = request.extensions().get::<RoutedByPeer>().is_some();
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_REQUEST_BYTES)
        .await
        .map_err(|e| ApiError::Invalid(format!("cannot read the request: {e}")))?;
    let asked: PlanRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::Invalid(format!("the request is not a plan request: {e}")))?;
    if state.configs.in_use(&name).is_none() {
        if routed {
            let mut answer = ApiError::Conflict(format!(
                "agent {name} has no session on this kas replica either"
            ))
            .into_response();
            answer.headers_mut().insert(
                tether_replicas::router::NO_SESSION,
                http::HeaderValue::from_static("1"),
            );
            return Ok(answer);
        }
        if let Some(router) = &state.router
            && let Some(answer) = router.ask_peers(&name, &parts, body).await
        {
            return Ok(answer.map(axum::body::Body::new));
        }
    }
    Ok(Json(plan_here(&state, name, asked).await?).into_response())
}

/// Plans with the session held here.
async fn plan_here(
    state: &ApiState,
    name: String,
    request: PlanRequest,
) -> Result<PlanView, ApiError> {
    let started = Instant::now();
    let agent = state
        .store
        .get_agent(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("agent {name} not found")))?;
    let config = state.configs.in_use(&name).ok_or_else(|| {
        ApiError::Conflict(format!(
            "agent {name} has no session on this kas: a plan needs the agent connected"
        ))
    })?;
    let specs = ManifestSpec::from_config(&config, &agent.config_project);
    let spec = match (&request.project, specs.as_slice()) {
        (Some(project), _) => specs
            .iter()
            .find(|s| &s.project == project)
            .ok_or_else(|| {
                ApiError::Invalid(format!(
                    "project {project} is not a manifest project of agent {name} (it has: {})",
                    names(&specs)
                ))
            })?,
        (None, [only]) => only,
        (None, []) => {
            return Err(ApiError::Invalid(format!(
                "agent {name}'s config names no manifest project"
            )));
        }
        (None, _) => {
            return Err(ApiError::Invalid(format!(
                "agent {name} has several manifest projects; name one with project ({})",
                names(&specs)
            )));
        }
    };
    let granted = state
        .store
        .list_manifest_grants(None, Some(&name))
        .await?
        .into_iter()
        .map(|g| g.project)
        .collect();
    policy::may_read(&name, &agent.config_project, &spec.project, &granted)
        .map_err(|refused| ApiError::Conflict(refused.to_string()))?;

    // Held while planning, so that the project's poller stays up.
    let head = state.repos.subscribe(&spec.project);
    let mut current = head.borrow().clone();
    // A plan changes nothing, so an unverified commit is planned, and the
    // plan says that agents would not be given it.
    let commit = match current.resolve_unverified(Some(&request.commit)).await {
        Ok(commit) => commit,
        Err(_) => {
            // Not fetched yet, perhaps: read the repository once more.
            state
                .repos
                .refresh(&spec.project)
                .await
                .map_err(|e| ApiError::Upstream(e.to_string()))?;
            current = head.borrow().clone();
            current
                .resolve_unverified(Some(&request.commit))
                .await
                .map_err(|e| {
                    ApiError::NotFound(format!(
                        "commit {} of {}: {e}",
                        request.commit, spec.project
                    ))
                })?
        }
    };
    let source = current
        .source
        .clone()
        .ok_or_else(|| ApiError::Upstream(format!("{} has not been read yet", spec.project)))?;
    let unverified = match &current.gate {
        Some(gate) if current.commit.as_ref() != Some(&commit) => {
            gate.check(&source, &commit).await.err()
        }
        _ => None,
    };
    if let Some(why) = unverified {
        // Nothing of an unverified commit goes to the agent, not even for
        // a dry run (it would decrypt and render it): the plan says why.
        return Ok(PlanView {
            agent: name,
            project: spec.project.clone(),
            commit: commit.to_string(),
            counts: BTreeMap::new(),
            objects: Vec::new(),
            dry_runs: 0,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            rollout: None,
            unverified: Some(why),
        });
    }
    let spec = spec_at(&agent, spec, &source, &commit).await?;
    let (kube_version, api_versions) = state.live.cluster_of(&name).unwrap_or_default();
    let rendering = manifests::Rendering {
        renderer: state.renderer.clone().map_err(manifests::NoRenderer::from),
        kube_version,
        api_versions,
    };
    let files = manifests::collect(
        &spec,
        &source,
        &commit,
        &rendering,
        state.repos.remote_bases_allowed(&spec.project).await,
    )
    .await
    .map_err(|e| ApiError::Invalid(format!("commit {commit} cannot be planned: {e}")))?;
    let commit = commit.to_string();
    let mut report = state
        .plans
        .ask(&name, &spec.project, &commit, files, PLAN_TIMEOUT)
        .await
        .map_err(|e| match e {
            PlanError::NotConnected(_) | PlanError::Gone(_) => ApiError::Conflict(e.to_string()),
            PlanError::Busy(_) | PlanError::Timeout { .. } => ApiError::Upstream(e.to_string()),
        })?;
    if !report.error.is_empty() {
        return Err(ApiError::Invalid(format!(
            "commit {commit} cannot be planned: {}",
            report.error
        )));
    }
    let objects: Vec<PlannedObjectView> = std::mem::take(&mut report.objects)
        .into_iter()
        .map(|o| PlannedObjectView {
            group: o.group,
            kind: o.kind,
            namespace: o.namespace,
            name: o.name,
            change: o.change,
            message: o.message,
            fields: o
                .fields
                .into_iter()
                .map(|f| FieldChangeView {
                    path: f.path,
                    before: f.before,
                    after: f.after,
                })
                .collect(),
        })
        .collect();
    let mut counts = BTreeMap::new();
    for o in &objects {
        *counts.entry(o.change.clone()).or_insert(0) += 1;
    }
    let rollout = state.fleet.rollout(&spec.project).map(|r| {
        let pin = state.fleet.pin(&spec.project, &name);
        tether_rollouts::view::agent_line(&r, &name, pin.as_ref())
    });
    Ok(PlanView {
        agent: name,
        project: spec.project.clone(),
        commit,
        counts,
        objects,
        dry_runs: report.dry_runs as usize,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        rollout,
        unverified: None,
    })
}

/// `spec` as the agent would sync it at `commit`: a commit of the agent's
/// own configuration project may change the config too (a chart's
/// values, a glob), so the config of that commit decides.
pub(crate) async fn spec_at(
    agent: &tether_store::Agent,
    spec: &ManifestSpec,
    source: &tether_git::Source,
    commit: &tether_git::CommitId,
) -> Result<ManifestSpec, ApiError> {
    if spec.project != agent.config_project {
        return Ok(spec.clone());
    }
    let loaded = tether_channel::config::load(
        source.clone(),
        commit.clone(),
        &agent.name,
        &agent.config_project,
    )
    .await
    .map_err(|problem| {
        ApiError::Invalid(format!(
            "at commit {commit}, the config file is refused: {}",
            problem.message
        ))
    })?;
    ManifestSpec::from_config(&loaded.config, &agent.config_project)
        .into_iter()
        .find(|s| s.project == spec.project)
        .ok_or_else(|| {
            ApiError::Invalid(format!(
                "at commit {commit}, agent {}'s config no longer names {}",
                agent.name, spec.project
            ))
        })
}

/// Largest plan read back from another replica.
const MAX_ROUTED_PLAN_BYTES: usize = 64 << 20;

/// The plan the web UI asks for: made here when the agent's session is
/// here, else asked of the other replicas as an API request would be,
/// carrying the admin's session (`session`, the cookie's value), which
/// authorizes it there as it did here.
pub(crate) async fn plan_anywhere(
    state: &ApiState,
    name: &str,
    asked: PlanRequest,
    session: &str,
) -> Result<PlanView, ApiError> {
    if state.configs.in_use(name).is_none()
        && let Some(router) = &state.router
    {
        let body = serde_json::to_vec(&asked).map_err(|e| ApiError::Internal(e.into()))?;
        let (parts, ()) =
            http::Request::post(format!("/api/v1/agents/{}/plan", tether_api::segment(name)))
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(crate::ui::session::FORWARDED_HEADER, session)
                .body(())
                .map_err(|e| ApiError::Internal(e.into()))?
                .into_parts();
        if let Some(answer) = router.ask_peers(name, &parts, body.into()).await {
            let status = answer.status();
            let bytes = axum::body::to_bytes(
                axum::body::Body::new(answer.into_body()),
                MAX_ROUTED_PLAN_BYTES,
            )
            .await
            .map_err(|e| ApiError::Upstream(format!("another replica's plan broke off: {e}")))?;
            if status.is_success() {
                return serde_json::from_slice(&bytes).map_err(|e| {
                    ApiError::Upstream(format!("another replica's plan is unreadable: {e}"))
                });
            }
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(match status {
                http::StatusCode::NOT_FOUND => ApiError::NotFound(message),
                http::StatusCode::CONFLICT => ApiError::Conflict(message),
                http::StatusCode::UNPROCESSABLE_ENTITY => ApiError::Invalid(message),
                _ => ApiError::Upstream(message),
            });
        }
    }
    plan_here(state, name.to_owned(), asked).await
}

fn names(specs: &[ManifestSpec]) -> String {
    specs
        .iter()
        .map(|s| s.project.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
