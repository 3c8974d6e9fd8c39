//! Push webhooks: `POST /api/v1/projects/{id}/hooks/{provider}` (signed by
//! the git host with the project's webhook secret, no admin token), and
//! the admin's `POST`/`DELETE /api/v1/projects/{id}/webhook` that create
//! (shown once) and remove that secret. A delivery that concerns the
//! project makes kas read the repository at once, as `kas project refresh`
//! does; see [`crate::webhooks`] for what is checked.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tether_api::{WebhookAnswer, WebhookCreated};

use super::ApiState;
use super::error::ApiError;
use tether_api::segment;
use tether_webhooks::{self as webhooks, Event, Provider};

/// Largest delivery read (GitHub caps its payloads at 25 MB, but a push
/// event of thousands of commits is far below this; more is refused).
pub const MAX_BODY: usize = 3 << 20;
/// How long a sender may take to send the body.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);
const PROVIDERS: [&str; 5] = ["github", "gitlab", "gitea", "bitbucket", "generic"];

/// One git host delivery. In this order, each step bounded by the one
/// before: the source's budget of refused deliveries, the project's
/// secret (no body is read for a project without one), the body (3 MiB,
/// 10 s), the signature, and only then the project's budget, so a
/// stranger's unsigned flood never spends a project's deliveries, nor a
/// git host's verified ones its address's.
pub async fn deliver(
    State(state): State<ApiState>,
    Path((id, provider)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let label = PROVIDERS
        .iter()
        .find(|p| **p == provider)
        .copied()
        .unwrap_or("unknown");
    let metrics = state.metrics.clone();
    let response = deliver_counted(state, id, provider, peer, request).await;
    let result = match response.status() {
        s if s.is_success() => "accepted",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "unknown_project",
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT => "malformed",
        StatusCode::TOO_MANY_REQUESTS => "throttled",
        _ => "error",
    };
    metrics
        .webhook_deliveries
        .get_or_create(&crate::metrics::WebhookLabels {
            provider: label,
            result,
        })
        .inc();
    response
}

async fn deliver_counted(
    state: ApiState,
    id: String,
    provider: String,
    peer: SocketAddr,
    request: Request,
) -> Response {
    let provider: Provider = match provider.parse() {
        Ok(p) => p,
        Err(e) => return refuse(StatusCode::NOT_FOUND, e),
    };
    let source = webhooks::source_key(peer.ip());
    if state.webhook_sources.exhausted(&source) {
        tracing::warn!(source = %source, "refused webhook deliveries from one source over the limit");
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many refused deliveries from this address; try again shortly".into(),
        );
    }
    // Each refusal below spends the source's budget; a verified delivery
    // does not.
    let charge = || {
        state.webhook_sources.admit(&source);
    };
    // Unknown project and project without a webhook answer alike: a
    // stranger learns nothing of which projects exist.
    let no_hook = || {
        charge();
        refuse(
            StatusCode::NOT_FOUND,
            format!("no webhook is set up for project {id}"),
        )
    };
    let project = match state.store.get_project(&id).await {
        Ok(Some(project)) => project,
        Ok(None) => return no_hook(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let secret = match state.store.webhook_secret(&id).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return no_hook(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let (parts, body) = request.into_parts();
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await
    {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            charge();
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the delivery is larger than {MAX_BODY} bytes, or broke off"),
            );
        }
        Err(_) => {
            charge();
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time".into(),
            );
        }
    };
    if let Err(refusal) = webhooks::verify(provider, &parts.headers, &body, &secret) {
        charge();
        tracing::warn!(project = %id, provider = ?provider, reason = %refusal, "webhook delivery refused");
        return refuse(StatusCode::UNAUTHORIZED, refusal.to_string());
    }
    if !state.webhook_limiter.admit(&id) {
        tracing::warn!(project = %id, "webhook deliveries over the limit: refused");
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many deliveries for project {id}; try again shortly"),
        );
    }
    let answer = match webhooks::event(provider, &parts.headers, &body) {
        Event::Other(kind) => WebhookAnswer {
            outcome: "ignored".into(),
            detail: format!("event {kind:?} is not a push"),
        },
        Event::Push(refs) if !webhooks::concerns(&refs, project.git_ref.as_deref()) => {
            WebhookAnswer {
                outcome: "ignored".into(),
                detail: format!(
                    "{} is not a branch or tag this project reads",
                    refs.join(", ")
                ),
            }
        }
        Event::Push(refs) => {
            tracing::info!(project = %id, refs = ?refs, "push webhook: reading the repository");
            let (repos, project) = (state.repos.clone(), id.clone());
            // The delivery's span: each agent's trace of the commit it
            // finds links to it and starts when it arrived.
            let cause = tracing::info_span!("webhook", provider = ?provider, project = %id)
                .in_scope(|| tether_channel::repos::Cause::now("webhook"));
            // On the drain: kas waits for the refresh (bounded by its
            // own timeout) instead of leaving it detached.
            state.drain.spawn(async move {
                if let Err(e) = repos.refresh_for(&project, cause).await {
                    tracing::warn!(project = %project, error = %e, "refresh after a push webhook failed");
                }
            });
            WebhookAnswer {
                outcome: "refresh".into(),
                detail: refs.join(", "),
            }
        }
    };
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

pub(crate) fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// A new webhook secret for the project, shown once.
pub async fn create(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<WebhookCreated>), ApiError> {
    Ok((StatusCode::CREATED, Json(create_secret(&state, &id).await?)))
}

/// Sets a new webhook secret for project `id` (the last one stops
/// working): the secret, and the path for each git host.
pub(crate) async fn create_secret(state: &ApiState, id: &str) -> Result<WebhookCreated, ApiError> {
    let secret = new_secret();
    state
        .store
        .set_webhook_secret(id, &secret, tether_store::time::now())
        .await?;
    tracing::info!(project = %id, "webhook secret created");
    let paths: BTreeMap<String, String> = PROVIDERS
        .iter()
        .map(|p| {
            (
                (*p).to_owned(),
                format!("/api/v1/projects/{}/hooks/{p}", segment(id)),
            )
        })
        .collect();
    Ok(WebhookCreated {
        project: id.to_owned(),
        secret,
        paths,
    })
}

/// Removes the project's webhook secret: deliveries are refused after.
pub async fn remove(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove_secret(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes project `id`'s webhook secret: deliveries are refused after.
pub(crate) async fn remove_secret(state: &ApiState, id: &str) -> Result<(), ApiError> {
    state.store.delete_webhook_secret(id).await?;
    tracing::info!(project = %id, "webhook secret removed");
    Ok(())
}

/// 32 random bytes as hex: what git hosts accept as a secret.
fn new_secret() -> String {
    tether_credentials::hex::random::<32>()
}
