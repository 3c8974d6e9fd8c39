//! What the proxy needs from the rest of kas: two narrow traits, and what
//! a request sent elsewhere came to.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Request, Response, StatusCode};
use tether_agent_config::AgentConfig;
use tether_tunnel::Body;
use tether_tunnel::server::Tunnels;

/// The configs agents run with, which requests are authorized against.
#[async_trait]
pub trait ConfigsInUse: Send + Sync {
    /// The config `agent` runs with, if kas has read one.
    async fn in_use(&self, agent: &str) -> Option<Arc<AgentConfig>>;
}

/// The other kas replicas, one of which may hold an agent's tunnels.
#[async_trait]
pub trait Elsewhere: Send + Sync {
    /// Sends `request` for `agent` to a replica holding its tunnels, waiting
    /// a while for one to come up, here (`here`) or anywhere.
    async fn route(&self, agent: &str, request: Request<Body>, here: &Tunnels) -> Routed;
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
