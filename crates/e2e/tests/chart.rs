//! The kas Helm chart: installed with its defaults by the real helm (one kas
//! on SQLite with a volume), rendered for replicas and accepted by the real
//! API server (`kubectl apply --dry-run=server`); a replicated install
//! missing what replicas must share is refused at render time with the
//! reason.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/helm/kas");
/// The kas chart's monitoring values, all on.
const MONITORING: [&str; 6] = [
    "--set",
    "monitoring.serviceMonitor.enabled=true",
    "--set",
    "monitoring.prometheusRules.enabled=true",
    "--set",
    "monitoring.grafanaDashboard.enabled=true",
];
const AGENTK_CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/helm/agentk");

fn helm(args: &[&str]) -> Output {
    Command::new(tether_testenv::shared().binaries().helm())
        .args(["template", "kas", CHART])
        .args(args)
        .output()
        .expect("helm runs")
}

fn kinds(yaml: &str) -> Vec<String> {
    let mut kinds: Vec<String> = yaml
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .map(|k| k.trim().to_owned())
        .collect();
    kinds.sort();
    kinds
}

fn dry_run(namespace: &str, yaml: &str) -> Output {
    let mut child = tether_testenv::shared()
        .kubectl()
        .args(["apply", "--dry-run=server", "-n", namespace, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("written");
    child.wait_with_output().expect("kubectl ends")
}

/// `helm install` (not a template): what an operator types first.
fn helm_install(namespace: &str, release: &str) -> Output {
    let cluster = tether_testenv::shared();
    Command::new(cluster.binaries().helm())
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(["install", release, CHART, "--namespace", namespace])
        .output()
        .expect("helm runs")
}

#[tokio::test]
async fn helm_install_with_the_defaults_runs_one_kas_on_sqlite_with_a_volume() {
    let cluster = tether_testenv::shared();
    let ns = cluster
        .namespace("kas-helm-default")
        .await
        .expect("namespace");
    let installed = helm_install(ns.name(), "kas");
    assert!(
        installed.status.success(),
        "helm install with the defaults failed: {}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let sts = cluster
        .get_json(&["statefulset", "kas", "-n", ns.name()])
        .expect("the StatefulSet exists");
    assert_eq!(sts["spec"]["replicas"], 1, "{sts}");
    let claims = &sts["spec"]["volumeClaimTemplates"];
    assert_eq!(claims[0]["metadata"]["name"], "data", "{sts}");
    assert_eq!(
        claims[0]["spec"]["resources"]["requests"]["storage"], "1Gi",
        "{sts}"
    );
    let args = sts["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(!args.contains("--private-listen"), "{args}");
    assert!(args.contains("--data-dir=/var/lib/kas"), "{args}");
    let env = sts["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        !env.contains("KAS_DATABASE_URL"),
        "SQLite by default: {env}"
    );
}

#[tokio::test]
async fn replicas_render_with_what_they_share_and_pass_a_dry_run() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("kas-helm").await.expect("namespace");
    let replicated = helm(&[
        "--namespace",
        ns.name(),
        "--set",
        "replicas=3",
        "--set",
        "persistence.enabled=false",
        "--set",
        "database.url=postgres://kas:secret@db:5432/kas",
        "--set",
        "tls.secretName=kas-tls",
        "--set",
        "adminToken.secretName=kas-admin",
        "--set",
        "private.secretName=kas-private",
    ]);
    assert!(
        replicated.status.success(),
        "{}",
        String::from_utf8_lossy(&replicated.stderr)
    );
    let yaml = String::from_utf8(replicated.stdout).expect("UTF-8");
    assert_eq!(
        kinds(&yaml),
        [
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "Service",
            "StatefulSet"
        ]
    );
    for flag in [
        "--private-listen=0.0.0.0:8155",
        "--private-url=https://$(POD_NAME).kas-private.$(POD_NAMESPACE).svc:8155",
        "--private-secret-file=/etc/kas/private/secret",
        "--admin-token-file=/etc/kas/admin-token/token",
        "--tls-cert=/etc/kas/tls/tls.crt",
        "replicas: 3",
        "maxUnavailable: 1",
        "name: KAS_DATABASE_URL",
        "emptyDir",
    ] {
        assert!(yaml.contains(flag), "{flag} missing:\n{yaml}");
    }
    assert!(!yaml.contains("volumeClaimTemplates"), "{yaml}");
    let applied = dry_run(ns.name(), &yaml);
    assert!(
        applied.status.success(),
        "the API server refused the chart: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let out = String::from_utf8_lossy(&applied.stdout);
    assert!(
        out.contains("statefulset.apps/kas created (server dry run)"),
        "{out}"
    );
}

#[test]
fn replicas_without_what_they_share_are_refused_naming_it() {
    // Replicas without a database, a shared secret, certificate or admin
    // token: refused, each with what to set.
    for (missing, args) in [
        ("database.url", vec!["--set", "replicas=3"]),
        (
            "private.secretName",
            vec![
                "--set",
                "replicas=3",
                "--set",
                "database.url=postgres://db/kas",
            ],
        ),
        (
            "tls.secretName",
            vec![
                "--set",
                "replicas=3",
                "--set",
                "database.url=postgres://db/kas",
                "--set",
                "private.secretName=p",
            ],
        ),
        (
            "adminToken.secretName",
            vec![
                "--set",
                "replicas=3",
                "--set",
                "database.url=postgres://db/kas",
                "--set",
                "private.secretName=p",
                "--set",
                "tls.secretName=t",
            ],
        ),
    ] {
        let out = helm(&args);
        assert!(!out.status.success(), "rendered without {missing}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(missing), "{missing}: {stderr}");
    }
}

/// The monitoring values render a ServiceMonitor, alert rules that promtool
/// accepts and whose unit tests pass, and a dashboard whose every metric is
/// one Tether exports (as the book's table lists them); by default, none.
#[test]
fn monitoring_renders_rules_promtool_accepts_and_a_dashboard_of_real_metrics() {
    let defaults = helm(&[]);
    assert!(defaults.status.success());
    let default_kinds = kinds(&String::from_utf8_lossy(&defaults.stdout));
    assert!(
        !default_kinds
            .iter()
            .any(|k| k == "ServiceMonitor" || k == "PrometheusRule"),
        "{default_kinds:?}"
    );
    let out = helm(&MONITORING);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let docs: Vec<serde_json::Value> = text
        .split("\n---")
        .filter(|d| d.contains("kind:"))
        .map(|d| serde_saphyr::from_str(d).expect("a YAML document"))
        .collect();
    let of_kind = |kind: &'static str| docs.iter().filter(move |d| d["kind"] == kind);
    assert_eq!(of_kind("ServiceMonitor").count(), 1);

    // The rules, as Prometheus would load them, checked and unit-tested.
    let rule = of_kind("PrometheusRule").next().expect("a PrometheusRule");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_json::to_string_pretty(&rule["spec"]).expect("JSON"),
    )
    .expect("rules written");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/alerts/rules-test.yaml"),
        dir.path().join("rules-test.yaml"),
    )
    .expect("rule tests copied");
    let promtool = tether_testenv::observability_tools()
        .expect("promtool")
        .join("promtool");
    for args in [
        ["check", "rules", "rules.yaml"],
        ["test", "rules", "rules-test.yaml"],
    ] {
        let run = Command::new(&promtool)
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("promtool runs");
        assert!(
            run.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let alerts: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    for wanted in [
        "TetherAgentDisconnected",
        "TetherSyncFailing",
        "TetherObjectsDegraded",
        "TetherWebhookFailures",
        "TetherAgentTokenExpiring",
        "TetherCertificateExpiring",
    ] {
        assert!(alerts.contains(&wanted), "{wanted} in {alerts:?}");
    }

    // The dashboard: valid JSON, and no metric Tether does not export.
    let dashboard = of_kind("ConfigMap")
        .find_map(|cm| {
            cm["data"]
                .as_object()?
                .iter()
                .find(|(k, _)| k.ends_with(".json"))
                .and_then(|(_, v)| v.as_str().map(str::to_owned))
        })
        .expect("the dashboard's ConfigMap");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    let book = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/src/observability.md"
    ))
    .expect("the book's observability chapter");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{} expressions", exprs.len());
    for expr in &exprs {
        for name in metric_names(expr) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                book.contains(&format!("`{name}`")) || book.contains(&format!("`{base}`")),
                "the dashboard queries {name}, which the metrics table does not list: {expr}"
            );
        }
    }
}

fn collect_exprs(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => into.push(e.clone()),
                    _ => collect_exprs(v, into),
                }
            }
        }
        serde_json::Value::Array(list) => list.iter().for_each(|v| collect_exprs(v, into)),
        _ => {}
    }
}

/// The `tether_…` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("tether_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// The monitoring objects of both charts are what the Prometheus operator
/// accepts: its own CRDs (from its Go module, `scripts/observability-tools.sh`)
/// installed in the test cluster, the rendered charts pass the API server's
/// validation (`kubectl apply --dry-run=server`).
#[tokio::test]
async fn monitoring_objects_pass_the_prometheus_operators_own_schemas() {
    let cluster = tether_testenv::shared();
    let ns = cluster
        .namespace("kas-helm-monitoring")
        .await
        .expect("namespace");
    let crds = tether_testenv::observability_tools()
        .expect("observability tools")
        .parent()
        .expect("the tools' folder")
        .join("share/crds");
    // Cluster-wide, as the operator's installation makes them; applying
    // the same definitions again (another run) changes nothing.
    cluster.kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        crds.to_str().expect("utf-8"),
    ]);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/podmonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
    ]);
    let kas = helm(&[&["--namespace", ns.name()][..], &MONITORING[..]].concat());
    assert!(
        kas.status.success(),
        "{}",
        String::from_utf8_lossy(&kas.stderr)
    );
    let agentk = Command::new(tether_testenv::shared().binaries().helm())
        .args(["template", "agentk", AGENTK_CHART, "--namespace", ns.name()])
        .args([
            "--set",
            "config.kasAddress=grpcs://kas.example.com:443",
            "--set",
            "config.token=not-a-real-token",
            "--set",
            "monitoring.podMonitor.enabled=true",
        ])
        .output()
        .expect("helm runs");
    assert!(
        agentk.status.success(),
        "{}",
        String::from_utf8_lossy(&agentk.stderr)
    );
    for (chart, out, kinds_wanted) in [
        ("kas", &kas, &["ServiceMonitor", "PrometheusRule"][..]),
        ("agentk", &agentk, &["PodMonitor"][..]),
    ] {
        let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
        let rendered = kinds(&yaml);
        for kind in kinds_wanted {
            assert!(rendered.iter().any(|k| k == kind), "{chart}: {rendered:?}");
        }
        let checked = dry_run(ns.name(), &yaml);
        assert!(
            checked.status.success(),
            "the {chart} chart's objects refused: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
}
