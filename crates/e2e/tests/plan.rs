//! `kas agent plan`: what a commit would change in an agent's cluster,
//! before it is applied. Real kas and agentk, the real cluster: the plan
//! of a commit that scales a Deployment, adds a ConfigMap (from a chart
//! rendered on kas), removes one and leaves one alone names exactly those
//! changes, with the field that changes; the cluster is untouched by it;
//! with one dry run per object that may change; and a commit that cannot
//! render is refused with the reason.

use tether_e2e as support;

use std::time::Duration;

use support::{Setup, commit, kubectl_get, new_repo, wait};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";

fn deployment(replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: web, image: nginx}}]}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_names_every_change_of_a_commit_and_changes_nothing() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-plan").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || plan(&ns))
        .await
        .expect("test body");
}

fn plan(ns: &str) {
    let mut setup = Setup::start_with(&["--poll-interval", "60s"]);
    setup.pod_namespace = ns.to_owned();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    paths: [{{glob: 'manifests/*.yaml'}}]\n    helm_charts:\n    - path: chart\n      release_name: extra\n      values: {{enabled: false}}\n"
    );
    let chart_files = [
        (
            "chart/Chart.yaml",
            "apiVersion: v2\nname: extra\nversion: 1.0.0\n",
        ),
        (
            "chart/templates/cm.yaml",
            "{{- if .Values.enabled }}\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-chart}\ndata: {a: b}\n{{- end }}\n",
        ),
    ];
    let dep = deployment(1);
    let mut first: Vec<(&str, Option<&str>)> = vec![
        (CONFIG, Some(&config)),
        ("manifests/web.yaml", Some(&dep)),
        (
            "manifests/keep.yaml",
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stays}\ndata: {a: '1'}\n"),
        ),
        (
            "manifests/old.yaml",
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: leaving}\n"),
        ),
    ];
    first.extend(chart_files.iter().map(|(p, t)| (*p, Some(*t))));
    let synced = commit(&repo, &first);
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let _agentk = setup.agentk(&token);
    wait("the first sync", Duration::from_secs(90), || {
        let text = setup.cli(&["agent", "gitops", "prod", "-o", "json"]);
        text.is_some_and(|t| t.contains(&synced) && t.contains("\"synced\""))
    });

    // The next commit: scale web, drop `leaving`, turn the chart's
    // ConfigMap on. Not refreshed: the agent stays at the first commit.
    let config_on = config.replace("enabled: false", "enabled: true");
    let dep3 = deployment(3);
    let next = commit(
        &repo,
        &[
            (CONFIG, Some(&config_on)),
            ("manifests/web.yaml", Some(&dep3)),
            ("manifests/old.yaml", None),
        ],
    );
    let text = setup
        .cli(&["agent", "plan", "prod", "--commit", &next, "-o", "json"])
        .expect("plan");
    let plan: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let change = |kind: &str, name: &str| -> serde_json::Value {
        plan["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .find(|o| o["kind"] == kind && o["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{kind} {name} not in the plan: {plan:#}"))
    };
    let web = change("Deployment", "web");
    assert_eq!(web["change"], "update", "{web:#}");
    let fields: Vec<(&str, &str, &str)> = web["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap_or_default(),
                f["before"].as_str().unwrap_or("-"),
                f["after"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(fields, [("spec.replicas", "1", "3")], "{web:#}");
    assert_eq!(change("ConfigMap", "from-chart")["change"], "create");
    assert_eq!(change("ConfigMap", "leaving")["change"], "prune");
    assert_eq!(change("ConfigMap", "stays")["change"], "unchanged");
    assert_eq!(plan["counts"]["update"], 1, "{plan:#}");
    // Dry runs only for what may change: web and from-chart; `stays` is
    // exactly what agentk last applied.
    assert_eq!(plan["dry_runs"], 2, "{plan:#}");
    assert_eq!(plan["commit"], next);

    // The plan changed nothing.
    let live = kubectl_get(&["deployment", "web", "-n", ns]).expect("web");
    assert_eq!(live["spec"]["replicas"], 1);
    assert!(kubectl_get(&["configmap", "leaving", "-n", ns]).is_some());
    assert!(kubectl_get(&["configmap", "from-chart", "-n", ns]).is_none());

    // The same as a person reads it.
    let human = setup
        .cli(&["agent", "plan", "prod", "--commit", &next])
        .expect("plan");
    assert!(human.contains("~ Deployment.apps"), "{human}");
    assert!(human.contains("spec.replicas: 1 → 3"), "{human}");
    assert!(human.contains("- ConfigMap"), "{human}");

    // A commit that does not render: refused with the reason.
    let broken = commit(
        &repo,
        &[(
            "chart/templates/cm.yaml",
            Some("{{ .Values.missing.field }}\n"),
        )],
    );
    let refused = setup.cli_output(&["agent", "plan", "prod", "--commit", &broken]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("cannot be planned") && stderr.contains("helm chart extra (chart)"),
        "{stderr}"
    );
}
