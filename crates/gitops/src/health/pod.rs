//! Pods, by their phase (kstatus's `podConditions`), with the two states
//! that waiting will not heal called Failed: a container in
//! `CrashLoopBackOff`, and a Pod the scheduler cannot place once it has had
//! its grace period.

use std::time::{Duration, SystemTime};

use k8s_openapi::jiff::Timestamp;

use super::object::Observed;
use super::{Verdict, current, failed, in_progress};

/// How long a Pod may be unschedulable before it is Failed (kstatus's
/// `ScheduleWindow`): the scheduler's first verdict on a new Pod often
/// comes before the volume it waits for is bound.
const SCHEDULE_WINDOW: Duration = Duration::from_secs(15);

pub(super) fn pod(o: &Observed<'_>) -> Verdict {
    match o.string_or_empty("/status/phase") {
        "Succeeded" => current(),
        // kstatus: Current, "completed, but not successfully" (see the
        // module documentation of `health` for why Tether differs).
        "Failed" => failed(explain_status(o, "Pod failed")),
        "Running" => {
            if o.condition("Ready", "True").is_some() {
                return current();
            }
            if let Some(crashing) = crash_looping(o) {
                return failed(crashing);
            }
            in_progress("running, not yet ready")
        }
        "Pending" => {
            // kstatus looks for crash loops in Running Pods only; an init
            // container crash-looping keeps a Pod Pending for good.
            if let Some(crashing) = crash_looping(o) {
                return failed(crashing);
            }
            if let Some(c) = o.condition("PodScheduled", "False")
                && c.reason == "Unschedulable"
            {
                return if created_within(o, SCHEDULE_WINDOW) {
                    in_progress(c.explain("not yet scheduled"))
                } else {
                    failed(c.explain("cannot be scheduled"))
                };
            }
            in_progress(pending(o))
        }
        "" => in_progress("phase not yet reported"),
        // kstatus: an error (Unknown). `Unknown` is what the node
        // controller writes when it lost the Pod's node; it may come back.
        phase => in_progress(format!("phase {phase}")),
    }
}

/// "containers in CrashLoopBackOff: a, b", if any container (init,
/// sidecar or main) is waiting in `CrashLoopBackOff`.
fn crash_looping(o: &Observed<'_>) -> Option<String> {
    let names: Vec<&str> = container_statuses(o)
        .filter(|s| waiting_reason(s) == Some("CrashLoopBackOff"))
        .filter_map(|s| s.get("name").and_then(serde_json::Value::as_str))
        .collect();
    (!names.is_empty()).then(|| format!("containers in CrashLoopBackOff: {}", names.join(", ")))
}

/// "pending", and the first container that waits with a reason
/// (`ImagePullBackOff`, `ContainerCreating`): what the Pod is stuck on.
fn pending(o: &Observed<'_>) -> String {
    let waiting = container_statuses(o).find_map(|s| {
        let name = s.get("name").and_then(serde_json::Value::as_str)?;
        Some((name, waiting_reason(s)?))
    });
    match waiting {
        Some((name, reason)) => format!("pending: container {name} waiting: {reason}"),
        None => "pending".into(),
    }
}

/// The statuses of init containers (which run first), then of the others.
fn container_statuses<'a>(
    o: &Observed<'a>,
) -> impl Iterator<Item = &'a serde_json::Value> + use<'a> {
    o.items("/status/initContainerStatuses")
        .chain(o.items("/status/containerStatuses"))
}

fn waiting_reason(status: &serde_json::Value) -> Option<&str> {
    status.pointer("/state/waiting/reason")?.as_str()
}

/// `what`, with the Pod's `status.reason` and `status.message` (`Evicted`,
/// `DeadlineExceeded`) when it has them.
fn explain_status(o: &Observed<'_>, what: &str) -> String {
    let parts: Vec<&str> = ["/status/reason", "/status/message"]
        .into_iter()
        .map(|p| o.string_or_empty(p))
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {}", parts.join(": "))
    }
}

/// Whether the Pod was created less than `window` before it was read. A
/// Pod without a readable `creationTimestamp` counts as old, as in
/// kstatus (whose zero time is long past); one from a clock ahead of ours
/// counts as new.
fn created_within(o: &Observed<'_>, window: Duration) -> bool {
    let Some(created) = o
        .string("/metadata/creationTimestamp")
        .and_then(|t| t.parse::<Timestamp>().ok())
    else {
        return false;
    };
    o.at.duration_since(SystemTime::from(created))
        .map_or(true, |age| age < window)
}
