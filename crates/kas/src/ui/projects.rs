//! The git projects kas reads: their URL (without any password), ref,
//! the commit kas last read and why a read failed, the agents that use
//! them; and for the admin, the push webhook (its secret created and shown
//! once with the URL for each git host, or removed), the commit status
//! target, and "read it now". A user sees the config projects of the
//! agents they may see, and no webhook or status settings.
//!
//! A project's id holds `/`, so it travels as a query parameter
//! (`/ui/project?id=team/platform`), not as a path segment.

use std::collections::BTreeMap;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use tether_store::Project;

use super::UiState;
use super::layout::state as state_word;
use super::session::{Session, Who};
use super::signed_in;
use super::view::{
    Page, Viewer, admin_form, not_found, refused, render, short, shown_once, time, unavailable,
};
use tether_api::segment;

/// The projects a session may see, with the agents (that it may see)
/// whose config each holds. The admin sees every project.
pub(super) async fn visible(
    state: &UiState,
    session: &Session,
) -> Result<Vec<(Project, Vec<String>)>, Response> {
    let projects = state
        .store
        .list_projects()
        .await
        .map_err(|_| unavailable())?;
    let agents = state.store.list_agents().await.map_err(|_| unavailable())?;
    let viewer = Viewer::of(state, session).await;
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for agent in agents {
        if viewer.sees(state, &agent).await {
            users
                .entry(agent.config_project.clone())
                .or_default()
                .push(agent.name);
        }
    }
    Ok(projects
        .into_iter()
        .filter_map(|p| {
            let agents = users.remove(&p.id);
            match (&session.who, agents) {
                (Who::Admin, agents) => Some((p, agents.unwrap_or_default())),
                (Who::User { .. }, Some(agents)) => Some((p, agents)),
                (Who::User { .. }, None) => None,
            }
        })
        .collect())
}

fn project_link(id: &str) -> String {
    format!("/ui/project?id={}", segment(id))
}

fn head_cell(state: &UiState, id: &str) -> maud::Markup {
    html! {
        @match state.repos.peek(id) {
            None => span class="dim" { "not followed now" },
            Some((commit, error)) => {
                @if let Some(commit) = commit { code { (short(&commit.to_string())) } " " }
                @if let Some(error) = error { span class="bad" { (error) } }
            }
        }
    }
}

/// The project's signature policy and what verification last found: the
/// commit agents keep, and the newest one refused with why.
fn signatures_cell(project: &tether_store::Project) -> maud::Markup {
    html! {
        @match &project.verify {
            None => span class="dim" { "not required" },
            Some(policy) => {
                (policy.mode.as_str()) " · "
                @match &project.verification.verified {
                    Some(commit) => {
                        span class="ok" { "verified " } code { (short(commit)) }
                        @if let Some(signer) = &project.verification.signer { " " span class="dim" { (signer) } }
                    },
                    None => span class="dim" { "no commit verified yet" },
                }
                @if let Some(refused) = &project.verification.refused {
                    br;
                    span class="bad" id="refused" { "refused " code { (short(&refused.commit)) } ": " (refused.reason) }
                }
            }
        }
    }
}

pub async fn list(State(state): State<UiState>, headers: HeaderMap) -> Page {
    let session = signed_in(&state, &headers).await?;
    let projects = visible(&state, &session).await?;
    let body = html! {
        h1 { "Projects" }
        table id="projects" {
            tr { th { "Project" } th { "Repository" } th { "Ref" } th { "Last read" } th { "Signed commits" } th { "Config of" } }
            @for (p, agents) in &projects {
                tr data-project=(p.id) {
                    td { a href=(project_link(&p.id)) { (p.id) } }
                    td { code { (tether_git::redact(&p.url)) } }
                    td { (p.git_ref.as_deref().unwrap_or("default branch")) }
                    td { (head_cell(&state, &p.id)) }
                    td { (signatures_cell(p)) }
                    td { @for a in agents { a href={"/ui/agents/" (segment(a))} { (a) } " " } }
                }
            }
        }
    };
    Ok(render("Projects", &session, body))
}

#[derive(Deserialize)]
pub struct ProjectQuery {
    id: String,
}

pub async fn show(
    State(state): State<UiState>,
    headers: HeaderMap,
    Query(query): Query<ProjectQuery>,
) -> Page {
    let session = signed_in(&state, &headers).await?;
    let projects = visible(&state, &session).await?;
    let Some((project, agents)) = projects.into_iter().find(|(p, _)| p.id == query.id) else {
        return Err(not_found(&session, "no such project"));
    };
    let admin = session.who == Who::Admin;
    let (grants, webhook, statuses) = if admin {
        let grants = state
            .store
            .list_manifest_grants(Some(&project.id), None)
            .await
            .unwrap_or_default();
        let webhook = state.store.webhook_secret(&project.id).await.ok().flatten();
        let statuses = state.store.status_target(&project.id).await.ok().flatten();
        (grants, webhook.is_some(), statuses)
    } else {
        (Vec::new(), false, None)
    };
    let id = &project.id;
    let body = html! {
        h1 { "Project " (id) }
        table id="project" {
            tr { th { "Repository" } td { code { (tether_git::redact(&project.url)) } } }
            tr { th { "Ref" } td { (project.git_ref.as_deref().unwrap_or("default branch")) } }
            tr { th { "Last read" } td id="head" { (head_cell(&state, id)) } }
            tr { th { "Signed commits" } td id="signatures" { (signatures_cell(&project)) } }
            @if let Some(c) = &project.credentials_ref { tr { th { "Credentials" } td { (c) } } }
            tr { th { "Registered" } td { (time(project.created_at)) } }
            tr { th { "Config of" } td { @for a in &agents { a href={"/ui/agents/" (segment(a))} { (a) } " " } } }
            @if admin {
                tr { th { "Granted to" } td { @for g in &grants { a href={"/ui/agents/" (segment(&g.agent))} { (g.agent) } " " } } }
            }
        }
        @if admin {
            form method="post" action={"/ui/project/refresh?id=" (segment(id))} {
                input type="hidden" name="csrf" value=(session.csrf);
                button type="submit" id="refresh" { "Read it now" }
            }
            h2 { "Push webhook" }
            @if webhook {
                p id="webhook-state" { (state_word("active")) " deliveries signed with this project's secret refresh it at once." }
            } @else {
                p id="webhook-state" class="dim" { "None: kas reads the project when it polls." }
            }
            form class="inline" method="post" action={"/ui/project/webhook?id=" (segment(id))} {
                input type="hidden" name="csrf" value=(session.csrf);
                button type="submit" id="create-webhook" { @if webhook { "Replace the secret" } @else { "Create a webhook secret" } }
            }
            @if webhook {
                " "
                form class="inline" method="post" action={"/ui/project/webhook/delete?id=" (segment(id))} {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" id="delete-webhook" { "Remove the webhook" }
                }
            }
            h2 { "Commit statuses" }
            @match &statuses {
                None => p class="dim" id="statuses" { "Not posted (kas project statuses set)." },
                Some(t) => p id="statuses" { (t.provider) " · " code { (t.api_url) } " · " (t.repository) " · since " (time(t.created_at)) },
            }
        }
    };
    Ok(render(&format!("Project {id}"), &session, body))
}

#[derive(Deserialize)]
pub struct CsrfForm {
    pub(super) csrf: String,
}

pub async fn refresh(
    State(state): State<UiState>,
    headers: HeaderMap,
    Query(query): Query<ProjectQuery>,
    Form(form): Form<CsrfForm>,
) -> Page {
    let session = admin_form(&state, &headers, &form.csrf, "reads projects on demand").await?;
    let back = project_link(&query.id);
    match crate::api::projects::refresh_project(&state.api, &query.id).await {
        Ok(_) => Ok(Redirect::to(&back).into_response()),
        Err(e) => Err(refused(&session, e, &back)),
    }
}

/// A new webhook secret, shown once, with the URL to give each git host.
pub async fn create_webhook(
    State(state): State<UiState>,
    headers: HeaderMap,
    Query(query): Query<ProjectQuery>,
    Form(form): Form<CsrfForm>,
) -> Page {
    let session = admin_form(&state, &headers, &form.csrf, "manages webhooks").await?;
    let back = project_link(&query.id);
    // No such project: the store refuses it (404).
    let created = crate::api::hooks::create_secret(&state.api, &query.id)
        .await
        .map_err(|e| refused(&session, e, &back))?;
    // The address the admin reached kas at is the one git hosts need; a
    // reverse proxy in front that ends TLS says so (this only shapes the
    // URL shown to the admin).
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some("https") => "https",
        Some("http") => "http",
        _ => state.api_scheme,
    };
    let origin = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|host| format!("{scheme}://{host}"))
        .unwrap_or_default();
    let body = html! {
        h1 { "Webhook of " (query.id) }
        p { "Copy the secret now: it is not shown again. Give the git host the URL for it and this secret; push events of the project's ref then refresh it at once." }
        pre id="webhook-secret" { (created.secret) }
        table id="webhook-urls" {
            tr { th { "Git host" } th { "URL" } }
            @for (host, path) in &created.paths {
                tr { td { (host) } td { code { (origin) (path) } } }
            }
        }
        p { a href=(back) { "Back to the project" } }
    };
    Ok(shown_once(&session, "New webhook secret", body))
}

pub async fn delete_webhook(
    State(state): State<UiState>,
    headers: HeaderMap,
    Query(query): Query<ProjectQuery>,
    Form(form): Form<CsrfForm>,
) -> Page {
    let session = admin_form(&state, &headers, &form.csrf, "manages webhooks").await?;
    let back = project_link(&query.id);
    crate::api::hooks::remove_secret(&state.api, &query.id)
        .await
        .map_err(|e| refused(&session, e, &back))?;
    Ok(Redirect::to(&back).into_response())
}
