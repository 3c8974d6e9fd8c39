//! The kas Helm chart: rendered by the real helm and accepted by the real
//! API server (`kubectl apply --dry-run=server`), for replicas and for one
//! kas; a replicated install missing what replicas must share is refused at
//! render time with the reason.

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

#[tokio::test]
async fn the_kas_chart_renders_replicas_and_one_kas_and_passes_a_dry_run() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("kas-helm").await.expect("namespace");
    let replicated = helm(&[
        "--namespace",
        ns.name(),
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
    ] {
        assert!(yaml.contains(flag), "{flag} missing:\n{yaml}");
    }
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

    // One kas on its embedded SQLite: no private listener, no shared secrets.
    let single = helm(&["--namespace", ns.name(), "--set", "replicas=1"]);
    assert!(single.status.success());
    let yaml = String::from_utf8(single.stdout).expect("UTF-8");
    assert!(!yaml.contains("--private-listen"), "{yaml}");
    let applied = dry_run(ns.name(), &yaml);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    // Replicas without a database, a shared secret, certificate or admin
    // token: refused, each with what to set.
    for (missing, args) in [
        ("database.url", vec![]),
        (
            "private.secretName",
            vec!["--set", "database.url=postgres://db/kas"],
        ),
        (
            "tls.secretName",
            vec![
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
