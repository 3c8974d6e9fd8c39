//! `/api/v1/projects`: git repositories kas reads. A project's id is
//! path-like (`team/platform-config`); in a URL its `/` is written `%2F`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tether_store::{NewProject, Project};

use super::{ApiError, ApiState};
use crate::changes::Change;
pub use tether_api::{CreateProject, GrantRequest, GrantView, ProjectView, Refreshed};
use tether_channel::repos::RefreshError;
use tether_store::time::{now, to_rfc3339};

pub(crate) fn project_view(p: Project) -> ProjectView {
    let verify = p.verify.as_ref().map(|policy| tether_api::VerifyView {
        mode: policy.mode.as_str().to_owned(),
        ssh_signers: principals(policy.ssh_allowed_signers.as_deref().unwrap_or_default()),
        gpg_keys: policy.gpg_keys.is_some(),
        trust_base: policy.trust_base.clone(),
        set_at: to_rfc3339(policy.set_at),
        verified: p.verification.verified.clone(),
        signer: p.verification.signer.clone(),
        refused: p
            .verification
            .refused
            .as_ref()
            .map(|r| tether_api::RefusedCommit {
                commit: r.commit.clone(),
                reason: r.reason.clone(),
                at: to_rfc3339(r.at),
            }),
    });
    ProjectView {
        verify,
        id: p.id,
        // A password written into the URL never leaves kas.
        url: tether_git::redact(&p.url),
        credentials_ref: p.credentials_ref,
        git_ref: p.git_ref,
        created_at: to_rfc3339(p.created_at),
        allow_remote_bases: p.allow_remote_bases,
    }
}

/// The principals an allowed-signers file names (its first field), for
/// the project's page; the keys themselves are not shown.
fn principals(allowed_signers: &str) -> Vec<String> {
    allowed_signers
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Largest key file taken (an allowed-signers file or armored keys).
const MAX_KEYS_BYTES: usize = 256 << 10;

/// Sets how the project's commits are verified (`kas project verify`):
/// checked here, so that a file git or gpg cannot read is refused now,
/// not at the next poll; the project's poller applies it at once.
pub async fn verify(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Json(settings): Json<tether_api::VerifySettings>,
) -> Result<Json<ProjectView>, ApiError> {
    let mode = match settings.mode.as_str() {
        "off" => None,
        "head" => Some(tether_store::VerifyMode::Head),
        "strict" => Some(tether_store::VerifyMode::Strict),
        other => {
            return Err(ApiError::Invalid(format!(
                "mode {other:?}: head, strict or off"
            )));
        }
    };
    let policy = match mode {
        None => None,
        Some(mode) => {
            let nonempty = |text: Option<String>| text.filter(|t| !t.trim().is_empty());
            let ssh = nonempty(settings.ssh_allowed_signers);
            let gpg = nonempty(settings.gpg_keys);
            if ssh.is_none() && gpg.is_none() {
                return Err(ApiError::Invalid(
                    "a policy needs keys: an SSH allowed-signers file, OpenPGP public keys, or both"
                        .to_owned(),
                ));
            }
            for text in [&ssh, &gpg].into_iter().flatten() {
                if text.len() > MAX_KEYS_BYTES {
                    return Err(ApiError::Invalid(format!(
                        "a key file is {} bytes, more than the limit of {MAX_KEYS_BYTES}",
                        text.len()
                    )));
                }
            }
            if let Some(base) = &settings.trust_base
                && !tether_notify::statuses::is_commit_id(base)
            {
                return Err(ApiError::Invalid(
                    "trust_base must be a full commit id (40 or 64 hex digits)".to_owned(),
                ));
            }
            let keys = tether_git::TrustedKeys {
                ssh_allowed_signers: ssh.clone(),
                gpg_keys: gpg.clone(),
            };
            tokio::task::spawn_blocking(move || {
                let scratch = tempfile::tempdir()?;
                tether_git::Verifier::new(&keys, scratch.path())
                    .map(drop)
                    .map_err(|e| anyhow::anyhow!(e.to_string()))
            })
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .map_err(|e| ApiError::Invalid(format!("the keys cannot be used: {e}")))?;
            Some(tether_store::VerifyPolicy {
                mode,
                ssh_allowed_signers: ssh,
                gpg_keys: gpg,
                trust_base: settings.trust_base,
                set_at: now(),
            })
        }
    };
    let project = state.store.set_project_verify(&id, policy).await?;
    tracing::info!(
        project = %id,
        mode = %settings.mode,
        "signature policy changed"
    );
    state.repos.wake(&id);
    Ok(Json(project_view(project)))
}

/// Changes what an administrator decides for a project: its consent to
/// remote bases (`kas project set ID --allow-remote-bases`).
pub async fn update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Json(settings): Json<tether_api::ProjectSettings>,
) -> Result<Json<ProjectView>, ApiError> {
    let project = match settings.allow_remote_bases {
        Some(allow) => {
            let project = state.store.set_project_remote_bases(&id, allow).await?;
            tracing::info!(project = %id, allow, "remote bases consent changed");
            project
        }
        None => state
            .store
            .get_project(&id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("project {id} not found")))?,
    };
    Ok(Json(project_view(project)))
}

pub async fn create(
    State(state): State<ApiState>,
    Json(body): Json<CreateProject>,
) -> Result<(StatusCode, Json<ProjectView>), ApiError> {
    // Checked here, where the id enters: past this point it is a ProjectId.
    let id = tether_agent_config::ProjectId::new(&body.id)
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    tether_git::check_url(&body.url).map_err(|e| ApiError::Invalid(e.to_string()))?;
    let project = state
        .store
        .create_project(NewProject {
            id: id.to_string(),
            url: body.url,
            credentials_ref: body.credentials_ref,
            created_at: now(),
            git_ref: body.git_ref.filter(|r| !r.trim().is_empty()),
        })
        .await?;
    tracing::info!(project = %project.id, "project registered");
    Ok((StatusCode::CREATED, Json(project_view(project))))
}

pub async fn list(State(state): State<ApiState>) -> Result<Json<Vec<ProjectView>>, ApiError> {
    let projects = state.store.list_projects().await?;
    Ok(Json(projects.into_iter().map(project_view).collect()))
}

pub async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<ProjectView>, ApiError> {
    match state.store.get_project(&id).await? {
        Some(p) => Ok(Json(project_view(p))),
        None => Err(ApiError::NotFound(format!("project {id} not found"))),
    }
}

pub async fn remove(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_project(&id).await?;
    tracing::info!(project = %id, "project deleted");
    if let Err(e) = state.fleet.forget_project(&id).await {
        tracing::warn!(project = %id, error = %e, "cannot forget the project's rollout records");
    }
    // Its access tokens went with it.
    state.changes.apply(Change::ProjectDeleted { id }).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Polls the project now; its connected agents get any new configuration
/// as soon as the poll finishes, before this answers.
pub async fn refresh(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Refreshed>, ApiError> {
    let commit = refresh_project(&state, &id).await?;
    Ok(Json(Refreshed {
        project: id,
        commit: commit.to_string(),
    }))
}

/// Reads project `id` now: the commit its ref points to.
pub(crate) async fn refresh_project(
    state: &ApiState,
    id: &str,
) -> Result<tether_git::CommitId, ApiError> {
    match state.repos.refresh(id).await {
        Ok(commit) => {
            tracing::info!(project = %id, commit = %commit, "project refreshed");
            Ok(commit)
        }
        Err(RefreshError::NotFound(_)) => {
            Err(ApiError::NotFound(format!("project {id} not found")))
        }
        Err(RefreshError::Store(e)) => Err(e.into()),
        Err(RefreshError::Unverified(reason)) => Err(ApiError::Conflict(format!(
            "project {id}: agents keep the last verified commit: {reason}"
        ))),
        Err(e) => Err(ApiError::Upstream(format!("cannot read project {id}: {e}"))),
    }
}

pub(crate) fn grant_view(g: tether_store::ManifestGrant) -> GrantView {
    GrantView {
        project: g.project,
        agent: g.agent,
        created_at: to_rfc3339(g.created_at),
    }
}

pub async fn grant(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Json(body): Json<GrantRequest>,
) -> Result<(StatusCode, Json<GrantView>), ApiError> {
    let grant = state
        .store
        .grant_manifest_project(&id, &body.agent, now())
        .await?;
    tracing::info!(project = %id, agent = %body.agent, "manifest project granted");
    state.changes.apply(Change::ManifestGrantsChanged).await;
    Ok((StatusCode::CREATED, Json(grant_view(grant))))
}

pub async fn list_grants(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<GrantView>>, ApiError> {
    let grants = state.store.list_manifest_grants(Some(&id), None).await?;
    Ok(Json(grants.into_iter().map(grant_view).collect()))
}

pub async fn revoke_grant(
    State(state): State<ApiState>,
    Path((id, agent)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.store.revoke_manifest_project(&id, &agent).await?;
    tracing::info!(project = %id, agent = %agent, "manifest project grant revoked");
    state.changes.apply(Change::ManifestGrantsChanged).await;
    Ok(StatusCode::NO_CONTENT)
}
