//! Live agent connections, in memory: who is connected, since when, with what
//! version; and a way to close them when their token is revoked or their agent
//! deleted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use tether_tunnel::server::Tunnels;

use super::configs::AgentConfigs;
use crate::metrics::Metrics;
pub use tether_api::{ConnectionView, DriftView, ObjectView, SyncView};

struct Entry {
    agent: String,
    token_id: i64,
    view: ConnectionView,
    /// What the agent's cluster serves, for renders of a plan.
    api_versions: super::manifests::ApiVersions,
    close: watch::Sender<Option<String>>,
}

/// Every live connection, by connection id; with the agents' configs and
/// tunnels, which close and go with them.
pub struct ConnectionRegistry {
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
    /// What kas made of each agent's config file, and the one in use.
    configs: AgentConfigs,
    /// Each agent's tunnels, closed with its sessions.
    tunnels: Arc<Tunnels>,
    /// Plans asked of the sessions here.
    plans: Arc<super::plans::Plans>,
    /// Bumped on every grant or revocation of a manifest project, so that
    /// sessions decide again what they follow.
    grants: watch::Sender<u64>,
    /// Bumped when a session opens or closes or reports a sync here, for
    /// the web UI's live updates.
    changes: watch::Sender<u64>,
    /// Bumped when another replica says such a thing happened there.
    changes_elsewhere: watch::Sender<u64>,
    metrics: Metrics,
}

impl std::fmt::Debug for ConnectionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionRegistry").finish_non_exhaustive()
    }
}

/// Held by a session while it runs; dropping it unregisters the connection.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<ConnectionRegistry>,
    id: u64,
    /// Fires with the reason when the connection must close.
    pub closed: watch::Receiver<Option<String>>,
}

impl Default for ConnectionRegistry {
    fn default() -> Self {
        ConnectionRegistry {
            next_id: AtomicU64::default(),
            entries: Mutex::default(),
            configs: AgentConfigs::default(),
            tunnels: Arc::default(),
            plans: Arc::default(),
            grants: watch::channel(0).0,
            changes: watch::channel(0).0,
            changes_elsewhere: watch::channel(0).0,
            metrics: Metrics::default(),
        }
    }
}

impl ConnectionRegistry {
    /// Agents with at least one live session here.
    pub fn connected_agents(&self) -> Vec<String> {
        let mut agents: Vec<String> = self.lock().values().map(|e| e.agent.clone()).collect();
        agents.sort();
        agents.dedup();
        agents
    }

    /// Live sessions of `agent`.
    pub fn session_count(&self, agent: &str) -> usize {
        self.lock().values().filter(|e| e.agent == agent).count()
    }

    /// Plans asked of the sessions here.
    pub fn plans(&self) -> &Arc<super::plans::Plans> {
        &self.plans
    }

    /// Follows grant changes (see [`Self::grants_changed`]).
    pub fn watch_grants(&self) -> watch::Receiver<u64> {
        self.grants.subscribe()
    }

    /// Follows what the web UI shows changing (see [`Self::changed`]).
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Something the web UI shows changed here.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Follows what other replicas say changed there.
    pub fn watch_changes_elsewhere(&self) -> watch::Receiver<u64> {
        self.changes_elsewhere.subscribe()
    }

    /// Something the web UI shows changed on another replica.
    pub fn changed_elsewhere(&self) {
        self.changes_elsewhere
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Tells every session that manifest grants changed.
    pub fn grants_changed(&self) {
        self.grants.send_modify(|n| *n += 1);
    }

    pub fn register(
        self: &Arc<Self>,
        agent: &str,
        token_id: i64,
        view: ConnectionView,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.metrics.agent_sessions.inc();
        self.metrics.agent_sessions_opened.inc();
        let (close, closed) = watch::channel(None);
        self.lock().insert(
            id,
            Entry {
                agent: agent.to_owned(),
                token_id,
                view,
                api_versions: Default::default(),
                close,
            },
        );
        self.changed();
        Registration {
            registry: self.clone(),
            id,
            closed,
        }
    }

    /// The registry counting sessions into `metrics`.
    pub fn with_metrics(metrics: Metrics) -> Self {
        ConnectionRegistry {
            metrics,
            ..ConnectionRegistry::default()
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Live connections of `agent`, oldest first.
    pub fn connections(&self, agent: &str) -> Vec<ConnectionView> {
        let mut list: Vec<ConnectionView> = self
            .lock()
            .values()
            .filter(|e| e.agent == agent)
            .map(|e| e.view.clone())
            .collect();
        list.sort_by(|a, b| a.connected_at.cmp(&b.connected_at));
        list
    }

    /// How to render for `agent`'s cluster, as its oldest live session
    /// reported it: the cluster version and the API versions it serves.
    pub fn cluster_of(&self, agent: &str) -> Option<(String, super::manifests::ApiVersions)> {
        self.lock()
            .values()
            .filter(|e| e.agent == agent)
            .min_by(|a, b| a.view.connected_at.cmp(&b.view.connected_at))
            .map(|e| (e.view.cluster_version.clone(), e.api_versions.clone()))
    }

    /// The agents' tunnels.
    pub fn tunnels(&self) -> &Arc<Tunnels> {
        &self.tunnels
    }

    /// What kas made of the agents' config files.
    pub fn configs(&self) -> &AgentConfigs {
        &self.configs
    }

    /// Closes every connection and tunnel authenticated with `token_id`.
    pub fn close_token(&self, token_id: i64, reason: &str) -> usize {
        self.tunnels.close_where(|t| t.token_id == token_id);
        self.close_where(|e| e.token_id == token_id, reason)
    }

    /// Closes every connection and tunnel of `agent`.
    pub fn close_agent(&self, agent: &str, reason: &str) -> usize {
        self.tunnels.close_where(|t| t.agent == agent);
        self.close_where(|e| e.agent == agent, reason)
    }

    fn close_where(&self, matches: impl Fn(&Entry) -> bool, reason: &str) -> usize {
        let entries = self.lock();
        let mut n = 0;
        for e in entries.values().filter(|e| matches(e)) {
            let _ = e.close.send(Some(reason.to_owned()));
            n += 1;
        }
        n
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut ConnectionView)) {
        if let Some(e) = self.lock().get_mut(&id) {
            f(&mut e.view);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        lock(&self.entries)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked mid-update.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registration {
    pub fn set_api_versions(&self, versions: super::manifests::ApiVersions) {
        if let Some(e) = self.registry.lock().get_mut(&self.id) {
            e.api_versions = versions;
        }
    }

    pub fn touch(&self, now: &str) {
        self.registry
            .update(self.id, |v| v.last_seen = now.to_owned());
    }

    pub fn set_config_commit(&self, commit: &str) {
        self.registry
            .update(self.id, |v| v.config_commit = commit.to_owned());
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.metrics.agent_sessions.dec();
        self.registry.lock().remove(&self.id);
        self.registry.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(pod: &str) -> ConnectionView {
        ConnectionView {
            pod_namespace: "ns".into(),
            pod_name: pod.into(),
            agent_version: "1".into(),
            cluster_version: "v1.35.4".into(),
            config_commit: String::new(),
            connected_at: "2026-01-01T00:00:00Z".into(),
            last_seen: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn closing_a_token_closes_only_its_connections_and_dropping_unregisters() {
        let registry = Arc::new(ConnectionRegistry::default());
        let a = registry.register("prod", 1, view("a"));
        let b = registry.register("prod", 2, view("b"));
        assert_eq!(registry.connections("prod").len(), 2);
        assert_eq!(registry.close_token(1, "revoked"), 1);
        assert_eq!(a.closed.borrow().as_deref(), Some("revoked"));
        assert_eq!(*b.closed.borrow(), None);
        drop(a);
        assert_eq!(registry.connections("prod"), vec![view("b")]);
        assert_eq!(registry.close_agent("prod", "deleted"), 1);
        drop(b);
        assert!(registry.connections("prod").is_empty());
    }
}
