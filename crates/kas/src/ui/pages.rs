//! The pages: agents (filtered, paginated on the server), one agent
//! (connections, config, manifest projects, recent syncs), one sync (every
//! object as a tree by namespace and kind, drift corrections). Each page
//! reads only what it shows: the agents page loads the syncs of its 50
//! agents, the sync page at most 500 objects.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tether_api::{ObjectView, SyncView};

use super::UiState;
use super::layout::{page, state as state_word};
use super::session::{Session, Who};
use super::signed_in;
use crate::client::segment;

/// Agents per page, objects per sync page.
const AGENTS_PER_PAGE: usize = 50;
const OBJECTS_PER_PAGE: usize = 500;
/// Syncs shown on an agent's page.
const HISTORY: usize = 10;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: usize,
}

/// Who is looking, resolved once per request: the admin sees every
/// agent; a user, those whose config in use admits them under
/// `user_access`, as the Kubernetes API proxy decides.
enum Viewer {
    Admin,
    User(tether_proxy::principal::Principal),
    /// The user is gone: sees nothing.
    Nobody,
}

impl Viewer {
    async fn of(state: &UiState, session: &Session) -> Viewer {
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

    async fn sees(&self, state: &UiState, agent: &tether_store::Agent) -> bool {
        let principal = match self {
            Viewer::Admin => return true,
            Viewer::Nobody => return false,
            Viewer::User(principal) => principal,
        };
        let Some(config) = state.proxy.configs.in_use(&agent.name).await else {
            return false;
        };
        let target = tether_proxy::access::AgentRef {
            name: &agent.name,
            config_project: &agent.config_project,
        };
        tether_proxy::access::authorize(principal, target, &config).is_ok()
    }
}

fn syncs_of(records: Vec<tether_store::SyncRecord>) -> Vec<SyncView> {
    records
        .into_iter()
        .filter_map(|r| serde_json::from_str(&r.report).ok())
        .collect()
}

fn health_counts(sync: &SyncView) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for o in &sync.objects {
        *counts.entry(o.health.as_str()).or_insert(0) += 1;
    }
    counts
}

pub async fn agents(
    State(state): State<UiState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(elsewhere) => return elsewhere,
    };
    let Ok(all) = state.store.list_agents().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let needle = query.q.trim().to_lowercase();
    let viewer = Viewer::of(&state, &session).await;
    let mut shown = Vec::new();
    for agent in all {
        if !needle.is_empty()
            && !agent.name.to_lowercase().contains(&needle)
            && !agent.config_project.to_lowercase().contains(&needle)
        {
            continue;
        }
        if viewer.sees(&state, &agent).await {
            shown.push(agent);
        }
    }
    let total = shown.len();
    let pages = total.div_ceil(AGENTS_PER_PAGE).max(1);
    let page_no = query.page.min(pages - 1);
    let mut rows = Vec::new();
    for agent in shown
        .into_iter()
        .skip(page_no * AGENTS_PER_PAGE)
        .take(AGENTS_PER_PAGE)
    {
        let connections = state.connections.connections(&agent.name);
        let syncs = syncs_of(
            state
                .store
                .latest_syncs(&agent.name)
                .await
                .unwrap_or_default(),
        );
        rows.push((agent, connections, syncs));
    }
    let link = |p: usize| format!("/ui/?q={}&page={p}", segment(&query.q));
    let body = html! {
        h1 { "Agents" }
        form method="get" action="/ui/" {
            input name="q" value=(query.q) placeholder="name or project";
            " " button type="submit" { "Filter" }
            " " span class="dim" { (total) " agents" }
        }
        table id="agents" {
            tr { th { "Agent" } th { "Connection" } th { "Versions" } th { "Last syncs" } }
            @for (agent, connections, syncs) in &rows {
                tr data-agent=(agent.name) {
                    td { a href={"/ui/agents/" (segment(&agent.name))} { (agent.name) } br; span class="dim" { (agent.config_project) } }
                    td class="connection" {
                        @if connections.is_empty() { (state_word("offline")) }
                        @else { (state_word("connected")) " " span class="dim" { (connections.len()) " session(s)" } }
                    }
                    td { @if let Some(c) = connections.first() { "agentk " (c.agent_version) br; span class="dim" { "cluster " (c.cluster_version) } } }
                    td {
                        @for sync in syncs {
                            div class="sync" {
                                (state_word(&sync.state)) " " code { (short(&sync.commit)) } " " span class="dim" { (sync.project) }
                                @for (health, n) in health_counts(sync) { " " span class="pill" { (n) " " (health) } }
                            }
                        }
                    }
                }
            }
        }
        p {
            @if page_no > 0 { a href=(link(page_no - 1)) { "← previous" } " " }
            span class="dim" { "page " (page_no + 1) " of " (pages) }
            @if page_no + 1 < pages { " " a href=(link(page_no + 1)) { "next →" } }
        }
    };
    Html(page("Agents", Some(&session), body).into_string()).into_response()
}

/// An agent the session may see, or the answer that it cannot (404, so
/// that agents a user may not see do not show that they exist).
async fn agent_for(
    state: &UiState,
    session: &Session,
    name: &str,
) -> Result<tether_store::Agent, Response> {
    let not_found = || not_found(session, "no such agent");
    let agent = state
        .store
        .get_agent(name)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE.into_response())?
        .ok_or_else(not_found)?;
    match Viewer::of(state, session).await.sees(state, &agent).await {
        true => Ok(agent),
        false => Err(not_found()),
    }
}

pub async fn agent(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(elsewhere) => return elsewhere,
    };
    let agent = match agent_for(&state, &session, &name).await {
        Ok(a) => a,
        Err(answer) => return answer,
    };
    let connections = state.connections.connections(&name);
    let status = match state.connections.configs().status_if_read(&name) {
        Some(status) => Some(status),
        None => state
            .store
            .config_statuses()
            .await
            .unwrap_or_default()
            .into_iter()
            .find(|(agent, _)| *agent == name)
            .and_then(|(_, json)| serde_json::from_str(&json).ok()),
    };
    let latest = syncs_of(state.store.latest_syncs(&name).await.unwrap_or_default());
    let mut history = Vec::new();
    for sync in &latest {
        let records = state
            .store
            .sync_history(&name, &sync.project, HISTORY)
            .await
            .unwrap_or_default();
        history.push((sync.project.clone(), syncs_of(records)));
    }
    let tunnels = state.connections.tunnels().count(&name);
    let tokens = match session.who {
        Who::Admin => state.store.list_tokens(&name).await.unwrap_or_default(),
        Who::User { .. } => Vec::new(),
    };
    let body = html! {
        h1 { "Agent " (agent.name) }
        p class="dim" { "config project " (agent.config_project) " · " (tunnels) " tunnel(s) here" }
        h2 { "Connections" }
        @if connections.is_empty() { p id="connection" { (state_word("offline")) } }
        @else {
            table id="connections" {
                tr { th { "Pod" } th { "agentk" } th { "Cluster" } th { "Config commit" } th { "Connected" } th { "Last seen" } }
                @for c in &connections {
                    tr { td { (c.pod_namespace) "/" (c.pod_name) } td { (c.agent_version) } td { (c.cluster_version) } td { code { (short(&c.config_commit)) } } td { (c.connected_at) } td { (c.last_seen) } }
                }
            }
        }
        h2 { "Configuration" }
        (config_status(&status))
        @if session.who == Who::Admin {
            h2 { "Tokens" }
            table id="tokens" {
                tr { th { "Id" } th { "Name" } th { "Created" } th { "Expires" } th { "State" } th {} }
                @for t in &tokens {
                    tr data-token=(t.id) {
                        td { (t.id) } td { (t.name) }
                        td { (tether_store::time::to_rfc3339(t.created_at)) }
                        td { (t.expires_at.map(tether_store::time::to_rfc3339).unwrap_or_else(|| "never".into())) }
                        td { @if t.revoked_at.is_some() { (state_word("revoked")) } @else { (state_word("active")) } }
                        td {
                            @if t.revoked_at.is_none() {
                                form class="inline" method="post" action={"/ui/agents/" (segment(&name)) "/tokens/" (t.id) "/revoke"} {
                                    input type="hidden" name="csrf" value=(session.csrf);
                                    button type="submit" id={"revoke-" (t.id)} { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
            form method="post" action={"/ui/agents/" (segment(&name)) "/tokens"} {
                input type="hidden" name="csrf" value=(session.csrf);
                input name="name" placeholder="new token's name" required;
                " " button type="submit" id="create-token" { "Create token" }
            }
        }
        h2 { "Manifest projects" }
        @if history.is_empty() { p class="dim" { "No sync reported yet." } }
        @for (project, syncs) in &history {
            h3 { (project) }
            table class="history" {
                tr { th { "Commit" } th { "State" } th { "Applied" } th { "Unchanged" } th { "Pruned" } th { "Health" } th { "Reported" } }
                @for sync in syncs {
                    tr {
                        td { a href={"/ui/agents/" (segment(&name)) "/sync?project=" (segment(project)) "&commit=" (sync.commit)} { code { (short(&sync.commit)) } } }
                        td { (state_word(&sync.state)) @if let Some(error) = &sync.error { br; span class="bad" { (error) } } }
                        td { (sync.applied) } td { (sync.unchanged) } td { (sync.pruned) }
                        td { @for (health, n) in health_counts(sync) { span class="pill" { (n) " " (health) } " " } }
                        td { (sync.reported_at) }
                    }
                }
            }
        }
    };
    Html(page(&format!("Agent {name}"), Some(&session), body).into_string()).into_response()
}

fn config_status(status: &Option<tether_api::ConfigStatus>) -> Markup {
    html! {
        @match status {
            None => p class="dim" { "kas has not read this agent's config yet." },
            Some(s) => {
                p { "in use: " code { (s.commit.as_deref().map(short).unwrap_or("none")) } }
                @if let Some(e) = &s.error {
                    p class="bad" id="config-error" {
                        "refused"
                        @if let Some(commit) = &e.commit { " at " code { (short(commit)) } }
                        @if let Some(file) = &e.file {
                            ": " (file)
                            @if let Some(line) = e.line { ":" (line) @if let Some(column) = e.column { ":" (column) } }
                        }
                        " — " (e.message)
                    }
                }
                @for w in &s.warnings { p class="wait" { (w) } }
                @for e in &s.manifest_project_errors { p class="bad" { (e) } }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct SyncQuery {
    project: String,
    commit: String,
    #[serde(default)]
    page: usize,
}

pub async fn sync(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<SyncQuery>,
) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(elsewhere) => return elsewhere,
    };
    if let Err(answer) = agent_for(&state, &session, &name).await {
        return answer;
    }
    let records = state
        .store
        .sync_history(&name, &query.project, 50)
        .await
        .unwrap_or_default();
    let Some(sync) = syncs_of(records)
        .into_iter()
        .find(|s| s.commit == query.commit)
    else {
        return not_found(&session, "no such sync");
    };
    let pages = sync.objects.len().div_ceil(OBJECTS_PER_PAGE).max(1);
    let page_no = query.page.min(pages - 1);
    let objects: Vec<&ObjectView> = sync
        .objects
        .iter()
        .skip(page_no * OBJECTS_PER_PAGE)
        .take(OBJECTS_PER_PAGE)
        .collect();
    // namespace → kind → objects
    let mut tree: BTreeMap<&str, BTreeMap<&str, Vec<&ObjectView>>> = BTreeMap::new();
    for o in objects {
        tree.entry(o.namespace.as_deref().unwrap_or("(cluster)"))
            .or_default()
            .entry(o.kind.as_str())
            .or_default()
            .push(o);
    }
    let link = |p: usize| {
        format!(
            "/ui/agents/{}/sync?project={}&commit={}&page={p}",
            segment(&name),
            segment(&query.project),
            query.commit
        )
    };
    let body = html! {
        h1 { "Sync of " (query.project) }
        p { "agent " a href={"/ui/agents/" (segment(&name))} { (name) } " · commit " code { (sync.commit) } " · " (state_word(&sync.state)) " · " (sync.duration_ms) " ms · reported " (sync.reported_at) }
        @if let Some(error) = &sync.error { p class="bad" { (error) } }
        p class="dim" { (sync.applied) " applied, " (sync.unchanged) " unchanged, " (sync.pruned) " pruned; " (sync.objects.len()) " objects" }
        @for (namespace, kinds) in &tree {
            details open {
                summary { strong { (namespace) } }
                @for (kind, objects) in kinds {
                    table class="objects" {
                        tr { th colspan="4" { (kind) " (" (objects.len()) ")" } }
                        @for o in objects {
                            tr data-object={(o.kind) "/" (o.name)} {
                                td { (o.name) } td { (o.action) } td { (state_word(&o.health)) } td class="dim" { (o.message.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        @if pages > 1 {
            p {
                @if page_no > 0 { a href=(link(page_no - 1)) { "← previous" } " " }
                span class="dim" { "objects page " (page_no + 1) " of " (pages) }
                @if page_no + 1 < pages { " " a href=(link(page_no + 1)) { "next →" } }
            }
        }
        h2 { "Drift corrections" }
        @if sync.drift.is_empty() { p class="dim" { "None since this sync." } }
        @else {
            table id="drift" {
                tr { th { "Object" } th { "Who" } th { "What" } th { "Put back" } th { "At" } }
                @for d in &sync.drift {
                    tr {
                        td { (d.kind) " " (d.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default()) (d.name) }
                        td { (d.who) } td { (d.what) }
                        td { @match &d.error { None => (state_word("success")), Some(e) => span class="bad" { (e) } } }
                        td { (d.at) }
                    }
                }
            }
        }
    };
    Html(page(&format!("Sync of {}", query.project), Some(&session), body).into_string())
        .into_response()
}

/// A page saying what was not found, 404.
fn not_found(session: &Session, what: &str) -> Response {
    let body = html! { h1 { "Not found" } p id="not-found" { (what) } };
    (
        StatusCode::NOT_FOUND,
        Html(page("Not found", Some(session), body).into_string()),
    )
        .into_response()
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}

#[derive(Deserialize)]
pub struct TokenForm {
    csrf: String,
    #[serde(default)]
    name: String,
}

/// The admin's session of a form POST, its CSRF token checked; or the
/// answer instead (sign in, 403).
async fn admin_form(state: &UiState, headers: &HeaderMap, csrf: &str) -> Result<Session, Response> {
    let session = signed_in(state, headers).await?;
    if !session.csrf_matches(csrf) {
        return Err((StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response());
    }
    if session.who != Who::Admin {
        return Err((StatusCode::FORBIDDEN, "only the admin manages agent tokens").into_response());
    }
    Ok(session)
}

/// Creates an agent token and shows it, this once.
pub async fn create_token(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::extract::Form(form): axum::extract::Form<TokenForm>,
) -> Response {
    let session = match admin_form(&state, &headers, &form.csrf).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let label = match form.name.trim() {
        "" => "web".to_owned(),
        label => label.to_owned(),
    };
    let (record, token) =
        match crate::api::tokens::create_token(&state.api, &name, label, String::new(), None).await
        {
            Ok(created) => created,
            Err(e) => return e.into_response(),
        };
    let body = html! {
        h1 { "Token " (record.name) " of agent " (name) }
        p { "Copy it now: kas keeps only its hash and will not show it again." }
        pre id="new-token" { (token.expose_secret()) }
        p { a href={"/ui/agents/" (segment(&name))} { "Back to the agent" } }
    };
    let mut response = Html(page("New token", Some(&session), body).into_string()).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

/// Revokes an agent token: its sessions and tunnels close at once.
pub async fn revoke_token(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, i64)>,
    axum::extract::Form(form): axum::extract::Form<TokenForm>,
) -> Response {
    if let Err(answer) = admin_form(&state, &headers, &form.csrf).await {
        return answer;
    }
    match crate::api::tokens::revoke_token(&state.api, &name, id).await {
        Ok(_) => {
            axum::response::Redirect::to(&format!("/ui/agents/{}", segment(&name))).into_response()
        }
        Err(e) => e.into_response(),
    }
}
