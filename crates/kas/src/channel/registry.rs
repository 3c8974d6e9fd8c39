//! Live agent connections, in memory: who is connected, since when, with what
//! version; and a way to close them when their token is revoked or their agent
//! deleted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use tether_agent_config::AgentConfig;
use tether_tunnel::server::Tunnels;

use super::config::{ConfigProblem, ConfigStatus};
use crate::metrics::Metrics;
pub use tether_api::{ConnectionView, DriftView, ObjectView, SyncView};

struct Entry {
    agent: String,
    token_id: i64,
    view: ConnectionView,
    close: watch::Sender<Option<String>>,
}

/// Every live connection, by connection id, and what kas made of each
/// agent's config file.
pub struct ConnectionRegistry {
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
    configs: Mutex<HashMap<String, ConfigStatus>>,
    /// The config in use, parsed: what the API proxy authorizes against.
    access: Mutex<HashMap<String, Arc<AgentConfig>>>,
    /// Each agent's tunnels, closed with its sessions.
    tunnels: Arc<Tunnels>,
    /// Bumped on every grant or revocation of a manifest project, so that
    /// sessions decide again what they follow.
    grants: watch::Sender<u64>,
    metrics: Metrics,
}

/// The view of a report an agent sent, received at `reported_at`.
pub fn sync_view(report: tether_proto::v1::SyncReport, reported_at: i64) -> SyncView {
    {
        use tether_proto::v1::SyncState;
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        SyncView {
            state: match report.state() {
                SyncState::Synced => "synced",
                SyncState::Failed => "failed",
                SyncState::DryRun => "dry_run",
                SyncState::Unspecified => "unknown",
            }
            .to_owned(),
            project: report.project_id,
            commit: report.commit_id,
            error: non_empty(report.error),
            applied: report.applied,
            unchanged: report.unchanged,
            pruned: report.pruned,
            duration_ms: report
                .duration
                .map(|d| d.seconds.max(0) as u64 * 1000 + d.nanos.max(0) as u64 / 1_000_000)
                .unwrap_or_default(),
            reported_at: crate::time_format::to_rfc3339(reported_at),
            objects: report
                .objects
                .into_iter()
                .map(|o| ObjectView {
                    group: o.group,
                    kind: o.kind,
                    namespace: non_empty(o.namespace),
                    name: o.name,
                    action: o.action,
                    health: o.health,
                    message: non_empty(o.message),
                })
                .collect(),
            drift: report
                .drift
                .into_iter()
                .map(|d| DriftView {
                    group: d.group,
                    kind: d.kind,
                    namespace: non_empty(d.namespace),
                    name: d.name,
                    who: d.who,
                    what: d.what,
                    error: non_empty(d.error),
                    at: d.at,
                })
                .collect(),
        }
    }
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
            configs: Mutex::default(),
            access: Mutex::default(),
            tunnels: Arc::default(),
            grants: watch::channel(0).0,
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

    /// Follows grant changes (see [`Self::grants_changed`]).
    pub fn watch_grants(&self) -> watch::Receiver<u64> {
        self.grants.subscribe()
    }

    /// Tells every session that manifest grants changed.
    pub fn grants_changed(&self) {
        self.grants.send_modify(|n| *n += 1);
    }

    /// Records the manifest projects refused to `agent` (empty: none).
    pub fn set_manifest_refusals(&self, agent: &str, refused: Vec<String>) {
        lock(&self.configs)
            .entry(agent.to_owned())
            .or_default()
            .manifest_project_errors = refused;
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
                close,
            },
        );
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

    /// The agents' tunnels.
    pub fn tunnels(&self) -> &Arc<Tunnels> {
        &self.tunnels
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

    /// What kas last made of `agent`'s config file (empty before any read).
    pub fn config(&self, agent: &str) -> ConfigStatus {
        self.config_if_read(agent).unwrap_or_default()
    }

    /// What this kas made of `agent`'s config file, if it read it.
    pub fn config_if_read(&self, agent: &str) -> Option<ConfigStatus> {
        lock(&self.configs).get(agent).cloned()
    }

    /// The parsed config `agent` uses, once kas has read one.
    pub fn access_config(&self, agent: &str) -> Option<Arc<AgentConfig>> {
        lock(&self.access).get(agent).cloned()
    }

    /// Records a good config: it is the one in use, and any error is past.
    pub fn config_accepted(
        &self,
        agent: &str,
        commit: &str,
        warnings: Vec<String>,
        config: AgentConfig,
    ) {
        lock(&self.access).insert(agent.to_owned(), Arc::new(config));
        lock(&self.configs).insert(
            agent.to_owned(),
            ConfigStatus {
                commit: Some(commit.to_owned()),
                warnings,
                error: None,
                manifest_project_errors: Vec::new(),
            },
        );
    }

    /// Records why the newest config could not be used; the last good one
    /// stays in use.
    pub fn config_rejected(&self, agent: &str, problem: ConfigProblem) {
        lock(&self.configs)
            .entry(agent.to_owned())
            .or_default()
            .error = Some(problem);
    }

    /// Forgets a deleted agent's config and sync status.
    pub fn forget_config(&self, agent: &str) {
        lock(&self.configs).remove(agent);
        lock(&self.access).remove(agent);
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
