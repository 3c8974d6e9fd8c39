//! The sync engine against the real cluster: what git holds is applied in
//! order and becomes Current, what leaves git is pruned (unless kept), a
//! broken set changes nothing, and the inventory policy decides take-overs.
//! Every check reads the cluster back with the real kubectl.

use std::time::Duration;

use kube::api::PropagationPolicy;
use tether_gitops::inventory::Inventory;
use tether_gitops::manifest::{Limits, ManifestFile};
use tether_gitops::sync::{
    Action, AppliedState, InventoryPolicy, SyncOptions, sync, wait_for_health,
};

fn file(path: &str, text: &str) -> ManifestFile {
    ManifestFile {
        path: path.into(),
        bytes: text.as_bytes().to_vec(),
    }
}

fn options(ns: &str, project: &str) -> SyncOptions {
    SyncOptions {
        default_namespace: ns.to_owned(),
        inventory: Inventory::for_project("test-agent", project, ns),
        inventory_policy: InventoryPolicy::MustMatch,
        prune: true,
        prune_timeout: Duration::from_secs(30),
        prune_propagation: PropagationPolicy::Foreground,
        server_dry_run: false,
        client_dry_run: false,
        reconcile_timeout: Duration::from_secs(60),
        hook_timeout: Duration::from_secs(300),
        limits: Limits::default(),
    }
}

/// `kubectl get` as JSON, or None when the object does not exist.
fn kubectl_get(args: &[&str]) -> Option<serde_json::Value> {
    tether_testenv::shared().get_json(args)
}

fn app(ns: &str, app_ns: &str) -> Vec<ManifestFile> {
    vec![
        file(
            "manifests/namespace.yaml",
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {app_ns}\n"),
        ),
        file(
            "manifests/crd.yaml",
            &format!(
                r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets{ns}.tether.test
spec:
  group: tether.test
  scope: Namespaced
  names: {{ plural: widgets{ns}, singular: widget{ns}, kind: Widget{ns} }}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
---
apiVersion: tether.test/v1
kind: Widget{ns}
metadata: {{ name: gear }}
spec: {{ teeth: 12 }}
"#,
                ns = suffix(ns)
            ),
        ),
        file(
            "manifests/config.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept\n  annotations: {cli-utils.sigs.k8s.io/on-remove: keep}\n",
        ),
        file(
            "manifests/web.yaml",
            &format!(
                r#"apiVersion: v1
kind: Service
metadata: {{ name: web, namespace: {app_ns} }}
spec:
  selector: {{ app: web }}
  ports: [{{ port: 80 }}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{ name: web, namespace: {app_ns} }}
spec:
  replicas: 2
  selector: {{ matchLabels: {{ app: web }} }}
  template:
    metadata: {{ labels: {{ app: web }} }}
    spec:
      containers: [{{ name: web, image: nginx }}]
"#
            ),
        ),
    ]
}

/// Kinds are cluster-wide: one per test namespace keeps tests apart.
fn suffix(ns: &str) -> String {
    ns.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

#[tokio::test]
async fn a_set_is_applied_in_order_becomes_current_and_what_leaves_git_is_pruned() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("gitops-sync").await.expect("namespace");
    let ns = ns.name();
    let app_ns = format!("{ns}-app");
    let client = cluster.client().expect("client");
    let opts = options(ns, "team/app");
    let mut state = AppliedState::default();

    let mut outcome = sync(&client, &opts, &app(ns, &app_ns), &mut state).await;
    assert_eq!(outcome.error, None, "{outcome:#?}");
    assert_eq!(outcome.count(Action::Applied), 7, "{outcome:#?}");
    wait_for_health(&client, &mut outcome, Duration::from_secs(90)).await;
    let unhealthy: Vec<String> = outcome
        .objects
        .iter()
        .filter(|o| o.health != Some(tether_gitops::health::Health::Current))
        .map(|o| format!("{} {:?} {}", o.object, o.health, o.message))
        .collect();
    assert!(unhealthy.is_empty(), "{unhealthy:?}");

    let deploy = kubectl_get(&["deployment", "web", "-n", &app_ns]).expect("deployment");
    assert_eq!(deploy["status"]["availableReplicas"], 2);
    let cm = kubectl_get(&["configmap", "settings", "-n", ns]).expect("defaulted namespace");
    assert_eq!(cm["data"]["mode"], "fast");
    assert_eq!(
        cm["metadata"]["annotations"]["config.k8s.io/owning-inventory"],
        opts.inventory.id.as_str()
    );
    let widget = format!("widgets{}.tether.test", suffix(ns));
    assert!(kubectl_get(&[&widget, "gear", "-n", ns]).is_some());
    let inventory = kubectl_get(&["configmap", &opts.inventory.name, "-n", ns]).expect("inventory");
    assert_eq!(
        inventory["metadata"]["labels"]["cli-utils.sigs.k8s.io/inventory-id"],
        opts.inventory.id.as_str()
    );
    assert_eq!(
        inventory["data"].as_object().map(|d| d.len()),
        Some(7),
        "{inventory}"
    );

    // The same set again: nothing is sent. Then someone scales the
    // Deployment, taking spec.replicas from agentk: only it is applied
    // again, and the replicas are back to what git says.
    let again = sync(&client, &opts, &app(ns, &app_ns), &mut state).await;
    assert_eq!(again.error, None);
    assert_eq!(
        (again.count(Action::Unchanged), again.count(Action::Applied)),
        (7, 0)
    );
    cluster.kubectl_ok(&["scale", "deployment", "web", "--replicas=3", "-n", &app_ns]);
    let drifted = sync(&client, &opts, &app(ns, &app_ns), &mut state).await;
    assert_eq!(
        (
            drifted.count(Action::Unchanged),
            drifted.count(Action::Applied)
        ),
        (6, 1)
    );
    let deploy = kubectl_get(&["deployment", "web", "-n", &app_ns]).expect("deployment");
    assert_eq!(deploy["spec"]["replicas"], 2);
    // A restarted agent has no memory: it applies everything once.
    let fresh = sync(
        &client,
        &opts,
        &app(ns, &app_ns),
        &mut AppliedState::default(),
    )
    .await;
    assert_eq!(fresh.count(Action::Applied), 7);

    // A broken document: nothing changes, and the error names the file.
    let mut broken = app(ns, &app_ns);
    broken[2] = file(
        "manifests/config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [\n",
    );
    broken.remove(3);
    let failed = sync(&client, &opts, &broken, &mut state).await;
    let error = failed.error.expect("a broken set fails");
    assert!(error.contains("manifests/config.yaml"), "{error}");
    assert!(failed.objects.is_empty(), "nothing applied or pruned");
    assert!(kubectl_get(&["deployment", "web", "-n", &app_ns]).is_some());

    // Remove the config file and the web file: the ConfigMap and web
    // objects are pruned, the annotated one stays.
    let mut fewer = app(ns, &app_ns);
    fewer.truncate(2);
    let pruned = sync(&client, &opts, &fewer, &mut state).await;
    assert_eq!(pruned.error, None, "{pruned:#?}");
    assert_eq!(pruned.count(Action::Pruned), 3, "{pruned:#?}");
    assert_eq!(pruned.count(Action::Kept), 1, "{pruned:#?}");
    assert!(kubectl_get(&["configmap", "settings", "-n", ns]).is_none());
    assert!(kubectl_get(&["service", "web", "-n", &app_ns]).is_none());
    assert!(kubectl_get(&["deployment", "web", "-n", &app_ns]).is_none());
    assert!(kubectl_get(&["configmap", "kept", "-n", ns]).is_some());
    let inventory = kubectl_get(&["configmap", &opts.inventory.name, "-n", ns]).expect("inventory");
    assert_eq!(
        inventory["data"].as_object().map(|d| d.len()),
        Some(3),
        "{inventory}"
    );

    // With prune off, what leaves git stays.
    let no_prune = SyncOptions {
        prune: false,
        ..options(ns, "team/app")
    };
    let all = sync(&client, &no_prune, &app(ns, &app_ns), &mut state).await;
    assert_eq!(all.error, None, "{all:#?}");
    let kept = sync(&client, &no_prune, &fewer, &mut state).await;
    assert_eq!(kept.error, None);
    assert_eq!(kept.count(Action::Pruned), 0);
    assert!(kubectl_get(&["configmap", "settings", "-n", ns]).is_some());

    // Clean up the cluster-scoped objects.
    let gone = sync(&client, &opts, &[], &mut state).await;
    assert_eq!(gone.error, None, "{gone:#?}");
}

#[tokio::test]
async fn the_inventory_policy_decides_what_may_be_taken_over() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("gitops-adopt").await.expect("namespace");
    let ns = ns.name();
    let client = cluster.client().expect("client");
    let mut state = AppliedState::default();
    cluster.kubectl_ok(&[
        "create",
        "configmap",
        "existing",
        "-n",
        ns,
        "--from-literal=owner=someone",
    ]);
    let files = [file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: existing}\ndata: {owner: git}\n",
    )];

    let strict = options(ns, "team/a");
    let refused = sync(&client, &strict, &files, &mut state).await;
    let error = refused.error.expect("refused");
    assert!(error.contains("adopt_if_no_inventory"), "{error}");
    let cm = kubectl_get(&["configmap", "existing", "-n", ns]).expect("still there");
    assert_eq!(cm["data"]["owner"], "someone", "not changed");

    let adopting = SyncOptions {
        inventory_policy: InventoryPolicy::AdoptIfNoInventory,
        ..options(ns, "team/a")
    };
    let adopted = sync(&client, &adopting, &files, &mut state).await;
    assert_eq!(adopted.error, None, "{adopted:#?}");
    let cm = kubectl_get(&["configmap", "existing", "-n", ns]).expect("adopted");
    assert_eq!(cm["data"]["owner"], "git");

    // Another project's inventory may not take it, even adopting unowned ones.
    let other = SyncOptions {
        inventory_policy: InventoryPolicy::AdoptIfNoInventory,
        ..options(ns, "team/b")
    };
    let refused = sync(&client, &other, &files, &mut state).await;
    assert!(
        refused
            .error
            .expect("refused")
            .contains("belongs to inventory")
    );
}

#[tokio::test]
async fn an_unknown_kind_fails_the_whole_set_before_anything_is_applied() {
    let cluster = tether_testenv::shared();
    let ns = cluster
        .namespace("gitops-unknown")
        .await
        .expect("namespace");
    let ns = ns.name();
    let client = cluster.client().expect("client");
    let mut state = AppliedState::default();
    let files = [
        file(
            "a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\n",
        ),
        file(
            "b.yaml",
            "apiVersion: nowhere.test/v1\nkind: Gadget\nmetadata: {name: g}\n",
        ),
    ];
    let failed = sync(&client, &options(ns, "team/x"), &files, &mut state).await;
    let error = failed.error.expect("fails");
    assert!(
        error.contains("b.yaml document 0: unknown kind Gadget"),
        "{error}"
    );
    assert!(kubectl_get(&["configmap", "first", "-n", ns]).is_none());
}

#[tokio::test]
async fn a_server_dry_run_reports_what_would_change_and_changes_nothing() {
    let cluster = tether_testenv::shared();
    let ns = cluster
        .namespace("gitops-dry-run")
        .await
        .expect("namespace");
    let ns = ns.name();
    let client = cluster.client().expect("client");
    let mut state = AppliedState::default();
    let dry = SyncOptions {
        server_dry_run: true,
        ..options(ns, "team/dry")
    };
    let files = [file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: would-be}\ndata: {a: b}\n",
    )];
    let outcome = sync(&client, &dry, &files, &mut state).await;
    assert_eq!(outcome.error, None, "{outcome:#?}");
    assert_eq!(
        outcome.count(Action::Applied),
        1,
        "validated by the API server"
    );
    assert!(kubectl_get(&["configmap", "would-be", "-n", ns]).is_none());
    assert!(kubectl_get(&["configmap", &dry.inventory.name, "-n", ns]).is_none());

    // A client dry run validates and plans without sending anything.
    let client_dry = SyncOptions {
        client_dry_run: true,
        ..options(ns, "team/dry")
    };
    let planned = sync(&client, &client_dry, &files, &mut state).await;
    assert_eq!(planned.error, None);
    assert_eq!(planned.count(Action::Planned), 1);
    assert!(kubectl_get(&["configmap", "would-be", "-n", ns]).is_none());

    // The API server's own validation still runs: an invalid object fails.
    let invalid = [file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Not_Valid}\n",
    )];
    let outcome = sync(&client, &dry, &invalid, &mut state).await;
    assert!(outcome.error.expect("invalid").contains("Not_Valid"));
}

#[tokio::test]
async fn depends_on_waits_for_the_dependency_to_be_current() {
    let cluster = tether_testenv::shared();
    let ns = cluster
        .namespace("gitops-depends")
        .await
        .expect("namespace");
    let ns = ns.name();
    let client = cluster.client().expect("client");
    let mut state = AppliedState::default();
    // minReadySeconds keeps the Deployment short of Available for 3 s after
    // its pod runs; the ConfigMap (applied first by kind order otherwise)
    // must wait for it.
    let files = [file(
        "app.yaml",
        &format!(
            r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: app
  annotations:
    config.kubernetes.io/depends-on: apps/namespaces/{ns}/Deployment/db
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: db}}
spec:
  replicas: 1
  minReadySeconds: 3
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec: {{containers: [{{name: db, image: postgres}}]}}
"#
        ),
    )];
    let outcome = sync(&client, &options(ns, "team/depends"), &files, &mut state).await;
    assert_eq!(outcome.error, None, "{outcome:#?}");
    let created = |kind: &str, name: &str| {
        let o = kubectl_get(&[kind, name, "-n", ns]).expect("exists");
        let text = o["metadata"]["creationTimestamp"]
            .as_str()
            .expect("timestamp")
            .to_owned();
        text.parse::<k8s_openapi::jiff::Timestamp>()
            .expect("RFC 3339")
    };
    let gap = created("configmap", "app").duration_since(created("deployment", "db"));
    assert!(
        gap.as_secs() >= 3,
        "the ConfigMap was created {gap:?} after the Deployment, before it could be Available"
    );
    let deploy = kubectl_get(&["deployment", "db", "-n", ns]).expect("deployment");
    assert_eq!(deploy["status"]["availableReplicas"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dependency_that_never_becomes_current_stops_the_apply_at_its_timeout() {
    let cluster = tether_testenv::shared();
    let ns = cluster
        .namespace("gitops-stuck-dep")
        .await
        .expect("namespace");
    let ns = ns.name();
    let client = cluster.client().expect("client");
    let mut state = AppliedState::default();
    // The Deployment's pods can be scheduled nowhere: it never becomes
    // Available, so what depends on it is never applied.
    let files = [file(
        "app.yaml",
        &format!(
            r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: app
  annotations:
    config.kubernetes.io/depends-on: apps/namespaces/{ns}/Deployment/db
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: db}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      nodeSelector: {{tether.test/nowhere: "true"}}
      containers: [{{name: db, image: postgres}}]
"#
        ),
    )];
    let options = SyncOptions {
        reconcile_timeout: Duration::from_secs(4),
        ..options(ns, "team/stuck")
    };
    let phases = std::sync::Mutex::new(Vec::<(String, Vec<String>)>::new());
    let observe = |p: tether_gitops::progress::Progress<'_>| {
        let waiting = p
            .waiting
            .iter()
            .map(|&i| p.objects[i].object.to_string())
            .collect();
        phases
            .lock()
            .expect("lock")
            .push((p.phase.as_str().to_owned(), waiting));
    };
    let started = std::time::Instant::now();
    let outcome =
        tether_gitops::sync::sync_observed(&client, &options, &files, &mut state, &observe).await;
    let took = started.elapsed();
    let error = outcome.error.clone().expect("the sync fails");
    assert!(
        error.contains("reconcile_timeout 4s")
            && error.contains("Deployment.apps")
            && error.contains("db"),
        "{error}"
    );
    assert!(
        took < Duration::from_secs(30),
        "bounded by the timeout: {took:?}"
    );
    assert!(
        kubectl_get(&["configmap", "app", "-n", ns]).is_none(),
        "what depends on it is not applied"
    );
    let phases = phases.into_inner().expect("lock");
    assert_eq!(phases[0].0, "applying", "{phases:?}");
    assert!(
        phases
            .iter()
            .any(|(phase, waiting)| phase == "waiting_for_dependencies"
                && waiting.iter().any(|w| w.contains("db"))),
        "the wait was told with what it waits for: {phases:?}"
    );
    // The health of a list of objects comes from the kind they were
    // applied as, not from the list's items.
    let report = outcome
        .objects
        .iter()
        .find(|o| o.object.name == "db")
        .expect("db");
    assert_eq!(
        report.health,
        Some(tether_gitops::health::Health::InProgress),
        "{report:?}"
    );
}
