//! What the rest of kas may ask of the agent endpoint: narrow views, so
//! that no caller reaches through one part into another.

use tokio::sync::broadcast;

use crate::manifests::ApiVersions;
use tether_agent_config::AgentName;
use tether_api::ConnectionView;

/// Something a page showing agents would redraw for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    Opened(AgentName),
    Closed(AgentName),
    /// A sync report arrived.
    Reported(AgentName),
}

/// Who is connected here, and to what cluster: for the API and the web UI.
pub trait LiveAgents: Send + Sync {
    /// Agents with at least one live session here, sorted.
    fn connected_agents(&self) -> Vec<AgentName>;
    /// Live sessions of `agent`, oldest first.
    fn connections(&self, agent: &str) -> Vec<ConnectionView>;
    /// How to render for `agent`'s cluster, as its oldest live session
    /// reported it: the cluster version and the API versions it serves.
    fn cluster_of(&self, agent: &str) -> Option<(String, ApiVersions)>;
    /// Sessions opening, closing and reporting here, as they happen. A
    /// follower that falls behind is told it lagged, not blocked on.
    fn events(&self) -> broadcast::Receiver<SessionEvent>;
}

/// What the change feed does to sessions when records change: for
/// `changes.rs`, on every replica.
pub trait SessionControl: Send + Sync {
    /// Closes every session and tunnel authenticated with `token_id`.
    fn close_token(&self, token_id: i64, reason: &str) -> usize;
    /// Closes every session and tunnel of `agent`, and forgets its config.
    fn close_agent(&self, agent: &str, reason: &str) -> usize;
    /// Manifest grants changed: every session decides again what it follows.
    fn grants_changed(&self);
}
