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
mod needs;
pub mod oidc;
pub mod principal;
mod proxy;
mod rejection;
pub mod streams;
mod target;

pub use metrics::ProxyMetrics;
pub use needs::{ConfigsInUse, Credentials, Elsewhere, FromStore, Routed};
pub use proxy::{Arrival, Proxy};
pub use rejection::ROUTE_MISS;
pub use target::{PATH_PREFIX, is_watch};
