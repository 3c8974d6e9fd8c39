//! The Kubernetes API proxy: an HTTPS endpoint that real `kubectl`,
//! client-go and kube-rs use unchanged, which reaches an agent's cluster
//! through that agent's tunnels.
//!
//! Each request is authenticated ([`credentials`], [`oidc`]), authorized
//! against the agent's config file ([`access`]), then forwarded through the
//! least busy tunnel of the agent, running as the identity the config says
//! (`tether_tunnel` strips the client's credentials and `Impersonate-*`
//! headers; agentk sets its own). RBAC in the cluster applies to that
//! identity. [`kubeconfig`] writes the file that points kubectl here.
//!
//! The proxy is a request handler, [`Proxy::handle`]; kas serves it on its
//! listeners. What it needs from the rest of kas comes through two narrow
//! traits, so that it knows nothing of sessions, replicas or databases
//! beyond them and the [`Store`](tether_store::Store)'s credentials:
//! - [`ConfigsInUse`]: the config an agent runs with, to authorize against;
//! - [`Elsewhere`]: another kas replica that holds an agent's tunnels.
//!
//! Architecture invariant: no listener, no TLS server config, no session
//! state here; the tunnels are `tether_tunnel`'s.

pub mod access;
pub mod admissions;
pub mod credentials;
pub mod kubeconfig;
pub mod metrics;
pub mod oidc;
pub mod principal;
mod proxy;
pub mod streams;
mod target;

use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderName, Request, Response, StatusCode};
use tether_agent_config::AgentConfig;
use tether_tunnel::Body;
use tether_tunnel::server::Tunnels;

pub use metrics::ProxyMetrics;
pub use proxy::Proxy;
pub use target::is_watch;

/// The path the proxy serves under: `https://kas:8154/k8s-proxy/api/v1/…`.
pub const PATH_PREFIX: &str = "/k8s-proxy";

/// The header of a routed request's 503 that says the replica had no
/// tunnel of the agent after all (its tunnels moved): the replica that
/// sent it looks again instead of passing the 503 on.
pub const ROUTE_MISS: HeaderName = HeaderName::from_static("tether-route-miss");

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
