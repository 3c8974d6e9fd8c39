//! The test cluster is a real Kubernetes: objects created through kube-rs are
//! seen by the real kubectl, controllers and the scheduler act on them, kwok
//! nodes run their pods, RBAC and server-side apply behave as in production.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tether_testenv::wait_until;

const TIMEOUT: Duration = Duration::from_secs(90);

fn kubectl_json(args: &[&str]) -> Value {
    serde_json::from_str(&tether_testenv::shared().kubectl_ok(args)).expect("kubectl printed JSON")
}

#[tokio::test]
async fn deployment_becomes_available_on_simulated_nodes_and_namespace_deletion_completes() {
    let cluster = tether_testenv::shared();
    let client = cluster.client().expect("client");
    let ns = cluster
        .namespace("deployment-available")
        .await
        .expect("namespace");

    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "settings" },
        "data": { "greeting": "hello" },
    }))
    .expect("valid configmap");
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .expect("create configmap");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1" }] },
            },
        },
    }))
    .expect("valid deployment");
    deployments
        .create(&PostParams::default(), &deploy)
        .await
        .expect("create deployment");

    wait_until(
        "deployment web to be Available with 3 replicas",
        TIMEOUT,
        || async {
            let d = deployments.get("web").await?;
            let status = d.status.unwrap_or_default();
            let available = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True");
            Ok::<_, kube::Error>((available && status.available_replicas == Some(3)).then_some(()))
        },
    )
    .await
    .expect("deployment becomes available");

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let pods = pods
        .list(&Default::default())
        .await
        .expect("list pods")
        .items;
    assert_eq!(pods.len(), 3, "one pod per replica");
    for pod in &pods {
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        assert_eq!(
            phase.as_deref(),
            Some("Running"),
            "pod {:?}",
            pod.metadata.name
        );
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        assert!(
            cluster.node_names().contains(&node),
            "pod scheduled on a simulated node, got {node:?}"
        );
    }

    // The real kubectl, an independent client, sees the same objects.
    let deploy = kubectl_json(&["-n", ns.name(), "get", "deploy", "web", "-o", "json"]);
    assert_eq!(deploy["status"]["availableReplicas"], 3);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.invalid/web:1"
    );
    let cm = kubectl_json(&[
        "-n",
        ns.name(),
        "get",
        "configmap",
        "settings",
        "-o",
        "json",
    ]);
    assert_eq!(cm["data"]["greeting"], "hello");

    let name = ns.name().to_owned();
    ns.delete(cluster, TIMEOUT)
        .await
        .expect("namespace deletion completes");
    let out = cluster
        .kubectl()
        .args(["get", "namespace", &name])
        .output()
        .expect("kubectl runs");
    assert!(!out.status.success(), "namespace {name} still exists");
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
}

#[tokio::test]
async fn server_side_apply_reports_a_field_manager_conflict() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("ssa-conflict").await.expect("namespace");
    let configmaps: Api<ConfigMap> = Api::namespaced(cluster.client().expect("client"), ns.name());
    let desired = |value: &str| {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "shared" },
            "data": { "owner": value },
        })
    };

    configmaps
        .patch(
            "shared",
            &PatchParams::apply("alpha"),
            &Patch::Apply(desired("alpha")),
        )
        .await
        .expect("first manager applies");

    let err = configmaps
        .patch(
            "shared",
            &PatchParams::apply("beta"),
            &Patch::Apply(desired("beta")),
        )
        .await
        .expect_err("a second manager changing the same field conflicts");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 409, "{status:?}");
            assert_eq!(status.reason, "Conflict", "{status:?}");
            assert!(
                status.message.contains("alpha"),
                "conflict names the owner: {}",
                status.message
            );
        }
        other => panic!("expected an API conflict, got {other:?}"),
    }

    let forced = configmaps
        .patch(
            "shared",
            &PatchParams::apply("beta").force(),
            &Patch::Apply(desired("beta")),
        )
        .await
        .expect("forced apply takes ownership");
    assert_eq!(
        forced
            .data
            .unwrap_or_default()
            .get("owner")
            .map(String::as_str),
        Some("beta")
    );
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"beta".to_owned()), "{managers:?}");
}

#[tokio::test]
async fn kubectl_version_reports_the_pinned_server_version() {
    let cluster = tether_testenv::shared();
    let pinned = tether_testenv::pinned_kube_version().expect("version pinned");
    let version = kubectl_json(&["version", "-o", "json"]);
    assert_eq!(version["serverVersion"]["gitVersion"], pinned.as_str());
    let from_client = cluster
        .client()
        .expect("client")
        .apiserver_version()
        .await
        .expect("version");
    assert_eq!(from_client.git_version, pinned);

    let helm = std::process::Command::new(cluster.binaries().helm())
        .args(["version", "--short"])
        .output()
        .expect("helm runs");
    assert!(helm.status.success() && String::from_utf8_lossy(&helm.stdout).starts_with('v'));
}

#[tokio::test]
async fn rbac_grants_a_service_account_only_what_its_role_binding_allows() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("rbac").await.expect("namespace");
    let other = cluster.namespace("rbac-other").await.expect("namespace");
    let sa = format!("system:serviceaccount:{}:default", ns.name());
    let kubectl = |args: &[&str]| {
        let out = cluster.kubectl().args(args).output().expect("kubectl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    };
    let can_list_secrets = |namespace: &str| {
        kubectl(&[
            "auth", "can-i", "list", "secrets", "-n", namespace, "--as", &sa,
        ])
        .1
    };

    assert_eq!(
        can_list_secrets(ns.name()),
        "no",
        "a fresh service account has no rights"
    );
    let (ok, _) = kubectl(&[
        "create",
        "role",
        "secret-reader",
        "--verb=list",
        "--resource=secrets",
        "-n",
        ns.name(),
    ]);
    assert!(ok);
    let binding = format!("--serviceaccount={}:default", ns.name());
    let (ok, _) = kubectl(&[
        "create",
        "rolebinding",
        "read-secrets",
        "--role=secret-reader",
        &binding,
        "-n",
        ns.name(),
    ]);
    assert!(ok);
    wait_until("the role binding to take effect", TIMEOUT, || async {
        Ok::<_, String>((can_list_secrets(ns.name()) == "yes").then_some(()))
    })
    .await
    .expect("bound service account may list secrets");
    assert_eq!(
        can_list_secrets(other.name()),
        "no",
        "a Role grants nothing outside its namespace"
    );
}

#[tokio::test]
async fn every_cluster_process_is_running() {
    let cluster = tether_testenv::shared();
    cluster.check_processes().expect("no process has exited");
    let names: Vec<String> = cluster.processes().into_iter().map(|p| p.name).collect();
    for want in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}
