//! The web UI, under `/ui` on the API listener: server-rendered HTML
//! (maud), plain forms, and one small script of our own for live updates
//! over server-sent events. Nothing is loaded from elsewhere.
//!
//! Sign-in takes the admin token or a user's personal access token and
//! turns it into a signed session cookie ([`session`]); every form carries
//! the session's CSRF token. The admin sees every agent; a user sees the
//! agents whose `user_access` admits them, as the Kubernetes API proxy
//! would ([`tether_proxy::access::authorize`]).

mod agents;
mod images;
mod layout;
mod plan;
mod projects;
mod rollouts;
pub mod session;
mod syncs;
mod users;
mod view;

use std::convert::Infallible;
use std::time::Duration;

use tokio::sync::broadcast;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use maud::html;
use serde::Deserialize;
use tether_credentials::{Token, TokenKind};
use tether_store::{AccessTokenStatus, TokenOwner};

use crate::api::ApiState;

use session::{Session, Sessions, Who};

/// The pre-sign-in cookie the sign-in form's CSRF token is checked against.
const LOGIN_COOKIE: &str = "tether_login";

/// What the UI's handlers reach: the API's state, and the key its
/// session cookies are signed with.
#[derive(Clone, Debug)]
pub struct UiState {
    pub api: ApiState,
    pub sessions: Sessions,
    /// Open event streams, bounded: each holds a connection.
    pub streams: std::sync::Arc<tokio::sync::Semaphore>,
    /// `https`, or `http` when the API listener is on loopback (no TLS):
    /// how to write this kas's URLs for a git host.
    pub api_scheme: &'static str,
}

/// Event streams open at once on one kas; past it a page works without
/// live updates (503 to the stream, the page itself is unaffected).
pub const MAX_EVENT_STREAMS: usize = 1024;

impl std::ops::Deref for UiState {
    type Target = ApiState;

    fn deref(&self) -> &ApiState {
        &self.api
    }
}

/// The UI's routes, beside the API's on the API listener.
pub fn router(state: UiState) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(agents::agents))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/events", get(events))
        .route("/ui/agents/{name}", get(agents::agent))
        .route("/ui/agents/{name}/sync", get(syncs::sync))
        .route("/ui/agents/{name}/diff", get(syncs::diff))
        .route("/ui/agents/{name}/plan", get(plan::form).post(plan::plan))
        .route("/ui/agents/{name}/tokens", post(agents::create_token))
        .route(
            "/ui/agents/{name}/tokens/{id}/revoke",
            post(agents::revoke_token),
        )
        .route("/ui/projects", get(projects::list))
        .route("/ui/images", get(images::list))
        .route("/ui/images/scan", post(images::scan))
        .route("/ui/rollouts", get(rollouts::list))
        .route("/ui/rollouts/action", post(rollouts::action))
        .route("/ui/agents/{name}/labels", post(agents::labels))
        .route("/ui/project", get(projects::show))
        .route("/ui/project/refresh", post(projects::refresh))
        .route("/ui/project/webhook", post(projects::create_webhook))
        .route("/ui/project/webhook/delete", post(projects::delete_webhook))
        .route("/ui/users", get(users::list).post(users::create))
        .route("/ui/users/{name}", get(users::show))
        .route("/ui/users/{name}/delete", post(users::delete))
        .route("/ui/users/{name}/memberships", post(users::memberships))
        .route("/ui/users/{name}/tokens", post(users::create_token))
        .route(
            "/ui/users/{name}/tokens/{id}/revoke",
            post(users::revoke_token),
        )
        .with_state(state)
        .layer(axum::middleware::map_response(guarded))
}

/// Every answer of the UI: its Content-Security-Policy, not framed, not
/// sniffed, not cached (pages show tokens once and cluster details), no
/// referrer to elsewhere.
async fn guarded(mut response: Response) -> Response {
    static POLICY: std::sync::OnceLock<Option<HeaderValue>> = std::sync::OnceLock::new();
    let headers = response.headers_mut();
    if let Some(policy) =
        POLICY.get_or_init(|| HeaderValue::from_str(&layout::content_security_policy()).ok())
    {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy.clone());
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The session of a request, checked: signed, unexpired, and for a user,
/// the user and the token still there. `Err` is where to go instead.
pub(crate) async fn signed_in(state: &UiState, headers: &HeaderMap) -> Result<Session, Response> {
    let to_login = || Redirect::to("/ui/login").into_response();
    let session = session::cookie_value(headers)
        .and_then(|value| state.sessions.open(&value))
        .ok_or_else(to_login)?;
    if !session_is_live(state, &session).await {
        return Err(to_login());
    }
    if let Who::User { name, token_id } = &session.who {
        let tokens = state
            .store
            .list_access_tokens(&TokenOwner::User(name.clone()))
            .await
            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE.into_response())?;
        let now = session::now();
        let live = tokens.iter().any(|t| {
            t.id == *token_id && t.revoked_at.is_none() && t.expires_at.is_none_or(|e| e > now)
        });
        if !live {
            return Err(to_login());
        }
    }
    Ok(session)
}

/// Whether a signed, unexpired session is still live on every replica:
/// not signed out, and for the admin, signed since the admin token was
/// last set (`kas admin rotate-token` ends every admin session).
pub(crate) async fn session_is_live(state: &ApiState, session: &Session) -> bool {
    if session.id.is_empty() {
        return false;
    }
    if session.who == Who::Admin && session.issued_at_ms < state.admin.rotated_at_ms().await {
        return false;
    }
    // A database that cannot answer ends no session here, but lets
    // none through either.
    matches!(state.store.ui_session_revoked(&session.id).await, Ok(false))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    csrf: String,
}

async fn login_form(State(state): State<UiState>, headers: HeaderMap) -> Response {
    if signed_in(&state, &headers).await.is_ok() {
        return Redirect::to("/ui/").into_response();
    }
    login_page(None)
}

fn login_page(error: Option<&str>) -> Response {
    let csrf = tether_credentials::hex::random::<16>();
    let body = html! {
        h1 { "Sign in" }
        @if let Some(error) = error {
            p class="bad" id="error" { (error) }
        }
        form method="post" action="/ui/login" {
            p {
                label for="token" { "Admin token or personal access token" } br;
                input id="token" name="token" type="password" size="60" autocomplete="off" required;
            }
            input type="hidden" name="csrf" value=(csrf);
            button id="sign-in" type="submit" { "Sign in" }
        }
    };
    let mut response = Html(layout::page("Sign in", None, body).into_string()).into_response();
    let cookie = format!(
        "{LOGIN_COOKIE}={csrf}; Path=/ui/login; Max-Age=600; HttpOnly; Secure; SameSite=Strict"
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    if error.is_some() {
        *response.status_mut() = StatusCode::UNAUTHORIZED;
    }
    response
}

async fn login(
    State(state): State<UiState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let presented = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(name, _)| *name == LOGIN_COOKIE)
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default();
    let same: bool =
        subtle::ConstantTimeEq::ct_eq(presented.as_bytes(), form.csrf.as_bytes()).into();
    if presented.is_empty() || !same {
        return (
            StatusCode::FORBIDDEN,
            "the sign-in form expired or came from elsewhere: load it again",
        )
            .into_response();
    }
    let who = match who_is(&state, form.token.trim()).await {
        Ok(who) => who,
        Err(reason) => {
            tracing::info!(reason = %reason, "web UI sign-in refused");
            return login_page(Some(&reason));
        }
    };
    let session = Session::new(who);
    let mut response = Redirect::to("/ui/").into_response();
    if let Ok(value) = HeaderValue::from_str(&state.sessions.set_cookie(&session)) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// Who a presented token is: the admin, or a user by an active personal
/// access token. The reason for a refusal names no secret.
async fn who_is(state: &UiState, text: &str) -> Result<Who, String> {
    if let Ok(token) = Token::parse_kind(text, TokenKind::Admin) {
        return match state.admin.matches(&token).await {
            true => Ok(Who::Admin),
            false => Err("that is not this kas's admin token".into()),
        };
    }
    let token = Token::parse_kind(text, TokenKind::User)
        .map_err(|_| "not an admin token or a personal access token".to_owned())?;
    let status = state
        .store
        .authenticate_access(&token.hash(), session::now())
        .await
        .map_err(|_| "kas cannot check tokens now; try again".to_owned())?;
    match status {
        AccessTokenStatus::Active(record) => match record.owner {
            TokenOwner::User(name) => Ok(Who::User {
                name,
                token_id: record.id,
            }),
            _ => Err("not a personal access token".into()),
        },
        AccessTokenStatus::Revoked { .. } => Err("that token was revoked".into()),
        AccessTokenStatus::Expired { .. } => Err("that token has expired".into()),
        AccessTokenStatus::Unknown => Err("unknown token".into()),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(state): State<UiState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(session) => session,
        Err(elsewhere) => return elsewhere,
    };
    if !session.csrf_matches(&form.csrf) {
        return (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response();
    }
    // Ended on every replica, not only in this browser: a copy of the
    // cookie is worth nothing after.
    if let Err(e) = state
        .store
        .revoke_ui_session(&session.id, session.expires_at, session::now())
        .await
    {
        tracing::warn!(error = %e, "cannot end the web UI session");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot sign out now; try again",
        )
            .into_response();
    }
    let mut response = Redirect::to("/ui/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&Sessions::clear_cookie()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// `changed` whenever a session opens or closes or a sync is reported on
/// this kas or, with replicas, on another (at most every half second), for
/// the pages to refresh their main region.
async fn events(
    State(state): State<UiState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Response> {
    signed_in(&state, &headers).await?;
    let Ok(slot) = state.streams.clone().try_acquire_owned() else {
        tracing::warn!("web UI event streams at their limit: one refused");
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live pages open; reload later",
        )
            .into_response());
    };
    let here = state.live.events();
    let elsewhere = state.changes.watch_elsewhere();
    let fleet = state.fleet.watch();
    let stream = futures_util::stream::unfold(
        (here, elsewhere, fleet, slot),
        |(mut here, mut elsewhere, mut fleet, slot)| async move {
            tokio::select! {
                // A rollout moved here (this replica drives it).
                changed = fleet.changed() => changed.ok()?,
                // A follower that lagged refreshes as for any change.
                event = here.recv() => match event {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                changed = elsewhere.changed() => changed.ok()?,
            }
            // One refresh for a burst: what came within half a second
            // is in the page it loads.
            tokio::time::sleep(Duration::from_millis(500)).await;
            here = here.resubscribe();
            elsewhere.borrow_and_update();
            fleet.borrow_and_update();
            // An event with no data is not dispatched by browsers.
            Some((
                Ok(Event::default().event("changed").data("1")),
                (here, elsewhere, fleet, slot),
            ))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// With replicas: tells the others, at most every half second, that
/// something the web UI shows changed here, so that a page served by
/// another replica updates too. Runs until `stop`.
pub async fn tell_replicas(
    live: std::sync::Arc<dyn tether_channel::LiveAgents>,
    changes: crate::changes::Changes,
    mut stop: tether_runtime::Shutdown,
) {
    let mut here = live.events();
    loop {
        tokio::select! {
            event = here.recv() => if let Err(broadcast::error::RecvError::Closed) = event { return },
            _ = stop.signalled() => return,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        here = here.resubscribe();
        changes.tell_others(crate::changes::Change::UiChanged).await;
    }
}
