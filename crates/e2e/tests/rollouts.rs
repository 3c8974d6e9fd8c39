//! Fleet rollouts with real agentk processes on the test cluster: one
//! canary and four prod agents, each in its own namespace, follow one
//! manifest project whose `.tether/rollout.yaml` sends each commit to the
//! canary first and to prod after the soak, two at a time. A good commit
//! goes wave by wave; a commit that fails on the canary is rolled back
//! there with prod never touched; pause, promote, resume, abort and pins
//! do what they say; `kas rollout wait` and `kas agent wait` exit with
//! their codes.

use tether_e2e as support;

use std::time::Duration;

use support::receiver::Receiver;
use support::rollouts::{commit_configs, config_map, namespaces, version_in};
use support::{Proc, Setup, commit, new_repo, wait};

const AGENTS: [(&str, &str); 5] = [
    ("canary", "canary"),
    ("prod-1", "prod"),
    ("prod-2", "prod"),
    ("prod-3", "prod"),
    ("prod-4", "prod"),
];

fn rollout_file(soak: &str) -> String {
    format!(
        "waves:\n  - name: canary\n    agents: {{match_labels: {{env: canary}}}}\n    soak: {soak}\n  - name: prod\n    agents: {{match_labels: {{env: prod}}}}\n    max_parallel: 2\n    soak: {soak}\non_failure: rollback\nagent_timeout: 60s\n"
    )
}

/// A Deployment no node fits, whose progress deadline passes at once: the
/// controller marks it ProgressDeadlineExceeded, a Failed object.
const STUCK: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: stuck}\nspec:\n  progressDeadlineSeconds: 1\n  selector: {matchLabels: {app: stuck}}\n  template:\n    metadata: {labels: {app: stuck}}\n    spec:\n      nodeSelector: {tether.dev/no-such-node: \"true\"}\n      containers: [{name: app, image: registry.example/app:1}]\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_goes_wave_by_wave_fails_back_on_the_canary_and_obeys_its_operators() {
    let namespaces = namespaces("e2e-rollout", &AGENTS).await;
    tokio::task::spawn_blocking(move || run(&namespaces))
        .await
        .expect("test body");
}

fn versions(namespaces: &[String]) -> Vec<Option<String>> {
    namespaces.iter().map(|ns| version_in(ns)).collect()
}

fn rollout(setup: &Setup) -> serde_json::Value {
    let text = setup
        .cli(&["rollout", "show", "team/apps", "-o", "json"])
        .expect("rollout shown");
    serde_json::from_str(&text).expect("JSON")
}

fn run(namespaces: &[String]) {
    let setup = Setup::start_with(&["--poll-interval", "1s"]);
    let statuses = Receiver::start();
    let notices = Receiver::start();
    setup.set_notification_secret("team/audit", &notices.url, Some("0123456789abcdef"));
    let config = setup.dir.path().join("config");
    new_repo(&config);
    commit_configs(
        &config,
        &AGENTS,
        namespaces,
        "notifications:\n- provider: generic\n  url_secret: team/audit\n  events: [rollout_started, wave_passed, rollout_halted, rollout_rolled_back, rollout_completed]\n",
    );
    let apps = setup.dir.path().join("apps");
    new_repo(&apps);
    let rollout_yaml = rollout_file("3s");
    let first = commit(
        &apps,
        &[
            (".tether/rollout.yaml", Some(rollout_yaml.as_str())),
            ("manifests/web.yaml", Some(config_map("1").as_str())),
        ],
    );
    setup
        .cli(&[
            "project",
            "add",
            "team/config",
            "--url",
            config.to_str().expect("utf-8"),
        ])
        .expect("project");
    setup
        .cli(&[
            "project",
            "add",
            "team/apps",
            "--url",
            apps.to_str().expect("utf-8"),
        ])
        .expect("project");
    // Every agent names the same destination: each event reaches it once.
    let token_file = setup.dir.path().join("status-token");
    std::fs::write(&token_file, "t0ken").expect("token file");
    setup
        .cli(&[
            "project",
            "statuses",
            "set",
            "team/apps",
            "--provider",
            "github",
            "--api-url",
            &statuses.url,
            "--repository",
            "team/apps",
            "--token-file",
            token_file.to_str().expect("utf-8"),
        ])
        .expect("status target");
    let mut agents: Vec<Proc> = Vec::new();
    for ((name, env), ns) in AGENTS.iter().zip(namespaces) {
        setup
            .cli(&[
                "agent",
                "create",
                name,
                "--project",
                "team/config",
                "--label",
                &format!("env={env}"),
            ])
            .expect("agent");
        let created = setup
            .cli(&["token", "create", name, "--name", "first"])
            .expect("token");
        let token = created
            .lines()
            .last()
            .expect("token line")
            .trim()
            .to_owned();
        let probes = support::free_port();
        let cmd = support::agentk_command(&support::AgentkSpec {
            token: &token,
            token_file: &setup.dir.path().join(format!("token-{name}")),
            address: &setup.agent_addr,
            ca: &setup.dir.path().join("kas/agent-ca.crt"),
            probes,
            namespace: ns,
            pod: &format!("agentk-{name}"),
        });
        agents.push(Proc::spawn(
            cmd,
            setup.dir.path().join(format!("agentk-{name}.log")),
        ));
    }
    let listed = setup.cli(&["agent", "list"]).expect("agents listed");
    assert!(
        listed.contains("env=canary") && listed.contains("env=prod"),
        "{listed}"
    );

    // The first commit reaches everyone (at first sight, or through the
    // waves once the agents are known).
    wait(
        "every agent on the first commit",
        Duration::from_secs(120),
        || {
            versions(namespaces)
                .iter()
                .all(|v| v.as_deref() == Some("1"))
        },
    );
    wait("the first rollout to end", Duration::from_secs(60), || {
        let r = rollout(&setup);
        r["commit"] == first.as_str() && r["phase"] == "completed"
            || setup.cli(&["rollout", "show", "team/apps"]).is_none()
    });

    // A good commit: the canary first, prod after its soak, two at once.
    let second = commit(
        &apps,
        &[("manifests/web.yaml", Some(config_map("2").as_str()))],
    );
    wait(
        "the canary on the second commit",
        Duration::from_secs(60),
        || version_in(&namespaces[0]).as_deref() == Some("2"),
    );
    assert!(
        versions(&namespaces[1..])
            .iter()
            .all(|v| v.as_deref() == Some("1")),
        "prod waits for the canary's soak: {:?}",
        versions(namespaces)
    );
    let mut most_updating = 0;
    wait(
        "prod on the second commit",
        Duration::from_secs(120),
        || {
            let r = rollout(&setup);
            let updating = r["agents"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|a| a["phase"] == "updating" && a["wave"] == "prod")
                        .count()
                })
                .unwrap_or_default();
            most_updating = most_updating.max(updating);
            r["phase"] == "completed" && r["commit"] == second.as_str()
        },
    );
    assert!(
        setup.metric("tether_kas_rollout_waves_passed_total") >= 2.0
            && setup.metric("tether_kas_rollouts_started_total") >= 1.0,
        "the rollout's metrics"
    );
    assert!(
        most_updating <= 2,
        "at most two prod agents at once: saw {most_updating}"
    );
    assert_eq!(
        versions(namespaces),
        vec![Some("2".to_owned()); 5],
        "every agent on the second commit"
    );
    let waited = setup.cli_output(&[
        "rollout",
        "wait",
        "team/apps",
        "--commit",
        &second,
        "--timeout",
        "30s",
    ]);
    assert_eq!(waited.status.code(), Some(0), "{waited:?}");
    let waited = setup.cli_output(&[
        "agent",
        "wait",
        "prod-3",
        "--project",
        "team/apps",
        "--commit",
        &second,
        "--timeout",
        "30s",
    ]);
    assert_eq!(waited.status.code(), Some(0), "{waited:?}");
    // A CI job waits with its project's token, not the admin's.
    let ci =
        support::last_line(setup.cli(&["project", "token", "create", "team/apps", "--name", "ci"]));
    let wait_as = |token: &str, timeout: &str| {
        std::process::Command::new(support::kas_binary())
            .args([
                "rollout",
                "wait",
                "team/apps",
                "--commit",
                &second,
                "--timeout",
                timeout,
            ])
            .args(["--server", &setup.api])
            .env("KAS_PROJECT_TOKEN", token)
            .env_remove("KAS_ADMIN_TOKEN")
            .output()
            .expect("CLI runs")
    };
    let waited = wait_as(&ci, "30s");
    assert_eq!(waited.status.code(), Some(0), "{waited:?}");
    setup
        .cli(&["project", "add", "team/other", "--url", "/srv/git/none"])
        .expect("project");
    let other = support::last_line(setup.cli(&[
        "project",
        "token",
        "create",
        "team/other",
        "--name",
        "ci",
    ]));
    let refused = wait_as(&other, "5s");
    assert_eq!(
        refused.status.code(),
        Some(1),
        "another project's token: {refused:?}"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{refused:?}"
    );
    wait(
        "the rollout's commit status and notices",
        Duration::from_secs(30),
        || {
            let posted = statuses.requests().iter().any(|r| {
                r.target.contains(&second)
                    && r.json()["context"] == "tether/rollout"
                    && r.json()["state"] == "success"
            });
            let told: Vec<String> = notices
                .requests()
                .iter()
                .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                .filter(|body| body.contains(&second[..12]))
                .collect();
            posted
                && ["rollout started", "wave passed", "rollout completed"]
                    .iter()
                    .all(|e| told.iter().any(|t| t.contains(e)))
        },
    );
    let completed = notices
        .requests()
        .iter()
        .filter(|r| {
            let body = String::from_utf8_lossy(&r.body);
            body.contains("rollout completed") && body.contains(&second[..12])
        })
        .count();
    assert_eq!(
        completed, 1,
        "five agents name the destination; it hears once"
    );

    // A commit that changes no file an agent receives starts no rollout:
    // every agent is given it at once.
    let readme = commit(&apps, &[("README.md", Some("# apps\n"))]);
    wait(
        "the commit given to every agent",
        Duration::from_secs(60),
        || {
            let r = rollout(&setup);
            r["commit"] == readme.as_str() && r["phase"] == "unneeded"
        },
    );
    let waited = setup.cli_output(&[
        "rollout",
        "wait",
        "team/apps",
        "--commit",
        &readme,
        "--timeout",
        "10s",
    ]);
    assert_eq!(waited.status.code(), Some(0), "{waited:?}");

    // A commit whose Deployment fails its health on the canary (no node
    // fits it; its progress deadline passes): rolled back there, what it
    // added pruned, prod never given it.
    let third = commit(
        &apps,
        &[
            ("manifests/web.yaml", Some(config_map("3").as_str())),
            (
                "manifests/extra.yaml",
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\n"),
            ),
            ("manifests/stuck.yaml", Some(STUCK)),
        ],
    );
    let waited = setup.cli_output(&[
        "rollout",
        "wait",
        "team/apps",
        "--commit",
        &third,
        "--timeout",
        "90s",
    ]);
    assert_eq!(
        waited.status.code(),
        Some(3),
        "rolled back: {}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(
        String::from_utf8_lossy(&waited.stderr).contains("canary"),
        "{waited:?}"
    );
    let r = rollout(&setup);
    assert_eq!(r["phase"], "rolled_back", "{r}");
    assert_eq!(r["failure"]["agent"], "canary", "{r}");
    assert_eq!(
        r["failure"]["object"],
        format!("Deployment {}/stuck", namespaces[0]),
        "{r}"
    );
    wait(
        "the canary back on the commit it had (the second's files)",
        Duration::from_secs(60),
        || {
            setup
                .sync_of_agent("canary", &readme)
                .is_some_and(|s| s["state"] == "synced")
                && version_in(&namespaces[0]).as_deref() == Some("2")
        },
    );
    assert_eq!(
        versions(namespaces),
        vec![Some("2".to_owned()); 5],
        "prod never left it"
    );
    // Back exactly: what the commit added is gone, and kubectl finds
    // nothing to change against the commit the canary had.
    wait(
        "what the rolled back commit added pruned",
        Duration::from_secs(60),
        || {
            support::kubectl_get(&["configmap", "extra", "-n", &namespaces[0]]).is_none()
                && support::kubectl_get(&["deployment", "stuck", "-n", &namespaces[0]]).is_none()
        },
    );
    // The old commit's file as agentk applies it: with the annotation
    // naming its inventory, which agentk adds to every object.
    let live = support::kubectl_get(&["configmap", "web", "-n", &namespaces[0]]).expect("web");
    let inventory = live["metadata"]["annotations"]["config.k8s.io/owning-inventory"]
        .as_str()
        .expect("the inventory annotation")
        .to_owned();
    let old = setup.dir.path().join("old-web.yaml");
    std::fs::write(
        &old,
        config_map("2").replace(
            "metadata: {name: web}",
            &format!("metadata: {{name: web, annotations: {{config.k8s.io/owning-inventory: {inventory}}}}}"),
        ),
    )
    .expect("file");
    let diff = support::kubectl(tether_testenv::shared().kubeconfig_path())
        .args([
            "diff",
            "--server-side",
            "--field-manager=agentk",
            "-n",
            &namespaces[0],
            "-f",
        ])
        .arg(&old)
        .output()
        .expect("kubectl runs");
    assert_eq!(diff.status.code(), Some(0), "kubectl diff: {diff:?}");
    let prod_syncs = setup
        .cli(&["agent", "gitops", "prod-1", "-o", "json"])
        .expect("syncs");
    assert!(
        !prod_syncs.contains(&third),
        "prod never saw the failed commit: {prod_syncs}"
    );
    // The plan says which commit the agent is on, and why.
    let plan = setup
        .cli(&[
            "agent",
            "plan",
            "prod-1",
            "--project",
            "team/apps",
            "--commit",
            &second,
        ])
        .expect("plan");
    assert!(
        plan.contains(&format!(
            "rollout of {} (rolled_back): waiting",
            &third[..12]
        )),
        "{plan}"
    );
    let waited = setup.cli_output(&[
        "agent",
        "wait",
        "prod-1",
        "--project",
        "team/apps",
        "--commit",
        &third,
        "--timeout",
        "10s",
    ]);
    assert_eq!(waited.status.code(), Some(3), "{waited:?}");

    // Pin one prod agent to the first commit: it goes back there, and
    // the next rollout skips it.
    let unknown = setup.cli_output(&[
        "agent",
        "pin",
        "prod-4",
        "--project",
        "team/apps",
        "--commit",
        &"f".repeat(40),
    ]);
    assert!(
        !unknown.status.success()
            && String::from_utf8_lossy(&unknown.stderr).contains("is not a commit of team/apps"),
        "a commit the repository does not hold: {unknown:?}"
    );
    setup
        .cli(&[
            "agent",
            "pin",
            "prod-4",
            "--project",
            "team/apps",
            "--commit",
            &first,
        ])
        .expect("pinned");
    wait("prod-4 on its pin", Duration::from_secs(60), || {
        version_in(&namespaces[4]).as_deref() == Some("1")
    });

    // A good commit with a long soak: paused, promoted, resumed, aborted.
    let slow = rollout_file("10m");
    let fourth = commit(
        &apps,
        &[
            ("manifests/web.yaml", Some(config_map("4").as_str())),
            ("manifests/extra.yaml", None),
            ("manifests/stuck.yaml", None),
            (".tether/rollout.yaml", Some(slow.as_str())),
        ],
    );
    wait(
        "the canary soaking the fourth commit",
        Duration::from_secs(60),
        || {
            let r = rollout(&setup);
            r["commit"] == fourth.as_str() && r["waves"][0]["phase"] == "soaking"
        },
    );
    assert_eq!(version_in(&namespaces[0]).as_deref(), Some("4"));
    let r = rollout(&setup);
    let pinned = r["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "prod-4"))
        .cloned()
        .expect("prod-4 listed");
    assert_eq!(pinned["phase"], "pinned", "{pinned}");
    setup
        .cli(&["rollout", "pause", "team/apps"])
        .expect("paused");
    setup
        .cli(&["rollout", "promote", "team/apps"])
        .expect("promoted");
    std::thread::sleep(Duration::from_secs(3));
    let r = rollout(&setup);
    assert_eq!(r["paused"], true, "{r}");
    assert_eq!(
        r["waves"][0]["phase"], "soaking",
        "paused: the promotion waits"
    );
    assert!(
        versions(&namespaces[1..4])
            .iter()
            .all(|v| v.as_deref() == Some("2"))
    );
    let shown = setup.cli(&["rollout", "show", "team/apps"]).expect("shown");
    assert!(
        shown.contains("(paused)")
            && shown.contains("WAVE")
            && shown.contains("pinned to")
            && shown
                .lines()
                .any(|l| l.starts_with("canary") && l.contains("soaking")),
        "{shown}"
    );
    let listed = setup.cli(&["rollout", "list"]).expect("listed");
    assert!(
        listed.contains("team/apps") && listed.contains("running"),
        "{listed}"
    );
    // The web UI's Rollouts page shows the same, and updates live; the
    // admin sets an agent's labels there.
    let token = std::fs::read_to_string(setup.dir.path().join("kas/admin-token")).expect("token");
    let api: std::net::SocketAddr = setup
        .api
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let cookie = support::ui_client::sign_in(api, token.trim()).expect("signed in");
    let (status, page) = support::ui_client::get(api, "/ui/rollouts", &cookie).expect("page");
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("data-project=\"team/apps\"") && page.contains("(paused)"),
        "{page}"
    );
    let pinned_row = page
        .split("data-agent=\"prod-4\"")
        .nth(1)
        .unwrap_or_default();
    assert!(pinned_row.contains("pinned"), "{page}");
    let (_, agent_page) = support::ui_client::get(api, "/ui/agents/prod-1", &cookie).expect("page");
    let csrf = agent_page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form's csrf")
        .to_owned();
    let (status, _, _) = support::ui_client::request(
        api,
        "POST",
        "/ui/agents/prod-1/labels",
        &cookie,
        &format!("csrf={csrf}&labels=env%3Dprod%2Ctier%3Dweb"),
    )
    .expect("labels set");
    assert_eq!(status, 303, "the form redirects back");
    let shown = setup.cli(&["agent", "show", "prod-1"]).expect("agent");
    assert!(shown.contains("env=prod,tier=web"), "{shown}");
    let told =
        support::ui_client::changed_event_after(api, &cookie, Duration::from_secs(20), || {
            setup
                .cli(&["rollout", "resume", "team/apps"])
                .expect("resumed");
        })
        .expect("event stream");
    assert!(told, "the page is told the rollout moved");
    wait(
        "prod agents given the fourth commit",
        Duration::from_secs(60),
        || {
            versions(&namespaces[1..4])
                .iter()
                .any(|v| v.as_deref() == Some("4"))
        },
    );
    setup
        .cli(&["rollout", "abort", "team/apps"])
        .expect("aborted");
    wait(
        "every agent the rollout reached back on the second commit",
        Duration::from_secs(90),
        || {
            versions(&namespaces[..4])
                .iter()
                .all(|v| v.as_deref() == Some("2"))
        },
    );
    assert_eq!(
        version_in(&namespaces[4]).as_deref(),
        Some("1"),
        "the pin held"
    );
    let r = rollout(&setup);
    assert_eq!(r["phase"], "rolled_back", "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap_or_default()
            .contains("aborted"),
        "{r}"
    );

    // Unpinned, prod-4 follows the project again: the commit it was last
    // given by a rollout.
    setup
        .cli(&["agent", "unpin", "prod-4", "--project", "team/apps"])
        .expect("unpinned");
    wait(
        "prod-4 back on the second commit",
        Duration::from_secs(60),
        || version_in(&namespaces[4]).as_deref() == Some("2"),
    );
    assert!(
        statuses.requests().iter().any(|r| r.target.contains(&third)
            && r.json()["context"] == "tether/rollout"
            && r.json()["state"] == "failure"),
        "the failed commit's status"
    );
    // A newer commit during a rollout supersedes it and starts again from
    // the first wave; a wait for the older one ends with 5.
    let slow = rollout_file("10m");
    let superseded = commit(
        &apps,
        &[
            (".tether/rollout.yaml", Some(slow.as_str())),
            ("manifests/web.yaml", Some(config_map("6").as_str())),
        ],
    );
    wait(
        "the canary soaking the sixth",
        Duration::from_secs(60),
        || {
            let r = rollout(&setup);
            r["commit"] == superseded.as_str() && r["waves"][0]["phase"] == "soaking"
        },
    );
    let newer = commit(
        &apps,
        &[("manifests/web.yaml", Some(config_map("7").as_str()))],
    );
    wait(
        "the canary on the newer commit, its wave first",
        Duration::from_secs(60),
        || {
            let r = rollout(&setup);
            r["commit"] == newer.as_str()
                && r["waves"][0]["phase"] == "soaking"
                && r["waves"][1]["phase"] == "pending"
                && version_in(&namespaces[0]).as_deref() == Some("7")
        },
    );
    assert!(
        versions(&namespaces[1..])
            .iter()
            .all(|v| v.as_deref() == Some("2")),
        "prod untouched by either"
    );
    let waited = setup.cli_output(&[
        "rollout",
        "wait",
        "team/apps",
        "--commit",
        &superseded,
        "--timeout",
        "10s",
    ]);
    assert_eq!(waited.status.code(), Some(5), "superseded: {waited:?}");
    setup
        .cli(&["rollout", "abort", "team/apps"])
        .expect("aborted");
    wait("the canary back", Duration::from_secs(60), || {
        version_in(&namespaces[0]).as_deref() == Some("6")
    });

    // A commit that fails its sync on the canary under `on_failure:
    // halt`: halted, prod exactly where it was; the canary keeps what
    // it got (its objects the API server took are applied).
    let halting = rollout_file("3s").replace("on_failure: rollback", "on_failure: halt");
    let halted = commit(
        &apps,
        &[
            (".tether/rollout.yaml", Some(halting.as_str())),
            ("manifests/web.yaml", Some(config_map("5").as_str())),
            (
                "manifests/broken.yaml",
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Not_A_Name}\n"),
            ),
        ],
    );
    let waited = setup.cli_output(&[
        "rollout",
        "wait",
        "team/apps",
        "--commit",
        &halted,
        "--timeout",
        "90s",
    ]);
    assert_eq!(waited.status.code(), Some(3), "halted: {waited:?}");
    let r = rollout(&setup);
    assert_eq!(r["phase"], "halted", "{r}");
    assert_eq!(
        versions(&namespaces[1..]),
        vec![Some("2".to_owned()); 4],
        "prod exactly where it was"
    );
    let waited = setup.cli_output(&[
        "agent",
        "wait",
        "canary",
        "--project",
        "team/apps",
        "--commit",
        &halted,
        "--timeout",
        "20s",
    ]);
    assert_eq!(
        waited.status.code(),
        Some(2),
        "the canary's own sync failed: {waited:?}"
    );

    let waited = setup.cli_output(&[
        "rollout",
        "wait",
        "team/apps",
        "--commit",
        &"0".repeat(40),
        "--timeout",
        "2s",
    ]);
    assert_eq!(waited.status.code(), Some(4), "timed out: {waited:?}");
    drop(agents);
}
