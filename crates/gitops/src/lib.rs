//! The GitOps sync pipeline, as agentk runs it: parse → validate → plan →
//! apply in order → prune → wait for health → report.
//!
//! - [`manifest`]: files to objects, under hard bounds (size, depth,
//!   aliases), with `List` expansion; every problem with its file and
//!   document index.
//! - [`kinds`]: each object's resource and scope by API discovery (or a CRD
//!   in the same set), and the apply order.
//! - [`depends`]: `config.kubernetes.io/depends-on` ordering, in waves.
//! - [`inventory`]: what a manifest project owns, in cli-utils' format.
//! - [`sync`]: the whole run: validate everything, record the union in the
//!   inventory, apply with server-side apply in order, prune, record the
//!   final set; every wait (a dependency wave, a Helm hook, health) bounded
//!   by a timeout and told through [`progress`]; then
//!   [`sync::wait_for_health`].
//! - [`record`]: what agentk remembers of each applied object, to skip
//!   an apply that would change nothing.
//! - [`health`]: the kstatus rules.
//! - [`follow`]: health read from the live objects by LIST and WATCH, with
//!   the kind each object was applied as.
//! - [`progress`]: the phase a running sync is in and what it waits for,
//!   told to the caller as it changes.
//! - [`hooks`]: Helm hook delete policies (replace on change, delete once
//!   settled).
//! - [`drift`]: after a sync, watch what was applied and apply it again
//!   when someone takes over agentk's fields or deletes it.
//!
//! Nothing is applied unless the whole set passes.
//!
//! Architecture invariant: no global state; each manifest project's sync is
//! a value, so several can run side by side and leader election can wrap
//! them later.

pub mod depends;
pub mod drift;
pub mod follow;
pub mod health;
pub mod hooks;
pub mod inventory;
pub mod kinds;
pub mod manifest;
pub mod plan;
pub mod progress;
pub mod record;
pub mod sync;
