//! Image automation: its statuses and scan requests, registry credentials,
//! push credentials per project, and registry push notifications
//! (`POST /api/v1/registry/hooks/{provider}`, authenticated with kas's
//! registry hook secret, not the admin token). The work itself is
//! [`tether_images::service`]'s.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tether_api::{
    ImageProjectStatus, RegistryLoginView, ScanImages, ScanQueued, SetPushCredential,
    SetRegistryLogin,
};
use tether_store::time::{now, to_rfc3339};
use tether_store::{PushCredential, PushSecretKind, RegistryLogin};
use tether_webhooks::registry::{self as hooks, Registry};

use super::ApiState;
use super::error::ApiError;

pub async fn list(
    State(state): State<ApiState>,
) -> Result<Json<Vec<ImageProjectStatus>>, ApiError> {
    Ok(Json(state.images.statuses().await?))
}

/// Scans every repository now, or the one of policy `name` (in any
/// project).
pub async fn scan(
    State(state): State<ApiState>,
    Json(request): Json<ScanImages>,
) -> Result<(StatusCode, Json<ScanQueued>), ApiError> {
    let statuses = state.images.statuses().await?;
    let repositories: Vec<String> = match &request.name {
        None => Vec::new(),
        Some(name) => {
            let found: Vec<String> = statuses
                .iter()
                .flat_map(|p| p.policies.iter())
                .filter(|p| &p.name == name)
                .filter_map(|p| tether_agent_config::ImageRepository::parse(&p.repository).ok())
                .map(|r| r.full_name())
                .collect();
            if found.is_empty() {
                return Err(ApiError::NotFound(format!("no image policy named {name}")));
            }
            found
        }
    };
    state.images.request_scan(&repositories).await?;
    Ok((StatusCode::ACCEPTED, Json(ScanQueued { repositories })))
}

pub async fn set_login(
    State(state): State<ApiState>,
    Path(host): Path<String>,
    Json(request): Json<SetRegistryLogin>,
) -> Result<Json<RegistryLoginView>, ApiError> {
    let probe = format!("{host}/x");
    match tether_agent_config::ImageRepository::parse(&probe) {
        Ok(r) if r.host == host => {}
        _ => {
            return Err(ApiError::Invalid(format!(
                "{host:?} is not a registry host"
            )));
        }
    }
    if let Some(bad) = request
        .groups
        .iter()
        .find(|g| g.is_empty() || g.contains(['/', ',']) || g.len() > 255)
    {
        return Err(ApiError::Invalid(format!(
            "{bad:?} is not a top-level group"
        )));
    }
    if request.username.is_empty() || request.password.is_empty() {
        return Err(ApiError::Invalid(
            "username and password must not be empty".into(),
        ));
    }
    let login = RegistryLogin {
        host: host.clone(),
        username: request.username,
        password: request.password,
        groups: request.groups,
        created_at: now(),
    };
    let view = RegistryLoginView {
        host: host.clone(),
        username: login.username.clone(),
        groups: login.groups.clone(),
        created_at: to_rfc3339(login.created_at),
    };
    state.store.set_registry_login(login).await?;
    tracing::info!(host = %host, "registry credentials set");
    Ok(Json(view))
}

pub async fn list_logins(
    State(state): State<ApiState>,
) -> Result<Json<Vec<RegistryLoginView>>, ApiError> {
    let logins = state.store.list_registry_logins().await?;
    Ok(Json(
        logins
            .into_iter()
            .map(|l| RegistryLoginView {
                host: l.host,
                username: l.username,
                groups: l.groups,
                created_at: to_rfc3339(l.created_at),
            })
            .collect(),
    ))
}

pub async fn delete_login(
    State(state): State<ApiState>,
    Path(host): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_registry_login(&host).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn set_push(
    State(state): State<ApiState>,
    Path(project): Path<String>,
    Json(request): Json<SetPushCredential>,
) -> Result<StatusCode, ApiError> {
    let (kind, secret) = match (request.token, request.ssh_key) {
        (Some(token), None) => (PushSecretKind::Token, token.trim().to_owned()),
        (None, Some(key)) => (PushSecretKind::SshKey, key),
        _ => {
            return Err(ApiError::Invalid(
                "give exactly one of token and ssh_key".into(),
            ));
        }
    };
    if secret.trim().is_empty() {
        return Err(ApiError::Invalid("the credential is empty".into()));
    }
    state
        .store
        .set_push_credential(PushCredential {
            project: project.clone(),
            kind,
            secret,
            created_at: now(),
        })
        .await?;
    tracing::info!(project = %project, kind = kind.as_str(), "push credentials set");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_push(
    State(state): State<ApiState>,
    Path(project): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_push_credential(&project).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One registry delivery: the source's budget, the secret, the body
/// (bounded like a git host's), then the scan requests.
pub async fn deliver(
    State(state): State<ApiState>,
    Path(provider): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let refuse = super::hooks::refuse;
    let registry: Registry = match provider.parse() {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::NOT_FOUND, e),
    };
    let source = tether_webhooks::source_key(peer.ip());
    if state.webhook_sources.exhausted(&source) {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many refused deliveries from this address".into(),
        );
    }
    let Some(secret) = state.registry_hook_secret.clone() else {
        state.webhook_sources.admit(&source);
        return refuse(
            StatusCode::NOT_FOUND,
            "registry notifications are not set up (kas serve --registry-hook-secret-file)".into(),
        );
    };
    let (parts, body) = request.into_parts();
    let Ok(Ok(body)) = tokio::time::timeout(
        super::hooks::BODY_TIMEOUT,
        axum::body::to_bytes(body, super::hooks::MAX_BODY),
    )
    .await
    else {
        state.webhook_sources.admit(&source);
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the delivery is too large, slow or broke off".into(),
        );
    };
    if let Err(refusal) = hooks::verify(registry, &parts.headers, parts.uri.query(), &body, &secret)
    {
        state.webhook_sources.admit(&source);
        tracing::warn!(provider = %provider, reason = %refusal, "registry delivery refused");
        return refuse(StatusCode::UNAUTHORIZED, refusal.to_string());
    }
    // Accepted deliveries have a budget of their own, per provider.
    if !state.webhook_limiter.admit(&format!("registry:{provider}")) {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many registry deliveries; try again shortly".into(),
        );
    }
    let pushed: Vec<(Option<String>, String)> = hooks::pushed(registry, &body)
        .into_iter()
        .map(|p| (p.host, p.path))
        .collect();
    match state.images.request_pushed(&pushed).await {
        Ok(repositories) => {
            (StatusCode::ACCEPTED, Json(ScanQueued { repositories })).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}
