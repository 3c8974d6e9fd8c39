//! The controllers that keep a number of Pods: Deployment, ReplicaSet,
//! StatefulSet, DaemonSet (kstatus's `deploymentConditions`,
//! `replicasetConditions`, `stsConditions`, `daemonsetConditions`).
//!
//! Each compares the counts in `status` with what `spec` asks, in kstatus's
//! order, so that the first shortfall is the one reported. A missing count
//! is 0, a missing `spec.replicas` is 1 (the controllers' default).

use super::object::Observed;
use super::{Verdict, current, failed, in_progress};

/// What the Deployment controller writes for "no deadline": it then never
/// sets `Progressing`, so a Deployment without a deadline is taken as
/// progressing.
const NO_PROGRESS_DEADLINE: i64 = i32::MAX as i64;

/// The only Failed a Deployment has is a passed progress deadline: crashing
/// or unschedulable Pods leave it InProgress until then.
pub(super) fn deployment(o: &Observed<'_>) -> Verdict {
    let mut progressing =
        o.int_or("/spec/progressDeadlineSeconds", NO_PROGRESS_DEADLINE) == NO_PROGRESS_DEADLINE;
    let mut available = false;
    for c in o.conditions() {
        match c.kind {
            "Progressing" if c.reason == "ProgressDeadlineExceeded" => {
                return failed(c.explain("progress deadline exceeded"));
            }
            "Progressing" if c.is_true() && c.reason == "NewReplicaSetAvailable" => {
                progressing = true;
            }
            "Available" if c.is_true() => available = true,
            _ => {}
        }
    }
    let want = o.int_or("/spec/replicas", 1);
    let replicas = o.int_or("/status/replicas", 0);
    let updated = o.int_or("/status/updatedReplicas", 0);
    let ready = o.int_or("/status/readyReplicas", 0);
    let available_replicas = o.int_or("/status/availableReplicas", 0);
    if want > replicas {
        return in_progress(format!("{replicas} of {want} replicas created"));
    }
    if want > updated {
        return in_progress(format!("{updated} of {want} replicas updated"));
    }
    if replicas > want {
        return in_progress(pending_termination(replicas - want));
    }
    if updated > available_replicas {
        return in_progress(format!(
            "{available_replicas} of {updated} replicas available"
        ));
    }
    if want > ready {
        return in_progress(format!("{ready} of {want} replicas ready"));
    }
    if !progressing {
        return in_progress("new ReplicaSet not yet available");
    }
    if !available {
        return in_progress("Deployment not yet available");
    }
    current()
}

/// kstatus keeps `ReplicaFailure` (Pods the controller could not create:
/// quota, admission) InProgress: the cause may clear.
pub(super) fn replica_set(o: &Observed<'_>) -> Verdict {
    if let Some(c) = o.condition("ReplicaFailure", "True") {
        return in_progress(c.explain("replica failure"));
    }
    let want = o.int_or("/spec/replicas", 1);
    let replicas = o.int_or("/status/replicas", 0);
    let ready = o.int_or("/status/readyReplicas", 0);
    let available = o.int_or("/status/availableReplicas", 0);
    let labelled = o.int_or("/status/fullyLabeledReplicas", 0);
    if want > labelled {
        return in_progress(format!("{labelled} of {want} replicas labelled"));
    }
    if want > available {
        return in_progress(format!("{available} of {want} replicas available"));
    }
    if want > ready {
        return in_progress(format!("{ready} of {want} replicas ready"));
    }
    if replicas > want {
        return in_progress(pending_termination(replicas - want));
    }
    current()
}

/// StatefulSets set no conditions, so only the counts and revisions tell;
/// a failed rollout cannot be seen. `OnDelete` leaves updates to the user,
/// so there is nothing to wait for; with a partition, only the replicas at
/// or above it are expected to update.
pub(super) fn stateful_set(o: &Observed<'_>) -> Verdict {
    if o.string("/spec/updateStrategy/type") == Some("OnDelete") {
        return current();
    }
    let want = o.int_or("/spec/replicas", 1);
    let ready = o.int_or("/status/readyReplicas", 0);
    let at_current = o.int_or("/status/currentReplicas", 0);
    let updated = o.int_or("/status/updatedReplicas", 0);
    let replicas = o.int_or("/status/replicas", 0);
    if want > replicas {
        return in_progress(format!("{replicas} of {want} replicas created"));
    }
    if want > ready {
        return in_progress(format!("{ready} of {want} replicas ready"));
    }
    if replicas > want {
        return in_progress(pending_termination(replicas - want));
    }
    // -1: no partition (as in kstatus; the API server defaults it to 0).
    let partition = o.int_or("/spec/updateStrategy/rollingUpdate/partition", -1);
    if partition != -1 {
        let expected = want - partition;
        if updated < expected {
            return in_progress(format!(
                "{updated} of {expected} replicas updated (partition {partition})"
            ));
        }
        return current();
    }
    if want > at_current {
        return in_progress(format!(
            "{at_current} of {want} replicas at the current revision"
        ));
    }
    let current_revision = o.string_or_empty("/status/currentRevision");
    let update_revision = o.string_or_empty("/status/updateRevision");
    if current_revision != update_revision {
        return in_progress(format!(
            "revision {update_revision} not yet current (current: {current_revision})"
        ));
    }
    current()
}

/// The DaemonSet controller always writes `observedGeneration`, so unlike
/// the generic check its absence means the controller has not acted yet.
pub(super) fn daemon_set(o: &Observed<'_>) -> Verdict {
    if o.int("/metadata/generation").is_none() {
        return in_progress("metadata.generation not set");
    }
    if o.int("/status/observedGeneration").is_none() {
        return in_progress("not yet observed by the DaemonSet controller");
    }
    let Some(desired) = o.int("/status/desiredNumberScheduled") else {
        return in_progress("desired number of Pods not yet computed");
    };
    let scheduled = o.int_or("/status/currentNumberScheduled", 0);
    let updated = o.int_or("/status/updatedNumberScheduled", 0);
    let available = o.int_or("/status/numberAvailable", 0);
    let ready = o.int_or("/status/numberReady", 0);
    if desired > scheduled {
        return in_progress(format!("{scheduled} of {desired} Pods scheduled"));
    }
    if desired > updated {
        return in_progress(format!("{updated} of {desired} Pods updated"));
    }
    if desired > available {
        return in_progress(format!("{available} of {desired} Pods available"));
    }
    if desired > ready {
        return in_progress(format!("{ready} of {desired} Pods ready"));
    }
    current()
}

fn pending_termination(extra: i64) -> String {
    format!("{extra} old replicas pending termination")
}
