//! The agent endpoint's shared parts. The server makes them once and hands
//! each component only the part it needs: the API proxy the tunnels and
//! configs, the API and web UI [`LiveAgents`], the change feed
//! [`SessionControl`].

use std::sync::Arc;

use tether_tunnel::server::Tunnels;
use tokio::sync::watch;

use crate::configs::AgentConfigs;
use crate::metrics::ChannelMetrics;
use crate::plans::Plans;
use crate::sessions::Sessions;
use crate::traits::{LiveAgents, SessionControl};

/// Bumped on every grant or revocation of a manifest project, so that
/// sessions decide again what they follow.
#[derive(Clone, Debug)]
pub struct Grants(Arc<watch::Sender<u64>>);

impl Default for Grants {
    fn default() -> Self {
        Grants(Arc::new(watch::channel(0).0))
    }
}

impl Grants {
    pub fn changed(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// Every part of the endpoint's state; cloning shares it.
#[derive(Clone, Debug)]
pub struct ChannelState {
    pub sessions: Arc<Sessions>,
    /// What kas made of each agent's config file, and the one in use.
    pub configs: Arc<AgentConfigs>,
    /// Each agent's tunnels, closed with its sessions.
    pub tunnels: Arc<Tunnels>,
    /// Plans asked of the sessions here.
    pub plans: Arc<Plans>,
    pub grants: Grants,
    pub metrics: ChannelMetrics,
}

impl Default for ChannelState {
    fn default() -> Self {
        ChannelState::new(ChannelMetrics::default())
    }
}

impl ChannelState {
    pub fn new(metrics: ChannelMetrics) -> Self {
        ChannelState {
            sessions: Arc::new(Sessions::new(metrics.clone())),
            configs: Arc::default(),
            tunnels: Arc::default(),
            plans: Arc::default(),
            grants: Grants::default(),
            metrics,
        }
    }

    /// The read-only view for the API and the web UI.
    pub fn live(&self) -> Arc<dyn LiveAgents> {
        self.sessions.clone()
    }

    /// What the change feed may do to sessions.
    pub fn control(&self) -> Arc<dyn SessionControl> {
        Arc::new(Control {
            sessions: self.sessions.clone(),
            configs: self.configs.clone(),
            tunnels: self.tunnels.clone(),
            grants: self.grants.clone(),
        })
    }
}

struct Control {
    sessions: Arc<Sessions>,
    configs: Arc<AgentConfigs>,
    tunnels: Arc<Tunnels>,
    grants: Grants,
}

impl SessionControl for Control {
    fn close_token(&self, token_id: i64, reason: &str) -> usize {
        self.tunnels.close_where(|t| t.token_id == token_id);
        self.sessions
            .close_where(|_, token| token == token_id, reason)
    }

    fn close_agent(&self, agent: &str, reason: &str) -> usize {
        self.tunnels.close_where(|t| t.agent == agent);
        let closed = self.sessions.close_where(|name, _| name == agent, reason);
        self.configs.forget(agent);
        closed
    }

    fn grants_changed(&self) {
        self.grants.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_agent_config::AgentName;

    #[test]
    fn control_closes_by_token_and_by_agent_and_tells_of_grants() {
        let state = ChannelState::default();
        let control = state.control();
        let prod = AgentName::new("prod").expect("valid");
        let view = tether_api::ConnectionView {
            pod_namespace: "ns".into(),
            pod_name: "a".into(),
            agent_version: "1".into(),
            cluster_version: "v1.35.4".into(),
            config_commit: String::new(),
            connected_at: "2026-01-01T00:00:00Z".into(),
            last_seen: "2026-01-01T00:00:00Z".into(),
        };
        let a = state.sessions.register(&prod, 1, view.clone());
        let b = state.sessions.register(&prod, 2, view);
        assert_eq!(control.close_token(1, "revoked"), 1);
        assert_eq!(a.closed.borrow().as_deref(), Some("revoked"));
        assert!(b.closed.borrow().is_none());
        assert_eq!(control.close_agent("prod", "deleted"), 2);
        assert_eq!(b.closed.borrow().as_deref(), Some("deleted"));
        let grants = state.grants.watch();
        control.grants_changed();
        assert!(grants.has_changed().expect("open"));
    }
}
