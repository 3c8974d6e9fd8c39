//! True reports, end to end: what `kas agent gitops` says of a set's health
//! is what the cluster's own objects say, at every report, while the set
//! converges; a Deployment that cannot progress ends Failed with its
//! reason; a Helm hook that never completes is reported at once and fails
//! the sync at `hook_timeout`, naming it.

use tether_e2e as support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use support::{Setup, commit, new_repo, wait};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";
const DEPLOYMENTS: usize = 200;

/// A node selector no node of the test cluster carries: pods stay Pending.
const NOWHERE: &str = "nodeSelector: {tether.test/nowhere: 'true'}";

fn deployment(name: &str, extra_spec: &str, pod_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 1\n{extra_spec}  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      {pod_spec}\n      containers: [{{name: app, image: nginx}}]\n---\n"
    )
}

/// 200 Deployments, 2 StatefulSets, 2 Jobs, a custom resource the test
/// created first (adopted) whose Ready condition it sets, and a Deployment
/// whose pods can never be scheduled, with a short progress deadline.
fn manifests(kind: &str) -> String {
    let mut text = String::new();
    for i in 0..DEPLOYMENTS {
        text.push_str(&deployment(&format!("d{i:03}"), "", ""));
    }
    text.push_str(&deployment(
        "stuck",
        "  progressDeadlineSeconds: 3\n",
        NOWHERE,
    ));
    for i in 0..2 {
        text.push_str(&format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: s{i}}}\nspec:\n  replicas: 2\n  serviceName: s{i}\n  selector: {{matchLabels: {{app: s{i}}}}}\n  template:\n    metadata: {{labels: {{app: s{i}}}}}\n    spec: {{containers: [{{name: app, image: nginx}}]}}\n---\n"
        ));
        text.push_str(&format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: j{i}}}\nspec:\n  template:\n    spec: {{restartPolicy: Never, containers: [{{name: app, image: busybox}}]}}\n---\n"
        ));
    }
    text.push_str(&format!(
        "apiVersion: tether.test/v1\nkind: Probe{kind}\nmetadata: {{name: p1}}\nspec: {{size: 1}}\n"
    ));
    text
}

fn crd(kind: &str) -> String {
    let lower = kind.to_lowercase();
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: probes{lower}.tether.test}}\nspec:\n  group: tether.test\n  scope: Namespaced\n  names: {{plural: probes{lower}, singular: probe{lower}, kind: Probe{kind}}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    subresources: {{status: {{}}}}\n    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n"
    )
}

fn cluster_kubectl(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut cmd = tether_testenv::shared().kubectl();
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().expect("kubectl ends");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a Deployment's own status says it is available (all of its
/// replicas updated, ready and available, its generation observed).
fn available(d: &serde_json::Value) -> bool {
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let s = &d["status"];
    s["observedGeneration"] == d["metadata"]["generation"]
        && s["updatedReplicas"].as_i64() == Some(want)
        && s["availableReplicas"].as_i64() == Some(want)
        && s["readyReplicas"].as_i64() == Some(want)
}

fn objects_by_name<'a>(
    sync: &'a serde_json::Value,
    kind: &str,
) -> HashMap<String, &'a serde_json::Value> {
    sync["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["kind"] == kind)
        .map(|o| (o["name"].as_str().unwrap_or_default().to_owned(), o))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn health_follows_the_cluster_as_it_converges() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-health").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || converge(&ns))
        .await
        .expect("test body");
}

fn converge(ns: &str) {
    let kind: String = ns
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<String>()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let lower = kind.to_lowercase();
    // The custom resource exists first, not Ready; agentk adopts it.
    cluster_kubectl(&["apply", "-f", "-"], Some(&crd(&kind)));
    cluster_kubectl(
        &[
            "wait",
            "--for=condition=Established",
            &format!("crd/probes{lower}.tether.test"),
        ],
        None,
    );
    cluster_kubectl(
        &["-n", ns, "apply", "-f", "-"],
        Some(&format!(
            "apiVersion: tether.test/v1\nkind: Probe{kind}\nmetadata: {{name: p1}}\nspec: {{size: 1}}\n"
        )),
    );
    let set_ready = |status: &str| {
        cluster_kubectl(
            &[
                "-n",
                ns,
                "patch",
                &format!("probes{lower}.tether.test"),
                "p1",
                "--subresource=status",
                "--type=merge",
                "-p",
                &format!(
                    r#"{{"status":{{"conditions":[{{"type":"Ready","status":"{status}","reason":"Test","message":"set by the test"}}]}}}}"#
                ),
            ],
            None,
        );
    };
    set_ready("False");

    let mut setup = Setup::start();
    setup.pod_namespace = ns.to_owned();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    inventory_policy: adopt_all\n    reconcile_timeout: 10m\n    paths: [{{glob: 'manifests/*.yaml'}}]\n"
    );
    let head = commit(
        &repo,
        &[
            (CONFIG, Some(&config)),
            ("manifests/set.yaml", Some(&manifests(&kind))),
        ],
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let _agentk = setup.agentk(&token);

    // Every report until the 200 Deployments are Current: each one it calls
    // Current is available by its own status when the report is read.
    let mut partial = 0;
    let mut reports = 0;
    let mut seen_states = HashSet::new();
    wait(
        "the 200 Deployments to be reported Current",
        Duration::from_secs(300),
        || {
            let Some(sync) = setup.sync_of(&head) else {
                return false;
            };
            seen_states.insert(format!(
                "{}/{}",
                sync["state"].as_str().unwrap_or_default(),
                sync["phase"].as_str().unwrap_or_default()
            ));
            let reported = objects_by_name(&sync, "Deployment");
            if reported.len() < DEPLOYMENTS + 1 {
                return false;
            }
            reports += 1;
            let live: serde_json::Value = serde_json::from_str(&cluster_kubectl(
                &["-n", ns, "get", "deployments", "-o", "json"],
                None,
            ))
            .expect("JSON");
            let live: HashMap<&str, &serde_json::Value> = live["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|d| (d["metadata"]["name"].as_str().unwrap_or_default(), d))
                .collect();
            let mut current = 0;
            for (name, o) in &reported {
                if o["health"] == "Current" {
                    let d = live.get(name.as_str()).expect("the Deployment exists");
                    assert!(
                        available(d),
                        "{name} reported Current while its status says otherwise: {}",
                        d["status"]
                    );
                    current += 1;
                }
            }
            assert_ne!(
                reported["stuck"]["health"], "Current",
                "a Deployment whose pods cannot be scheduled is never Current"
            );
            if current > 0 && current < DEPLOYMENTS {
                partial += 1;
            }
            current == DEPLOYMENTS
        },
    );
    eprintln!(
        "{reports} reports read, {partial} with some Deployments still in progress; states seen: {seen_states:?}"
    );
    assert!(
        seen_states.contains("synced/waiting_for_health"),
        "the set was reported applied and converging: {seen_states:?}"
    );

    // The rest of the set, as its own status says.
    let sync = setup.sync_of(&head).expect("report");
    for name in ["s0", "s1"] {
        let live = support::kubectl_get(&["statefulset", name, "-n", ns]).expect("StatefulSet");
        let health = &objects_by_name(&sync, "StatefulSet")[name]["health"];
        if *health == "Current" {
            assert_eq!(
                live["status"]["readyReplicas"], 2,
                "{name}: {}",
                live["status"]
            );
        }
    }
    let probe = &objects_by_name(&sync, &format!("Probe{kind}"))["p1"];
    assert_eq!(probe["health"], "InProgress", "Ready is False: {probe}");
    assert_eq!(sync["state"], "synced", "still waiting for p1: {sync}");

    // The stuck Deployment passes its progress deadline: Failed, with why.
    wait("stuck to be Failed", Duration::from_secs(120), || {
        setup
            .sync_of(&head)
            .is_some_and(|s| objects_by_name(&s, "Deployment")["stuck"]["health"] == "Failed")
    });
    let sync = setup.sync_of(&head).expect("report");
    let stuck = &objects_by_name(&sync, "Deployment")["stuck"];
    assert!(
        stuck["message"]
            .as_str()
            .is_some_and(|m| m.to_lowercase().contains("deadline")),
        "{stuck}"
    );

    // p1 becomes Ready: nothing is in progress any more, and the sync ends
    // failed on the stuck Deployment alone, everything else Current.
    set_ready("True");
    wait("the sync to end", Duration::from_secs(120), || {
        setup.sync_of(&head).is_some_and(|s| s["phase"] == "done")
    });
    let sync = setup.sync_of(&head).expect("report");
    assert_eq!(sync["state"], "failed", "{sync}");
    let error = sync["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("stuck") && error.contains("Failed"),
        "{error}"
    );
    let not_current: Vec<String> = sync["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter(|o| o["health"] != "Current")
        .map(|o| format!("{} {}: {}", o["kind"], o["name"], o["health"]))
        .collect();
    assert_eq!(
        not_current,
        ["\"Deployment\" \"stuck\": \"Failed\""],
        "{sync}"
    );
    assert!(
        sync["health"]
            .as_str()
            .is_some_and(|h| h.starts_with(&format!(
                "{}/{} Current",
                DEPLOYMENTS + 5,
                DEPLOYMENTS + 6
            )))
    );
}

fn hook_chart(repo: &Path, ns: &str, completes: bool) -> String {
    let pod_spec = if completes { "" } else { NOWHERE };
    let config = format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    hook_timeout: 8s\n    helm_charts:\n    - path: charts/app\n      release_name: app\n"
    );
    let hook = format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{{{ .Release.Name }}}}-migrate\n  annotations: {{helm.sh/hook: pre-install, helm.sh/hook-weight: '1'}}\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      {pod_spec}\n      containers: [{{name: migrate, image: busybox}}]\n"
    );
    commit(
        repo,
        &[
            (CONFIG, Some(&config)),
            (
                "charts/app/Chart.yaml",
                Some("apiVersion: v2\nname: app\nversion: 1.0.0\n"),
            ),
            ("charts/app/templates/hook.yaml", Some(&hook)),
            (
                "charts/app/templates/settings.yaml",
                Some(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: '{{ .Release.Name }}-settings'}\ndata: {a: '1'}\n",
                ),
            ),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hook_that_never_completes_is_told_at_once_and_fails_at_its_timeout() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-hooks").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || hooks(&ns))
        .await
        .expect("test body");
}

fn hooks(ns: &str) {
    let mut setup = Setup::start_with(&["--poll-interval", "2s"]);
    setup.pod_namespace = ns.to_owned();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let stuck = hook_chart(&repo, ns, false);
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let _agentk = setup.agentk(&token);

    // Told while it waits: syncing, waiting for the hook, naming the Job.
    wait(
        "the wait for the hook to be reported",
        Duration::from_secs(60),
        || {
            setup.sync_of(&stuck).is_some_and(|s| {
                s["state"] == "syncing"
                    && s["phase"] == "waiting_for_hooks"
                    && s["waiting"]
                        .as_array()
                        .is_some_and(|w| w.iter().any(|o| o["name"] == "app-migrate"))
            })
        },
    );
    assert!(
        support::kubectl_get(&["configmap", "app-settings", "-n", ns]).is_none(),
        "nothing after the hook is applied while it runs"
    );
    // Failed at the timeout, naming the Job.
    wait(
        "the hook timeout to fail the sync",
        Duration::from_secs(60),
        || {
            setup
                .sync_of(&stuck)
                .is_some_and(|s| s["state"] == "failed")
        },
    );
    let sync = setup.sync_of(&stuck).expect("report");
    let error = sync["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("hook_timeout 8s") && error.contains("app-migrate"),
        "{error}"
    );
    assert!(support::kubectl_get(&["configmap", "app-settings", "-n", ns]).is_none());

    // The same chart with a hook that completes syncs, and all is Current.
    let good = hook_chart(&repo, ns, true);
    wait(
        "the chart with a completing hook to sync",
        Duration::from_secs(120),
        || {
            setup
                .sync_of(&good)
                .is_some_and(|s| s["state"] == "synced" && s["phase"] == "done")
        },
    );
    let settings = support::kubectl_get(&["configmap", "app-settings", "-n", ns])
        .expect("applied after the hook");
    assert_eq!(settings["data"]["a"], "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_that_settles_while_kas_is_down_is_shown_once_it_is_back() {
    let cluster = tether_testenv::shared();
    let ns = cluster
        .namespace("e2e-health-down")
        .await
        .expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || settles_while_down(&ns))
        .await
        .expect("test body");
}

/// The agent's last report, made while kas was down, reaches the restarted
/// kas: it arrives before kas has read the refs for the new session, and
/// must wait for them rather than be dropped as unknown.
fn settles_while_down(ns: &str) {
    let mut setup = Setup::start();
    setup.pod_namespace = ns.to_owned();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    paths: [{{glob: 'manifests/*.yaml'}}]\n"
    );
    // Available only 15 s after its pod is ready.
    let slow = deployment("slow", "  minReadySeconds: 15\n", "");
    let head = commit(
        &repo,
        &[
            (CONFIG, Some(&config)),
            ("manifests/slow.yaml", Some(&slow)),
        ],
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let _agentk = setup.agentk(&token);
    wait(
        "the sync to wait for health",
        Duration::from_secs(60),
        || {
            setup
                .sync_of(&head)
                .is_some_and(|s| s["state"] == "synced" && s["phase"] == "waiting_for_health")
        },
    );
    setup.terminate_kas(Duration::from_secs(30));
    wait(
        "the Deployment to be available",
        Duration::from_secs(60),
        || support::kubectl_get(&["deployment", "slow", "-n", ns]).is_some_and(|d| available(&d)),
    );
    // agentk's watch tells it within a moment, and its report waits for a
    // session: kas comes back after that.
    std::thread::sleep(Duration::from_secs(3));
    setup.restart_kas();
    wait(
        "the settled health to be shown",
        Duration::from_secs(60),
        || {
            setup
                .sync_of(&head)
                .is_some_and(|s| s["state"] == "synced" && s["phase"] == "done")
        },
    );
}
