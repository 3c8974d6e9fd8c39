//! Cluster access through the Kubernetes API proxy: users and their
//! memberships, personal access tokens (`/api/v1/users/{name}/tokens`),
//! project access tokens for CI (`/api/v1/projects/{id}/tokens`), and
//! kubeconfigs (`/api/v1/agents/{name}/kubeconfig`). Token texts appear in
//! creation responses only; kas keeps their hashes.

use crate::changes::Change;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tether_credentials::{Token, TokenKind};
use tether_store::{AccessTokenRecord, NewToken, TokenOwner, User};

use super::{ApiError, ApiState};
pub use tether_api::{
    AccessTokenView, CreateAccessToken, CreateUser, CreatedAccessToken, KubeconfigRequest,
    KubeconfigView, Memberships, UserView,
};
use tether_proxy::credentials::Credential;
use tether_proxy::kubeconfig::{self, KubeconfigSpec};
use tether_store::time::{now, to_rfc3339};

pub(crate) fn user_view(u: User) -> UserView {
    UserView {
        name: u.name,
        memberships: u.memberships,
        created_at: to_rfc3339(u.created_at),
    }
}

pub(crate) fn access_token_view(t: AccessTokenRecord) -> AccessTokenView {
    AccessTokenView {
        id: t.id,
        name: t.name,
        description: t.description,
        created_at: to_rfc3339(t.created_at),
        expires_at: t.expires_at.map(to_rfc3339),
        revoked_at: t.revoked_at.map(to_rfc3339),
        protected: t.protected,
    }
}

pub async fn create_user(
    State(state): State<ApiState>,
    Json(body): Json<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let user = add_user(&state, &body.name, body.memberships).await?;
    Ok((StatusCode::CREATED, Json(user_view(user))))
}

/// Creates user `name` (the API's and the web UI's way).
pub(crate) async fn add_user(
    state: &ApiState,
    name: &str,
    memberships: Vec<String>,
) -> Result<User, ApiError> {
    let user = state.store.create_user(name, memberships, now()).await?;
    tracing::info!(user = %user.name, "user created");
    Ok(user)
}

pub async fn list_users(State(state): State<ApiState>) -> Result<Json<Vec<UserView>>, ApiError> {
    let users = state.store.list_users().await?;
    Ok(Json(users.into_iter().map(user_view).collect()))
}

pub async fn show_user(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    let user = state.store.get_user(&name).await?;
    let user = user.ok_or_else(|| ApiError::NotFound(format!("user {name} not found")))?;
    Ok(Json(user_view(user)))
}

pub async fn set_memberships(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Json(body): Json<Memberships>,
) -> Result<Json<UserView>, ApiError> {
    let user = change_memberships(&state, name, body.memberships).await?;
    Ok(Json(user_view(user)))
}

/// Replaces a user's memberships: what they opened is decided again.
pub(crate) async fn change_memberships(
    state: &ApiState,
    name: String,
    memberships: Vec<String>,
) -> Result<User, ApiError> {
    let user = state.store.set_memberships(&name, memberships).await?;
    tracing::info!(user = %name, memberships = ?user.memberships, "memberships changed");
    state.changes.apply(Change::UserChanged { name }).await;
    Ok(user)
}

pub async fn delete_user(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove_user(&state, name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a user and their tokens: what they opened closes.
pub(crate) async fn remove_user(state: &ApiState, name: String) -> Result<(), ApiError> {
    state.store.delete_user(&name).await?;
    tracing::info!(user = %name, "user deleted");
    state.changes.apply(Change::UserChanged { name }).await;
    Ok(())
}

async fn create_token(
    state: &ApiState,
    owner: TokenOwner,
    body: CreateAccessToken,
) -> Result<(StatusCode, Json<CreatedAccessToken>), ApiError> {
    let expires_at = super::tokens::parse_expiry(body.expires_at.as_deref())?;
    let form = match owner {
        TokenOwner::Project(_) => "ci",
        TokenOwner::User(_) => "pat",
    };
    let (record, token) = create_access_token(
        state,
        owner,
        body.name,
        body.description,
        expires_at,
        body.protected,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedAccessToken {
            record: access_token_view(record),
            usage: format!(
                "Authorization: Bearer {form}:<agent>:<token>, or kas kubeconfig --agent <agent>"
            ),
            token: token.expose_secret().to_owned(),
        }),
    ))
}

/// Creates a project or personal access token: its record and its text
/// (shown once).
pub(crate) async fn create_access_token(
    state: &ApiState,
    owner: TokenOwner,
    name: String,
    description: String,
    expires_at: Option<tether_store::UnixTime>,
    protected: bool,
) -> Result<(AccessTokenRecord, Token), ApiError> {
    let kind = match owner {
        TokenOwner::Project(_) => TokenKind::Project,
        TokenOwner::User(_) => TokenKind::User,
    };
    let token = Token::generate(kind);
    let new = NewToken {
        name,
        description,
        hash: token.hash(),
        created_at: now(),
        expires_at,
    };
    let record = state
        .store
        .create_access_token(&owner, new, protected)
        .await?;
    tracing::info!(owner = ?record.owner, token_id = record.id, "access token created");
    Ok((record, token))
}

pub async fn create_user_token(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Json(body): Json<CreateAccessToken>,
) -> Result<(StatusCode, Json<CreatedAccessToken>), ApiError> {
    create_token(&state, TokenOwner::User(name), body).await
}

pub async fn create_project_token(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Json(body): Json<CreateAccessToken>,
) -> Result<(StatusCode, Json<CreatedAccessToken>), ApiError> {
    create_token(&state, TokenOwner::Project(id), body).await
}

pub async fn list_user_tokens(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<AccessTokenView>>, ApiError> {
    list_tokens(&state, TokenOwner::User(name)).await
}

pub async fn list_project_tokens(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<AccessTokenView>>, ApiError> {
    list_tokens(&state, TokenOwner::Project(id)).await
}

async fn list_tokens(
    state: &ApiState,
    owner: TokenOwner,
) -> Result<Json<Vec<AccessTokenView>>, ApiError> {
    let tokens = state.store.list_access_tokens(&owner).await?;
    Ok(Json(tokens.into_iter().map(access_token_view).collect()))
}

pub async fn revoke_user_token(
    State(state): State<ApiState>,
    Path((name, id)): Path<(String, i64)>,
) -> Result<Json<AccessTokenView>, ApiError> {
    revoke_token(&state, TokenOwner::User(name), id).await
}

pub async fn revoke_project_token(
    State(state): State<ApiState>,
    Path((project, id)): Path<(String, i64)>,
) -> Result<Json<AccessTokenView>, ApiError> {
    revoke_token(&state, TokenOwner::Project(project), id).await
}

async fn revoke_token(
    state: &ApiState,
    owner: TokenOwner,
    id: i64,
) -> Result<Json<AccessTokenView>, ApiError> {
    revoke_access_token(state, owner, id)
        .await
        .map(|record| Json(access_token_view(record)))
}

/// Revokes a project or personal access token: what it opened closes.
pub(crate) async fn revoke_access_token(
    state: &ApiState,
    owner: TokenOwner,
    id: i64,
) -> Result<AccessTokenRecord, ApiError> {
    let record = state.store.revoke_access_token(&owner, id, now()).await?;
    tracing::info!(owner = ?owner, token_id = id, "access token revoked");
    state
        .changes
        .apply(Change::AccessTokenRevoked {
            owner,
            token_id: id,
        })
        .await;
    Ok(record)
}

/// A kubeconfig for `agent` with `token`. The token is checked as the
/// proxy would check it, so a credential the agent's config refuses is
/// reported now rather than on the first kubectl command.
pub async fn kubeconfig(
    State(state): State<ApiState>,
    Path(agent): Path<String>,
    Json(body): Json<KubeconfigRequest>,
) -> Result<Json<KubeconfigView>, ApiError> {
    let secret = body.token.trim();
    let form = if secret.starts_with(TokenKind::User.prefix()) {
        "pat"
    } else {
        "ci"
    };
    let bearer = format!("{form}:{agent}:{secret}");
    let credential = Credential::from_header(Some(&format!("Bearer {bearer}")))
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let (_, grant) =
        state
            .proxy
            .admit(&credential)
            .await
            .map_err(|(status, message)| match status {
                StatusCode::NOT_FOUND => ApiError::NotFound(message),
                StatusCode::SERVICE_UNAVAILABLE => ApiError::Upstream(message),
                _ => ApiError::Invalid(format!("the proxy would refuse this token: {message}")),
            })?;
    let config_project = state
        .store
        .get_agent(&agent)
        .await?
        .map(|a| a.config_project)
        .ok_or_else(|| ApiError::NotFound(format!("agent {agent} not found")))?;
    let spec = KubeconfigSpec {
        server: &state.proxy.external_url,
        ca_pem: state.proxy.ca_pem.as_deref(),
        agent: &credential.agent,
        config_project: &config_project,
        bearer: &bearer,
        namespace: grant.default_namespace.as_deref(),
    };
    Ok(Json(KubeconfigView {
        context: format!("{config_project}:{agent}"),
        namespace: grant.default_namespace.clone(),
        kubeconfig: kubeconfig::render(&spec),
    }))
}
