//! `agentk generate` and the Helm chart install agentk into the real test
//! cluster, with the rights they promise and no more.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use tether_credentials::{Token, TokenKind};

const AGENTK: &str = env!("CARGO_BIN_EXE_agentk");
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/helm/agentk");

fn generate(args: &[&str]) -> String {
    let token = Token::generate(TokenKind::Agent);
    let out = Command::new(AGENTK)
        .arg("generate")
        .args([
            "--agent-token",
            token.expose_secret(),
            "--kas-address",
            "grpcs://kas.example.com:8152",
        ])
        .args(args)
        .env_remove("AGENTK_TOKEN")
        .output()
        .expect("agentk runs");
    assert!(
        out.status.success(),
        "generate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// `kubectl <args> -f -` with `manifests` on stdin.
fn kubectl_stdin(args: &[&str], manifests: &str) -> Output {
    let mut child = tether_testenv::shared()
        .kubectl()
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifests.as_bytes())
        .expect("write");
    child.wait_with_output().expect("kubectl finishes")
}

fn kinds(yaml: &str) -> Vec<String> {
    let mut kinds: Vec<String> = yaml
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .map(|k| k.trim().to_owned())
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

#[tokio::test]
async fn the_default_install_passes_a_server_side_dry_run() {
    let cluster = tether_testenv::shared();
    let ns = cluster
        .namespace("agentk-install")
        .await
        .expect("namespace");
    let manifests = generate(&["--namespace", ns.name()]);
    let out = kubectl_stdin(&["apply", "--dry-run=server"], &manifests);
    assert!(
        out.status.success(),
        "dry run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = String::from_utf8_lossy(&out.stdout);
    for object in [
        "serviceaccount/agentk",
        "secret/agentk-token",
        "clusterrolebinding.rbac.authorization.k8s.io/agentk-",
        "deployment.apps/agentk",
    ] {
        assert!(
            applied.contains(object),
            "{object} missing from:\n{applied}"
        );
    }
}

#[tokio::test]
async fn the_namespaced_install_cannot_read_secrets_elsewhere() {
    let cluster = tether_testenv::shared();
    let home = cluster.namespace("agentk-home").await.expect("namespace");
    let managed = cluster
        .namespace("agentk-managed")
        .await
        .expect("namespace");
    let other = cluster.namespace("agentk-other").await.expect("namespace");
    let manifests = generate(&[
        "--namespace",
        home.name(),
        "--rbac",
        "namespaced",
        "--namespaces",
        managed.name(),
    ]);
    let out = kubectl_stdin(&["apply"], &manifests);
    assert!(
        out.status.success(),
        "install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let sa = format!("system:serviceaccount:{}:agentk", home.name());
    let can_list_secrets = |namespace: &str| {
        let out = cluster
            .kubectl()
            .args([
                "auth", "can-i", "list", "secrets", "-n", namespace, "--as", &sa,
            ])
            .output()
            .expect("kubectl runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(can_list_secrets(managed.name()), "yes");
    assert_eq!(can_list_secrets(home.name()), "yes");
    assert_eq!(can_list_secrets(other.name()), "no");
    let cluster_wide = cluster
        .kubectl()
        .args([
            "auth",
            "can-i",
            "list",
            "secrets",
            "--all-namespaces",
            "--as",
            &sa,
        ])
        .output()
        .expect("kubectl runs");
    assert_eq!(String::from_utf8_lossy(&cluster_wide.stdout).trim(), "no");
}

#[tokio::test]
async fn the_helm_chart_renders_the_same_kinds_and_passes_a_dry_run() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("agentk-helm").await.expect("namespace");
    let token = Token::generate(TokenKind::Agent);
    let render = |extra: &[&str]| {
        let out = Command::new(cluster.binaries().helm())
            .args(["template", "agentk", CHART, "--namespace", ns.name()])
            .args(["--set", &format!("config.token={}", token.expose_secret())])
            .args(["--set", "config.kasAddress=grpcs://kas.example.com:8152"])
            .args(extra)
            .output()
            .expect("helm runs");
        assert!(
            out.status.success(),
            "helm template failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    };

    // The chart installs into the release namespace; generate also creates it.
    let without_namespace = |yaml: &str| {
        kinds(yaml)
            .into_iter()
            .filter(|k| k != "Namespace")
            .collect::<Vec<_>>()
    };
    let chart = render(&[]);
    assert_eq!(
        kinds(&chart),
        without_namespace(&generate(&["--namespace", ns.name()]))
    );
    let chart_namespaced = render(&["--set", "rbac.namespaces={a,b}"]);
    assert_eq!(
        kinds(&chart_namespaced),
        without_namespace(&generate(&[
            "--namespace",
            ns.name(),
            "--rbac",
            "namespaced",
            "--namespaces",
            "a,b"
        ]))
    );

    let out = kubectl_stdin(&["apply", "--dry-run=server"], &chart);
    assert!(
        out.status.success(),
        "chart dry run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn generate_refuses_a_malformed_token_or_address() {
    let token = Token::generate(TokenKind::Agent);
    for (token, address) in [
        ("not-a-token", "grpcs://kas:8152"),
        (token.expose_secret(), "kas:8152"),
    ] {
        let out = Command::new(AGENTK)
            .args(["generate", "--agent-token", token, "--kas-address", address])
            .env_remove("AGENTK_TOKEN")
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{token} {address} accepted");
        assert!(out.stdout.is_empty(), "nothing is printed on error");
    }
}
