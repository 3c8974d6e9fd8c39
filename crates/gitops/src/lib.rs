//! The GitOps sync pipeline, as agentk runs it: parse → validate → plan →
//! apply in order → prune → wait for health → report.
//!
//! This first part turns the files kas sends into Kubernetes objects:
//! [`manifest::parse`] reads every file (multi-document YAML or JSON) under
//! hard bounds, expands `List` kinds, and checks each object's identity and
//! that no object appears twice, reporting every problem with its file and
//! document index. Nothing is applied unless the whole set passes.
//!
//! Architecture invariant: no global state; each manifest project's sync is
//! a value, so several can run side by side and leader election can wrap
//! them later.

pub mod manifest;
