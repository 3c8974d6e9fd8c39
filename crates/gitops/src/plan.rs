//! What a set of manifests would do to the cluster, changing nothing: for
//! each object, create, change (with the fields that would change), leave
//! alone, or prune. Each object is applied with `dryRun=All` exactly as a
//! sync would apply it (server-side apply, agentk's field manager, forced,
//! with the inventory annotation), so admission, defaulting and validation
//! all run, and the answer is compared with the object as it is.
//!
//! Only objects that may change are dry-run: one whose body is exactly what
//! agentk last applied, and whose fields are still agentk's, is unchanged
//! without asking the API server (the same test a sync uses to skip it), so
//! a plan of a commit that changes one object of a thousand sends one dry
//! run.

use std::collections::BTreeSet;

use futures_util::{StreamExt, stream};
use kube::api::{Patch, PatchParams};
use kube::discovery::Discovery;
use serde_json::Value;

use crate::hooks::DeletePolicy;
use crate::inventory::{FIELD_MANAGER, ON_REMOVE_ANNOTATION, ObjRef};
use crate::manifest::{self, ManifestError, ManifestFile};
use crate::sync::{
    AppliedState, SyncOptions, api_for, check_ownership, current_fields, fingerprint, mark_owner,
    resolve_set, unchanged_since,
};

/// Dry runs in flight at once.
const CONCURRENCY: usize = 16;
/// Changed fields reported per object at most, and bytes per value shown.
const MAX_CHANGES: usize = 200;
const MAX_VALUE_BYTES: usize = 1024;

/// What would happen to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Create,
    Update,
    Unchanged,
    Prune,
    /// Gone from git but kept: prune is off, or it is annotated to stay.
    Keep,
    /// The API server (or the inventory policy) refuses it.
    Refused,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Update => "update",
            Change::Unchanged => "unchanged",
            Change::Prune => "prune",
            Change::Keep => "keep",
            Change::Refused => "refused",
        }
    }
}

/// One field that would change: its path (`spec.replicas`,
/// `spec.template.spec.containers[0].image`) and values as JSON, absent
/// where the field is absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldChange {
    pub path: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

#[derive(Clone, Debug)]
pub struct PlannedObject {
    pub object: ObjRef,
    pub change: Change,
    pub message: String,
    pub fields: Vec<FieldChange>,
}

/// The outcome of a plan: each object, and how many dry runs it took.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub objects: Vec<PlannedObject>,
    pub dry_runs: usize,
}

/// Why no plan was made: what a sync would fail with before touching
/// anything.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Every problem of the manifests at once.
    #[error("{}", join_problems(.0))]
    Manifests(Vec<ManifestError>),
    #[error("API discovery failed: {0}")]
    Discovery(#[source] kube::Error),
    /// Objects whose kind the cluster does not serve, and cycles of
    /// depends-on annotations.
    #[error("{}", .0.join("; "))]
    Unresolved(Vec<String>),
    #[error("cannot read the inventory: {0}")]
    Inventory(#[source] kube::Error),
}

fn join_problems(problems: &[ManifestError]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Plans `files` against the cluster; `applied` is what the project's
/// syncs last applied (empty: every object is dry-run). An error is what a
/// sync would fail with before touching anything (a parse error, an
/// unknown kind).
pub async fn plan(
    client: &kube::Client,
    options: &SyncOptions,
    files: &[ManifestFile],
    applied: &AppliedState,
) -> Result<Plan, PlanError> {
    let objects = manifest::parse(files, &options.limits).map_err(PlanError::Manifests)?;
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(PlanError::Discovery)?;
    let resolved = resolve_set(&discovery, objects, &options.default_namespace)
        .map_err(PlanError::Unresolved)?;
    let old = options
        .inventory
        .load(client)
        .await
        .map_err(PlanError::Inventory)?;
    let new: BTreeSet<ObjRef> = resolved
        .iter()
        .map(|(o, _)| ObjRef::from_key(&o.key))
        .collect();
    let current = current_fields(client, &resolved, &applied.records).await;
    let dry_runs = std::sync::atomic::AtomicUsize::new(0);
    let mut planned: Vec<PlannedObject> = stream::iter(resolved)
        .map(|(mut object, resolved)| {
            let (old, current, dry_runs) = (&old, &current, &dry_runs);
            async move {
                let reference = ObjRef::from_key(&object.key);
                let refused = |message: String| PlannedObject {
                    object: reference.clone(),
                    change: Change::Refused,
                    message,
                    fields: Vec::new(),
                };
                if let Err(why) = check_ownership(client, options, old, &object, &resolved).await {
                    return refused(why.to_string());
                }
                if resolved.pending_crd {
                    return PlannedObject {
                        object: reference.clone(),
                        change: Change::Create,
                        message:
                            "its CRD comes with this commit: the API server cannot check it before"
                                .into(),
                        fields: Vec::new(),
                    };
                }
                mark_owner(&mut object, &options.inventory.id);
                let replaced_hook = DeletePolicy::of(&object.body).is_some_and(|h| h.before_creation);
                let body = Value::Object(object.body);
                let hash = fingerprint(&body.to_string());
                let unchanged = |message: &str| PlannedObject {
                    object: reference.clone(),
                    change: Change::Unchanged,
                    message: message.into(),
                    fields: Vec::new(),
                };
                if unchanged_since(&applied.records, &reference, hash, current).is_some() {
                    return unchanged("as last applied");
                }
                if applied.finished_hooks.get(&reference) == Some(&hash) {
                    return unchanged("hook ran and was deleted by its helm.sh/hook-delete-policy");
                }
                let api = api_for(
                    client,
                    &resolved.resource,
                    resolved.namespaced,
                    &reference.namespace,
                );
                let live = match api.get_opt(&reference.name).await {
                    Ok(live) => live,
                    Err(kube::Error::Api(e)) if e.code == 404 => None,
                    Err(e) => return refused(format!("cannot read it: {e}")),
                };
                let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
                dry_runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let after = match api
                    .patch(&reference.name, &params, &Patch::Apply(&body))
                    .await
                {
                    Ok(after) => after,
                    // A namespace this commit creates does not exist yet.
                    Err(kube::Error::Api(e)) if live.is_none() && e.code == 404 => {
                        return PlannedObject {
                            object: reference.clone(),
                            change: Change::Create,
                            message: "its namespace comes with this commit".into(),
                            fields: Vec::new(),
                        };
                    }
                    // A hook whose new content cannot be patched in is
                    // deleted and created again by the sync.
                    Err(kube::Error::Api(e)) if replaced_hook && live.is_some() && e.code == 422 => {
                        return PlannedObject {
                            object: reference.clone(),
                            change: Change::Update,
                            message: "replaced: deleted and created again (helm.sh/hook-delete-policy before-hook-creation)".into(),
                            fields: Vec::new(),
                        };
                    }
                    Err(e) => return refused(format!("the API server refuses it: {e}")),
                };
                let Some(live) = live else {
                    return PlannedObject {
                        object: reference,
                        change: Change::Create,
                        message: String::new(),
                        fields: Vec::new(),
                    };
                };
                let before = comparable(serde_json::to_value(&live).unwrap_or_default());
                let after = comparable(serde_json::to_value(&after).unwrap_or_default());
                let mut fields = Vec::new();
                diff("", Some(&before), Some(&after), &mut fields);
                let change = if fields.is_empty() {
                    Change::Unchanged
                } else {
                    Change::Update
                };
                PlannedObject {
                    object: reference,
                    change,
                    message: String::new(),
                    fields,
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for gone in old.difference(&new) {
        let keep = !options.prune || kept(client, &discovery, gone).await;
        planned.push(PlannedObject {
            object: gone.clone(),
            change: if keep { Change::Keep } else { Change::Prune },
            message: if keep && !options.prune {
                "prune is off".into()
            } else if keep {
                format!("annotated {ON_REMOVE_ANNOTATION}: keep")
            } else {
                String::new()
            },
            fields: Vec::new(),
        });
    }
    planned.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(Plan {
        objects: planned,
        dry_runs: dry_runs.into_inner(),
    })
}

/// Whether an object gone from git is annotated to stay.
async fn kept(client: &kube::Client, discovery: &Discovery, object: &ObjRef) -> bool {
    let Some((resource, caps)) = discovery.groups().find_map(|g| {
        g.recommended_resources()
            .into_iter()
            .find(|(r, _)| r.group == object.group && r.kind == object.kind)
    }) else {
        return false;
    };
    let namespaced = caps.scope == kube::discovery::Scope::Namespaced;
    let api = api_for(client, &resource, namespaced, &object.namespace);
    matches!(
        api.get_metadata_opt(&object.name).await,
        Ok(Some(m)) if m.metadata.annotations.as_ref().and_then(|a| a.get(ON_REMOVE_ANNOTATION)).is_some_and(|v| v == "keep")
    )
}

/// An object without what the server writes on every change, so that
/// two readings differ only where the content does.
fn comparable(mut object: Value) -> Value {
    if let Some(Value::Object(meta)) = object.get_mut("metadata") {
        for noise in [
            "managedFields",
            "resourceVersion",
            "generation",
            "uid",
            "creationTimestamp",
        ] {
            meta.remove(noise);
        }
    }
    if let Value::Object(map) = &mut object {
        map.remove("status");
    }
    object
}

fn shown(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > MAX_VALUE_BYTES {
        let mut end = MAX_VALUE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The fields that differ between `before` and `after`, by path.
fn diff(path: &str, before: Option<&Value>, after: Option<&Value>, out: &mut Vec<FieldChange>) {
    if out.len() >= MAX_CHANGES || before == after {
        return;
    }
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for key in keys {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                diff(&here, b.get(key), a.get(key), out);
            }
        }
        (Some(Value::Array(b)), Some(Value::Array(a))) if b.len() == a.len() => {
            for (i, (bi, ai)) in b.iter().zip(a).enumerate() {
                diff(&format!("{path}[{i}]"), Some(bi), Some(ai), out);
            }
        }
        _ => out.push(FieldChange {
            path: path.to_owned(),
            before: before.map(shown),
            after: after.map(shown),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diffs_name_each_changed_field_and_ignore_server_noise() {
        let before = comparable(json!({
            "metadata": {"name": "web", "resourceVersion": "1", "managedFields": [], "labels": {"a": "1"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}},
            "status": {"ready": 2}
        }));
        let after = comparable(json!({
            "metadata": {"name": "web", "resourceVersion": "2", "labels": {"a": "1", "b": "2"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}},
            "status": {"ready": 0}
        }));
        let mut out = Vec::new();
        diff("", Some(&before), Some(&after), &mut out);
        let paths: Vec<(&str, Option<&str>, Option<&str>)> = out
            .iter()
            .map(|c| (c.path.as_str(), c.before.as_deref(), c.after.as_deref()))
            .collect();
        assert_eq!(
            paths,
            [
                ("metadata.labels.b", None, Some("\"2\"")),
                ("spec.replicas", Some("2"), Some("3")),
                (
                    "spec.template.spec.containers[0].image",
                    Some("\"nginx:1\""),
                    Some("\"nginx:2\"")
                ),
            ]
        );
        let mut none = Vec::new();
        diff("", Some(&before), Some(&before), &mut none);
        assert!(none.is_empty());
    }
}
