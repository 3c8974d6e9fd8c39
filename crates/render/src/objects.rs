//! A renderer's output as objects: parsed once (with the same bounds as
//! any manifest), so that Helm's hooks can be placed in Tether's order and
//! objects a chart leaves without a namespace land in the release's.

use serde_json::{Map, Value};

/// The annotation Tether's (and cli-utils') ordering reads.
pub const DEPENDS_ON: &str = "config.kubernetes.io/depends-on";
const HOOK: &str = "helm.sh/hook";
const HOOK_WEIGHT: &str = "helm.sh/hook-weight";

/// Kinds that live outside namespaces, of the API groups every cluster
/// serves; a CRD of the same render says so of its own kind.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
    "VolumeAttachment",
    "CSIDriver",
    "CSINode",
    "PriorityClass",
    "RuntimeClass",
    "IngressClass",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "FlowSchema",
    "PriorityLevelConfiguration",
    "CertificateSigningRequest",
    "ClusterTrustBundle",
    "DeviceClass",
];

/// A renderer's output (or a chart repository's index) that does not parse
/// as YAML within the bounds.
#[derive(Debug, thiserror::Error)]
#[error("the output is not YAML: {0}")]
pub struct NotYaml(#[source] pub serde_saphyr::Error);

/// Parses multi-document YAML into objects; empty documents are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, NotYaml> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_aliases = 10_000;
    budget.max_anchors = 10_000;
    budget.max_depth = 64;
    budget.max_documents = 20_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = 1_000_000;
    let docs: Vec<Option<Value>> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(NotYaml)?;
    Ok(docs
        .into_iter()
        .flatten()
        .filter(|d| !d.is_null())
        .collect())
}

fn annotations(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata")?.get("annotations")?.as_object()
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    annotations(object)?.get(key)?.as_str()
}

fn set_annotation(object: &mut Value, key: &str, value: String) {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !annotations.is_object() {
        *annotations = Value::Object(Map::new());
    }
    if let Some(map) = annotations.as_object_mut() {
        map.insert(key.to_owned(), Value::String(value));
    }
}

fn str_at<'a>(object: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut at = object;
    for key in path {
        at = at.get(key)?;
    }
    at.as_str()
}

/// Sets `metadata.namespace` to `namespace` on namespaced objects that
/// name none, as `helm install --namespace` would place them.
pub fn place_in_namespace(objects: &mut [Value], namespace: &str) {
    let cluster_scoped_crds: Vec<String> = objects
        .iter()
        .filter(|o| str_at(o, &["kind"]) == Some("CustomResourceDefinition"))
        .filter(|o| str_at(o, &["spec", "scope"]) == Some("Cluster"))
        .filter_map(|o| str_at(o, &["spec", "names", "kind"]).map(str::to_owned))
        .collect();
    for object in objects {
        let kind = str_at(object, &["kind"]).unwrap_or_default();
        if CLUSTER_SCOPED.contains(&kind) || cluster_scoped_crds.iter().any(|k| k == kind) {
            continue;
        }
        let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
            continue;
        };
        let has = metadata
            .get("namespace")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if !has {
            metadata.insert("namespace".into(), Value::String(namespace.to_owned()));
        }
    }
}

/// An object's reference in the depends-on syntax:
/// `group/namespaces/ns/Kind/name` or `group/Kind/name`.
fn reference(object: &Value) -> Option<String> {
    let api_version = str_at(object, &["apiVersion"])?;
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let kind = str_at(object, &["kind"])?;
    let name = str_at(object, &["metadata", "name"])?;
    Some(match str_at(object, &["metadata", "namespace"]) {
        Some(ns) if !ns.is_empty() => format!("{group}/namespaces/{ns}/{kind}/{name}"),
        _ => format!("{group}/{kind}/{name}"),
    })
}

/// When a Helm hook runs, in Tether's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Pre,
    Main,
    Post,
    /// Tests, deletes and rollbacks: nothing a GitOps apply does.
    Never,
}

fn phase(object: &Value) -> Phase {
    let Some(hooks) = annotation(object, HOOK) else {
        return Phase::Main;
    };
    let hooks: Vec<&str> = hooks.split(',').map(str::trim).collect();
    if hooks
        .iter()
        .any(|h| matches!(*h, "pre-install" | "pre-upgrade"))
    {
        Phase::Pre
    } else if hooks
        .iter()
        .any(|h| matches!(*h, "post-install" | "post-upgrade"))
    {
        Phase::Post
    } else {
        Phase::Never
    }
}

fn weight(object: &Value) -> i64 {
    annotation(object, HOOK_WEIGHT)
        .and_then(|w| w.trim().parse().ok())
        .unwrap_or(0)
}

/// Places Helm's hooks in Tether's order with depends-on annotations:
/// pre-install/pre-upgrade hooks before everything else (by weight among
/// themselves), post-install/post-upgrade hooks after everything else,
/// and test, delete and rollback hooks left out. Returns how many hooks
/// were left out.
pub fn order_hooks(objects: &mut Vec<Value>) -> usize {
    let before = objects.len();
    objects.retain(|o| phase(o) != Phase::Never);
    let dropped = before - objects.len();
    let refs_of = |phase_wanted: Phase, objects: &[Value]| -> Vec<(i64, String)> {
        objects
            .iter()
            .filter(|o| phase(o) == phase_wanted)
            .filter_map(|o| Some((weight(o), reference(o)?)))
            .collect()
    };
    let pre = refs_of(Phase::Pre, objects);
    let main = refs_of(Phase::Main, objects);
    let post = refs_of(Phase::Post, objects);
    if pre.is_empty() && post.is_empty() {
        return dropped;
    }
    for object in objects.iter_mut() {
        let own_weight = weight(object);
        let mut needs: Vec<&str> = match phase(object) {
            Phase::Main => pre.iter().map(|(_, r)| r.as_str()).collect(),
            Phase::Pre => pre
                .iter()
                .filter(|(w, _)| *w < own_weight)
                .map(|(_, r)| r.as_str())
                .collect(),
            Phase::Post => main
                .iter()
                .chain(post.iter().filter(|(w, _)| *w < own_weight))
                .map(|(_, r)| r.as_str())
                .collect(),
            Phase::Never => Vec::new(),
        };
        if needs.is_empty() {
            continue;
        }
        let existing = annotation(object, DEPENDS_ON).map(str::to_owned);
        if let Some(existing) = &existing {
            needs.insert(0, existing.as_str());
        }
        let value = needs.join(",");
        set_annotation(object, DEPENDS_ON, value);
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(text: &str) -> Vec<Value> {
        parse_documents(text).expect("YAML")
    }

    #[test]
    fn hooks_run_before_and_after_the_release_and_tests_are_left_out() {
        let mut objects = docs(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate, annotations: {helm.sh/hook: 'pre-install,pre-upgrade', helm.sh/hook-weight: '5'}}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: schema, annotations: {helm.sh/hook: pre-install, helm.sh/hook-weight: '-1'}}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\n\
             apiVersion: batch/v1\nkind: Job\nmetadata: {name: smoke, annotations: {helm.sh/hook: post-install}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: test, annotations: {helm.sh/hook: test}}\n---\n\
             apiVersion: batch/v1\nkind: Job\nmetadata: {name: cleanup, annotations: {helm.sh/hook: pre-delete}}\n",
        );
        place_in_namespace(&mut objects, "apps");
        assert_eq!(order_hooks(&mut objects), 2, "the test and the delete hook");
        let deps = |name: &str| {
            objects
                .iter()
                .find(|o| o["metadata"]["name"] == name)
                .and_then(|o| annotation(o, DEPENDS_ON))
                .map(str::to_owned)
        };
        assert_eq!(deps("schema"), None, "the lightest pre hook goes first");
        assert_eq!(
            deps("migrate").as_deref(),
            Some("/namespaces/apps/ConfigMap/schema")
        );
        assert_eq!(
            deps("web").as_deref(),
            Some("batch/namespaces/apps/Job/migrate,/namespaces/apps/ConfigMap/schema")
        );
        assert_eq!(
            deps("smoke").as_deref(),
            Some("apps/namespaces/apps/Deployment/web")
        );
    }

    #[test]
    fn namespaced_objects_get_the_release_namespace() {
        let mut objects = docs(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: other}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: c}\n---\n\
             apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: xs.example.com}\nspec: {scope: Cluster, names: {kind: X}}\n---\n\
             apiVersion: example.com/v1\nkind: X\nmetadata: {name: d}\n---\n\
             ---\n",
        );
        place_in_namespace(&mut objects, "apps");
        let ns: Vec<Option<&str>> = objects
            .iter()
            .map(|o| o["metadata"]["namespace"].as_str())
            .collect();
        assert_eq!(ns, [Some("apps"), Some("other"), None, None, None]);
    }
}
