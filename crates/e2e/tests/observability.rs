//! Observability end to end, against real back ends: a push webhook's
//! commit is traced from kas to agentk into Jaeger v2 (built from its Go
//! module, in-memory storage) as one trace whose id the sync report
//! carries; both programs' `/metrics` pass `promtool check metrics` and
//! move as syncs fail and drift is put back; `kubectl get events` and
//! `kubectl describe` show what agentk did to the objects; JSON log lines
//! carry the trace id.
//!
//! One test in this binary: it sets the OpenTelemetry variables kas and
//! agentk inherit (every trace sampled, batches sent at once).

use tether_e2e as support;

use std::time::Duration;

use serde_json::Value;
use support::{Proc, Setup, commit, http_get, kubectl_get, new_repo, traces, wait};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_is_traced_counted_and_told_from_push_to_healthy() {
    // SAFETY: the only test of this binary, before any thread of its own
    // reads the environment; kas and agentk inherit these.
    unsafe {
        std::env::set_var("OTEL_TRACES_SAMPLER", "always_on");
        std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    }
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-observe").await.expect("namespace");
    let ns = ns.name().to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let jaeger = tether_testenv::jaeger::Jaeger::start(dir.path())
        .await
        .expect("Jaeger starts");
    tokio::task::spawn_blocking(move || run(&ns, &jaeger))
        .await
        .expect("test body");
}

fn run(ns: &str, jaeger: &tether_testenv::jaeger::Jaeger) {
    let cluster = tether_testenv::shared();
    // kas exports over OTLP/HTTP, agentk over OTLP/gRPC: both transports.
    let otlp_http = format!("http://{}", jaeger.otlp_http);
    let trace_url = format!("http://{}/trace/{{trace_id}}", jaeger.query);
    let mut setup = Setup::start_with(&[
        "--poll-interval",
        "1h",
        "--log-format",
        "json",
        "--otlp-endpoint",
        &otlp_http,
        "--trace-url",
        &trace_url,
    ]);
    setup.pod_namespace = ns.to_owned();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n    - id: team/config\n      default_namespace: {ns}\n      paths: [{{glob: 'manifests/*.yaml'}}]\nci_access:\n  projects: [{{ id: team/admin }}]\n"
    );
    let base = commit(&repo, &[(CONFIG, Some(&config))]);
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let mut cmd = support::agentk_command(&support::AgentkSpec {
        token: &token,
        token_file: &setup.dir.path().join("agent-token"),
        address: &setup.agent_addr,
        ca: &setup.dir.path().join("kas/agent-ca.crt"),
        probes: setup.probes,
        namespace: ns,
        pod: "agentk-0",
    });
    cmd.args(["--log-format", "json", "--otlp-endpoint"])
        .arg(format!("http://{}", jaeger.otlp_grpc))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    let mut agentk = Proc::spawn(cmd, setup.dir.path().join("agentk.log"));
    agentk.probes = Some(setup.probes);
    let started = std::time::Instant::now();
    while !setup.sync_of(&base).is_some_and(|s| s["state"] == "synced") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no first sync:\nkas: {}\nagentk: {}",
            tail(&setup.kas.log()),
            tail(&agentk.log())
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A push, told by a signed webhook.
    let first = commit(
        &repo,
        &[(
            "manifests/app.yaml",
            Some(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n",
            ),
        )],
    );
    push_webhook(&setup);
    wait("the push to be Current", Duration::from_secs(90), || {
        setup.sync_of(&first).is_some_and(|s| {
            s["state"] == "synced"
                && s["phase"] == "done"
                && s["objects"]
                    .as_array()
                    .is_some_and(|o| o.iter().all(|o| o["health"] == "Current"))
        })
    });
    let report = setup.sync_of(&first).expect("report");
    let trace_id = report["trace_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the sync report carries its trace id: {report}"))
        .to_owned();
    assert_eq!(trace_id.len(), 32, "{trace_id}");

    // The trace: kas's spans and agentk's, in order, under one root that
    // names the agent and the commit.
    let mut trace = Value::Null;
    wait("the whole trace in Jaeger", Duration::from_secs(30), || {
        trace = traces::trace(jaeger, &trace_id);
        let names = traces::by_name(&trace);
        [
            "commit to agent",
            "git fetch",
            "collect",
            "send",
            "sync",
            "apply",
            "wait",
        ]
        .iter()
        .all(|n| names.contains_key(*n))
    });
    let services: Vec<&str> = trace["processes"]
        .as_object()
        .expect("processes")
        .values()
        .filter_map(|p| p["serviceName"].as_str())
        .collect();
    assert!(
        services.contains(&"kas") && services.contains(&"agentk"),
        "spans of both programs: {services:?}"
    );
    let names = traces::by_name(&trace);
    let root = names["commit to agent"];
    assert_eq!(
        traces::tag(root, "tether.agent"),
        Some("prod".into()),
        "{root}"
    );
    assert_eq!(
        traces::tag(root, "tether.project"),
        Some("team/config".into())
    );
    assert_eq!(
        traces::tag(root, "vcs.ref.head.revision"),
        Some(first.clone())
    );
    assert_eq!(traces::tag(root, "tether.found_by"), Some("webhook".into()));
    assert!(
        root["references"].as_array().is_some_and(|r| r
            .iter()
            .any(|r| r["refType"] == "FOLLOWS_FROM" || r["refType"] == "CHILD_OF")),
        "the root links to the webhook delivery's span: {root}"
    );
    let start = |n: &str| names[n]["startTime"].as_u64().expect("startTime");
    let order = ["git fetch", "collect", "send", "sync", "apply"];
    for pair in order.windows(2) {
        assert!(
            start(pair[0]) <= start(pair[1]),
            "{} starts before {}",
            pair[0],
            pair[1]
        );
    }
    // agentk's sync continues kas's trace: its parent is kas's root, and
    // the root lasts until every object is Current.
    let sync = names["sync"];
    let parent = sync["references"][0]["spanID"].as_str().unwrap_or_default();
    assert_eq!(parent, root["spanID"].as_str().unwrap_or_default());
    assert_eq!(
        trace["processes"][sync["processID"].as_str().expect("process")]["serviceName"],
        "agentk"
    );
    let end = |s: &Value| {
        s["startTime"].as_u64().expect("a test value")
            + s["duration"].as_u64().expect("a test value")
    };
    assert!(
        end(root) >= end(sync),
        "the root ends once the agent is done"
    );

    // The history and the web UI's sync page show it, the page as a link.
    let history = setup.cli(&["agent", "history", "prod"]).expect("history");
    assert!(history.contains(&trace_id), "{history}");
    let api: std::net::SocketAddr = setup
        .api
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let admin = std::fs::read_to_string(setup.dir.path().join("kas/admin-token")).expect("token");
    let cookie = support::ui_client::sign_in(api, admin.trim()).expect("signed in");
    let (status, page) = support::ui_client::get(
        api,
        &format!("/ui/agents/prod/sync?project=team%2Fconfig&commit={first}"),
        &cookie,
    )
    .expect("the sync page");
    assert_eq!(status, 200);
    let link = format!("href=\"http://{}/trace/{trace_id}\"", jaeger.query);
    assert!(
        page.contains(&link),
        "the sync page links to the trace: {page}"
    );

    // Log lines carry the trace id.
    let logged = |log: &str, message: &str| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|r| r["fields"]["message"] == message && r["trace_id"] == trace_id.as_str())
    };
    assert!(logged(&setup.kas.log(), "manifests sent"), "kas's line");
    assert!(logged(&agentk.log(), "synced"), "agentk's line");

    // A proxied request is traced through the tunnel: kas's proxy span,
    // agentk's call to the API server under it.
    setup
        .cli(&["project", "add", "team/admin", "--url", "/srv/git/none"])
        .expect("project");
    let ci = support::last_line(setup.cli(&[
        "project",
        "token",
        "create",
        "team/admin",
        "--name",
        "ci",
    ]));
    let kubeconfig = setup.kubeconfig_for(&ci, "ci");
    let got = support::kubectl(&kubeconfig)
        .args(["get", "configmap", "settings", "-n", ns, "-o", "name"])
        .output()
        .expect("kubectl runs");
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    wait(
        "the proxied request's trace",
        Duration::from_secs(30),
        || proxied_trace(jaeger).is_some(),
    );

    // Metrics: the sync is synced, then a correction and a failure move
    // them; both expositions pass promtool.
    let synced = format!(
        "tether_sync_info{{agent=\"prod\",project=\"team/config\",commit=\"{first}\",state=\"synced\"}}"
    );
    wait("tether_sync_info synced", Duration::from_secs(10), || {
        setup.metric(&synced) == 1.0
    });
    cluster.kubectl_ok(&["delete", "configmap", "extra", "-n", ns]);
    wait("the correction to count", Duration::from_secs(15), || {
        agentk.metric("tether_agentk_drift_corrections_total{result=\"ok\"}") >= 1.0
            && setup.metric("tether_sync_drift_corrections_total") >= 1.0
    });
    // One object changed twice the same way: one Event, its count raised
    // (as the kubelet aggregates; a deleted object comes back with another
    // uid, so it is another object's Event).
    for round in 1..=2 {
        let before = agentk.metric("tether_agentk_drift_corrections_total{result=\"ok\"}");
        cluster.kubectl_ok(&[
            "patch",
            "configmap",
            "settings",
            "-n",
            ns,
            "--type",
            "merge",
            "-p",
            r#"{"data":{"mode":"slow"}}"#,
        ]);
        wait(
            &format!("correction {round} of settings"),
            Duration::from_secs(15),
            || agentk.metric("tether_agentk_drift_corrections_total{result=\"ok\"}") > before,
        );
    }
    wait(
        "one DriftCorrected Event counted twice",
        Duration::from_secs(15),
        || {
            let corrected: Vec<Value> = kubectl_get(&["events", "-n", ns, "-o", "json"])
                .and_then(|e| e["items"].as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .filter(|e| {
                    e["involvedObject"]["name"] == "settings" && e["reason"] == "DriftCorrected"
                })
                .collect();
            corrected.len() == 1 && corrected[0]["count"] == 2
        },
    );
    let second = commit(
        &repo,
        &[(
            "manifests/app.yaml",
            Some(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n",
            ),
        )],
    );
    push_webhook(&setup);
    wait("the prune", Duration::from_secs(30), || {
        setup.sync_of(&second).is_some_and(|s| s["pruned"] == 1)
    });
    let broken = commit(
        &repo,
        &[(
            "manifests/broken.yaml",
            Some(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\ndata: {key: [not, a, string]}\n",
            ),
        )],
    );
    push_webhook(&setup);
    let failed = format!(
        "tether_sync_info{{agent=\"prod\",project=\"team/config\",commit=\"{broken}\",state=\"failed\"}}"
    );
    wait("tether_sync_info failed", Duration::from_secs(30), || {
        setup.metric(&failed) == 1.0
    });
    assert_eq!(setup.metric(&synced), 0.0, "the old series is gone");
    assert!(agentk.metric("tether_agentk_api_requests_total{verb=\"patch\"}") >= 3.0);
    assert!(agentk.metric("tether_agentk_resident_memory_bytes") > 1e6);
    for (what, text) in [
        ("kas", http_get(setup.admin, "/metrics")),
        ("agentk", http_get(setup.probes, "/metrics")),
    ] {
        let (status, text) = text.expect("metrics");
        assert_eq!(status, 200);
        promtool_check(what, &text);
    }

    // Events: what agentk did, as kubectl shows it.
    let events = |name: &str| -> Vec<(String, String, String)> {
        kubectl_get(&["events", "-n", ns, "-o", "json"])
            .and_then(|e| e["items"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == name && e["source"]["component"] == "agentk")
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                (s("type"), s("reason"), s("message"))
            })
            .collect()
    };
    wait("agentk's Events", Duration::from_secs(15), || {
        let extra = events("extra");
        let reasons = |list: &[(String, String, String)]| -> Vec<String> {
            list.iter().map(|e| e.1.clone()).collect()
        };
        let web = reasons(&events("web"));
        let extra_reasons = reasons(&extra);
        web.contains(&"Applied".to_owned())
            && ["Applied", "DriftCorrected", "Pruned"]
                .iter()
                .all(|r| extra_reasons.contains(&r.to_string()))
            && events("bad")
                .iter()
                .any(|e| e.0 == "Warning" && e.1 == "SyncFailed")
    });
    let extra = events("extra");
    assert!(
        extra
            .iter()
            .any(|e| e.1 == "DriftCorrected" && e.2.contains("deleted")),
        "{extra:?}"
    );
    assert!(
        extra
            .iter()
            .any(|e| e.1 == "Pruned" && e.2.contains(&second[..12]))
    );
    let described = cluster.kubectl_ok(&["describe", "deployment", "web", "-n", ns]);
    assert!(
        described.contains("Applied") && described.contains(&first[..12]),
        "kubectl describe shows the apply: {described}"
    );
}

/// Delivers a generic push webhook for `team/config`, signed with a new
/// secret.
fn push_webhook(setup: &Setup) {
    let created = setup
        .cli(&["project", "webhook", "create", "team/config", "-o", "json"])
        .expect("webhook secret");
    let created: Value = serde_json::from_str(&created).expect("JSON");
    let secret = created["secret"].as_str().expect("secret");
    let body = r#"{"ref":"refs/heads/main"}"#;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let sig: String = ring::hmac::sign(&key, body.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let api: std::net::SocketAddr = setup
        .api
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let status = support::post_raw(
        std::net::TcpStream::connect(api).expect("kas's API"),
        "/api/v1/projects/team%2Fconfig/hooks/generic",
        &[
            ("content-type", "application/json"),
            ("x-tether-signature", &format!("sha256={sig}")),
        ],
        body,
    );
    assert_eq!(status, 202, "the webhook is accepted");
}

/// `promtool check metrics` on `text`: no problem found.
fn promtool_check(what: &str, text: &str) {
    use std::io::Write;
    let promtool = tether_testenv::observability_tools()
        .expect("promtool")
        .join("promtool");
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("written");
    let out = child.wait_with_output().expect("promtool ends");
    assert!(
        out.status.success(),
        "promtool check metrics on {what}'s /metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The end of a log, for a failure's message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A trace in which agentk's call to its API server is a child of kas's
/// proxy span, if Jaeger holds one.
fn proxied_trace(jaeger: &tether_testenv::jaeger::Jaeger) -> Option<Value> {
    traces::find(jaeger, "service=agentk&operation=kubernetes%20api&limit=50")
        .into_iter()
        .find(|trace| {
            let names = traces::by_name(trace);
            let (Some(proxy), Some(call)) = (names.get("proxy"), names.get("kubernetes api"))
            else {
                return false;
            };
            traces::service(trace, proxy) == Some("kas")
                && traces::parent(call) == proxy["spanID"].as_str()
        })
}
