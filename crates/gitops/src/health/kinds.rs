//! The rules of the other built-in kinds: Job, Service,
//! PersistentVolumeClaim, CustomResourceDefinition, and those that are
//! Current once the generic checks pass (ConfigMap, Secret, CronJob,
//! PodDisruptionBudget).

use super::object::Observed;
use super::{Verdict, current, failed, in_progress};

/// ConfigMaps and Secrets have no controller to wait for; a CronJob's runs
/// are Jobs of their own, judged on their own.
pub(super) fn always_current(_: &Observed<'_>) -> Verdict {
    current()
}

/// The disruption controller sets no conditions, even when it cannot
/// compute the allowed disruptions; the generic generation check is all
/// there is to wait for.
pub(super) fn pod_disruption_budget(_: &Observed<'_>) -> Verdict {
    current()
}

/// Current once `Complete` (or `Suspended`: deliberately on hold), Failed
/// once `Failed`, InProgress before and while it runs. kstatus calls a
/// started Job Current; see the module documentation of `health` for why
/// Tether waits for it to finish.
pub(super) fn job(o: &Observed<'_>) -> Verdict {
    let parallelism = o.int_or("/spec/parallelism", 1);
    let completions = o.int_or("/spec/completions", parallelism);
    let succeeded = o.int_or("/status/succeeded", 0);
    let active = o.int_or("/status/active", 0);
    let failures = o.int_or("/status/failed", 0);
    for c in o.conditions().filter(|c| c.is_true()) {
        match c.kind {
            "Complete" | "Suspended" => return current(),
            "Failed" => {
                return failed(c.explain(&format!(
                    "Job failed ({failures} failed, {succeeded} of {completions} succeeded)"
                )));
            }
            _ => {}
        }
    }
    if o.string_or_empty("/status/startTime").is_empty() {
        return in_progress("Job not started");
    }
    in_progress(format!(
        "Job running: {succeeded} of {completions} succeeded, {active} active, {failures} failed"
    ))
}

/// kstatus waits for a LoadBalancer Service's cluster IP only; Tether also
/// waits for its address (see the module documentation of `health`).
pub(super) fn service(o: &Observed<'_>) -> Verdict {
    if o.string("/spec/type").unwrap_or("ClusterIP") != "LoadBalancer" {
        return current();
    }
    if o.string_or_empty("/spec/clusterIP").is_empty() {
        return in_progress("LoadBalancer has no cluster IP yet");
    }
    let has_address = o.items("/status/loadBalancer/ingress").any(|ingress| {
        ["ip", "hostname"].iter().any(|field| {
            ingress
                .get(field)
                .and_then(serde_json::Value::as_str)
                .is_some_and(|a| !a.is_empty())
        })
    });
    if !has_address {
        return in_progress("LoadBalancer has no address yet");
    }
    current()
}

pub(super) fn persistent_volume_claim(o: &Observed<'_>) -> Verdict {
    match o.string("/status/phase").unwrap_or("unknown") {
        "Bound" => current(),
        phase => in_progress(format!("not bound (phase {phase})")),
    }
}

/// Decided by the first condition that decides, in the order the API
/// server wrote them (as kstatus): names not accepted, or not established
/// for any reason but still installing, is Failed.
pub(super) fn custom_resource_definition(o: &Observed<'_>) -> Verdict {
    for c in o.conditions() {
        match (c.kind, c.status) {
            ("NamesAccepted", "False") => return failed(c.explain("names not accepted")),
            ("Established", "False") if c.reason != "Installing" => {
                return failed(c.explain("not established"));
            }
            ("Established", "True") => return current(),
            _ => {}
        }
    }
    in_progress("installing")
}
