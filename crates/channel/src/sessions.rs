//! Live agent sessions, in memory: who is connected, since when, with what
//! version; a way to close them when their token is revoked or their agent
//! deleted; and a bounded stream of what changed, for pages that follow it.
//!
//! Other components see sessions only through the narrow traits in
//! [`crate::traits`]: the API and the web UI read [`LiveAgents`], the change
//! feed acts through [`SessionControl`].
//!
//! [`LiveAgents`]: crate::traits::LiveAgents
//! [`SessionControl`]: crate::traits::SessionControl

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};

use crate::manifests::ApiVersions;
use crate::metrics::ChannelMetrics;
pub use crate::traits::SessionEvent;
use tether_agent_config::AgentName;
pub use tether_api::ConnectionView;

/// How many events a slow follower may fall behind before it is told it
/// lagged (and refreshes everything, as after a reconnect).
const EVENTS: usize = 64;

struct Entry {
    agent: AgentName,
    token_id: i64,
    view: ConnectionView,
    /// What the agent's cluster serves, for renders of a plan.
    api_versions: ApiVersions,
    close: watch::Sender<Option<String>>,
}

/// Every live session here, by session id.
pub struct Sessions {
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
    events: broadcast::Sender<SessionEvent>,
    metrics: ChannelMetrics,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(ChannelMetrics::default())
    }
}

/// Held by a session while it runs; dropping it unregisters the session.
#[derive(Debug)]
pub struct Registration {
    sessions: Arc<Sessions>,
    id: u64,
    agent: AgentName,
    /// Fires with the reason when the session must close.
    pub closed: watch::Receiver<Option<String>>,
}

impl Sessions {
    /// Sessions counted into `metrics`.
    pub fn new(metrics: ChannelMetrics) -> Self {
        Sessions {
            next_id: AtomicU64::default(),
            entries: Mutex::default(),
            events: broadcast::channel(EVENTS).0,
            metrics,
        }
    }

    /// Live sessions of `agent`.
    pub fn session_count(&self, agent: &str) -> usize {
        self.lock().values().filter(|e| e.agent == *agent).count()
    }

    pub fn register(
        self: &Arc<Self>,
        agent: &AgentName,
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
                agent: agent.clone(),
                token_id,
                view,
                api_versions: Default::default(),
                close,
            },
        );
        self.tell(SessionEvent::Opened(agent.clone()));
        Registration {
            sessions: self.clone(),
            id,
            agent: agent.clone(),
            closed,
        }
    }

    /// A sync report of `agent` arrived.
    pub fn reported(&self, agent: &AgentName) {
        self.tell(SessionEvent::Reported(agent.clone()));
    }

    fn tell(&self, event: SessionEvent) {
        // Nobody following is fine: events are news, not state.
        let _ = self.events.send(event);
    }

    /// Closes every session matching, telling each `reason`.
    pub(crate) fn close_where(
        &self,
        matches: impl Fn(&AgentName, i64) -> bool,
        reason: &str,
    ) -> usize {
        let entries = self.lock();
        let mut n = 0;
        for e in entries.values().filter(|e| matches(&e.agent, e.token_id)) {
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
        // The map stays consistent even if a holder panicked mid-update.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl crate::traits::LiveAgents for Sessions {
    fn connected_agents(&self) -> Vec<AgentName> {
        let mut agents: Vec<AgentName> = self.lock().values().map(|e| e.agent.clone()).collect();
        agents.sort();
        agents.dedup();
        agents
    }

    fn connections(&self, agent: &str) -> Vec<ConnectionView> {
        let mut list: Vec<ConnectionView> = self
            .lock()
            .values()
            .filter(|e| e.agent == *agent)
            .map(|e| e.view.clone())
            .collect();
        list.sort_by(|a, b| a.connected_at.cmp(&b.connected_at));
        list
    }

    fn cluster_of(&self, agent: &str) -> Option<(String, ApiVersions)> {
        self.lock()
            .values()
            .filter(|e| e.agent == *agent)
            .min_by(|a, b| a.view.connected_at.cmp(&b.view.connected_at))
            .map(|e| (e.view.cluster_version.clone(), e.api_versions.clone()))
    }

    fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }
}

impl Registration {
    pub fn set_api_versions(&self, versions: ApiVersions) {
        if let Some(e) = self.sessions.lock().get_mut(&self.id) {
            e.api_versions = versions;
        }
    }

    pub fn touch(&self, now: &str) {
        self.sessions
            .update(self.id, |v| v.last_seen = now.to_owned());
    }

    pub fn set_config_commit(&self, commit: &str) {
        self.sessions
            .update(self.id, |v| v.config_commit = commit.to_owned());
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sessions.metrics.agent_sessions.dec();
        let last = {
            let mut sessions = self.sessions.lock();
            sessions.remove(&self.id);
            !sessions.values().any(|e| e.agent == self.agent)
        };
        if last {
            // The replica it reconnects to shows its syncs from now on.
            self.sessions.metrics.syncs.forget(&self.agent);
        }
        self.sessions.tell(SessionEvent::Closed(self.agent.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traits::LiveAgents;

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
    fn closing_matches_only_its_sessions_and_dropping_unregisters_and_tells() {
        let sessions = Arc::new(Sessions::default());
        let mut events = sessions.events();
        let prod = AgentName::new("prod").expect("valid");
        let a = sessions.register(&prod, 1, view("a"));
        let b = sessions.register(&prod, 2, view("b"));
        assert_eq!(sessions.connections("prod").len(), 2);
        assert_eq!(sessions.close_where(|_, token| token == 1, "revoked"), 1);
        assert_eq!(a.closed.borrow().as_deref(), Some("revoked"));
        assert_eq!(*b.closed.borrow(), None);
        drop(a);
        assert_eq!(sessions.connections("prod"), vec![view("b")]);
        assert_eq!(events.try_recv(), Ok(SessionEvent::Opened(prod.clone())));
        assert_eq!(events.try_recv(), Ok(SessionEvent::Opened(prod.clone())));
        assert_eq!(events.try_recv(), Ok(SessionEvent::Closed(prod.clone())));
        assert_eq!(
            sessions.close_where(|agent, _| agent == &prod, "deleted"),
            1
        );
        drop(b);
        assert!(sessions.connections("prod").is_empty());
        assert_eq!(sessions.connected_agents(), Vec::<AgentName>::new());
    }

    #[test]
    fn a_follower_that_falls_behind_is_told_it_lagged() {
        let sessions = Arc::new(Sessions::default());
        let mut events = sessions.events();
        let agent = AgentName::new("prod").expect("valid");
        for _ in 0..EVENTS + 1 {
            sessions.reported(&agent);
        }
        assert!(matches!(
            events.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
