//! Users and their personal access tokens. The admin lists, creates and
//! deletes users, sets their memberships (the projects and groups
//! `user_access` matches), and creates and revokes anyone's tokens. A
//! signed-in user sees only their own page, and creates (with an expiry of
//! at most a year) and revokes their own tokens, as on a git host. A new
//! token is shown once; revoking the one a session was opened with ends
//! that session.

use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use maud::html;
use serde::Deserialize;
use tether_store::TokenOwner;

use super::UiState;
use super::layout::state as state_word;
use super::session::{Session, Who};
use super::signed_in;
use super::view::{
    Page, admin_form, forbidden, form_session, not_found, refused, render, shown_once, time,
    unavailable,
};
use crate::api::ApiError;
use tether_api::segment;

/// Longest lifetime of a token a user makes for themself.
const MAX_USER_TOKEN_DAYS: i64 = 365;
const DEFAULT_TOKEN_DAYS: i64 = 30;

fn user_link(name: &str) -> String {
    format!("/ui/users/{}", segment(name))
}

/// Whether the session may manage `name`'s tokens: the admin, or the
/// user themself.
fn may_manage(session: &Session, name: &str) -> bool {
    match &session.who {
        Who::Admin => true,
        Who::User { name: me, .. } => me == name,
    }
}

/// The session of a form about `name`'s tokens, its CSRF token checked
/// and the session allowed to manage them.
async fn tokens_form(
    state: &UiState,
    headers: &HeaderMap,
    csrf: &str,
    name: &str,
) -> Result<Session, axum::response::Response> {
    let session = form_session(state, headers, csrf).await?;
    if !may_manage(&session, name) {
        return Err(forbidden("a user manages only their own tokens"));
    }
    Ok(session)
}

/// Memberships as typed: separated by commas, spaces or lines.
fn parse_memberships(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

pub async fn list(State(state): State<UiState>, headers: HeaderMap) -> Page {
    let session = signed_in(&state, &headers).await?;
    if let Who::User { name, .. } = &session.who {
        return Err(Redirect::to(&user_link(name)).into_response());
    }
    let Ok(users) = state.store.list_users().await else {
        return Err(unavailable());
    };
    let body = html! {
        h1 { "Users" }
        p class="dim" { "A user reaches the clusters whose agents' user_access admits one of their memberships, with a personal access token." }
        table id="users" {
            tr { th { "User" } th { "Memberships" } th { "Created" } }
            @for u in &users {
                tr data-user=(u.name) {
                    td { a href=(user_link(&u.name)) { (u.name) } }
                    td { (u.memberships.join(", ")) }
                    td { (time(u.created_at)) }
                }
            }
        }
        h2 { "New user" }
        form method="post" action="/ui/users" id="new-user" {
            input type="hidden" name="csrf" value=(session.csrf);
            input name="name" placeholder="name (a DNS label)" required;
            " "
            input name="memberships" placeholder="memberships: group/project, group" size="50";
            " " button type="submit" id="create-user" { "Create user" }
        }
    };
    Ok(render("Users", &session, body))
}

#[derive(Deserialize)]
pub struct UserForm {
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    memberships: String,
}

pub async fn create(
    State(state): State<UiState>,
    headers: HeaderMap,
    Form(form): Form<UserForm>,
) -> Page {
    let session = admin_form(&state, &headers, &form.csrf, "manages users").await?;
    let memberships = parse_memberships(&form.memberships);
    let user = crate::api::access::add_user(&state.api, form.name.trim(), memberships)
        .await
        .map_err(|e| refused(&session, e, "/ui/users"))?;
    Ok(Redirect::to(&user_link(&user.name)).into_response())
}

pub async fn show(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Page {
    let session = signed_in(&state, &headers).await?;
    if !may_manage(&session, &name) {
        return Err(not_found(&session, "no such user"));
    }
    let user = match state.store.get_user(&name).await {
        Ok(Some(user)) => user,
        Ok(None) => return Err(not_found(&session, "no such user")),
        Err(_) => return Err(unavailable()),
    };
    let Ok(tokens) = state
        .store
        .list_access_tokens(&TokenOwner::User(name.clone()))
        .await
    else {
        return Err(unavailable());
    };
    let now = tether_store::time::now();
    let admin = session.who == Who::Admin;
    let link = user_link(&name);
    let body = html! {
        h1 { "User " (user.name) }
        p { "memberships: " span id="memberships" { (user.memberships.join(", ")) } }
        @if admin {
            form method="post" action={(link) "/memberships"} {
                input type="hidden" name="csrf" value=(session.csrf);
                input name="memberships" value=(user.memberships.join(", ")) size="60";
                " " button type="submit" id="set-memberships" { "Set memberships" }
            }
        }
        h2 { "Personal access tokens" }
        table id="user-tokens" {
            tr { th { "Id" } th { "Name" } th { "Created" } th { "Expires" } th { "State" } th {} }
            @for t in &tokens {
                @let active = t.revoked_at.is_none() && t.expires_at.is_none_or(|e| e > now);
                tr data-token=(t.id) {
                    td { (t.id) } td { (t.name) }
                    td { (time(t.created_at)) }
                    td { (t.expires_at.map(time).unwrap_or_else(|| "never".into())) }
                    td {
                        @if t.revoked_at.is_some() { (state_word("revoked")) }
                        @else if !active { (state_word("expired")) }
                        @else { (state_word("active")) }
                    }
                    td {
                        @if active {
                            form class="inline" method="post" action={(link) "/tokens/" (t.id) "/revoke"} {
                                input type="hidden" name="csrf" value=(session.csrf);
                                button type="submit" id={"revoke-pat-" (t.id)} { "Revoke" }
                            }
                        }
                    }
                }
            }
        }
        form method="post" action={(link) "/tokens"} id="new-pat" {
            input type="hidden" name="csrf" value=(session.csrf);
            input name="name" placeholder="new token's name" required;
            " expires in "
            input name="expires_in_days" type="number" min=(if admin { 0 } else { 1 }) max=(MAX_USER_TOKEN_DAYS) value=(DEFAULT_TOKEN_DAYS) size="4";
            " days"
            @if admin { span class="dim" { " (0: never)" } }
            " " button type="submit" id="create-pat" { "Create token" }
        }
        @if admin {
            h2 { "Delete" }
            form method="post" action={(link) "/delete"} {
                input type="hidden" name="csrf" value=(session.csrf);
                button type="submit" id="delete-user" { "Delete user " (user.name) " and their tokens" }
            }
        }
    };
    Ok(render(&format!("User {name}"), &session, body))
}

pub async fn memberships(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<UserForm>,
) -> Page {
    let session = admin_form(&state, &headers, &form.csrf, "sets memberships").await?;
    let link = user_link(&name);
    let memberships = parse_memberships(&form.memberships);
    crate::api::access::change_memberships(&state.api, name, memberships)
        .await
        .map_err(|e| refused(&session, e, &link))?;
    Ok(Redirect::to(&link).into_response())
}

pub async fn delete(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<UserForm>,
) -> Page {
    let session = admin_form(&state, &headers, &form.csrf, "manages users").await?;
    let link = user_link(&name);
    crate::api::access::remove_user(&state.api, name)
        .await
        .map_err(|e| refused(&session, e, &link))?;
    Ok(Redirect::to("/ui/users").into_response())
}

#[derive(Deserialize)]
pub struct TokenForm {
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    expires_in_days: Option<i64>,
}

/// Creates a personal access token, shown once.
pub async fn create_token(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<TokenForm>,
) -> Page {
    let session = tokens_form(&state, &headers, &form.csrf, &name).await?;
    let link = user_link(&name);
    let days = form.expires_in_days.unwrap_or(DEFAULT_TOKEN_DAYS);
    let allowed = match session.who {
        Who::Admin => 0..=MAX_USER_TOKEN_DAYS * 10,
        Who::User { .. } => 1..=MAX_USER_TOKEN_DAYS,
    };
    if !allowed.contains(&days) {
        let why = ApiError::Invalid(format!(
            "a token's lifetime must be {} to {} days",
            allowed.start(),
            allowed.end()
        ));
        return Err(refused(&session, why, &link));
    }
    let expires_at = (days > 0).then(|| tether_store::time::now() + days * 86_400);
    let label = match form.name.trim() {
        "" => "web".to_owned(),
        label => label.to_owned(),
    };
    let created = crate::api::access::create_access_token(
        &state.api,
        TokenOwner::User(name.clone()),
        label,
        String::new(),
        expires_at,
        false,
    )
    .await;
    let (record, token) = match created {
        Ok(created) => created,
        Err(e) => return Err(refused(&session, e, &link)),
    };
    let body = html! {
        h1 { "Token " (record.name) " of user " (name) }
        p { "Copy it now: kas keeps only its hash and will not show it again. Use it to sign in here, or with " code { "kas kubeconfig --agent <agent>" } " for kubectl." }
        pre id="new-pat-token" { (token.expose_secret()) }
        p { a href=(link) { "Back" } }
    };
    Ok(shown_once(&session, "New personal access token", body))
}

pub async fn revoke_token(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, i64)>,
    Form(form): Form<TokenForm>,
) -> Page {
    let session = tokens_form(&state, &headers, &form.csrf, &name).await?;
    let link = user_link(&name);
    match crate::api::access::revoke_access_token(&state.api, TokenOwner::User(name), id).await {
        Ok(_) => Ok(Redirect::to(&link).into_response()),
        Err(e) => Err(refused(&session, e, &link)),
    }
}
