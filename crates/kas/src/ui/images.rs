//! Image automation: each project's policies (latest tag seen, what git
//! holds, state) and last update, as `kas image list` shows them; the
//! admin can scan now. A user sees the projects whose agents they may see.

use axum::extract::{Form, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use maud::html;

use super::projects::CsrfForm;
use super::view::{Page, admin_form, refused, render, short, unavailable};
use super::{UiState, signed_in};

pub async fn list(State(state): State<UiState>, headers: HeaderMap) -> Page {
    let session = signed_in(&state, &headers).await?;
    let visible = super::projects::visible(&state, &session).await?;
    let mut projects = state.images.statuses().await.map_err(|_| unavailable())?;
    projects.retain(|p| visible.iter().any(|(v, _)| v.id == p.project));
    let body = html! {
        h1 { "Images" }
        @if session.who == super::session::Who::Admin {
            form method="post" action="/ui/images/scan" {
                input type="hidden" name="csrf" value=(session.csrf);
                button type="submit" { "Scan every repository now" }
            }
        }
        @if projects.is_empty() { p class="dim" { "No project has .tether/image-updates.yaml." } }
        @for p in &projects {
            h2 { (p.project) " " span class="dim" { "→ " (p.branch.as_deref().unwrap_or("-")) } }
            @if let Some(error) = &p.error { p class="bad" { (error) } }
            table class="images" data-project=(p.project) {
                tr { th { "Image" } th { "Repository" } th { "Rule" } th { "Latest" } th { "In git" } th { "State" } }
                @for i in &p.policies {
                    tr data-policy=(i.name) {
                        td { (i.name) }
                        td { code { (i.repository) } }
                        td { (i.policy) }
                        td { code { (i.latest.as_deref().unwrap_or("-")) } @if i.cut { " (first 10,000 tags)" } }
                        td { @for v in &i.in_git { code { (v) } " " } }
                        td class=(if i.state == "error" || i.state == "no_match" { "bad" } else { "" }) {
                            (i.state) @if let Some(m) = &i.message { " · " (m) }
                        }
                    }
                }
            }
            @if let Some(u) = &p.last_update {
                p { "Last update " (u.at) ": " code { (short(&u.commit)) } " on " (u.branch) " · " (u.changes.join(", "))
                    @if let Some(pr) = &u.pull_request { " · " a href=(pr) { "pull request" } } }
            }
        }
    };
    Ok(render("Images", &session, body))
}

pub async fn scan(
    State(state): State<UiState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Page {
    let session = admin_form(&state, &headers, &form.csrf, "scans image repositories").await?;
    match state.images.request_scan(&[]).await {
        Ok(()) => Ok(Redirect::to("/ui/images").into_response()),
        Err(e) => Err(refused(
            &session,
            crate::api::ApiError::from(e),
            "/ui/images",
        )),
    }
}
