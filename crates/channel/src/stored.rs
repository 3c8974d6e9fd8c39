//! Agents' configs as the store keeps them, for a replica that holds an
//! agent's tunnels but not its session (a load balancer may send an agent's
//! connections to different replicas): it authorizes proxy requests against
//! the config the session's replica accepted.
//!
//! A config is read again after a few seconds, and parsed again only when
//! its commit changed, so a replica picks up a new config within that time
//! without a query per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether_agent_config::AgentConfig;
use tether_store::Store;

/// How long a stored config is used before the store is asked again.
const TTL: Duration = Duration::from_secs(5);
/// Agents remembered at most (the memory is cleared past it).
const MAX_AGENTS: usize = 100_000;

struct Entry {
    read_at: Instant,
    commit: String,
    config: Arc<AgentConfig>,
}

/// Parsed stored configs, by agent.
#[derive(Default)]
pub struct StoredConfigs {
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for StoredConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredConfigs").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl StoredConfigs {
    /// `agent`'s stored config, if a kas accepted one.
    pub async fn get(&self, store: &dyn Store, agent: &str) -> Option<Arc<AgentConfig>> {
        if let Some(e) = lock(&self.entries).get(agent)
            && e.read_at.elapsed() < TTL
        {
            return Some(e.config.clone());
        }
        let stored = match store.agent_config(agent).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = ?e, agent, "cannot read the agent's stored config");
                return lock(&self.entries).get(agent).map(|e| e.config.clone());
            }
        };
        let mut entries = lock(&self.entries);
        if let Some(e) = entries.get_mut(agent)
            && e.commit == stored.commit
        {
            e.read_at = Instant::now();
            return Some(e.config.clone());
        }
        // Stored only after it validated; a failure here is a newer schema.
        let config = match tether_agent_config::parse(&stored.source) {
            Ok(parsed) => Arc::new(parsed.config),
            Err(e) => {
                tracing::warn!(error = %e, agent, "the agent's stored config does not parse");
                return None;
            }
        };
        if entries.len() >= MAX_AGENTS {
            entries.clear();
        }
        entries.insert(
            agent.to_owned(),
            Entry {
                read_at: Instant::now(),
                commit: stored.commit,
                config: config.clone(),
            },
        );
        Some(config)
    }

    /// Forgets `agent`'s config (deleted).
    pub fn forget(&self, agent: &str) {
        lock(&self.entries).remove(agent);
    }
}
