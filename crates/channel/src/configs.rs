//! What kas made of each agent's config file: the status the API shows
//! (commit, warnings, the newest error, refused manifest projects and
//! notification secrets), the config in use, parsed, which the API proxy
//! authorizes against, and the notification destinations of it the agent
//! may use. A bad newest commit never replaces the config in use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tether_agent_config::AgentConfig;
use tether_store::Store;

use crate::config::{ConfigProblem, ConfigStatus};
use crate::stored::StoredConfigs;
use tether_notify::notifications::AgentDestinations;

/// The agents' configs, by agent name.
#[derive(Default)]
pub struct AgentConfigs {
    status: Mutex<HashMap<String, ConfigStatus>>,
    in_use: Mutex<HashMap<String, Arc<AgentConfig>>>,
    /// The destinations of the config in use whose secret the agent may
    /// use.
    destinations: Mutex<HashMap<String, AgentDestinations>>,
    /// Configs other replicas accepted, for agents whose session is there.
    stored: StoredConfigs,
}

impl std::fmt::Debug for AgentConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfigs").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked mid-update.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl AgentConfigs {
    /// What kas last made of `agent`'s config file (empty before any read).
    pub fn status(&self, agent: &str) -> ConfigStatus {
        self.status_if_read(agent).unwrap_or_default()
    }

    /// What this kas made of `agent`'s config file, if it read it.
    pub fn status_if_read(&self, agent: &str) -> Option<ConfigStatus> {
        lock(&self.status).get(agent).cloned()
    }

    /// The parsed config `agent` uses, once kas has read one.
    pub fn in_use(&self, agent: &str) -> Option<Arc<AgentConfig>> {
        lock(&self.in_use).get(agent).cloned()
    }

    /// The config `agent` uses: the one its session here read, or the one
    /// stored by the replica that holds its session.
    pub async fn in_use_anywhere(
        &self,
        store: &dyn Store,
        agent: &str,
    ) -> Option<Arc<AgentConfig>> {
        match self.in_use(agent) {
            Some(config) => Some(config),
            None => self.stored.get(store, agent).await,
        }
    }

    /// Records a good config: it is the one in use, and any error is past.
    /// Whether its commit is new here (another session of the agent, or
    /// an earlier one, may have accepted it already).
    pub fn accepted(
        &self,
        agent: &str,
        commit: &str,
        warnings: Vec<String>,
        config: AgentConfig,
    ) -> bool {
        lock(&self.in_use).insert(agent.to_owned(), Arc::new(config));
        let before = lock(&self.status).insert(
            agent.to_owned(),
            ConfigStatus {
                commit: Some(commit.to_owned()),
                warnings,
                error: None,
                manifest_project_errors: Vec::new(),
                notification_errors: Vec::new(),
            },
        );
        before.and_then(|s| s.commit).as_deref() != Some(commit)
    }

    /// Records why the newest config could not be used; the last good one
    /// stays in use.
    pub fn rejected(&self, agent: &str, problem: ConfigProblem) {
        lock(&self.status)
            .entry(agent.to_owned())
            .or_default()
            .error = Some(problem);
    }

    /// Records the manifest projects refused to `agent` (empty: none).
    pub fn set_manifest_refusals(&self, agent: &str, refused: Vec<String>) {
        lock(&self.status)
            .entry(agent.to_owned())
            .or_default()
            .manifest_project_errors = refused;
    }

    /// Records the notification destinations `agent` may use, and why
    /// the others of its config are refused (empty: none).
    pub fn set_destinations(
        &self,
        agent: &str,
        destinations: AgentDestinations,
        refused: Vec<String>,
    ) {
        lock(&self.destinations).insert(agent.to_owned(), destinations);
        lock(&self.status)
            .entry(agent.to_owned())
            .or_default()
            .notification_errors = refused;
    }

    /// The notification destinations of `agent`'s config in use that it
    /// may use (none before a config is read here).
    pub fn destinations(&self, agent: &str) -> AgentDestinations {
        lock(&self.destinations)
            .get(agent)
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets a deleted agent's config and its status.
    pub fn forget(&self, agent: &str) {
        lock(&self.status).remove(agent);
        lock(&self.in_use).remove(agent);
        lock(&self.destinations).remove(agent);
        self.stored.forget(agent);
    }
}
