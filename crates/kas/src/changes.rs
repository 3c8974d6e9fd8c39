//! One place that turns a change of kas's records into all its
//! consequences: which sessions, tunnels and proxied exchanges end, what is
//! forgotten, what sessions decide again. Handlers record the change in the
//! store, then hand it here; none of them closes or forgets anything itself,
//! so a new consequence is added once, for every way the change can happen.

use std::sync::Arc;

use tether_store::TokenOwner;

use crate::channel::ConnectionRegistry;
use crate::proxy::ProxyState;
use crate::proxy::streams::Opener;

/// Something that happened to kas's records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// An agent token was revoked; `reason` is what the agent is told.
    AgentTokenRevoked {
        token_id: i64,
        reason: String,
    },
    AgentDeleted {
        name: String,
    },
    /// A project or personal access token was revoked.
    AccessTokenRevoked {
        owner: TokenOwner,
        token_id: i64,
    },
    /// A user was deleted or their memberships changed.
    UserChanged {
        name: String,
    },
    /// A project was deleted, with its access tokens.
    ProjectDeleted {
        id: String,
    },
    /// A manifest project was granted to an agent, or the grant revoked.
    ManifestGrantsChanged,
}

/// Applies changes to the live state.
#[derive(Clone)]
pub struct Changes {
    connections: Arc<ConnectionRegistry>,
    proxy: Arc<ProxyState>,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes").finish_non_exhaustive()
    }
}

impl Changes {
    pub fn new(connections: Arc<ConnectionRegistry>, proxy: Arc<ProxyState>) -> Self {
        Changes { connections, proxy }
    }

    /// Carries out every consequence of `change`.
    pub fn apply(&self, change: Change) {
        let (sessions, exchanges) = match &change {
            Change::AgentTokenRevoked { token_id, reason } => {
                (self.connections.close_token(*token_id, reason), 0)
            }
            Change::AgentDeleted { name } => {
                let closed = self
                    .connections
                    .close_agent(name, &format!("agent {name} was deleted"));
                self.connections.forget_config(name);
                let ended = self.proxy.streams.stop_where(|agent, _| agent == name);
                (closed, ended)
            }
            Change::AccessTokenRevoked { owner, token_id } => {
                let ended = self
                    .proxy
                    .streams
                    .stop_where(|_, opener| match (owner, opener) {
                        (TokenOwner::User(user), Opener::User(name)) => user == name,
                        (TokenOwner::Project(_), Opener::ProjectToken { token_id: id, .. }) => {
                            id == token_id
                        }
                        _ => false,
                    });
                (0, ended)
            }
            Change::UserChanged { name } => {
                let ended = self
                    .proxy
                    .streams
                    .stop_where(|_, opener| *opener == Opener::User(name.clone()));
                (0, ended)
            }
            Change::ProjectDeleted { id } => {
                let ended = self.proxy.streams.stop_where(|_, opener| {
                    matches!(opener, Opener::ProjectToken { project, .. } if project == id)
                });
                (0, ended)
            }
            Change::ManifestGrantsChanged => {
                self.connections.grants_changed();
                (0, 0)
            }
        };
        // Every change can narrow what a remembered credential may do.
        self.proxy.forget_admissions();
        tracing::info!(
            change = ?change,
            closed_sessions = sessions,
            ended_exchanges = exchanges,
            "change applied"
        );
    }
}
