//! What every store implementation checks and decides the same way: the
//! validation of new records and the verdict on a presented token. Kept
//! here once, so SQLite and PostgreSQL cannot drift apart.

use tether_credentials::TokenHash;

use crate::error::{Result, StoreError};
use crate::model::*;

pub(crate) fn check_new_project(p: &NewProject) -> Result<()> {
    tether_agent_config::validate_project_id(&p.id)
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    if p.url.trim().is_empty() {
        return Err(StoreError::Invalid(format!(
            "project {} needs a repository URL",
            p.id
        )));
    }
    Ok(())
}

pub(crate) fn check_agent_name(name: &str) -> Result<()> {
    tether_agent_config::validate_agent_name(name).map_err(|e| StoreError::Invalid(e.to_string()))
}

pub(crate) fn check_user_name(name: &str) -> Result<()> {
    tether_agent_config::validate_agent_name(name)
        .map_err(|e| StoreError::Invalid(format!("user name: {e}")))
}

/// Memberships are project ids or groups; stored one a line.
pub(crate) fn join_memberships(memberships: &[String]) -> Result<String> {
    for m in memberships {
        tether_agent_config::validate_project_id(m)
            .map_err(|e| StoreError::Invalid(format!("membership {m:?}: {e}")))?;
    }
    Ok(memberships.join("\n"))
}

pub(crate) fn split_memberships(joined: &str) -> Vec<String> {
    joined.lines().map(str::to_owned).collect()
}

pub(crate) fn check_new_token(t: &NewToken) -> Result<()> {
    if t.name.trim().is_empty() {
        return Err(StoreError::Invalid("a token needs a name".into()));
    }
    if t.expires_at.is_some_and(|e| e <= t.created_at) {
        return Err(StoreError::Invalid(
            "a token cannot expire before it is created".into(),
        ));
    }
    Ok(())
}

pub(crate) fn check_new_access_token(
    owner: &TokenOwner,
    t: &NewToken,
    protected: bool,
) -> Result<()> {
    check_new_token(t)?;
    if protected && matches!(owner, TokenOwner::User(_)) {
        return Err(StoreError::Invalid(
            "only project tokens can be protected".into(),
        ));
    }
    Ok(())
}

/// What a token found by its hash is worth at `now`.
pub(crate) enum Verdict {
    Active,
    Revoked(UnixTime),
    Expired(UnixTime),
    /// The stored hash does not match after all.
    Unknown,
}

/// The lookup matched by index; the hash is confirmed in constant time, so
/// the decision never rests on a comparison that leaks timing.
pub(crate) fn verdict(
    stored_hex: &str,
    presented: &TokenHash,
    revoked_at: Option<UnixTime>,
    expires_at: Option<UnixTime>,
    now: UnixTime,
) -> Verdict {
    if !TokenHash::from_hex(stored_hex).is_ok_and(|s| s.ct_eq(presented)) {
        return Verdict::Unknown;
    }
    match (revoked_at, expires_at) {
        (Some(at), _) => Verdict::Revoked(at),
        (None, Some(at)) if now >= at => Verdict::Expired(at),
        _ => Verdict::Active,
    }
}

/// The "not found" of an owner.
pub(crate) fn owner_not_found(owner: &TokenOwner) -> StoreError {
    StoreError::NotFound(match owner {
        TokenOwner::Project(p) => format!("project {p}"),
        TokenOwner::User(u) => format!("user {u}"),
    })
}
