//! The agents (filtered, paginated on the server) and one agent's page:
//! its connections, config, tokens (the admin's), and for each manifest
//! project its recent syncs, two of which can be compared. The agents
//! page loads the syncs of its 50 agents only.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use maud::{Markup, html};
use serde::Deserialize;

use super::UiState;
use super::layout::state as state_word;
use super::session::Who;
use super::signed_in;
use super::view::{
    Page, Viewer, admin_form, agent_for, connection, health_counts, pager, refused, render, short,
    shown_once, syncs_of, time, tunnels_elsewhere, tunnels_here, unavailable,
};
use tether_api::segment;

/// Agents per page.
const AGENTS_PER_PAGE: usize = 50;
/// Syncs shown per manifest project on an agent's page.
const HISTORY: usize = 10;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: usize,
}

pub async fn agents(
    State(state): State<UiState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Page {
    let session = signed_in(&state, &headers).await?;
    let Ok(all) = state.store.list_agents().await else {
        return Err(unavailable());
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
        let connections = state.live.connections(&agent.name);
        let syncs = syncs_of(
            state
                .store
                .latest_syncs(&agent.name)
                .await
                .unwrap_or_default(),
        );
        rows.push((agent, connections, syncs));
    }
    let elsewhere = tunnels_elsewhere(&state).await;
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
                    td class="connection" { (connection(connections.len(), tunnels_here(&state, &agent.name), elsewhere.get(&agent.name).copied().unwrap_or(0))) }
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
        (pager(page_no, pages, "agents", link))
    };
    Ok(render("Agents", &session, body))
}

pub async fn agent(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Page {
    let session = signed_in(&state, &headers).await?;
    let agent = agent_for(&state, &session, &name).await?;
    let connections = state.live.connections(&name);
    let status = match state.configs.status_if_read(&name) {
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
    let tunnels = tunnels_here(&state, &name);
    let elsewhere = tunnels_elsewhere(&state)
        .await
        .get(&name)
        .copied()
        .unwrap_or(0);
    let tokens = match session.who {
        Who::Admin => state.store.list_tokens(&name).await.unwrap_or_default(),
        Who::User { .. } => Vec::new(),
    };
    let body = html! {
        h1 { "Agent " (agent.name) }
        p class="dim" { "config project " (agent.config_project) " · " (tunnels) " tunnel(s) here" }
        p id="labels" { "labels: "
            @if agent.labels.is_empty() { span class="dim" { "none" } }
            @for (k, v) in &agent.labels { span class="pill" { (k) "=" (v) } " " }
        }
        @if session.who == Who::Admin {
            form method="post" action={"/ui/agents/" (segment(&name)) "/labels"} {
                input type="hidden" name="csrf" value=(session.csrf);
                input name="labels" id="labels-input" size="40" placeholder="env=prod,region=eu"
                    value=(agent.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","));
                " " button type="submit" id="set-labels" { "Set labels" }
                span class="dim" { " what rollouts select the agent by; all of them, comma-separated" }
            }
        }
        h2 { "Connections" }
        @if connections.is_empty() { p id="connection" { (connection(0, tunnels, elsewhere)) } }
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
                        td { (time(t.created_at)) }
                        td { (t.expires_at.map(time).unwrap_or_else(|| "never".into())) }
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
        @if session.who == Who::Admin && !connections.is_empty() {
            p { a id="plan-link" href={"/ui/agents/" (segment(&name)) "/plan"} { "Plan a commit" } " — what it would change, before it is pushed or synced" }
        }
        @if history.is_empty() { p class="dim" { "No sync reported yet." } }
        @for (project, syncs) in &history {
            h3 { a href={"/ui/project?id=" (segment(project))} { (project) } }
            (history_table(&name, project, syncs))
        }
    };
    Ok(render(&format!("Agent {name}"), &session, body))
}

/// The recent syncs of one manifest project, newest first, with a pair
/// of radio buttons per row to compare two of them (a plain GET form).
fn history_table(agent: &str, project: &str, syncs: &[tether_api::SyncView]) -> Markup {
    html! {
        form method="get" action={"/ui/agents/" (segment(agent)) "/diff"} {
            input type="hidden" name="project" value=(project);
            table class="history" data-project=(project) {
                tr { th { "Commit" } th { "State" } th { "Applied" } th { "Unchanged" } th { "Pruned" } th { "Health" } th { "Reported" } th { "From" } th { "To" } }
                @for (i, sync) in syncs.iter().enumerate() {
                    tr {
                        td { a href={"/ui/agents/" (segment(agent)) "/sync?project=" (segment(project)) "&commit=" (sync.commit)} { code { (short(&sync.commit)) } } }
                        td { (state_word(&sync.state)) @if let Some(error) = &sync.error { br; span class="bad" { (error) } } }
                        td { (sync.applied) } td { (sync.unchanged) } td { (sync.pruned) }
                        td { @for (health, n) in health_counts(sync) { span class="pill" { (n) " " (health) } " " } }
                        td { (sync.reported_at) }
                        td { input type="radio" name="from" value=(sync.commit) checked[i == 1]; }
                        td { input type="radio" name="to" value=(sync.commit) checked[i == 0]; }
                    }
                }
            }
            @if syncs.len() > 1 {
                p { button type="submit" class="compare" { "Compare" } }
            }
        }
    }
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
                @for e in &s.notification_errors { p class="bad" { (e) } }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct TokenForm {
    csrf: String,
    #[serde(default)]
    name: String,
}

/// Creates an agent token and shows it, this once.
pub async fn create_token(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::extract::Form(form): axum::extract::Form<TokenForm>,
) -> Page {
    let session = admin_form(&state, &headers, &form.csrf, "manages agent tokens").await?;
    let label = match form.name.trim() {
        "" => "web".to_owned(),
        label => label.to_owned(),
    };
    let (record, token) =
        match crate::api::tokens::create_token(&state.api, &name, label, String::new(), None).await
        {
            Ok(created) => created,
            Err(e) => {
                return Err(refused(
                    &session,
                    e,
                    &format!("/ui/agents/{}", segment(&name)),
                ));
            }
        };
    let body = html! {
        h1 { "Token " (record.name) " of agent " (name) }
        p { "Copy it now: kas keeps only its hash and will not show it again." }
        pre id="new-token" { (token.expose_secret()) }
        p { a href={"/ui/agents/" (segment(&name))} { "Back to the agent" } }
    };
    Ok(shown_once(&session, "New token", body))
}

/// Revokes an agent token: its sessions and tunnels close at once.
pub async fn revoke_token(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, i64)>,
    axum::extract::Form(form): axum::extract::Form<TokenForm>,
) -> Page {
    let session = admin_form(&state, &headers, &form.csrf, "manages agent tokens").await?;
    let back = format!("/ui/agents/{}", segment(&name));
    match crate::api::tokens::revoke_token(&state.api, &name, id).await {
        Ok(_) => Ok(axum::response::Redirect::to(&back).into_response()),
        Err(e) => Err(refused(&session, e, &back)),
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct LabelsForm {
    csrf: String,
    /// `env=prod,region=eu`: the agent's labels, all of them.
    labels: String,
}

/// The admin replaces the agent's labels (an empty field clears them).
pub async fn labels(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::extract::Form(form): axum::extract::Form<LabelsForm>,
) -> Page {
    let session = admin_form(&state, &headers, &form.csrf, "labels agents").await?;
    let back = format!("/ui/agents/{}", segment(&name));
    let args: Vec<String> = form
        .labels
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let set = match tether_agent_config::labels::parse_changes(&args) {
        Ok(changes) if changes.remove.is_empty() => changes.set,
        Ok(_) => {
            return Err(refused(
                &session,
                crate::api::ApiError::Invalid("write each label as KEY=VALUE".to_owned()),
                &back,
            ));
        }
        Err(e) => {
            return Err(refused(
                &session,
                crate::api::ApiError::Invalid(e.to_string()),
                &back,
            ));
        }
    };
    match crate::api::agents::set_labels(&state.api, &name, set).await {
        Ok(_) => Ok(axum::response::Redirect::to(&back).into_response()),
        Err(e) => Err(refused(&session, e, &back)),
    }
}
