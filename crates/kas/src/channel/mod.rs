//! The agent endpoint: the `AgentChannel` gRPC service that agentk dials.
//!
//! - [`tls`]: the endpoint's certificate, generated for development when none
//!   is configured.
//! - [`registry`]: which agents are connected, and the handle that closes a
//!   connection when its token is revoked or its agent deleted.
//! - [`service`]: authentication, the Hello/Welcome handshake and the session
//!   loop.
//! - [`config`]: reading and validating an agent's config file at a commit.
//! - [`configs`]: what kas made of each agent's config, and the one in use;
//!   [`stored`]: the one another replica accepted.
//! - [`reports`]: sync reports as kas records and shows them.
//! - [`sent`]: the manifest commits given to a session, which its reports
//!   may speak of.
//! - [`outbound`]: the bounded queue towards one agent, and its send.
//! - [`plans`]: what a commit would change, asked of an agent's session.
//! - [`manifests`]: following an agent's manifest projects and streaming
//!   their files.
//! - [`listener`]: one TLS port for gRPC and gRPC-over-WebSocket.
//! - [`auth`]: the one door for sessions and tunnels: agent tokens checked
//!   first, failures counted and delayed.
//! - [`ratelimit`]: failed authentications per address and token prefix.
//! - [`tunnels`]: the door for agentk's tunnels on the same endpoint.

pub mod auth;
pub mod config;
pub mod configs;
pub mod listener;
pub mod manifests;
pub mod outbound;
pub mod plans;
pub mod ratelimit;
pub mod registry;
pub mod reports;
pub mod sent;
pub mod service;
pub mod stored;
pub mod tls;
pub mod tunnels;

pub use config::{ConfigProblem, ConfigStatus};
pub use registry::{ConnectionRegistry, ConnectionView, ObjectView, SyncView};
pub use service::AgentChannelService;
