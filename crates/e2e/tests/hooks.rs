//! Helm hook delete policies, through kas (which renders the chart) and
//! agentk (which honours the policies) into the real cluster, where the
//! controller-manager runs the hook Jobs and kwok completes their pods:
//! a `hook-succeeded` Job is deleted once it completed and not created
//! again while its content stays; a `before-hook-creation` Job whose pod
//! template changes (which no patch may do) is deleted and created again;
//! the plan says so before.

use tether_e2e as support;

use std::time::Duration;

use support::{Setup, commit, kubectl_get, new_repo, wait};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";

fn job(name: &str, hook: &str, policy: &str, image: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n  annotations:\n    helm.sh/hook: {hook}\n    helm.sh/hook-delete-policy: {policy}\nspec:\n  backoffLimit: 1\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: run, image: \"{image}\"}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn hook_delete_policies_replace_changed_hooks_and_delete_finished_ones() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-hooks").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || hooks(&ns))
        .await
        .expect("test body");
}

fn hooks(ns: &str) {
    let mut setup = Setup::start_with(&["--poll-interval", "60s"]);
    setup.pod_namespace = ns.to_owned();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    helm_charts:\n    - path: chart\n      release_name: app\n"
    );
    let migrate = job(
        "migrate",
        "pre-install,pre-upgrade",
        "before-hook-creation",
        "{{ .Values.image }}",
    );
    let notify = job(
        "notify",
        "post-install,post-upgrade",
        "hook-succeeded",
        "busybox:1",
    );
    let first = commit(
        &repo,
        &[
            (CONFIG, Some(config.as_str())),
            (
                "chart/Chart.yaml",
                Some("apiVersion: v2\nname: app\nversion: 1.0.0\n"),
            ),
            ("chart/values.yaml", Some("image: migrate:1\nsize: one\n")),
            ("chart/templates/migrate.yaml", Some(migrate.as_str())),
            ("chart/templates/notify.yaml", Some(notify.as_str())),
            (
                "chart/templates/settings.yaml",
                Some(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {size: '{{ .Values.size }}'}\n",
                ),
            ),
        ],
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let _agentk = setup.agentk(&token);
    let synced = |commit: &str| {
        wait(
            &format!("the sync of {commit}"),
            Duration::from_secs(120),
            || {
                setup
                    .sync_of(commit)
                    .is_some_and(|s| s["state"] == "synced")
            },
        );
        setup.sync_of(commit).expect("report")
    };
    let report = synced(&first);
    let object = |report: &serde_json::Value, name: &str| -> serde_json::Value {
        report["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .find(|o| o["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {report:#}"))
    };
    // The post hook ran (after the release), completed, and is gone.
    let notified = object(&report, "notify");
    assert!(
        notified["message"]
            .as_str()
            .unwrap_or_default()
            .contains("deleted: helm.sh/hook-delete-policy hook-succeeded"),
        "{notified:#}"
    );
    assert!(kubectl_get(&["job", "notify", "-n", ns]).is_none());
    let migrate_uid =
        kubectl_get(&["job", "migrate", "-n", ns]).expect("migrate")["metadata"]["uid"].clone();

    // A commit that changes only the ConfigMap: neither hook runs again.
    let second = commit(
        &repo,
        &[("chart/values.yaml", Some("image: migrate:1\nsize: two\n"))],
    );
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    let report = synced(&second);
    assert_eq!(
        object(&report, "notify")["action"],
        "unchanged",
        "{report:#}"
    );
    assert_eq!(object(&report, "migrate")["action"], "unchanged");
    assert!(
        kubectl_get(&["job", "notify", "-n", ns]).is_none(),
        "a finished hook is not created again, nor is its absence drift"
    );
    assert_eq!(
        kubectl_get(&["configmap", "settings", "-n", ns]).expect("settings")["data"]["size"],
        "two"
    );

    // A new image for the migration: its pod template cannot be patched.
    let third = commit(
        &repo,
        &[("chart/values.yaml", Some("image: migrate:2\nsize: two\n"))],
    );
    let plan = setup
        .cli(&["agent", "plan", "prod", "--commit", &third, "-o", "json"])
        .expect("plan");
    let plan: serde_json::Value = serde_json::from_str(&plan).expect("JSON");
    let planned = object(&plan, "migrate");
    assert_eq!(planned["change"], "update", "{plan:#}");
    assert!(
        planned["message"]
            .as_str()
            .unwrap_or_default()
            .contains("replaced"),
        "{planned:#}"
    );
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    let report = synced(&third);
    assert_eq!(
        object(&report, "migrate")["action"],
        "applied",
        "{report:#}"
    );
    let migrate = kubectl_get(&["job", "migrate", "-n", ns]).expect("migrate again");
    assert_ne!(migrate["metadata"]["uid"], migrate_uid, "created anew");
    assert_eq!(
        migrate["spec"]["template"]["spec"]["containers"][0]["image"],
        "migrate:2"
    );
}
