//! A short-lived memory of admitted credentials, so that a busy client does
//! not cost two database lookups (and, for an ID token, a signature check)
//! per request.
//!
//! An entry holds only while the agent's config is the one it was decided
//! against (compared by pointer), for at most [`TTL`], and never past the
//! credential's own expiry. kas forgets everything at once whenever a token
//! is revoked or a user, membership or agent changes, so those take effect
//! on the next request. Keys are SHA-256 of the `Authorization` value: no
//! credential is kept in clear.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether_agent_config::AgentConfig;

use super::access::Grant;
use super::principal::Principal;

/// Longest an admission is reused.
pub const TTL: Duration = Duration::from_secs(10);
/// Entries kept at most; past it the memory starts afresh.
const MAX_ENTRIES: usize = 10_000;

pub type Key = [u8; 32];

struct Entry {
    principal: Principal,
    grant: Grant,
    config: Arc<AgentConfig>,
    valid_until: Instant,
}

/// The memory and its generation: every [`Admissions::clear`] starts a new
/// generation, and an admission decided in an older one is not stored, so
/// a request that was being admitted while a revocation ran cannot put the
/// revoked credential back.
#[derive(Default)]
pub struct Admissions {
    entries: Mutex<(u64, HashMap<Key, Entry>)>,
}

impl std::fmt::Debug for Admissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admissions").finish_non_exhaustive()
    }
}

/// The key of an `Authorization` header value.
pub fn key(authorization: &str) -> Key {
    let digest = ring::digest::digest(&ring::digest::SHA256, authorization.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

impl Admissions {
    /// The admission for `key`, if it was decided against `config` and is
    /// still valid.
    pub fn get(&self, key: &Key, config: &Arc<AgentConfig>) -> Option<(Principal, Grant)> {
        let entries = self.lock();
        let entry = entries.1.get(key)?;
        (Arc::ptr_eq(&entry.config, config) && Instant::now() < entry.valid_until)
            .then(|| (entry.principal.clone(), entry.grant.clone()))
    }

    /// The current generation: read it before admitting, pass it to
    /// [`Self::put`].
    pub fn generation(&self) -> u64 {
        self.lock().0
    }

    /// Remembers an admission decided in `generation`; `expires_at` (Unix
    /// seconds) is the credential's own expiry, if it has one. Nothing is
    /// stored if the memory was cleared since.
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &self,
        generation: u64,
        key: Key,
        principal: &Principal,
        grant: &Grant,
        config: Arc<AgentConfig>,
        expires_at: Option<i64>,
        now_unix: i64,
    ) {
        let mut ttl = TTL;
        if let Some(exp) = expires_at {
            let left = Duration::from_secs(u64::try_from(exp - now_unix).unwrap_or(0));
            ttl = ttl.min(left);
        }
        let mut guard = self.lock();
        let (current, entries) = &mut *guard;
        if *current != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                principal: principal.clone(),
                grant: grant.clone(),
                config,
                valid_until: Instant::now() + ttl,
            },
        );
    }

    /// Forgets every admission, and starts a new generation.
    pub fn clear(&self) {
        let mut guard = self.lock();
        guard.0 += 1;
        guard.1.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, HashMap<Key, Entry>)> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::User;

    fn alice() -> (Principal, Grant) {
        let principal = Principal::User(User {
            name: "alice".into(),
            memberships: vec![],
            expires_at: None,
        });
        let grant = Grant {
            identity: None,
            default_namespace: None,
        };
        (principal, grant)
    }

    #[test]
    fn holds_only_for_the_same_config_and_until_expiry() {
        let admissions = Admissions::default();
        let (principal, grant) = alice();
        let config = Arc::new(AgentConfig::default());
        let k = key("Bearer pat:prod:x");
        let g = admissions.generation();
        admissions.put(g, k, &principal, &grant, config.clone(), None, 0);
        assert!(admissions.get(&k, &config).is_some());
        let newer = Arc::new(AgentConfig::default());
        assert!(admissions.get(&k, &newer).is_none(), "another config");
        admissions.put(g, k, &principal, &grant, config.clone(), Some(100), 100);
        assert!(admissions.get(&k, &config).is_none(), "expired credential");
        admissions.put(g, k, &principal, &grant, config.clone(), None, 0);
        admissions.clear();
        assert!(admissions.get(&k, &config).is_none());
    }

    #[test]
    fn an_admission_decided_before_a_clear_is_not_stored_after_it() {
        let admissions = Admissions::default();
        let (principal, grant) = alice();
        let config = Arc::new(AgentConfig::default());
        let k = key("Bearer pat:prod:x");
        // A request starts admitting; a revocation clears meanwhile.
        let started = admissions.generation();
        admissions.clear();
        admissions.put(started, k, &principal, &grant, config.clone(), None, 0);
        assert!(admissions.get(&k, &config).is_none());
    }
}
