//! Image update automation: a new image in a registry becomes a commit in
//! the project that deploys it.
//!
//! - [`registry`]: the tags of a repository and the digest of a tag, with
//!   the OCI distribution API, through the egress policy.
//! - [`markers`]: Flux's `$imagepolicy` markers found and their values
//!   rewritten, every other byte kept.
//! - [`service`]: the loop kas runs: files read at each new commit,
//!   repositories scanned, writes when git is behind.
//! - [`pull_request`]: one pull/merge request per project, opened once
//!   and kept while kas replaces its branch.
//! - [`write`]: a project's files rewritten for the latest images, checked,
//!   committed and pushed, again on a branch that moved.
//!
//! The policies themselves (`.tether/image-updates.yaml`) are parsed in
//! `tether_agent_config::image_updates`, where `kas config check` finds
//! them.

pub mod markers;
pub mod metrics;
pub mod pull_request;
pub mod registry;
pub mod service;
pub mod write;
