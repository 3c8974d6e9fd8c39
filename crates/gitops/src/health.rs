//! Object health by the kstatus rules (the ones cli-utils, Flux and the
//! GitLab agent use): Current, InProgress, Failed, Terminating, NotFound.

use std::fmt;

use serde_json::Value;

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

/// The health of `object` as the API server returned it, with a reason
/// when it is not Current.
pub fn health(object: Option<&Value>) -> (Health, String) {
    let Some(o) = object else {
        return (Health::NotFound, "not found".into());
    };
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        return (Health::Terminating, "being deleted".into());
    }
    let generation = o.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = o
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    if let (Some(g), Some(seen)) = (generation, observed)
        && seen < g
    {
        return (
            Health::InProgress,
            format!("generation {g} not yet observed (at {seen})"),
        );
    }
    let kind = o.get("kind").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "Deployment" => deployment(o),
        "StatefulSet" => stateful_set(o),
        "DaemonSet" => daemon_set(o),
        "Job" => job(o),
        "PersistentVolumeClaim" => match o.pointer("/status/phase").and_then(Value::as_str) {
            Some("Bound") => current(),
            phase => (
                Health::InProgress,
                format!("phase {}", phase.unwrap_or("unknown")),
            ),
        },
        "Service" => service(o),
        "CustomResourceDefinition" => {
            if condition(o, "NamesAccepted") == Some(false) {
                (Health::Failed, "names not accepted".into())
            } else if condition(o, "Established") == Some(true) {
                current()
            } else {
                (Health::InProgress, "not yet established".into())
            }
        }
        "Pod" => pod(o),
        _ => generic(o),
    }
}

fn current() -> (Health, String) {
    (Health::Current, String::new())
}

/// The status of condition `kind`: Some(true) for "True".
fn condition(o: &Value, kind: &str) -> Option<bool> {
    o.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        .map(|c| c.get("status").and_then(Value::as_str) == Some("True"))
}

fn condition_reason(o: &Value, kind: &str) -> Option<String> {
    o.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        .and_then(|c| c.get("reason").and_then(Value::as_str))
        .map(str::to_owned)
}

fn int(o: &Value, pointer: &str) -> i64 {
    o.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn deployment(o: &Value) -> (Health, String) {
    if condition_reason(o, "Progressing").as_deref() == Some("ProgressDeadlineExceeded") {
        return (Health::Failed, "progress deadline exceeded".into());
    }
    let want = o
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let (updated, ready, available, total) = (
        int(o, "/status/updatedReplicas"),
        int(o, "/status/readyReplicas"),
        int(o, "/status/availableReplicas"),
        int(o, "/status/replicas"),
    );
    if updated < want {
        return (
            Health::InProgress,
            format!("{updated} of {want} replicas updated"),
        );
    }
    if total > updated {
        return (
            Health::InProgress,
            format!("{} old replicas pending termination", total - updated),
        );
    }
    if available < want || ready < want {
        return (
            Health::InProgress,
            format!("{available} of {want} replicas available"),
        );
    }
    if condition(o, "Available") == Some(false) {
        return (Health::InProgress, "not available".into());
    }
    current()
}

fn stateful_set(o: &Value) -> (Health, String) {
    let want = o
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let ready = int(o, "/status/readyReplicas");
    if ready < want {
        return (
            Health::InProgress,
            format!("{ready} of {want} replicas ready"),
        );
    }
    let rolling = o
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        .is_none_or(|t| t == "RollingUpdate");
    if rolling {
        let updated = int(o, "/status/updatedReplicas");
        if updated < want {
            return (
                Health::InProgress,
                format!("{updated} of {want} replicas updated"),
            );
        }
        let current_rev = o.pointer("/status/currentRevision");
        if current_rev.is_some() && current_rev != o.pointer("/status/updateRevision") {
            return (Health::InProgress, "rollout in progress".into());
        }
    }
    current()
}

fn daemon_set(o: &Value) -> (Health, String) {
    let want = int(o, "/status/desiredNumberScheduled");
    let (updated, available) = (
        int(o, "/status/updatedNumberScheduled"),
        int(o, "/status/numberAvailable"),
    );
    if updated < want || available < want {
        return (
            Health::InProgress,
            format!("{available} of {want} pods available"),
        );
    }
    current()
}

fn job(o: &Value) -> (Health, String) {
    if condition(o, "Failed") == Some(true) {
        return (Health::Failed, "job failed".into());
    }
    if condition(o, "Complete") == Some(true) {
        return current();
    }
    (Health::InProgress, "job running".into())
}

fn service(o: &Value) -> (Health, String) {
    let lb = o.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer");
    let has_ingress = o
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .is_some_and(|i| !i.is_empty());
    if lb && !has_ingress {
        return (Health::InProgress, "no load balancer address yet".into());
    }
    current()
}

fn pod(o: &Value) -> (Health, String) {
    match o.pointer("/status/phase").and_then(Value::as_str) {
        Some("Succeeded") => current(),
        Some("Failed") => (Health::Failed, "pod failed".into()),
        Some("Running") if condition(o, "Ready") == Some(true) => current(),
        phase => (
            Health::InProgress,
            format!("phase {}", phase.unwrap_or("Pending")),
        ),
    }
}

/// Objects of any other kind: the conventional conditions, else Current.
fn generic(o: &Value) -> (Health, String) {
    if condition(o, "Stalled") == Some(true) {
        return (Health::Failed, "stalled".into());
    }
    if condition(o, "Reconciling") == Some(true) {
        return (Health::InProgress, "reconciling".into());
    }
    if condition(o, "Ready") == Some(false) {
        return (Health::InProgress, "not ready".into());
    }
    current()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn deployments_are_current_when_every_replica_is_available() {
        let mut d = json!({
            "kind": "Deployment",
            "metadata": { "generation": 2 },
            "spec": { "replicas": 2 },
            "status": { "observedGeneration": 1 }
        });
        assert_eq!(health(Some(&d)).0, Health::InProgress);
        d["status"] = json!({
            "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
            "readyReplicas": 2, "availableReplicas": 1
        });
        assert_eq!(health(Some(&d)).0, Health::InProgress);
        d["status"]["availableReplicas"] = json!(2);
        assert_eq!(health(Some(&d)), (Health::Current, String::new()));
        d["status"]["conditions"] = json!([{ "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded" }]);
        assert_eq!(health(Some(&d)).0, Health::Failed);
    }

    #[test]
    fn other_kinds_follow_their_rules() {
        assert_eq!(health(None).0, Health::NotFound);
        let crd = json!({ "kind": "CustomResourceDefinition",
            "status": { "conditions": [{ "type": "Established", "status": "True" }] } });
        assert_eq!(health(Some(&crd)).0, Health::Current);
        let job = json!({ "kind": "Job",
            "status": { "conditions": [{ "type": "Failed", "status": "True" }] } });
        assert_eq!(health(Some(&job)).0, Health::Failed);
        let pvc = json!({ "kind": "PersistentVolumeClaim", "status": { "phase": "Pending" } });
        assert_eq!(health(Some(&pvc)).0, Health::InProgress);
        let lb = json!({ "kind": "Service", "spec": { "type": "LoadBalancer" } });
        assert_eq!(health(Some(&lb)).0, Health::InProgress);
        let cm = json!({ "kind": "ConfigMap" });
        assert_eq!(health(Some(&cm)).0, Health::Current);
        let gone = json!({ "kind": "ConfigMap", "metadata": { "deletionTimestamp": "x" } });
        assert_eq!(health(Some(&gone)).0, Health::Terminating);
        let custom = json!({ "kind": "Widget",
            "status": { "conditions": [{ "type": "Ready", "status": "False" }] } });
        assert_eq!(health(Some(&custom)).0, Health::InProgress);
    }
}
