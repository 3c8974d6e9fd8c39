//! What the proxy needs from the rest of kas: three narrow traits, and
//! what a request sent elsewhere came to.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Request, Response, StatusCode};
use tether_agent_config::{AgentConfig, AgentName};
use tether_credentials::TokenHash;
use tether_store::{AccessTokenStatus, Agent, Store, StoreError, User as UserRecord};
use tether_tunnel::Body;
use tether_tunnel::server::Tunnels;

/// The records a credential is checked against: access tokens, their
/// users, and the agent a request is for. Every [`tether_store::Store`]
/// is one ([`FromStore`]); the proxy needs nothing else of it.
#[async_trait]
pub trait Credentials: Send + Sync {
    async fn access_token(
        &self,
        hash: &TokenHash,
        now: i64,
    ) -> Result<AccessTokenStatus, StoreError>;
    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn agent(&self, name: &AgentName) -> Result<Option<Agent>, StoreError>;
}

/// A store's records, as the proxy reads them.
pub struct FromStore(pub Arc<dyn Store>);

impl std::fmt::Debug for FromStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromStore").finish_non_exhaustive()
    }
}

#[async_trait]
impl Credentials for FromStore {
    async fn access_token(
        &self,
        hash: &TokenHash,
        now: i64,
    ) -> Result<AccessTokenStatus, StoreError> {
        self.0.authenticate_access(hash, now).await
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        self.0.get_user(name).await
    }

    async fn agent(&self, name: &AgentName) -> Result<Option<Agent>, StoreError> {
        self.0.get_agent(name).await
    }
}

/// The configs agents run with, which requests are authorized against.
#[async_trait]
pub trait ConfigsInUse: Send + Sync {
    /// The config `agent` runs with, if kas has read one.
    async fn in_use(&self, agent: &AgentName) -> Option<Arc<AgentConfig>>;
}

/// The other kas replicas, one of which may hold an agent's tunnels.
#[async_trait]
pub trait Elsewhere: Send + Sync {
    /// Sends `request` for `agent` to a replica holding its tunnels, waiting
    /// a while for one to come up, here (`here`) or anywhere.
    async fn route(&self, agent: &AgentName, request: Request<Body>, here: &Tunnels) -> Routed;
}

/// Where a request sent [`Elsewhere`] went.
#[derive(Debug)]
pub enum Routed {
    /// Another replica answered.
    Answered {
        response: Response<Body>,
        via: String,
    },
    /// A tunnel of the agent came up here while the request waited.
    Here(Request<Body>),
    /// No replica has a tunnel of the agent (after waiting), or the one
    /// that has did not answer.
    Unavailable(StatusCode, String),
}
