//! The Kubernetes Agent Server as a library, so that tests drive the same
//! router and services that `kas serve` runs; `main.rs` only wires them.
//!
//! - [`api`]: the REST API (projects, agents, tokens) behind admin
//!   authentication.
//! - [`admin_token`]: the admin token created on first start.
//! - [`proxy`]: where kas serves `tether_proxy`, and the private listener.
//! - [`ui`]: the web UI under `/ui`.
//! - [`server`]: `kas serve`: every listener and task, and the drain.
//! - [`listen`]: every listener's accept loop, TLS handshake and drain.
//! - [`settings`]: `kas serve`'s flags and settings file, one type.
//! - [`metrics`]: Prometheus metrics.
//! - [`admin`]: the health listener and `/metrics`.
//!
//! The agent endpoint (sessions, config and manifest delivery, git
//! pollers) is `tether-channel`; commit statuses and notifications are
//! `tether-notify`; kas among replicas (the tunnel tracker, routing) is
//! `tether-replicas`; git hosts' push webhooks (signatures, events, limits)
//! are `tether-webhooks`. The CLI's commands against a running kas are `tether-cli`; the `kas`
//! binary links both, and nothing here imports the CLI.

pub mod admin;
pub mod admin_token;
pub mod api;
pub mod changes;
pub mod expiry;
pub mod listen;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod settings;
pub mod ui;
