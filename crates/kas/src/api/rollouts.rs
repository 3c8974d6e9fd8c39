//! `/api/v1/rollouts`: each project's rollout and its control, agents'
//! pins, and the long polls CI blocks on (`kas rollout wait`, `kas agent
//! wait`), which a project access token of the project may call.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use tether_api::{PinRequest, PinView, RolloutView, WaitQuery, WaitView};
use tether_credentials::{Token, TokenKind};
use tether_rollouts::state::{Action, Phase, Pin, keys, now_ms, rfc3339};
use tether_rollouts::view::{agent_outcome, rollout_outcome, rollout_view};
use tether_store::{AccessTokenStatus, FleetRecord, TokenOwner};

use super::{ApiError, ApiState};
use crate::changes::Change;

/// Longest one long poll holds; `kas … wait` asks again until its own
/// timeout.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// How often a wait for an agent reads its reports again.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How long a control request waits for the driver to apply it.
const APPLIED_WITHIN: Duration = Duration::from_secs(3);
/// Waits held at once by this replica, for every caller together: a
/// leaked CI token cannot hold every connection or load the database.
const MAX_WAITS: usize = 256;

static WAITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_WAITS);

/// Who asked for a wait.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
    Admin,
    /// A CI job of the project: told the outcome, not every other
    /// agent's state.
    ProjectToken,
}

fn slot() -> Result<tokio::sync::SemaphorePermit<'static>, ApiError> {
    WAITS.try_acquire().map_err(|_| {
        ApiError::Conflict(format!(
            "{MAX_WAITS} waits are held already: ask again shortly"
        ))
    })
}

pub async fn list(State(state): State<ApiState>) -> Json<Vec<RolloutView>> {
    let now = now_ms();
    Json(
        state
            .fleet
            .rollouts()
            .iter()
            .map(|r| rollout_view(r, now))
            .collect(),
    )
}

pub async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<RolloutView>, ApiError> {
    let rollout = state
        .fleet
        .rollout(&id)
        .ok_or_else(|| ApiError::NotFound(format!("project {id} has no rollout")))?;
    Ok(Json(rollout_view(&rollout, now_ms())))
}

/// `POST /api/v1/projects/{id}/rollout/{pause|resume|promote|abort}`:
/// handed to the driving replica; answered once it applied it (200), or
/// when it has not yet (202).
pub async fn control(
    State(state): State<ApiState>,
    Path((id, action)): Path<(String, String)>,
) -> Result<(StatusCode, Json<RolloutView>), ApiError> {
    let (applied, view) = request(&state, &id, &action).await?;
    let status = match applied {
        true => StatusCode::OK,
        false => StatusCode::ACCEPTED,
    };
    Ok((status, Json(view)))
}

/// Writes an operator's request for the driving replica, and waits a
/// little for it to be applied: whether it was, and the rollout.
pub(crate) async fn request(
    state: &ApiState,
    id: &str,
    action: &str,
) -> Result<(bool, RolloutView), ApiError> {
    let action = match action {
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "promote" => Action::Promote,
        "abort" => Action::Abort,
        other => {
            return Err(ApiError::NotFound(format!(
                "no rollout action {other:?}: pause, resume, promote or abort"
            )));
        }
    };
    let before = state
        .fleet
        .rollout(id)
        .ok_or_else(|| ApiError::NotFound(format!("project {id} has no rollout")))?;
    if before.phase != Phase::Running {
        return Err(ApiError::Conflict(format!(
            "the rollout of {} is {}: nothing to {}",
            before.commit,
            before.phase.as_str(),
            action.as_str()
        )));
    }
    let value = serde_json::to_string(&action).map_err(|e| ApiError::Internal(e.into()))?;
    state
        .store
        .put_fleet_record(FleetRecord {
            key: keys::request(id),
            value,
            updated_at: tether_store::time::now(),
        })
        .await?;
    tracing::info!(project = %id, action = action.as_str(), "rollout action requested");
    let mut changed = state.fleet.watch();
    let deadline = tokio::time::Instant::now() + APPLIED_WITHIN;
    loop {
        if let Some(now) = state.fleet.rollout(id)
            && now.rev != before.rev
        {
            return Ok((true, rollout_view(&now, now_ms())));
        }
        if tokio::time::timeout_at(deadline, changed.changed())
            .await
            .is_err()
        {
            return Ok((false, rollout_view(&before, now_ms())));
        }
    }
}

pub async fn pins(State(state): State<ApiState>) -> Json<Vec<PinView>> {
    Json(
        state
            .fleet
            .pins()
            .into_iter()
            .map(|(project, agent, pin)| PinView {
                agent,
                project,
                commit: pin.commit,
                pinned_at: rfc3339(pin.at),
            })
            .collect(),
    )
}

/// `PUT /api/v1/agents/{name}/pins/{project}`: holds the agent on the
/// commit; rollouts skip it.
pub async fn pin(
    State(state): State<ApiState>,
    Path((name, project)): Path<(String, String)>,
    Json(body): Json<PinRequest>,
) -> Result<Json<PinView>, ApiError> {
    if !tether_notify::statuses::is_commit_id(&body.commit) {
        return Err(ApiError::Invalid(
            "a pin names a full commit id (40 or 64 hexadecimal digits)".to_owned(),
        ));
    }
    state
        .store
        .get_agent(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("agent {name} not found")))?;
    state
        .store
        .get_project(&project)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("project {project} not found")))?;
    let commit = body.commit.to_ascii_lowercase();
    known_commit(&state, &project, &commit).await?;
    let pin = Pin {
        commit,
        at: now_ms(),
    };
    let value = serde_json::to_string(&pin).map_err(|e| ApiError::Internal(e.into()))?;
    state
        .store
        .put_fleet_record(FleetRecord {
            key: keys::pin(&project, &name),
            value,
            updated_at: tether_store::time::now(),
        })
        .await?;
    tracing::info!(agent = %name, project = %project, commit = %pin.commit, "agent pinned");
    fleet_changed(&state, &project).await;
    Ok(Json(PinView {
        agent: name,
        project,
        commit: pin.commit,
        pinned_at: rfc3339(pin.at),
    }))
}

pub async fn unpin(
    State(state): State<ApiState>,
    Path((name, project)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let key = keys::pin(&project, &name);
    if state.store.fleet_record(&key).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "agent {name} is not pinned on {project}"
        )));
    }
    state.store.delete_fleet_record(&key).await?;
    tracing::info!(agent = %name, project = %project, "agent unpinned");
    fleet_changed(&state, &project).await;
    Ok(StatusCode::NO_CONTENT)
}

/// This replica reads the rollouts and pins again now; the others are
/// told.
async fn fleet_changed(state: &ApiState, project: &str) {
    if let Err(e) = state.fleet.reload().await {
        tracing::warn!(error = %e, "cannot read the rollouts");
    }
    state
        .changes
        .apply(Change::FleetChanged {
            project: project.to_owned(),
        })
        .await;
}

/// `GET /api/v1/projects/{id}/rollout/wait?commit=…&timeout=…`: answers
/// once the rollout of the commit ended, or with `pending` when the
/// timeout (at most a minute) is up.
pub async fn wait_rollout(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Result<Json<WaitView>, ApiError> {
    let caller = authorize_wait(&state, &headers, &id).await?;
    let _slot = slot()?;
    let view_for = |r: &tether_rollouts::state::Rollout| {
        (caller == Caller::Admin).then(|| rollout_view(r, now_ms()))
    };
    let deadline = tokio::time::Instant::now() + timeout(&query);
    let mut changed = state.fleet.watch();
    loop {
        let rollout = state.fleet.rollout(&id);
        let mut answer = rollout_outcome(rollout.as_deref(), &query.commit);
        if answer.is_none()
            && let Some(r) = rollout.as_deref()
            && r.supersedes.iter().any(|c| c == &query.commit)
        {
            answer = Some(WaitView {
                outcome: "superseded".to_owned(),
                message: format!("superseded by the rollout of {}", r.commit),
                ..WaitView::default()
            });
        }
        if let Some(mut answer) = answer {
            answer.rollout = rollout.as_deref().and_then(view_for);
            return Ok(Json(answer));
        }
        if tokio::time::timeout_at(deadline, changed.changed())
            .await
            .is_err()
        {
            return Ok(Json(WaitView {
                outcome: "pending".to_owned(),
                message: match &rollout {
                    Some(r) if r.commit == query.commit => tether_rollouts::driver::summary(r),
                    _ => format!("no rollout of {} yet", query.commit),
                },
                rollout: rollout.as_deref().and_then(view_for),
                ..WaitView::default()
            }));
        }
    }
}

/// `GET /api/v1/agents/{name}/wait?project=…&commit=…&timeout=…`: answers
/// once the agent synced the commit with every object Current, failed
/// it, or will not get it (the rollout halted, the agent is pinned).
pub async fn wait_agent(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Result<Json<WaitView>, ApiError> {
    let project = query
        .project
        .clone()
        .ok_or_else(|| ApiError::Invalid("?project= is required".to_owned()))?;
    let caller = authorize_wait(&state, &headers, &project).await?;
    let _slot = slot()?;
    // A project's token asks only of the agents that follow the project.
    let follows = state
        .store
        .fleet_record(&keys::given(&project, &name))
        .await?
        .is_some();
    if caller == Caller::ProjectToken && !follows {
        return Err(ApiError::NotFound(format!(
            "no agent {name} follows {project}"
        )));
    }
    state
        .store
        .get_agent(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("agent {name} not found")))?;
    let deadline = tokio::time::Instant::now() + timeout(&query);
    loop {
        let observed = state
            .store
            .latest_syncs(&name)
            .await?
            .into_iter()
            .find(|r| r.project == project)
            .and_then(|r| serde_json::from_str::<tether_api::SyncView>(&r.report).ok())
            .map(|v| tether_rollouts::advance::Observed::of(&v));
        let rollout = state.fleet.rollout(&project);
        let pin = state.fleet.pin(&project, &name);
        if let Some(answer) = agent_outcome(
            &name,
            &query.commit,
            observed.as_ref(),
            rollout.as_deref(),
            pin.as_ref(),
        ) {
            return Ok(Json(answer));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Ok(Json(WaitView {
                outcome: "pending".to_owned(),
                message: match observed {
                    Some(o) if o.commit == query.commit => {
                        format!("{name} is syncing {}", query.commit)
                    }
                    Some(o) => format!("{name} is on {}", o.commit),
                    None => format!("{name} reported nothing of {project}"),
                },
                agent: Some(name),
                ..WaitView::default()
            }));
        }
        tokio::time::sleep(left.min(REPORT_EVERY)).await;
    }
}

fn timeout(query: &WaitQuery) -> Duration {
    Duration::from_secs(query.timeout.unwrap_or(30)).min(MAX_WAIT)
}

/// The admin token, or a project access token of `project` (a CI job of
/// the manifest project waiting for its own commit).
async fn authorize_wait(
    state: &ApiState,
    headers: &HeaderMap,
    project: &str,
) -> Result<Caller, ApiError> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Token::from_bearer(v).ok())
        .ok_or(ApiError::Unauthorized)?;
    match token.kind() {
        TokenKind::Admin if state.admin.matches(&token).await => Ok(Caller::Admin),
        TokenKind::Project => match state
            .store
            .authenticate_access(&token.hash(), tether_store::time::now())
            .await?
        {
            AccessTokenStatus::Active(record)
                if record.owner == TokenOwner::Project(project.to_owned()) =>
            {
                Ok(Caller::ProjectToken)
            }
            _ => Err(ApiError::Unauthorized),
        },
        _ => Err(ApiError::Unauthorized),
    }
}

/// Refuses a commit the project's repository does not hold: a pin to it
/// would only fail the agent's sync.
async fn known_commit(state: &ApiState, project: &str, commit: &str) -> Result<(), ApiError> {
    let mut source = state.repos.subscribe(project).borrow().source.clone();
    if source.is_none() {
        state
            .repos
            .refresh(project)
            .await
            .map_err(|e| ApiError::Upstream(e.to_string()))?;
        source = state.repos.subscribe(project).borrow().source.clone();
    }
    let source = source.ok_or_else(|| {
        ApiError::Upstream(format!("kas has not read {project}'s repository yet"))
    })?;
    let wanted = commit.to_owned();
    let found = tokio::task::spawn_blocking(move || source.resolve(Some(&wanted)))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    match found {
        Ok(found) if found.to_string() == commit => Ok(()),
        _ => Err(ApiError::Invalid(format!(
            "{commit} is not a commit of {project}'s repository"
        ))),
    }
}
