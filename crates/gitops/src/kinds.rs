//! What each object is to the API server: its resource (plural, scope), by
//! API discovery, or by a CustomResourceDefinition in the same set; and the
//! order objects are applied in.

use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use serde_json::Value;

use crate::manifest::Object;

/// How an object is reached in the API.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub resource: ApiResource,
    pub namespaced: bool,
    /// Defined by a CRD in the same set, not yet served.
    pub pending_crd: bool,
    /// Its `depends-on` wave (see [`crate::depends`]); set when planning.
    pub wave: usize,
}

/// Resolves `object` by discovery, else by a CRD among `objects`.
pub fn resolve(discovery: &Discovery, objects: &[Object], object: &Object) -> Option<Resolved> {
    let (group, version) = split_api_version(&object.api_version);
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &object.key.kind);
    if let Some((resource, caps)) = discovery.resolve_gvk(&gvk) {
        return Some(Resolved {
            namespaced: scope_namespaced(&caps),
            resource,
            pending_crd: false,
            wave: 0,
        });
    }
    objects.iter().find_map(|crd| {
        if crd.key.kind != "CustomResourceDefinition" || crd.key.group != "apiextensions.k8s.io" {
            return None;
        }
        let spec = crd.body.get("spec")?;
        let names = spec.get("names")?;
        let served = spec
            .get("versions")?
            .as_array()?
            .iter()
            .any(|v| v.get("name").and_then(Value::as_str) == Some(version));
        if spec.get("group")?.as_str()? != group
            || names.get("kind")?.as_str()? != object.key.kind
            || !served
        {
            return None;
        }
        let plural = names.get("plural")?.as_str()?;
        Some(Resolved {
            resource: ApiResource {
                group: group.to_owned(),
                version: version.to_owned(),
                api_version: object.api_version.clone(),
                kind: object.key.kind.clone(),
                plural: plural.to_owned(),
            },
            namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
            pending_crd: true,
            wave: 0,
        })
    })
}

fn scope_namespaced(caps: &ApiCapabilities) -> bool {
    matches!(caps.scope, Scope::Namespaced)
}

pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// Apply order by kind, as kubectl, Helm and cli-utils use it: what others
/// depend on first. Kinds not listed come after all listed ones (custom
/// resources among them), before webhooks, which could block the rest.
const ORDER: &[&str] = &[
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
];

const LAST: &[&str] = &[
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// The stage an object is applied in: CRDs and Namespaces first (stage 0),
/// so that custom resources and namespaced objects find them; then the rest.
pub fn stage(kind: &str) -> u8 {
    match kind {
        "CustomResourceDefinition" | "Namespace" => 0,
        _ => 1,
    }
}

/// The position of `kind` in the conventional order.
pub fn rank(kind: &str) -> usize {
    if let Some(i) = ORDER.iter().position(|k| *k == kind) {
        return i;
    }
    if let Some(i) = LAST.iter().position(|k| *k == kind) {
        return ORDER.len() + 1 + i;
    }
    ORDER.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first_and_webhooks_last() {
        assert!(rank("Namespace") < rank("ConfigMap"));
        assert!(rank("ConfigMap") < rank("Deployment"));
        assert!(rank("ServiceAccount") < rank("Deployment"));
        assert!(rank("Deployment") < rank("Widget"));
        assert!(rank("Widget") < rank("ValidatingWebhookConfiguration"));
        assert_eq!(stage("CustomResourceDefinition"), 0);
        assert_eq!(stage("Deployment"), 1);
        assert_eq!(split_api_version("v1"), ("", "v1"));
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
    }
}
