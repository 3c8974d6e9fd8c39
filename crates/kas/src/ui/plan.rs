//! The plan of a commit, for the admin: a form (manifest project, and a
//! commit, branch or tag — a branch not merged yet, say), and what that
//! commit would change in the agent's cluster, as `kas plan` shows it.
//! The agent dry-runs; nothing changes. With replicas, the plan is asked
//! of the replica that holds the agent's session.

use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;

use maud::{Markup, html};
use serde::Deserialize;
use tether_api::{PlanRequest, PlanView, PlannedObjectView};

use super::UiState;
use super::session::{Session, Who};
use super::signed_in;
use super::view::{Page, admin_form, agent_for, config_in_use, forbidden, refused, render};
use tether_api::segment;
use tether_channel::manifests::ManifestSpec;

/// Unchanged objects listed before the rest are folded away.
const UNCHANGED_SHOWN: usize = 200;

/// The manifest projects of the agent's config in use.
async fn projects_of(state: &UiState, agent: &tether_store::Agent) -> Vec<ManifestSpec> {
    match config_in_use(state, agent).await {
        Some(config) => ManifestSpec::from_config(&config, &agent.config_project),
        None => Vec::new(),
    }
}

fn plan_form(session: &Session, agent: &str, specs: &[ManifestSpec], asked: &PlanForm) -> Markup {
    html! {
        form method="post" action={"/ui/agents/" (segment(agent)) "/plan"} id="plan-form" {
            input type="hidden" name="csrf" value=(session.csrf);
            label for="project" { "Manifest project " }
            select id="project" name="project" {
                @for spec in specs {
                    option value=(spec.project) selected[spec.project == asked.project] {
                        (spec.project) @if let Some(r) = &spec.git_ref { " (" (r) ")" }
                    }
                }
            }
            " "
            label for="commit" { "commit, branch or tag " }
            input id="commit" name="commit" value=(asked.commit) required size="42";
            " " button type="submit" id="plan" { "Plan" }
        }
    }
}

pub async fn form(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Page {
    let session = signed_in(&state, &headers).await?;
    let agent = agent_for(&state, &session, &name).await?;
    if session.who != Who::Admin {
        return Err(forbidden("only the admin plans commits"));
    }
    let specs = projects_of(&state, &agent).await;
    let asked = PlanForm {
        csrf: String::new(),
        project: String::new(),
        commit: specs
            .first()
            .and_then(|s| s.git_ref.clone())
            .unwrap_or_default(),
    };
    let body = html! {
        h1 { "Plan for agent " a href={"/ui/agents/" (segment(&name))} { (name) } }
        p class="dim" { "What a commit would change in the cluster: the agent dry-runs it; nothing changes." }
        @if specs.is_empty() { p class="dim" { "The agent's config in use names no manifest project." } }
        @else { (plan_form(&session, &name, &specs, &asked)) }
    };
    Ok(render(&format!("Plan for {name}"), &session, body))
}

#[derive(Deserialize)]
pub struct PlanForm {
    csrf: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    commit: String,
}

pub async fn plan(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(asked): Form<PlanForm>,
) -> Page {
    let session = admin_form(&state, &headers, &asked.csrf, "plans commits").await?;
    let agent = agent_for(&state, &session, &name).await?;
    let request = PlanRequest {
        commit: asked.commit.trim().to_owned(),
        project: Some(asked.project.clone()).filter(|p| !p.is_empty()),
    };
    let back = format!("/ui/agents/{}/plan", segment(&name));
    let cookie = super::session::cookie_value(&headers).unwrap_or_default();
    let plan = match crate::api::plan::plan_anywhere(&state.api, &name, request, &cookie).await {
        Ok(plan) => plan,
        Err(e) => return Err(refused(&session, e, &back)),
    };
    let specs = projects_of(&state, &agent).await;
    let body = html! {
        h1 { "Plan for agent " a href={"/ui/agents/" (segment(&name))} { (name) } }
        (plan_form(&session, &name, &specs, &asked))
        (plan_view(&plan))
    };
    Ok(render(&format!("Plan for {name}"), &session, body))
}

fn plan_view(plan: &PlanView) -> Markup {
    let (changing, unchanged): (Vec<&PlannedObjectView>, Vec<&PlannedObjectView>) =
        plan.objects.iter().partition(|o| o.change != "unchanged");
    html! {
        h2 { (plan.project) " at " code { (plan.commit) } }
        @if let Some(rollout) = &plan.rollout { p id="plan-rollout" { (rollout) } }
        p id="plan-counts" {
            @for (change, n) in &plan.counts { span class="pill" data-change=(change) { (n) " " (change) } " " }
            span class="dim" { (plan.dry_runs) " dry run(s), " (plan.duration_ms) " ms" }
        }
        @if changing.is_empty() { p id="plan-nothing" { "Nothing would change." } }
        @else {
            table id="plan-objects" {
                tr { th { "Object" } th { "Change" } th { "Fields" } }
                @for o in &changing {
                    tr data-object={(o.kind) "/" (o.name)} data-change=(o.change) {
                        td { (o.kind) " " @if !o.namespace.is_empty() { (o.namespace) "/" } (o.name) }
                        td { (o.change) @if !o.message.is_empty() { br; span class="dim" { (o.message) } } }
                        td {
                            @for f in &o.fields {
                                div {
                                    code { (f.path) } ": "
                                    span class="del" { (f.before.as_deref().unwrap_or("(none)")) }
                                    " → "
                                    span class="add" { (f.after.as_deref().unwrap_or("(none)")) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !unchanged.is_empty() {
            details {
                summary { (unchanged.len()) " unchanged" }
                ul {
                    @for o in unchanged.iter().take(UNCHANGED_SHOWN) {
                        li { (o.kind) " " @if !o.namespace.is_empty() { (o.namespace) "/" } (o.name) }
                    }
                    @if unchanged.len() > UNCHANGED_SHOWN { li class="dim" { "and " (unchanged.len() - UNCHANGED_SHOWN) " more" } }
                }
            }
        }
    }
}
