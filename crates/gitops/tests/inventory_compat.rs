//! The inventory moves between cli-utils users (GitLab's agentk, kpt,
//! kapply) and Tether in both directions: an inventory written by hand in
//! cli-utils' format is adopted and its objects pruned, and the keys Tether
//! writes are byte for byte the ones cli-utils writes. Real cluster, real
//! kubectl.

use std::time::Duration;

use kube::api::PropagationPolicy;
use tether_gitops::inventory::Inventory;
use tether_gitops::manifest::{Limits, ManifestFile};
use tether_gitops::sync::{Action, AppliedState, InventoryPolicy, SyncOptions, sync};

fn options(ns: &str) -> SyncOptions {
    SyncOptions {
        default_namespace: ns.to_owned(),
        inventory: Inventory::for_project("compat-agent", "team/release", ns),
        inventory_policy: InventoryPolicy::MustMatch,
        prune: true,
        prune_timeout: Duration::from_secs(30),
        prune_propagation: PropagationPolicy::Background,
        server_dry_run: false,
        client_dry_run: false,
        reconcile_timeout: Duration::from_secs(60),
        hook_timeout: Duration::from_secs(300),
        limits: Limits::default(),
    }
}

fn kubectl_get(args: &[&str]) -> Option<serde_json::Value> {
    tether_testenv::shared().get_json(args)
}

fn apply_stdin(yaml: &str) {
    let cluster = tether_testenv::shared();
    let status = cluster
        .kubectl()
        .args([
            "apply",
            "--server-side",
            "--field-manager=gitlab-agentk",
            "-f",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(yaml.as_bytes())?;
            child.wait()
        })
        .expect("kubectl runs");
    assert!(status.success(), "kubectl apply failed for:\n{yaml}");
}

#[tokio::test]
async fn an_inventory_in_cli_utils_format_is_adopted_and_pruned() {
    let cluster = tether_testenv::shared();
    let ns = cluster
        .namespace("inv-from-cli-utils")
        .await
        .expect("namespace");
    let ns = ns.name();
    let opts = options(ns);
    let id = &opts.inventory.id;
    let role = format!("{ns}-legacy:view");
    let underscored = format!("{ns}-metrics_reader:get");
    // What GitLab's agentk (cli-utils) leaves behind: the objects, annotated
    // with the inventory id, and the inventory ConfigMap whose keys encode
    // each `:` of a name as `__`.
    apply_stdin(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {role}
  annotations: {{config.k8s.io/owning-inventory: {id}}}
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {underscored}
  annotations: {{config.k8s.io/owning-inventory: {id}}}
rules: []
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: old-settings
  namespace: {ns}
  annotations: {{config.k8s.io/owning-inventory: {id}}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {inventory}
  namespace: {ns}
  labels: {{cli-utils.sigs.k8s.io/inventory-id: {id}}}
data:
  _{role_key}_rbac.authorization.k8s.io_ClusterRole: ""
  _{underscored_key}_rbac.authorization.k8s.io_ClusterRole: ""
  {ns}_old-settings__ConfigMap: ""
"#,
        inventory = opts.inventory.name,
        role_key = role.replace(':', "__"),
        underscored_key = underscored.replace(':', "__"),
    ));

    // Git now holds one new ConfigMap and none of the old objects.
    let files = [ManifestFile {
        path: "app.yaml".into(),
        bytes: b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: new-settings}\n".to_vec(),
    }];
    let outcome = sync(
        &client(cluster),
        &opts,
        &files,
        &mut AppliedState::default(),
    )
    .await;
    assert_eq!(outcome.error, None, "{outcome:#?}");
    assert_eq!(outcome.count(Action::Pruned), 3, "{outcome:#?}");
    for args in [
        vec!["clusterrole", role.as_str()],
        vec!["clusterrole", underscored.as_str()],
        vec!["configmap", "old-settings", "-n", ns],
    ] {
        tether_testenv::wait_until(
            "the pruned object to be gone",
            Duration::from_secs(30),
            || async { Ok::<_, String>(kubectl_get(&args).is_none().then_some(())) },
        )
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    }
    let inventory = kubectl_get(&["configmap", &opts.inventory.name, "-n", ns]).expect("inventory");
    let keys: Vec<&String> = inventory["data"]
        .as_object()
        .map(|d| d.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys, [&format!("{ns}_new-settings__ConfigMap")]);
}

#[tokio::test]
async fn the_keys_tether_writes_are_the_ones_cli_utils_writes() {
    let cluster = tether_testenv::shared();
    let ns = cluster
        .namespace("inv-to-cli-utils")
        .await
        .expect("namespace");
    let ns = ns.name();
    let opts = options(ns);
    let files = [ManifestFile {
        path: "rbac.yaml".into(),
        bytes: format!(
            r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "{ns}-webhook:subjectaccessreviews"}}
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: "{ns}-webhook:dynamic-serving"}}
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: "{ns}-webhook:dynamic-serving"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: "{ns}-webhook:dynamic-serving"}}
subjects: [{{kind: ServiceAccount, name: webhook, namespace: {ns}}}]
"#
        )
        .into_bytes(),
    }];
    let outcome = sync(
        &client(cluster),
        &opts,
        &files,
        &mut AppliedState::default(),
    )
    .await;
    assert_eq!(outcome.error, None, "{outcome:#?}");
    let inventory = kubectl_get(&["configmap", &opts.inventory.name, "-n", ns]).expect("inventory");
    let mut keys: Vec<String> = inventory["data"]
        .as_object()
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    let mut want = vec![
        format!("_{ns}-webhook__subjectaccessreviews_rbac.authorization.k8s.io_ClusterRole"),
        format!("{ns}_{ns}-webhook__dynamic-serving_rbac.authorization.k8s.io_Role"),
        format!("{ns}_{ns}-webhook__dynamic-serving_rbac.authorization.k8s.io_RoleBinding"),
    ];
    want.sort();
    assert_eq!(keys, want);

    // And what Tether wrote, it prunes.
    let outcome = sync(&client(cluster), &opts, &[], &mut AppliedState::default()).await;
    assert_eq!(outcome.error, None, "{outcome:#?}");
    assert_eq!(outcome.count(Action::Pruned), 3, "{outcome:#?}");
}

fn client(cluster: &tether_testenv::Cluster) -> kube::Client {
    cluster.client().expect("client")
}
