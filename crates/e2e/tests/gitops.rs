//! GitOps end to end: manifests committed with the git CLI reach the real
//! cluster through kas and agentk (processes), removed files are pruned, a
//! broken commit changes nothing, and every sync shows in
//! `GET /api/v1/agents/{name}/gitops`.

use tether_e2e as support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{Setup, commit, kubectl_get, new_repo, wait};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";

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
            ("manifests/platform.yaml", Some(&platform(ns))),
        ],
    )
}

/// A Namespace, a CRD with one of its custom resources in that namespace,
/// and a Service; named after `ns`, since Namespaces and CRDs are
/// cluster-wide.
fn platform(ns: &str) -> String {
    let kind: String = ns.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {ns}-extra}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: gadgets{kind}.tether.test}}
spec:
  group: tether.test
  scope: Namespaced
  names: {{plural: gadgets{kind}, singular: gadget{kind}, kind: Gadget{kind}}}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}
---
apiVersion: tether.test/v1
kind: Gadget{kind}
metadata: {{name: knob, namespace: {ns}-extra}}
spec: {{size: 3}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
"#
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
        || {
            setup
                .sync_of(&first)
                .is_some_and(|s| s["state"] == "synced" && all_current(&s))
        },
    );
    let report = setup.sync_of(&first).expect("report");
    assert_eq!(report["applied"], 7, "{report}");
    let kind: String = ns.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let extra = format!("{ns}-extra");
    let gadget = kubectl_get(&[&format!("gadgets{kind}.tether.test"), "knob", "-n", &extra])
        .expect("the custom resource, applied after its CRD was established");
    assert_eq!(gadget["spec"]["size"], 3);
    assert!(kubectl_get(&["service", "web", "-n", ns]).is_some());
    let cm = kubectl_get(&["configmap", "settings", "-n", ns, "--show-managed-fields"])
        .expect("applied");
    assert_eq!(cm["data"]["mode"], "fast");
    assert_eq!(cm["metadata"]["managedFields"][0]["manager"], "agentk");
    let deploy = kubectl_get(&["deployment", "web", "-n", ns]).expect("applied");
    assert_eq!(deploy["status"]["availableReplicas"], 1);

    // Drift: a scaled Deployment and a deleted ConfigMap are put back
    // within 5 s, and the report says who did what.
    let kubectl = |args: &[&str]| tether_testenv::shared().kubectl_ok(args);
    kubectl(&["scale", "deployment", "web", "--replicas=3", "-n", ns]);
    let scaled = Instant::now();
    wait("the scale to be reverted", Duration::from_secs(5), || {
        kubectl_get(&["deployment", "web", "-n", ns]).is_some_and(|d| d["spec"]["replicas"] == 1)
    });
    eprintln!("scale reverted after {:?}", scaled.elapsed());
    // kubectl edit, with an editor that changes a field git owns.
    let edit = tether_testenv::shared()
        .kubectl()
        .args(["edit", "configmap", "settings", "-n", ns])
        .env("KUBE_EDITOR", "sed -i s/mode:\\ fast/mode:\\ slow/")
        .output()
        .expect("kubectl edit runs");
    assert!(
        edit.status.success(),
        "{}",
        String::from_utf8_lossy(&edit.stderr)
    );
    let edited = Instant::now();
    wait("the edit to be reverted", Duration::from_secs(5), || {
        kubectl_get(&["configmap", "settings", "-n", ns])
            .is_some_and(|c| c["data"]["mode"] == "fast")
    });
    eprintln!("edit reverted after {:?}", edited.elapsed());
    kubectl(&["delete", "configmap", "extra", "-n", ns]);
    let deleted = Instant::now();
    wait(
        "the deleted ConfigMap to be recreated",
        Duration::from_secs(5),
        || kubectl_get(&["configmap", "extra", "-n", ns]).is_some(),
    );
    eprintln!("deletion reverted after {:?}", deleted.elapsed());
    wait("the drift to be reported", Duration::from_secs(5), || {
        setup.sync_of(&first).is_some_and(|s| {
            let drift = s["drift"].as_array().cloned().unwrap_or_default();
            drift
                .iter()
                .any(|d| d["kind"] == "Deployment" && d["who"] == "kubectl")
                && drift
                    .iter()
                    .any(|d| d["kind"] == "ConfigMap" && d["what"] == "deleted")
                && drift
                    .iter()
                    .any(|d| d["name"] == "settings" && d["who"] == "kubectl-edit")
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
        setup.sync_of(&second).is_some_and(|s| s["pruned"] == 2)
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
        || {
            setup
                .sync_of(&broken)
                .is_some_and(|s| s["state"] == "failed")
        },
    );
    let report = setup.sync_of(&broken).expect("report");
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
        setup
            .sync_of(&fixed)
            .is_some_and(|s| s["state"] == "synced")
    });
    assert!(!agentk.log().contains(&token) && !setup.kas.log().contains(&token));
}

/// `count` ConfigMaps named `<prefix>-<i>`, in five files under `manifests/`.
fn config_maps(prefix: &str, count: usize) -> Vec<(String, String)> {
    (0..5)
        .map(|f| {
            let text: Vec<String> = (f..count)
                .step_by(5)
                .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {prefix}-{i}}}\ndata: {{i: \"{i}\"}}\n"))
                .collect();
            (format!("manifests/{prefix}-{f}.yaml"), text.join("---\n"))
        })
        .collect()
}

/// The ConfigMaps in `ns` that the test's inventory owns, by name.
fn owned_config_maps(ns: &str) -> std::collections::BTreeSet<String> {
    let list = kubectl_get(&["configmaps", "-n", ns]).expect("list");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|cm| cm["metadata"]["annotations"]["config.k8s.io/owning-inventory"].is_string())
        .filter(|cm| cm["metadata"]["labels"]["cli-utils.sigs.k8s.io/inventory-id"].is_null())
        .filter_map(|cm| cm["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_mid_sync_ends_in_exactly_the_git_state() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-kill").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || killed_mid_sync(&ns))
        .await
        .expect("test body");
}

/// kas (polling slowly: the tests refresh), a repository, and the agent
/// config that syncs `manifests/*.yaml` into `ns`, not yet committed.
fn kas_with_repo(ns: &str) -> (Setup, std::path::PathBuf, String) {
    let mut setup = Setup::start_with(&["--poll-interval", "60s"]);
    setup.pod_namespace = ns.to_owned();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n    - id: team/config\n      default_namespace: {ns}\n      paths: [{{glob: 'manifests/*.yaml'}}]\n"
    );
    (setup, repo, config)
}

fn killed_mid_sync(ns: &str) {
    let (setup, repo, config) = kas_with_repo(ns);
    let a = config_maps("a", 500);
    let mut changes: Vec<(&str, Option<&str>)> = vec![(CONFIG, Some(&config))];
    changes.extend(a.iter().map(|(p, t)| (p.as_str(), Some(t.as_str()))));
    let first = commit(&repo, &changes);
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let mut agentk = setup.agentk(&token);
    wait("the first 500 to sync", Duration::from_secs(120), || {
        setup
            .sync_of(&first)
            .is_some_and(|s| s["state"] == "synced")
    });
    assert_eq!(owned_config_maps(ns).len(), 500);

    // Replace all 500 with 500 others, and kill agentk as soon as the
    // cluster shows the sync under way.
    let b = config_maps("b", 500);
    let mut changes: Vec<(&str, Option<&str>)> =
        a.iter().map(|(p, _)| (p.as_str(), None)).collect();
    changes.extend(b.iter().map(|(p, t)| (p.as_str(), Some(t.as_str()))));
    let second = commit(&repo, &changes);
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait("the second sync to start", Duration::from_secs(60), || {
        owned_config_maps(ns).iter().any(|n| n.starts_with("b-"))
    });
    let _ = agentk.child.kill();
    let _ = agentk.child.wait();
    let midway = owned_config_maps(ns);
    let (a_left, b_done) = (
        midway.iter().filter(|n| n.starts_with("a-")).count(),
        midway.iter().filter(|n| n.starts_with("b-")).count(),
    );
    eprintln!("killed with {a_left} old and {b_done} new ConfigMaps in the cluster");
    assert!(
        a_left > 0 || b_done < 500,
        "the kill came after the sync finished"
    );

    let _restarted = setup.agentk(&token);
    wait(
        "the restarted agent to sync",
        Duration::from_secs(120),
        || {
            setup
                .sync_of(&second)
                .is_some_and(|s| s["state"] == "synced")
        },
    );
    let want: std::collections::BTreeSet<String> = (0..500).map(|i| format!("b-{i}")).collect();
    wait(
        "the cluster to hold exactly git's objects",
        Duration::from_secs(60),
        || owned_config_maps(ns) == want,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gives_a_clear_error_and_changes_nothing() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-bad").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || bad_input(&ns))
        .await
        .expect("test body");
}

fn bad_input(ns: &str) {
    let (setup, repo, config) = kas_with_repo(ns);
    let good = commit(
        &repo,
        &[
            (CONFIG, Some(&config)),
            (
                "manifests/ok.yaml",
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n"),
            ),
        ],
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let _agentk = setup.agentk(&token);
    wait("the good sync", Duration::from_secs(60), || {
        setup.sync_of(&good).is_some_and(|s| s["state"] == "synced")
    });
    let refresh = || {
        setup
            .cli(&["project", "refresh", "team/config"])
            .expect("refresh");
    };
    let failed_with = |commit: &str, needle: &str| {
        wait(
            &format!("{needle} to be reported"),
            Duration::from_secs(30),
            || {
                setup.sync_of(commit).is_some_and(|s| {
                    s["state"] == "failed"
                        && s["error"].as_str().unwrap_or_default().contains(needle)
                })
            },
        );
        assert!(
            kubectl_get(&["configmap", "ok", "-n", ns]).is_some(),
            "still there"
        );
    };

    // A billion laughs.
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        bomb.push_str(&format!(
            "{name}: &{name} [{}]\n",
            vec![format!("*{prev}"); 9].join(",")
        ));
    }
    let bombed = commit(&repo, &[("manifests/bomb.yaml", Some(&bomb))]);
    refresh();
    failed_with(&bombed, "manifests/bomb.yaml");

    // A 100 MB file: kas refuses it before reading it.
    let big = "#".repeat(100 << 20);
    let huge = commit(
        &repo,
        &[
            ("manifests/bomb.yaml", None),
            ("manifests/big.yaml", Some(&big)),
        ],
    );
    refresh();
    failed_with(&huge, "manifests/big.yaml");

    // A glob that leaves the repository: GitLab's agent accepts the config
    // (so ci_access and the rest keep working), and kas warns; the sync of
    // that manifest project fails naming the glob, and nothing is pruned.
    let escaping = config.replace("manifests/*.yaml", "../*.yaml");
    let bad_glob = commit(
        &repo,
        &[("manifests/big.yaml", None), (CONFIG, Some(&escaping))],
    );
    refresh();
    failed_with(&bad_glob, "'..' segment");
    let warnings = setup.agent("prod")["config"]["warnings"].to_string();
    assert!(warnings.contains("'..'"), "{warnings}");
}
