//! Helm's hook delete policies, as a GitOps apply honours them. Rendering
//! (`tether-render`) places hooks in the apply order; what happens to a
//! hook object afterwards is decided here, from the annotations it keeps:
//!
//! - `before-hook-creation` (Helm's default when a hook names no policy):
//!   when the hook's content changes, the old object is deleted and the new
//!   one created, rather than patched. A Job's pod template cannot be
//!   changed in place, so this is what lets a migration Job run again for
//!   a new chart version.
//! - `hook-succeeded` / `hook-failed`: once the hook is Current / Failed,
//!   it is deleted (a prune rule). agentk remembers that it ran, so the
//!   next sync of the same content neither creates it again nor counts its
//!   absence as drift; a hook whose content changes runs again.
//!
//! Objects without `helm.sh/hook` are never touched by these rules.

use std::time::{Duration, Instant};

use kube::api::{DeleteParams, PropagationPolicy};
use serde_json::{Map, Value};

use crate::inventory::ObjRef;

const HOOK: &str = "helm.sh/hook";
const DELETE_POLICY: &str = "helm.sh/hook-delete-policy";
/// How long a replaced hook may take to be gone before it is created again.
const GONE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a hook's delete policy asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeletePolicy {
    pub before_creation: bool,
    pub on_success: bool,
    pub on_failure: bool,
}

impl DeletePolicy {
    /// The policy of a hook object; `None` for an object that is no hook.
    pub fn of(body: &Map<String, Value>) -> Option<DeletePolicy> {
        let annotations = body.get("metadata")?.get("annotations")?.as_object()?;
        annotations.get(HOOK)?.as_str()?;
        let Some(policies) = annotations.get(DELETE_POLICY).and_then(Value::as_str) else {
            return Some(DeletePolicy {
                before_creation: true,
                ..DeletePolicy::default()
            });
        };
        let mut policy = DeletePolicy::default();
        for p in policies.split(',').map(str::trim) {
            match p {
                "before-hook-creation" => policy.before_creation = true,
                "hook-succeeded" => policy.on_success = true,
                "hook-failed" => policy.on_failure = true,
                _ => {}
            }
        }
        Some(policy)
    }

    /// Whether the hook is deleted once it settles.
    pub fn deletes_when_settled(self) -> bool {
        self.on_success || self.on_failure
    }

    /// The annotation value that asked for the deletion of a hook that
    /// settled `succeeded` (or failed).
    pub fn reason(self, succeeded: bool) -> Option<&'static str> {
        match (succeeded, self.on_success, self.on_failure) {
            (true, true, _) => Some("hook-succeeded"),
            (false, _, true) => Some("hook-failed"),
            _ => None,
        }
    }
}

/// Why a hook was not deleted, or not seen gone.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeleteError {
    #[error("cannot delete it: {0}")]
    Delete(#[source] kube::Error),
    #[error("cannot read it: {0}")]
    Read(#[source] kube::Error),
    /// Its finalizers hold it, or a controller made it again.
    #[error("still there {}s after its deletion", after.as_secs())]
    StillThere { after: Duration },
}

/// Deletes `object` through `api` (its resource, in its namespace; its
/// dependents go in the background) and waits until it is gone, so that
/// it can be created again under the same name.
pub(crate) async fn delete_and_wait(
    api: &kube::Api<kube::api::DynamicObject>,
    object: &ObjRef,
) -> Result<(), DeleteError> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(&object.name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(DeleteError::Delete(e)),
    }
    let deadline = Instant::now() + GONE_TIMEOUT;
    loop {
        match api.get_metadata_opt(&object.name).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Some(_)) => {
                return Err(DeleteError::StillThere {
                    after: GONE_TIMEOUT,
                });
            }
            Err(e) => return Err(DeleteError::Read(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(annotations: &str) -> Map<String, Value> {
        let text = format!("{{\"metadata\":{{\"annotations\":{annotations}}}}}");
        serde_json::from_str(&text).expect("JSON")
    }

    #[test]
    fn a_hook_without_a_policy_is_replaced_like_helm_does() {
        let policy = DeletePolicy::of(&body(r#"{"helm.sh/hook":"pre-install"}"#));
        assert_eq!(
            policy,
            Some(DeletePolicy {
                before_creation: true,
                ..DeletePolicy::default()
            })
        );
        assert!(!policy.expect("hook").deletes_when_settled());
    }

    #[test]
    fn policies_are_read_from_a_comma_separated_list() {
        let policy = DeletePolicy::of(&body(
            r#"{"helm.sh/hook":"post-install","helm.sh/hook-delete-policy":"hook-succeeded, hook-failed"}"#,
        ))
        .expect("hook");
        assert!(!policy.before_creation);
        assert_eq!(policy.reason(true), Some("hook-succeeded"));
        assert_eq!(policy.reason(false), Some("hook-failed"));
        let only_success = DeletePolicy::of(&body(
            r#"{"helm.sh/hook":"post-install","helm.sh/hook-delete-policy":"hook-succeeded"}"#,
        ))
        .expect("hook");
        assert_eq!(
            only_success.reason(false),
            None,
            "a failed hook stays to be read"
        );
    }

    #[test]
    fn an_object_that_is_no_hook_has_no_policy() {
        assert_eq!(
            DeletePolicy::of(&body(r#"{"helm.sh/hook-delete-policy":"hook-succeeded"}"#)),
            None
        );
        assert_eq!(DeletePolicy::of(&Map::new()), None);
    }
}
