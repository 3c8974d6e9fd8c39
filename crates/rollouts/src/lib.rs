//! Fleet rollouts: a commit of a manifest project reaches the agents that
//! follow it in health-gated waves (`.tether/rollout.yaml`), and halts or
//! rolls back by itself when a wave fails.
//!
//! Three parts. [`advance`] is the rollout as a pure state machine.
//! [`driver`] runs it on one replica (by lease): it starts rollouts when a
//! project's head moves, reads the agents' reports and writes the state to
//! the store. [`gate::Fleet`] is every replica's view of that state, which
//! the manifest followers of `tether-channel` ask before each send: which
//! commit this agent is given, and why.
//!
//! Architecture invariant: everything a rollout is lives in the store, so
//! any replica serves any agent its commit and a replica that takes the
//! lease continues where another died.

pub mod advance;
pub mod driver;
pub mod gate;
pub mod metrics;
pub mod state;
pub mod view;

pub use gate::{Decision, Fleet};
