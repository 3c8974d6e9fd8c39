//! What kas tells the outside about its agents, without ever holding up a
//! sync: [`statuses`] posts each agent's sync of a commit to the git host
//! as a commit status, [`notifications`] tells the destinations an agent's
//! config names (Slack, Teams, a signed webhook). Both queue per key
//! ([`ordered`]): bounded, in order, one task per key.
//!
//! Architecture invariant: this crate is told what happened (a report, a
//! commit sent); it never reaches into sessions or the agent channel.

pub mod notifications;
pub mod ordered;
pub mod statuses;
