//! What every store implementation checks and decides the same way: the
//! validation of new records and the verdict on a presented token. Kept
//! here once, so SQLite and PostgreSQL cannot drift apart.

use std::collections::BTreeMap;

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

/// An agent's labels as stored: a JSON object of strings, which the
/// database's own JSON functions read too (an operator's query, a report).
pub(crate) fn labels_to_json(labels: &BTreeMap<String, String>) -> Result<String> {
    serde_json::to_string(labels)
        .map_err(|e| StoreError::Invalid(format!("agent labels cannot be written as JSON: {e}")))
}

/// The labels of `agent` from their column.
pub(crate) fn labels_from_json(
    agent: &str,
    json: &str,
) -> std::result::Result<BTreeMap<String, String>, UnreadableLabels> {
    serde_json::from_str(json).map_err(|source| UnreadableLabels {
        agent: agent.to_owned(),
        source,
    })
}

/// An agent's labels column that is not a JSON object of strings: written
/// by hand in the database, since the store writes only what it can read.
#[derive(Debug, thiserror::Error)]
#[error("the labels of agent {agent} are not a JSON object of strings; set them again")]
pub(crate) struct UnreadableLabels {
    agent: String,
    #[source]
    source: serde_json::Error,
}

/// Where the keys that start with `prefix` end: they are exactly the keys
/// in `prefix..end`, with `end` the prefix whose last character is
/// incremented (a last U+10FFFF, which has no successor, is dropped first);
/// `None`, no end, for an empty prefix. Code point order is UTF-8's byte
/// order, which is how SQLite's BINARY and PostgreSQL's "C" collation
/// compare, so the range is answered from the key's index and no character
/// of the prefix is a wildcard (as `%` and `_` would be in `LIKE`).
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // Surrogates are not characters: after U+D7FF comes U+E000.
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A project's stored signature policy. One that cannot be read (a newer
/// kas's, a damaged row) fails closed: a policy with no keys, which
/// verifies nothing, rather than no policy, which would verify nothing
/// and give agents everything.
pub(crate) fn verify_policy(text: Option<&str>) -> Option<VerifyPolicy> {
    let text = text?;
    Some(serde_json::from_str(text).unwrap_or_else(|e| {
        tracing::error!(error = %e, "unreadable signature policy: every commit is refused");
        VerifyPolicy {
            mode: VerifyMode::Strict,
            ssh_allowed_signers: None,
            gpg_keys: None,
            trust_base: None,
            set_at: 0,
        }
    }))
}

/// A project's stored verification status; an unreadable one is empty
/// (`strict` then walks from its trust base again: stricter, not looser).
pub(crate) fn verify_status(text: Option<&str>) -> VerifyStatus {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts_within_range(key: &str, prefix: &str) -> bool {
        key >= prefix && prefix_end(prefix).is_none_or(|end| key < end.as_str())
    }

    #[test]
    fn the_prefix_range_ends_at_the_next_string_of_the_same_length() {
        assert_eq!(prefix_end("rollout/"), Some("rollout0".to_owned()));
        assert_eq!(prefix_end("a%"), Some("a&".to_owned()));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a\u{10FFFF}"), Some("b".to_owned()));
        assert_eq!(prefix_end("\u{10FFFF}\u{10FFFF}"), None);
        assert_eq!(prefix_end("x\u{D7FF}"), Some("x\u{E000}".to_owned()));
    }

    #[test]
    fn a_key_is_in_the_prefix_range_exactly_when_it_starts_with_the_prefix() {
        let keys = [
            "",
            "a",
            "a%",
            "a%b",
            "a&",
            "a_",
            "ab",
            "a\u{10FFFF}",
            "a\u{10FFFF}z",
            "b",
            "req/",
            "req/1",
            "req0",
            "req.",
            "é",
            "\u{D7FF}",
            "\u{E000}",
        ];
        for prefix in keys {
            for key in keys {
                assert_eq!(
                    starts_within_range(key, prefix),
                    key.starts_with(prefix),
                    "key {key:?}, prefix {prefix:?}"
                );
            }
        }
    }

    #[test]
    fn labels_round_trip_and_a_foreign_value_names_its_agent() {
        let labels = BTreeMap::from([
            ("env".to_owned(), "prod".to_owned()),
            ("note".to_owned(), "a \"quoted\" ünïcode value".to_owned()),
        ]);
        let json = labels_to_json(&labels).expect("written");
        assert_eq!(labels_from_json("prod", &json).expect("read"), labels);
        assert_eq!(
            labels_from_json("prod", "{}").expect("read"),
            BTreeMap::new()
        );
        let e = labels_from_json("prod", r#"{"env": 1}"#).expect_err("not a string");
        assert!(e.to_string().contains("agent prod"), "{e}");
    }
}
