//! GitOps end to end: manifests committed with the git CLI reach the real
//! cluster through kas and agentk (processes), removed files are pruned, a
//! broken commit changes nothing, and every sync shows in
//! `GET /api/v1/agents/{name}/gitops`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{Setup, commit, new_repo, wait};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";

fn kubectl_get(args: &[&str]) -> Option<serde_json::Value> {
    let out = tether_testenv::shared()
        .kubectl()
        .arg("get")
        .args(args)
        .args(["-o", "json"])
        .output()
        .expect("kubectl runs");
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("JSON"))
}

fn sync_of(setup: &Setup, commit: &str) -> Option<serde_json::Value> {
    let text = setup.cli(&["agent", "gitops", "prod", "-o", "json"])?;
    let syncs: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    syncs
        .as_array()?
        .iter()
        .find(|s| s["commit"] == commit)
        .cloned()
}

fn all_current(sync: &serde_json::Value) -> bool {
    sync["objects"]
        .as_array()
        .is_some_and(|objects| objects.iter().all(|o| o["health"] == "Current"))
}

fn manifests(repo: &Path, ns: &str) -> String {
    let config = format!(
        "gitops:\n  manifest_projects:\n    - id: team/config\n      default_namespace: {ns}\n      paths:\n        - glob: 'manifests/**/*.{{yaml,yml}}'\n"
    );
    commit(
        repo,
        &[
            (CONFIG, Some(&config)),
            (
                "manifests/config.yaml",
                Some(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\n",
                ),
            ),
            (
                "manifests/app/web.yml",
                Some(
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n",
                ),
            ),
            ("docs/not-a-manifest.yaml", Some("this: is not selected\n")),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_in_git_reach_the_cluster_and_leave_it_when_removed() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-gitops").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || run(&ns))
        .await
        .expect("test body");
}

fn run(ns: &str) {
    let mut setup = Setup::start_with(&["--poll-interval", "3s"]);
    setup.pod_namespace = ns.to_owned();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let first = manifests(&repo, ns);
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let agentk = setup.agentk(&token);

    wait(
        "the first sync to be Current",
        Duration::from_secs(90),
        || sync_of(&setup, &first).is_some_and(|s| s["state"] == "synced" && all_current(&s)),
    );
    let report = sync_of(&setup, &first).expect("report");
    assert_eq!(report["applied"], 3, "{report}");
    let cm = kubectl_get(&["configmap", "settings", "-n", ns, "--show-managed-fields"])
        .expect("applied");
    assert_eq!(cm["data"]["mode"], "fast");
    assert_eq!(cm["metadata"]["managedFields"][0]["manager"], "agentk");
    let deploy = kubectl_get(&["deployment", "web", "-n", ns]).expect("applied");
    assert_eq!(deploy["status"]["availableReplicas"], 1);

    // Drift: a scaled Deployment and a deleted ConfigMap are put back
    // within 5 s, and the report says who did what.
    let kubectl = |args: &[&str]| {
        let out = tether_testenv::shared()
            .kubectl()
            .args(args)
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    kubectl(&["scale", "deployment", "web", "--replicas=3", "-n", ns]);
    let scaled = Instant::now();
    wait("the scale to be reverted", Duration::from_secs(5), || {
        kubectl_get(&["deployment", "web", "-n", ns]).is_some_and(|d| d["spec"]["replicas"] == 1)
    });
    eprintln!("scale reverted after {:?}", scaled.elapsed());
    kubectl(&["delete", "configmap", "extra", "-n", ns]);
    let deleted = Instant::now();
    wait(
        "the deleted ConfigMap to be recreated",
        Duration::from_secs(5),
        || kubectl_get(&["configmap", "extra", "-n", ns]).is_some(),
    );
    eprintln!("deletion reverted after {:?}", deleted.elapsed());
    wait("the drift to be reported", Duration::from_secs(5), || {
        sync_of(&setup, &first).is_some_and(|s| {
            let drift = s["drift"].as_array().cloned().unwrap_or_default();
            drift
                .iter()
                .any(|d| d["kind"] == "Deployment" && d["who"] == "kubectl")
                && drift
                    .iter()
                    .any(|d| d["kind"] == "ConfigMap" && d["what"] == "deleted")
        })
    });

    // A file removed: its objects are pruned, within moments of the refresh.
    let second = commit(&repo, &[("manifests/config.yaml", None)]);
    let pushed = Instant::now();
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait(
        "the ConfigMaps to be pruned",
        Duration::from_secs(30),
        || {
            kubectl_get(&["configmap", "settings", "-n", ns]).is_none()
                && kubectl_get(&["configmap", "extra", "-n", ns]).is_none()
        },
    );
    eprintln!("push to pruned: {:?}", pushed.elapsed());
    wait("the prune to be reported", Duration::from_secs(10), || {
        sync_of(&setup, &second).is_some_and(|s| s["pruned"] == 2)
    });

    // A broken commit changes nothing, and the report names the file.
    let broken = commit(
        &repo,
        &[(
            "manifests/app/web.yml",
            Some("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: [\n"),
        )],
    );
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait(
        "the failure to be reported",
        Duration::from_secs(30),
        || sync_of(&setup, &broken).is_some_and(|s| s["state"] == "failed"),
    );
    let report = sync_of(&setup, &broken).expect("report");
    assert!(
        report["error"]
            .as_str()
            .unwrap_or_default()
            .contains("manifests/app/web.yml"),
        "{report}"
    );
    assert!(
        kubectl_get(&["deployment", "web", "-n", ns]).is_some(),
        "still running"
    );

    // Push-to-applied: a new object is visible in the cluster.
    let fixed = commit(
        &repo,
        &[(
            "manifests/app/web.yml",
            Some(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {fixed: \"yes\"}\n",
            ),
        )],
    );
    let pushed = Instant::now();
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait("the new object to appear", Duration::from_secs(30), || {
        kubectl_get(&["configmap", "web", "-n", ns]).is_some()
    });
    eprintln!("push to applied: {:?}", pushed.elapsed());
    wait(
        "the deployment to be pruned",
        Duration::from_secs(30),
        || kubectl_get(&["deployment", "web", "-n", ns]).is_none(),
    );
    wait("the fix to be reported", Duration::from_secs(10), || {
        sync_of(&setup, &fixed).is_some_and(|s| s["state"] == "synced")
    });
    assert!(!agentk.log().contains(&token) && !setup.kas.log().contains(&token));
}
