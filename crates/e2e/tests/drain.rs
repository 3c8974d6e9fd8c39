//! A kas that is stopped (SIGTERM, as an orchestrator stops it) ends its
//! agents' sessions telling them to reconnect, and exits promptly; the
//! agents reconnect without a backoff. Real kas and agentk processes.

use tether_e2e as support;

use std::time::Duration;

use support::{Setup, wait};

#[test]
fn a_stopping_kas_tells_its_agents_to_reconnect_and_exits() {
    let mut setup = Setup::start();
    let token = setup.register_agent("prod");
    let agentk = setup.agentk(&token);
    wait("agentk connected", Duration::from_secs(30), || {
        setup.connections("prod").len() == 1
    });
    let took = setup.terminate_kas(Duration::from_secs(15));
    eprintln!("kas exited {took:?} after SIGTERM");
    // agentk counts the session kas ended with its draining status.
    wait(
        "agentk to be told to reconnect",
        Duration::from_secs(5),
        || agentk.metric("tether_agentk_sessions_ended_total{reason=\"drained\"}") >= 1.0,
    );
    setup.restart_kas();
    wait(
        "agentk back on the restarted kas",
        Duration::from_secs(15),
        || setup.connections("prod").len() == 1,
    );
}

/// A watch in flight through the proxy when kas is stopped ends cleanly
/// (kubectl exits 0 with what it saw, as when the API server ends a
/// watch), so that clients re-watch elsewhere at once; kas then exits
/// without waiting out its grace period.
#[test]
fn a_stopping_kas_ends_a_watch_in_flight_cleanly() {
    let mut setup = Setup::start();
    let repo = setup.dir.path().join("repo");
    support::new_repo(&repo);
    support::commit(
        &repo,
        &[(
            ".gitlab/agents/prod/config.yaml",
            Some("user_access:\n  projects:\n  - id: team/config\n"),
        )],
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let _agentk = setup.agentk(&token);
    setup.wait_for_tunnels();
    let watch = open_watch(&setup, 3);
    let took = setup.terminate_kas(Duration::from_secs(15));
    let out = watch.wait_with_output().expect("kubectl ends");
    assert!(
        out.status.success(),
        "the watch was cut: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ADDED\""));
    eprintln!("kas exited {took:?} after SIGTERM, having ended the watch in flight cleanly");
    // The watch ended when the drain began (its client re-watches through
    // another replica), not when the grace period ran out.
    assert!(
        took < Duration::from_secs(5),
        "kas held the watch until the grace ran out: {took:?}"
    );
}

/// SIGTERM while kas is busy with every kind of long task: a git poller, a
/// session streaming manifests, a kustomization rendering, a webhook's
/// refresh, a watch through the proxy, a commit status and a notice each
/// waiting behind a held request to a slow host. Each ends or hands over
/// within the drain: the watch ends cleanly, what was queued when the
/// signal came reaches its host, and kas exits 0. (A watch routed through
/// another replica is ended at each drain by `replicas.rs`'s rolling
/// restart under load.)
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_busy_ends_or_hands_over_every_task_and_loses_nothing_queued() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-drain").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || busy_drain(&ns))
        .await
        .expect("test body");
}

fn busy_drain(ns: &str) {
    let statuses_host = support::receiver::Receiver::held();
    let notices_host = support::receiver::Receiver::held();
    let mut setup = Setup::start_with(&["--poll-interval", "1s"]);
    setup.pod_namespace = ns.to_owned();
    setup.set_notification_secret("team/audit", &format!("{}/hook", notices_host.url), None);
    let repo = setup.dir.path().join("repo");
    support::new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    paths: [{{glob: 'manifests/*.yaml'}}]\n    kustomizations:\n    - path: deploy\n\
         user_access:\n  projects:\n  - id: team/config\n\
         notifications:\n- provider: generic\n  url_secret: team/audit\n  events: [sync_succeeded]\n"
    );
    let commit = support::commit(
        &repo,
        &[
            (".gitlab/agents/prod/config.yaml", Some(config.as_str())),
            (
                "manifests/cm.yaml",
                Some(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: drained}\ndata: {a: '1'}\n",
                ),
            ),
            ("deploy/kustomization.yaml", Some(&kustomization("1"))),
        ],
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    setup.set_status_target("github", &statuses_host.url, "team/config", "t0ken");
    let _agentk = setup.agentk(&token);
    wait("the commit synced", Duration::from_secs(90), || {
        setup
            .sync_of(&commit)
            .is_some_and(|s| s["state"] == "synced")
    });
    setup.wait_for_tunnels();
    let watch = open_watch(&setup, 60);
    // The first status (pending) and the notice are held at their hosts:
    // what came after them is queued in kas.
    wait(
        "a held status and a held notice",
        Duration::from_secs(30),
        || !statuses_host.requests().is_empty() && !notices_host.requests().is_empty(),
    );
    let posted_before = statuses_host.requests().len();
    assert_eq!(posted_before, 1, "the status host answers nothing yet");

    // A new commit to render, and a push webhook that refreshes the
    // project: both under way as the signal comes.
    let created: serde_json::Value = serde_json::from_str(
        &setup
            .cli(&["project", "webhook", "create", "team/config", "-o", "json"])
            .expect("webhook secret"),
    )
    .expect("JSON");
    let secret = created["secret"].as_str().expect("secret").to_owned();
    support::commit(
        &repo,
        &[("deploy/kustomization.yaml", Some(&kustomization("2")))],
    );
    let refreshing = deliver_push(&setup.api, &secret);
    assert_eq!(refreshing, 202, "the webhook's refresh was started");

    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe { libc::kill(setup.kas.child.id() as libc::pid_t, libc::SIGTERM) };
    // The hosts answer again a moment into the drain.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        setup.kas.child.try_wait().expect("wait").is_none(),
        "kas exited with a status and a notice still queued"
    );
    statuses_host.release();
    notices_host.release();
    let exited = wait_exit(&mut setup.kas.child, Duration::from_secs(25));
    assert!(exited.success(), "kas exited with {exited}");

    let states: Vec<String> = statuses_host
        .requests()
        .iter()
        .filter(|r| r.target.ends_with(&commit))
        .map(|r| r.json()["state"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        states.contains(&"pending".to_owned()) && states.contains(&"success".to_owned()),
        "every queued status reached the host: {states:?}"
    );
    let notices: Vec<String> = notices_host
        .requests()
        .iter()
        .filter_map(|r| r.header("x-tether-event").map(str::to_owned))
        .collect();
    assert!(
        notices.contains(&"sync_succeeded".to_owned()),
        "the queued notice reached its host: {notices:?}"
    );
    let out = watch.wait_with_output().expect("kubectl ends");
    assert!(
        out.status.success(),
        "the watch was cut, not ended: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            started.elapsed() < within,
            "kas did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A kustomization generating one ConfigMap whose value is `value`.
fn kustomization(value: &str) -> String {
    format!(
        "configMapGenerator:\n- name: rendered\n  literals: [value={value}]\ngeneratorOptions: {{disableNameSuffixHash: true}}\n"
    )
}

/// A signed generic push delivery for `team/config`: the status code.
fn deliver_push(api: &str, secret: &str) -> u16 {
    let body = r#"{"ref": "refs/heads/main"}"#;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let signature: String = ring::hmac::sign(&key, body.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stream = std::net::TcpStream::connect(api.trim_start_matches("http://")).expect("the API");
    support::post_raw(
        stream,
        "/api/v1/projects/team%2Fconfig/hooks/generic",
        &[
            ("content-type", "application/json"),
            ("x-tether-signature", &format!("sha256={signature}")),
        ],
        body,
    )
}

/// A user's watch of namespaces through kas's proxy, for `seconds` at most,
/// once kas has started answering it.
fn open_watch(setup: &Setup, seconds: u32) -> std::process::Child {
    let (_, kubeconfig) = support::user_with_kubeconfig(setup, "alice");
    let proxied_before = setup.metric("tether_kas_proxy_requests_total");
    let watch = support::kubectl(&kubeconfig)
        .args([
            "get",
            "--raw",
            &format!("/k8s-proxy/api/v1/namespaces?watch=1&timeoutSeconds={seconds}"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    // A proxied request is counted once its response has started: the
    // watch is open.
    wait("the watch to be proxied", Duration::from_secs(10), || {
        setup.metric("tether_kas_proxy_requests_total") > proxied_before
    });
    watch
}
