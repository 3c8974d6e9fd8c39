//! kas's agent endpoint: the `AgentChannel` gRPC service agentk dials, and
//! what it keeps while agents are connected.
//!
//! - [`service`]: authentication, the Hello/Welcome handshake and the
//!   session loop.
//! - [`state`]: the endpoint's shared parts, which the server hands out one
//!   by one; [`traits`]: the narrow views others get of them
//!   ([`LiveAgents`], [`SessionControl`]).
//! - [`sessions`]: who is connected, the handle that closes a session, and
//!   the bounded stream of session events.
//! - [`auth`]: the one door for sessions and tunnels: agent tokens checked
//!   first, failures counted ([`ratelimit`]) and delayed.
//! - [`config`]: reading and validating an agent's config file at a commit;
//!   [`configs`]: what kas made of each agent's config, and the one in use;
//!   [`stored`]: the one another replica accepted.
//! - [`repos`]: one git poller per project with connected agents;
//!   [`followed`]: the projects as image automation follows them.
//! - [`manifests`]: following an agent's manifest projects and streaming
//!   their files; [`sent`]: the commits given to a session, which its
//!   reports may speak of; [`reports`]: sync reports as kas records them;
//!   [`changed`]: what changed between two of them.
//! - [`plans`]: what a commit would change, asked of an agent's session.
//! - [`outbound`]: the bounded queue towards one agent, and its send.
//! - [`tunnels`]: the door for agentk's tunnels on the same endpoint.
//! - [`metrics`]: the endpoint's Prometheus metrics.
//!
//! Architecture invariant: this crate knows nothing of the REST API, the
//! web UI, the proxy's listener or other replicas; the server wires those
//! to it through [`traits`].

pub mod auth;
pub mod changed;
pub mod config;
pub mod configs;
pub mod followed;
pub mod manifests;
pub mod metrics;
pub mod outbound;
pub mod plans;
pub mod ratelimit;
pub mod reports;
pub mod repos;
pub mod sent;
pub mod service;
pub mod sessions;
pub mod signatures;
pub mod state;
pub mod stored;
pub mod sync_metrics;
pub mod traces;
pub mod traits;
pub mod tunnels;

pub use config::{ConfigProblem, ConfigStatus};
pub use manifests::NoRenderer;
pub use metrics::ChannelMetrics;
pub use service::AgentChannelService;
pub use sessions::{SessionEvent, Sessions};
pub use state::ChannelState;
pub use tether_api::{ConnectionView, DriftView, ObjectView, SyncView};
pub use traits::{LiveAgents, SessionControl};
