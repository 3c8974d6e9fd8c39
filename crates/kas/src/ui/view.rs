//! What every page needs: who is looking and which agents they may see,
//! the checks in front of a form, the answers that are not a page
//! (not found, forbidden), and small pieces of markup.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use tether_agent_config::{AgentConfig, AgentName};
use tether_api::SyncView;

use super::UiState;
use super::layout::{page, state as state_word};
use super::session::{Session, Who};
use super::signed_in;

/// What a page handler answers: the page, or the answer instead (sign in,
/// not found, refused), both whole responses; `?` takes the second.
pub type Page = Result<Response, Response>;

/// Who is looking, resolved once per request: the admin sees every
/// agent; a user, those whose config in use admits them under
/// `user_access`, as the Kubernetes API proxy decides.
pub enum Viewer {
    Admin,
    User(tether_proxy::principal::Principal),
    /// The user is gone: sees nothing.
    Nobody,
}

impl Viewer {
    pub async fn of(state: &UiState, session: &Session) -> Viewer {
        let Who::User { name, .. } = &session.who else {
            return Viewer::Admin;
        };
        match state.store.get_user(name).await {
            Ok(Some(user)) => Viewer::User(tether_proxy::principal::Principal::User(
                tether_proxy::principal::User {
                    name: user.name,
                    memberships: user.memberships,
                    expires_at: None,
                },
            )),
            _ => Viewer::Nobody,
        }
    }

    pub async fn sees(&self, state: &UiState, agent: &tether_store::Agent) -> bool {
        let principal = match self {
            Viewer::Admin => return true,
            Viewer::Nobody => return false,
            Viewer::User(principal) => principal,
        };
        // A stored name that no longer passes has no session, so no config
        // in use: nobody but the admin sees it.
        let Ok(name) = AgentName::new(&agent.name) else {
            return false;
        };
        let Some(config) = state.proxy.configs.in_use(&name).await else {
            return false;
        };
        let target = tether_proxy::access::AgentRef {
            name: &name,
            config_project: &agent.config_project,
        };
        tether_proxy::access::authorize(principal, target, &config).is_ok()
    }
}

/// An agent the session may see, or the answer that it cannot (404, so
/// that agents a user may not see do not show that they exist).
pub async fn agent_for(
    state: &UiState,
    session: &Session,
    name: &str,
) -> Result<tether_store::Agent, Response> {
    let not_found = || not_found(session, "no such agent");
    let agent = state
        .store
        .get_agent(name)
        .await
        .map_err(|_| unavailable())?
        .ok_or_else(not_found)?;
    match Viewer::of(state, session).await.sees(state, &agent).await {
        true => Ok(agent),
        false => Err(not_found()),
    }
}

/// The session of a form POST, its CSRF token checked; or the answer
/// instead (sign in, 403).
pub async fn form_session(
    state: &UiState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<Session, Response> {
    let session = signed_in(state, headers).await?;
    if !session.csrf_matches(csrf) {
        return Err(forbidden("missing or wrong CSRF token"));
    }
    Ok(session)
}

/// As [`form_session`], for what only the admin may do.
pub async fn admin_form(
    state: &UiState,
    headers: &HeaderMap,
    csrf: &str,
    what: &str,
) -> Result<Session, Response> {
    let session = form_session(state, headers, csrf).await?;
    if session.who != Who::Admin {
        return Err(forbidden(&format!("only the admin {what}")));
    }
    Ok(session)
}

pub fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, why.to_owned()).into_response()
}

pub fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "kas cannot read its records now; try again",
    )
        .into_response()
}

/// A page saying what was not found, 404.
pub fn not_found(session: &Session, what: &str) -> Response {
    let body = html! { h1 { "Not found" } p id="not-found" { (what) } };
    (
        StatusCode::NOT_FOUND,
        Html(page("Not found", Some(session), body).into_string()),
    )
        .into_response()
}

/// A page saying why an action was refused, with the status of the API's
/// answer (422 for bad input, 409 for a conflict, …).
pub fn refused(session: &Session, error: crate::api::ApiError, back: &str) -> Response {
    let (status, message) = error.answer();
    let body = html! {
        h1 { "Not done" }
        p class="bad" id="refused" { (message) }
        p { a href=(back) { "Back" } }
    };
    (
        status,
        Html(page("Not done", Some(session), body).into_string()),
    )
        .into_response()
}

/// A page that shows a secret once: never kept by a cache.
pub fn shown_once(session: &Session, title: &str, body: Markup) -> Response {
    let mut response = Html(page(title, Some(session), body).into_string()).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub fn render(title: &str, session: &Session, body: Markup) -> Response {
    Html(page(title, Some(session), body).into_string()).into_response()
}

/// Previous/next links of a paginated list; `link(n)` is page `n`'s URL.
pub fn pager(page_no: usize, pages: usize, what: &str, link: impl Fn(usize) -> String) -> Markup {
    html! {
        p class="pager" {
            @if page_no > 0 { a href=(link(page_no - 1)) { "← previous" } " " }
            span class="dim" { (what) " page " (page_no + 1) " of " (pages) }
            @if page_no + 1 < pages { " " a href=(link(page_no + 1)) { "next →" } }
        }
    }
}

/// The config `agent` runs with, if kas has read one. A stored name that
/// no longer passes as an agent name has none: no session takes it.
pub async fn config_in_use(
    state: &UiState,
    agent: &tether_store::Agent,
) -> Option<Arc<AgentConfig>> {
    let name = AgentName::new(&agent.name).ok()?;
    state.proxy.configs.in_use(&name).await
}

/// The tunnels of agent `name` that end here. A stored name that no longer
/// passes as an agent name has none: no tunnel is attached under it.
pub fn tunnels_here(state: &UiState, name: &str) -> usize {
    AgentName::new(name).map_or(0, |name| state.tunnels.count(&name))
}

/// Tunnels other live replicas hold, by agent: with replicas, an agent
/// whose session is elsewhere is connected, not offline.
pub async fn tunnels_elsewhere(state: &UiState) -> std::collections::HashMap<String, usize> {
    match &state.router {
        Some(router) => router.tunnels_elsewhere().await,
        None => std::collections::HashMap::new(),
    }
}

/// An agent's connection state: its sessions and tunnels here, else its
/// tunnels on other replicas, else offline.
pub fn connection(sessions: usize, tunnels: usize, elsewhere: usize) -> Markup {
    html! {
        @if sessions > 0 || tunnels > 0 {
            (state_word("connected")) " "
            span class="dim" { (sessions) " session(s), " (tunnels) " tunnel(s)" @if elsewhere > 0 { " here, " (elsewhere) " on other replicas" } }
        }
        @else if elsewhere > 0 { (state_word("connected")) " " span class="dim" { "elsewhere: " (elsewhere) " tunnel(s) on other replicas" } }
        @else { (state_word("offline")) }
    }
}

pub fn syncs_of(records: Vec<tether_store::SyncRecord>) -> Vec<SyncView> {
    records
        .into_iter()
        .filter_map(|r| serde_json::from_str(&r.report).ok())
        .collect()
}

pub fn health_counts(sync: &SyncView) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for o in &sync.objects {
        *counts.entry(o.health.as_str()).or_insert(0) += 1;
    }
    counts
}

pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}

pub fn time(t: tether_store::UnixTime) -> String {
    tether_store::time::to_rfc3339(t)
}
