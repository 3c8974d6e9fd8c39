//! Object health by kstatus's rules (`sigs.k8s.io/cli-utils/pkg/kstatus/status`,
//! the rules cli-utils, kpt, Flux and GitLab's agent use): Current,
//! InProgress, Failed, Terminating, NotFound.
//!
//! The order is kstatus's `Compute`: first the checks that hold for every
//! kind (`generic`: being deleted, a generation the controller has not
//! observed, the standard `Reconciling` / `Stalled` conditions); then the
//! rule of a built-in kind (`workloads`, `pod`, `kinds`); for any other
//! kind its `Ready` condition (kstatus's `checkReadyCondition`: True is
//! Current, False or Unknown InProgress); and an object with none of these
//! is Current. The message says why an object is not Current, in Tether's
//! words, and is empty when it is.
//!
//! Invariant: a pure function of the object and the time it was read; no IO.
//!
//! # Where Tether differs from kstatus, and why
//!
//! - **A Job is InProgress while it runs**, Current only once `Complete`
//!   (or `Suspended`), Failed once `Failed`. kstatus calls a Job Current as
//!   soon as it has a `startTime`. Tether deletes a Helm hook with
//!   `hook-succeeded` once it is Current and applies `depends-on` dependents
//!   once what they depend on is Current: by kstatus's rule a migration Job
//!   would be deleted mid-run and its dependents started before it finished.
//! - **A Pod in phase `Failed` is Failed.** kstatus calls it Current ("has
//!   completed, but not successfully"). A failed Pod never runs again, and
//!   for the same hooks and dependents it must not count as a success.
//! - **A crash-looping init container fails the Pod too**, in phase Pending
//!   or Running. kstatus looks only at `status.containerStatuses` of a Running
//!   Pod, so a Pod whose init container (or native sidecar) crash-loops stays
//!   InProgress until the sync gives up; it will not heal by waiting, and
//!   saying which container crash-loops is the useful report.
//! - **A LoadBalancer Service waits for its address**
//!   (`status.loadBalancer.ingress`). kstatus only waits for `spec.clusterIP`,
//!   which the API server assigns on creation, so every applied LoadBalancer
//!   Service is Current at once. Without a load-balancer controller it stays
//!   InProgress: visible, rather than falsely Current.
//! - **No Unknown.** kstatus returns an error (status Unknown) when a field
//!   it reads has the wrong type or a Pod reports a phase it does not know;
//!   Tether reads a wrongly typed field as absent and calls an unknown phase
//!   InProgress, naming it: the sync always gets an answer, and one that
//!   waiting can change.
//! - **The kind may come without its group.** [`health_of`] is for list
//!   items, which carry no `apiVersion`: when the group is unknown, a kind
//!   is judged by the built-in rule of that name, where kstatus always keys
//!   on group and kind. A custom resource named like a built-in kind
//!   (Knative's `serving.knative.dev` `Service`) is judged right only when
//!   the group is given ([`health_of_group_kind`], or [`health`] with the
//!   object's `apiVersion`).
//!
//! kstatus's own rules that may surprise, kept as they are: a Pod that
//! cannot be scheduled is InProgress for its first 15 seconds and Failed
//! after; a crash-looping container fails a Pod; a ReplicaSet with
//! `ReplicaFailure` is InProgress; a Deployment is Failed only once its
//! progress deadline passed; a `Ready` condition decides a kind without its
//! own rule (that is kstatus's, not a Tether extension).

use std::fmt;
use std::time::SystemTime;

use serde_json::Value;

mod generic;
mod kinds;
mod object;
mod pod;
mod workloads;

#[cfg(test)]
mod tests;

use object::Observed;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Current,
    InProgress,
    Failed,
    Terminating,
    NotFound,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Current => "Current",
            Health::InProgress => "InProgress",
            Health::Failed => "Failed",
            Health::Terminating => "Terminating",
            Health::NotFound => "NotFound",
        })
    }
}

/// A health with the reason it is not Current (empty when it is).
type Verdict = (Health, String);

/// How a built-in kind's own status is read, once the generic checks made
/// no decision.
type Rule = fn(&Observed<'_>) -> Verdict;

/// The health of `object` as the API server returned it, judged by the
/// `apiVersion` and `kind` it carries.
pub fn health(object: Option<&Value>) -> (Health, String) {
    health_at(object, SystemTime::now())
}

/// The health of `object`, an object of `kind`: for list items, which
/// carry no `kind`. The group is read from the object's `apiVersion` when
/// it has one; without it a kind is judged by the built-in rule of that
/// name (see the module documentation).
pub fn health_of(kind: &str, object: Option<&Value>) -> (Health, String) {
    assess(group_in(object), kind, object, SystemTime::now())
}

/// The health of `object`, an object of `group` (`""` for the core group)
/// and `kind`: dispatched exactly as kstatus does.
pub fn health_of_group_kind(group: &str, kind: &str, object: Option<&Value>) -> (Health, String) {
    assess(Some(group), kind, object, SystemTime::now())
}

fn health_at(object: Option<&Value>, at: SystemTime) -> Verdict {
    let kind = object
        .and_then(|o| o.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    assess(group_in(object), kind, object, at)
}

/// The group of an object's `apiVersion` (`"apps"` of `"apps/v1"`, `""` of
/// `"v1"`), if it has one.
fn group_in(object: Option<&Value>) -> Option<&str> {
    let api_version = object?.get("apiVersion")?.as_str()?;
    Some(api_version.rsplit_once('/').map_or("", |(group, _)| group))
}

/// kstatus's `Compute`, with the clock passed in so that the rules stay pure.
fn assess(group: Option<&str>, kind: &str, object: Option<&Value>, at: SystemTime) -> Verdict {
    let Some(value) = object else {
        return (Health::NotFound, "not found".into());
    };
    let o = Observed::new(value, at);
    if let Some(verdict) = generic::decided(&o) {
        return verdict;
    }
    if let Some(rule) = rule_for(group, kind) {
        return rule(&o);
    }
    generic::ready_condition(&o).unwrap_or_else(current)
}

/// The rule of a built-in kind, in the groups kstatus knows it in; `None`
/// for any other kind. An unknown group (`None`) matches the kind alone.
fn rule_for(group: Option<&str>, kind: &str) -> Option<Rule> {
    const CORE: &[&str] = &[""];
    // kstatus still knows the workloads' pre-`apps` group.
    const APPS: &[&str] = &["apps", "extensions"];
    let (groups, rule): (&[&str], Rule) = match kind {
        "Service" => (CORE, kinds::service),
        "Pod" => (CORE, pod::pod),
        "Secret" | "ConfigMap" => (CORE, kinds::always_current),
        "PersistentVolumeClaim" => (CORE, kinds::persistent_volume_claim),
        "StatefulSet" => (&["apps"], workloads::stateful_set),
        "DaemonSet" => (APPS, workloads::daemon_set),
        "Deployment" => (APPS, workloads::deployment),
        "ReplicaSet" => (APPS, workloads::replica_set),
        "PodDisruptionBudget" => (&["policy"], kinds::pod_disruption_budget),
        "CronJob" => (&["batch"], kinds::always_current),
        "Job" => (&["batch"], kinds::job),
        "CustomResourceDefinition" => {
            (&["apiextensions.k8s.io"], kinds::custom_resource_definition)
        }
        _ => return None,
    };
    match group {
        Some(group) if !groups.contains(&group) => None,
        _ => Some(rule),
    }
}

fn current() -> Verdict {
    (Health::Current, String::new())
}

fn in_progress(why: impl Into<String>) -> Verdict {
    (Health::InProgress, why.into())
}

fn failed(why: impl Into<String>) -> Verdict {
    (Health::Failed, why.into())
}
