//! Rollouts: each project's current rollout (its waves, each agent's
//! commit and why), updating live; the admin pauses, resumes, promotes or
//! aborts one. A user sees the rollouts of projects whose agents they may
//! see.

use axum::extract::{Form, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use maud::html;

use super::view::{Page, admin_form, refused, render, short};
use super::{UiState, signed_in};

pub async fn list(State(state): State<UiState>, headers: HeaderMap) -> Page {
    let session = signed_in(&state, &headers).await?;
    let visible = super::projects::visible(&state, &session).await?;
    let now = tether_rollouts::state::now_ms();
    let rollouts: Vec<_> = state
        .fleet
        .rollouts()
        .iter()
        .filter(|r| visible.iter().any(|(p, _)| p.id == r.project))
        .map(|r| tether_rollouts::view::rollout_view(r, now))
        .collect();
    let admin = session.who == super::session::Who::Admin;
    let body = html! {
        h1 { "Rollouts" }
        @if rollouts.is_empty() { p class="dim" { "No project has rolled out a commit with .tether/rollout.yaml." } }
        @for r in &rollouts {
            section class="rollout" data-project=(r.project) data-phase=(r.phase) {
                h2 { (r.project) " " code { (short(&r.commit)) } " " span class=(if matches!(r.phase.as_str(), "halted" | "rolled_back" | "invalid") { "bad" } else { "" }) { (r.phase) } @if r.paused { " (paused)" } }
                p { (r.summary) }
                @if let Some(f) = &r.failure {
                    p class="bad" { "wave " (f.wave) ", agent " (f.agent) @if let Some(o) = &f.object { ", " (o) } ": " (f.message) }
                } @else if !r.message.is_empty() { p class="dim" { (r.message) } }
                p class="dim" { "on failure: " (r.on_failure) " · agent timeout " (r.agent_timeout_seconds) "s · started " (r.started_at) @if let Some(e) = &r.ended_at { " · ended " (e) } }
                @if admin && r.phase == "running" {
                    @for action in ["pause", "resume", "promote", "abort"] {
                        form class="inline" method="post" action="/ui/rollouts/action" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            input type="hidden" name="project" value=(r.project);
                            input type="hidden" name="action" value=(action);
                            button type="submit" class={"rollout-" (action)} { (action) }
                        }
                        " "
                    }
                }
                table class="waves" {
                    tr { th { "Wave" } th { "Phase" } th { "Agents" } th { "At once" } th { "Soak" } th { "Started" } th { "Ended" } }
                    @for w in &r.waves {
                        tr data-wave=(w.name) {
                            td { (w.name) } td { (w.phase) } td { (w.agents.len()) } td { (w.max_parallel) }
                            td { (w.soak_seconds) "s" @if let Some(left) = w.soak_left_seconds { " (" (left) "s left)" } }
                            td { (w.started_at.as_deref().unwrap_or("-")) } td { (w.ended_at.as_deref().unwrap_or("-")) }
                        }
                    }
                }
                table class="agents" {
                    tr { th { "Agent" } th { "Wave" } th { "State" } th { "Commit" } th { "Why" } }
                    @for a in &r.agents {
                        tr data-agent=(a.name) {
                            td { a href={"/ui/agents/" (a.name)} { (a.name) } }
                            td { (a.wave.as_deref().unwrap_or("-")) }
                            td class=(if matches!(a.phase.as_str(), "failed" | "rolled_back") { "bad" } else { "" }) { (a.phase) }
                            td { code { (a.commit.as_deref().or(a.from.as_deref()).map(short).unwrap_or("-")) } }
                            td { (a.message) }
                        }
                    }
                }
            }
        }
    };
    Ok(render("Rollouts", &session, body))
}

#[derive(Debug, serde::Deserialize)]
pub struct ActionForm {
    csrf: String,
    project: String,
    action: String,
}

pub async fn action(
    State(state): State<UiState>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Page {
    let session = admin_form(&state, &headers, &form.csrf, "controls rollouts").await?;
    match crate::api::rollouts::request(&state.api, &form.project, &form.action).await {
        Ok(_) => Ok(Redirect::to("/ui/rollouts").into_response()),
        Err(e) => Err(refused(&session, e, "/ui/rollouts")),
    }
}
