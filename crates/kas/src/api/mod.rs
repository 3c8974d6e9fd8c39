//! The REST API, under `/api/v1`, JSON in and out. Every route requires the
//! admin token; handlers are thin and delegate to the [`Store`].
//!
//! The routes are listed in `openapi.yaml` beside this crate's Cargo.toml; a
//! test checks that the two agree.

pub(crate) mod access;
pub(crate) mod agents;
mod error;
pub(crate) mod hooks;
mod images;
mod notifications;
pub mod plan;
pub(crate) mod projects;
pub(crate) mod rollouts;
mod statuses;
pub(crate) mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, patch, post, put};
use tether_credentials::{Token, TokenKind};
use tether_store::Store;

pub use error::ApiError;

use tether_channel::LiveAgents;
use tether_channel::configs::AgentConfigs;
use tether_channel::repos::Repos;
use tether_tunnel::server::Tunnels;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    /// The admin token as every replica checks it (its hash, in the
    /// database); the token itself is not kept.
    pub admin: Arc<crate::admin_token::AdminAuth>,
    /// Reads web UI sessions: a plan the UI of another replica forwards
    /// here carries the admin's session, checked like the UI checks it.
    pub ui_sessions: crate::ui::session::Sessions,
    /// Who is connected here, shown on agents.
    pub live: Arc<dyn LiveAgents>,
    /// What kas made of each agent's config file.
    pub configs: Arc<AgentConfigs>,
    /// The agents' tunnels here, counted on agents.
    pub tunnels: Arc<Tunnels>,
    /// Plans asked of the sessions here.
    pub plans: Arc<tether_channel::plans::Plans>,
    /// The agent endpoint as clusters reach it (`grpcs://kas.example.com:443`),
    /// for the install command shown with a new token.
    pub agent_external_address: String,
    /// Git pollers, woken by a project refresh.
    pub repos: Arc<Repos>,
    /// Where a handler starts what outlives its request (a webhook's
    /// refresh): kas waits for it when it stops.
    pub drain: tether_runtime::Drain,
    /// The Kubernetes API proxy, for kubeconfigs.
    pub proxy: Arc<tether_proxy::Proxy>,
    /// Turns what a handler changed into its consequences.
    pub changes: crate::changes::Changes,
    /// Renders charts and kustomizations for plans, or why kas cannot.
    pub renderer: Result<Arc<tether_render::Renderer>, String>,
    /// The other replicas, when there are any: a plan asked here of an
    /// agent whose session is elsewhere is answered there.
    pub router: Option<Arc<tether_replicas::router::Router>>,
    /// Verified deliveries per project.
    pub webhook_limiter: Arc<tether_webhooks::Limiter>,
    /// kas's metrics (webhook deliveries are counted here).
    pub metrics: crate::metrics::Metrics,
    /// Deliveries per source address, before they are verified.
    pub webhook_sources: Arc<tether_webhooks::Limiter>,
    /// Image automation: statuses and scan requests.
    pub images: Arc<tether_images::service::Service>,
    /// What registries authenticate their push notifications with.
    pub registry_hook_secret: Option<Arc<str>>,
    /// Fleet rollouts and pins, as this replica knows them.
    pub fleet: Arc<tether_rollouts::Fleet>,
    /// A trace's link (`{trace_id}` replaced), from `--trace-url`.
    pub trace_url: Option<Arc<str>>,
}

impl ApiState {
    /// The link to trace `id`, when kas was told where traces are shown.
    pub fn trace_link(&self, id: &str) -> Option<String> {
        let template = self.trace_url.as_deref()?;
        // An id is 32 hex digits (checked when the report arrived).
        Some(template.replace("{trace_id}", id))
    }
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

/// The API's routes, with admin authentication in front of all of them.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/api/v1/projects",
            get(projects::list).post(projects::create),
        )
        .route(
            "/api/v1/projects/{id}",
            get(projects::show)
                .patch(projects::update)
                .delete(projects::remove),
        )
        .route("/api/v1/projects/{id}/refresh", post(projects::refresh))
        .route("/api/v1/projects/{id}/verify", put(projects::verify))
        .route(
            "/api/v1/projects/{id}/webhook",
            post(hooks::create).delete(hooks::remove),
        )
        .route("/api/v1/admin/token", post(rotate_admin_token))
        .route("/api/v1/notification-secrets", get(notifications::list))
        .route(
            "/api/v1/notification-secrets/{name}",
            put(notifications::set).delete(notifications::remove),
        )
        .route(
            "/api/v1/projects/{id}/statuses",
            get(statuses::show)
                .put(statuses::set)
                .delete(statuses::remove),
        )
        .route(
            "/api/v1/projects/{id}/grants",
            get(projects::list_grants).post(projects::grant),
        )
        .route(
            "/api/v1/projects/{id}/grants/{agent}",
            delete(projects::revoke_grant),
        )
        .route("/api/v1/agents", get(agents::list).post(agents::create))
        .route(
            "/api/v1/agents/{name}",
            get(agents::show).delete(agents::remove),
        )
        .route("/api/v1/agents/{name}/gitops", get(agents::gitops))
        .route(
            "/api/v1/agents/{name}/gitops/history",
            get(agents::gitops_history),
        )
        .route("/api/v1/agents/{name}/plan", post(plan::plan))
        .route(
            "/api/v1/agents/{name}/tokens",
            get(tokens::list).post(tokens::create),
        )
        .route("/api/v1/agents/{name}/tokens/{id}", delete(tokens::revoke))
        .route("/api/v1/agents/{name}/kubeconfig", post(access::kubeconfig))
        .route(
            "/api/v1/users",
            get(access::list_users).post(access::create_user),
        )
        .route(
            "/api/v1/users/{name}",
            get(access::show_user)
                .put(access::set_memberships)
                .delete(access::delete_user),
        )
        .route(
            "/api/v1/users/{name}/tokens",
            get(access::list_user_tokens).post(access::create_user_token),
        )
        .route(
            "/api/v1/users/{name}/tokens/{id}",
            delete(access::revoke_user_token),
        )
        .route(
            "/api/v1/projects/{id}/tokens",
            get(access::list_project_tokens).post(access::create_project_token),
        )
        .route(
            "/api/v1/projects/{id}/tokens/{token_id}",
            delete(access::revoke_project_token),
        )
        .route("/api/v1/images", get(images::list))
        .route("/api/v1/images/scan", post(images::scan))
        .route("/api/v1/registry/logins", get(images::list_logins))
        .route(
            "/api/v1/registry/logins/{host}",
            put(images::set_login).delete(images::delete_login),
        )
        .route(
            "/api/v1/projects/{id}/push-credentials",
            put(images::set_push).delete(images::delete_push),
        )
        .route("/api/v1/agents/{name}/labels", patch(agents::label))
        .route("/api/v1/rollouts", get(rollouts::list))
        .route("/api/v1/projects/{id}/rollout", get(rollouts::show))
        .route(
            "/api/v1/projects/{id}/rollout/{action}",
            post(rollouts::control),
        )
        .route("/api/v1/pins", get(rollouts::pins))
        .route(
            "/api/v1/agents/{name}/pins/{project}",
            put(rollouts::pin).delete(rollouts::unpin),
        )
        .layer(middleware::from_fn_with_state(state.clone(), require_admin))
        // The admin token, or a project access token of the project: CI
        // jobs wait for their own commit.
        .route(
            "/api/v1/projects/{id}/rollout/wait",
            get(rollouts::wait_rollout),
        )
        .route("/api/v1/agents/{name}/wait", get(rollouts::wait_agent))
        // Signed by the git host with the project's webhook secret, not
        // the admin token.
        .route(
            "/api/v1/projects/{id}/hooks/{provider}",
            post(hooks::deliver),
        )
        // Authenticated with the registry hook secret.
        .route("/api/v1/registry/hooks/{provider}", post(images::deliver))
        .with_state(state)
}

/// A new admin token, shown once: the old one and every admin web UI
/// session end on every replica (`kas admin rotate-token`).
async fn rotate_admin_token(
    State(state): State<ApiState>,
) -> Result<(StatusCode, axum::Json<serde_json::Value>), ApiError> {
    let token = state.admin.rotate().await.map_err(ApiError::Internal)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "token": token.expose_secret() })),
    ))
}

/// Refuses a request without the admin token. The comparison is of hashes, in
/// constant time; a wrong token and a missing one get the same answer.
async fn require_admin(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Token::from_bearer(v).ok())
        .filter(|t| t.kind() == TokenKind::Admin);
    if let Some(token) = presented {
        return match state.admin.matches(&token).await {
            true => Ok(next.run(request).await),
            false => Err(ApiError::Unauthorized),
        };
    }
    // A plan the web UI of another replica forwarded (the private
    // listener checked the replica's proof and marked it): authorized by
    // the admin's own session, as that UI was, never by being routed.
    if request
        .extensions()
        .get::<crate::api::plan::RoutedByPeer>()
        .is_some()
        && let Some(session) = request
            .headers()
            .get(crate::ui::session::FORWARDED_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| state.ui_sessions.open(v))
        && crate::ui::session_is_live(&state, &session).await
        && session.who == crate::ui::session::Who::Admin
    {
        return Ok(next.run(request).await);
    }
    Err(ApiError::Unauthorized)
}
