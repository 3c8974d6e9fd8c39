//! The kas Helm chart: installed with its defaults by the real helm (one kas
//! on SQLite with a volume), rendered for replicas and accepted by the real
//! API server (`kubectl apply --dry-run=server`); a replicated install
//! missing what replicas must share is refused at render time with the
//! reason.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/helm/kas");

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
