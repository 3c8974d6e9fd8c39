//! What a manifest project owns in the cluster, kept in the cluster itself in
//! cli-utils' format, so that a restarted agent (or a GitLab agent user
//! moving over) knows what it owns: a ConfigMap labelled
//! `cli-utils.sigs.k8s.io/inventory-id` whose data keys are
//! `<namespace>_<name>_<group>_<kind>`, and each object annotated
//! `config.k8s.io/owning-inventory: <id>`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};

use crate::manifest::ObjectKey;

pub const INVENTORY_LABEL: &str = "cli-utils.sigs.k8s.io/inventory-id";
pub const OWNER_ANNOTATION: &str = "config.k8s.io/owning-inventory";
pub const ON_REMOVE_ANNOTATION: &str = "cli-utils.sigs.k8s.io/on-remove";
pub const FIELD_MANAGER: &str = "agentk";
/// Between the fields of an inventory key, as cli-utils writes it.
const FIELD_SEPARATOR: char = '_';
/// How cli-utils writes a `:` of an object's name in an inventory key.
const COLON_ENCODED: &str = "__";

/// One object as the inventory names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjRef {
    pub group: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

impl ObjRef {
    pub fn from_key(key: &ObjectKey) -> Self {
        ObjRef {
            group: key.group.clone(),
            kind: key.kind.clone(),
            namespace: key.namespace.clone().unwrap_or_default(),
            name: key.name.clone(),
        }
    }

    /// The cli-utils string form, `<namespace>_<name>_<group>_<kind>`, with
    /// each `:` of the name written `__` (RBAC names such as
    /// `cert-manager-webhook:dynamic-serving` hold colons, which a
    /// ConfigMap key may not). Byte for byte what cli-utils writes, so that
    /// an inventory moves between GitLab's agentk and Tether either way.
    pub fn encode(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.namespace,
            self.name.replace(':', COLON_ENCODED),
            self.group,
            self.kind
        )
    }

    /// Parses the cli-utils form. Namespaces, groups and kinds never hold
    /// `_`, so the namespace ends at the first separator and the kind and
    /// group start after the last two; everything between is the name, in
    /// which `__` stands for `:`. A name holding a single `_` (RBAC names
    /// may) reads back as written: cli-utils itself refuses such keys, which
    /// would leave the object unprunable.
    pub fn decode(text: &str) -> Option<Self> {
        let (namespace, rest) = text.split_once(FIELD_SEPARATOR)?;
        let (rest, kind) = rest.rsplit_once(FIELD_SEPARATOR)?;
        let (name, group) = rest.rsplit_once(FIELD_SEPARATOR)?;
        let name = name.replace(COLON_ENCODED, ":");
        if name.trim().is_empty() || kind.trim().is_empty() {
            return None;
        }
        Some(ObjRef {
            group: group.trim().to_owned(),
            kind: kind.trim().to_owned(),
            namespace: namespace.trim().to_owned(),
            name,
        })
    }
}

impl fmt::Display for ObjRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        if self.namespace.is_empty() {
            write!(f, "{}{group} {}", self.kind, self.name)
        } else {
            write!(f, "{}{group} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Where a manifest project's inventory lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    /// The inventory id: the label value and the owner annotation.
    pub id: String,
    pub namespace: String,
    pub name: String,
}

impl Inventory {
    /// The inventory of `project` synced by `agent`, in `namespace`.
    pub fn for_project(agent: &str, project: &str, namespace: &str) -> Self {
        let hash = fnv1a(format!("{agent}\n{project}").as_bytes());
        let agent: String = agent.chars().take(40).collect();
        let id = format!("{agent}-{hash:012x}");
        Inventory {
            name: format!("inventory-{id}"),
            id,
            namespace: namespace.to_owned(),
        }
    }

    /// The objects recorded, empty when there is no inventory yet.
    pub async fn load(&self, client: &kube::Client) -> Result<BTreeSet<ObjRef>, kube::Error> {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &self.namespace);
        let Some(cm) = api.get_opt(&self.name).await? else {
            return Ok(BTreeSet::new());
        };
        Ok(cm
            .data
            .unwrap_or_default()
            .keys()
            .filter_map(|k| ObjRef::decode(k))
            .collect())
    }

    /// Records exactly `objects`.
    pub async fn save(
        &self,
        client: &kube::Client,
        objects: &BTreeSet<ObjRef>,
    ) -> Result<(), kube::Error> {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &self.namespace);
        let data: BTreeMap<String, String> = objects
            .iter()
            .map(|o| (o.encode(), String::new()))
            .collect();
        let cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": { INVENTORY_LABEL: self.id },
            },
            "data": data,
        });
        let written = api
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(cm),
            )
            .await?;
        // Server-side apply removes only the keys agentk owns. Keys another
        // writer owns (an inventory cli-utils wrote, then adopted) stay,
        // and would name objects already pruned: remove them outright.
        let stale: serde_json::Map<String, serde_json::Value> = written
            .data
            .unwrap_or_default()
            .into_keys()
            .filter(|k| !data.contains_key(k))
            .map(|k| (k, serde_json::Value::Null))
            .collect();
        if !stale.is_empty() {
            api.patch(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "data": stale })),
            )
            .await?;
        }
        Ok(())
    }
}

/// A stable hash, the same across builds and restarts.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    }) & 0xffff_ffff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_refs_round_trip_the_cli_utils_form() {
        for r in [
            ObjRef {
                group: "apps".into(),
                kind: "Deployment".into(),
                namespace: "prod".into(),
                name: "web".into(),
            },
            ObjRef {
                group: String::new(),
                kind: "Namespace".into(),
                namespace: String::new(),
                name: "prod".into(),
            },
        ] {
            assert_eq!(ObjRef::decode(&r.encode()), Some(r.clone()));
        }
        assert_eq!(
            ObjRef::decode("prod_web_apps_Deployment")
                .expect("valid")
                .to_string(),
            "Deployment.apps prod/web"
        );
        assert_eq!(ObjRef::decode("garbage"), None);
        assert_eq!(ObjRef::decode("ns_name_group"), None);
    }

    fn rbac(kind: &str, namespace: &str, name: &str) -> ObjRef {
        ObjRef {
            group: "rbac.authorization.k8s.io".into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Keys exactly as cli-utils writes them for cert-manager's RBAC
    /// objects, and as they read back.
    #[test]
    fn colons_in_rbac_names_are_written_as_cli_utils_writes_them() {
        let cases = [
            (
                rbac(
                    "ClusterRole",
                    "",
                    "cert-manager-webhook:subjectaccessreviews",
                ),
                "_cert-manager-webhook__subjectaccessreviews_rbac.authorization.k8s.io_ClusterRole",
            ),
            (
                rbac(
                    "Role",
                    "cert-manager",
                    "cert-manager-webhook:dynamic-serving",
                ),
                "cert-manager_cert-manager-webhook__dynamic-serving_rbac.authorization.k8s.io_Role",
            ),
            (
                rbac("ClusterRoleBinding", "", "system:controller:bootstrap"),
                "_system__controller__bootstrap_rbac.authorization.k8s.io_ClusterRoleBinding",
            ),
        ];
        for (object, key) in cases {
            assert_eq!(object.encode(), key);
            assert_eq!(ObjRef::decode(key), Some(object));
        }
    }

    #[test]
    fn names_holding_underscores_read_back_as_written() {
        let object = rbac("ClusterRole", "", "metrics_reader:view");
        assert_eq!(
            object.encode(),
            "_metrics_reader__view_rbac.authorization.k8s.io_ClusterRole"
        );
        assert_eq!(ObjRef::decode(&object.encode()), Some(object));
        let core = ObjRef::decode("kube-system_my_cm__x__ConfigMap").expect("valid");
        assert_eq!((core.name.as_str(), core.group.as_str()), ("my_cm:x", ""));
    }

    #[test]
    fn every_key_written_is_a_valid_configmap_key() {
        let object = rbac("ClusterRole", "", "a:b:c");
        let key = object.encode();
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
            "{key}"
        );
    }

    #[test]
    fn inventory_ids_are_stable_and_label_safe() {
        let a = Inventory::for_project("prod", "team/manifests", "gitlab-agent");
        assert_eq!(
            a,
            Inventory::for_project("prod", "team/manifests", "gitlab-agent")
        );
        assert_ne!(a.id, Inventory::for_project("prod", "team/other", "x").id);
        assert!(a.id.len() <= 63 && a.name.len() <= 253, "{a:?}");
        let long = Inventory::for_project(&"a".repeat(63), "p", "ns");
        assert!(long.id.len() <= 63, "{long:?}");
    }
}
