//! Signed commits, end to end: commits signed by the real git with SSH
//! keys (`gpg.format=ssh`) and with GPG keys, verified by kas before an
//! agent gets anything of them. Under `strict`, an unsigned commit, a
//! commit signed by a key that is not allowed, and a signed commit with an
//! unsigned one beneath it are each refused with the cluster unchanged;
//! the project's status says which commit and why, the commit status
//! `tether/verify` fails, `commit_unverified` is told, a plan of the
//! refused commit says so, and the next good commit is applied. A key
//! expired by rotation (`valid-before`) verifies nothing after that date.

use tether_e2e as support;

use std::path::Path;
use std::time::Duration;

use support::receiver::Receiver;
use support::{Setup, kubectl_get, new_repo, wait};
use tether_testenv::git::git;
use tether_testenv::signing::{self, GpgHome, SshKey};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";

/// How a commit is signed.
enum Sign<'a> {
    Unsigned,
    Ssh(&'a SshKey),
    /// With this GPG key (its fingerprint) of this home.
    Gpg(&'a GpgHome, &'a str),
}

/// Writes `files` and commits them with the real git, signed as asked.
fn commit(repo: &Path, files: &[(&str, &str)], sign: &Sign<'_>) -> String {
    for (path, text) in files {
        let file = repo.join(path);
        std::fs::create_dir_all(file.parent().expect("a folder")).expect("folders");
        std::fs::write(file, text).expect("write");
    }
    git(repo, &["add", "-A"]);
    match sign {
        Sign::Unsigned => {
            git(repo, &["commit", "-q", "--allow-empty", "-m", "unsigned"]);
            git(repo, &["rev-parse", "HEAD"])
        }
        Sign::Ssh(key) => signing::ssh_commit(repo, key, "signed with ssh", None),
        Sign::Gpg(home, key) => signing::gpg_commit(repo, home, key, "signed with gpg"),
    }
}

fn config_map(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: signed}}\ndata: {{value: '{value}'}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn only_commits_signed_by_allowed_keys_reach_the_cluster() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-signed").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || signed(&ns))
        .await
        .expect("test body");
}

fn signed(ns: &str) {
    let mut setup = Setup::start_with(&["--poll-interval", "1h"]);
    setup.pod_namespace = ns.to_owned();
    let keys = setup.dir.path().join("keys");
    std::fs::create_dir_all(&keys).expect("keys");

    // Alice signs with SSH, Bob with GPG; Mallory has an SSH key too,
    // which no one allowed.
    let alice = signing::ssh_key(&keys, "alice");
    let mallory = signing::ssh_key(&keys, "mallory");
    let allowed = keys.join("allowed_signers");
    let allow_alice = |options: &str| {
        std::fs::write(
            &allowed,
            signing::allowed_signer("alice@example.com", options, &alice),
        )
        .expect("allowed signers");
    };
    allow_alice("");
    let gnupg = GpgHome::new(&keys, "gnupg");
    let bob = gnupg.generate("Bob <bob@example.com>", "1y", None);
    let bob_keys = keys.join("bob.asc");
    std::fs::write(&bob_keys, gnupg.export(&bob)).expect("bob.asc");

    // Statuses go to a fake git host; `commit_unverified` to a receiver.
    let host = Receiver::start();
    setup.set_notification_secret(
        "team/audit",
        &format!("{}/hook", host.url),
        Some("signing-key"),
    );

    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    paths: [{{glob: 'manifests/*.yaml'}}]\nnotifications:\n- provider: generic\n  url_secret: team/audit\n  events: [commit_unverified]\n"
    );
    let first = commit(
        &repo,
        &[(CONFIG, &config), ("manifests/cm.yaml", &config_map("1"))],
        &Sign::Ssh(&alice),
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    setup.set_status_target(
        "gitea",
        &format!("{}/api/v1", host.url),
        "team/config",
        "host-token",
    );
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "project",
            "verify",
            "team/config",
            "--mode",
            "strict",
            "--ssh-allowed-signers",
            allowed.to_str().expect("utf-8"),
            "--gpg-keys",
            bob_keys.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        setup.cli(&args).expect("kas project verify")
    };
    let said = verify(&[]);
    assert!(said.contains("signed commits: strict"), "{said}");
    let _agentk = setup.agentk(&token);
    wait(
        "the SSH-signed commit to sync",
        Duration::from_secs(90),
        || {
            setup
                .sync_of(&first)
                .is_some_and(|s| s["state"] == "synced")
        },
    );
    let value =
        || kubectl_get(&["configmap", "signed", "-n", ns]).map(|c| c["data"]["value"].to_string());
    assert_eq!(value().as_deref(), Some("\"1\""));
    let shown = setup
        .cli(&["project", "show", "team/config"])
        .expect("show");
    assert!(
        shown.contains(&format!("verified: {first}"))
            && shown.contains("ssh alice@example.com SHA256:"),
        "{shown}"
    );

    // Refused, each with the cluster unchanged: an unsigned commit, one
    // signed by a key no one allowed, and (strict) one signed by Alice
    // with the unsigned commit beneath it.
    let refused = |commit: &str, needle: &str| {
        let out = setup.cli_output(&["project", "refresh", "team/config"]);
        let said = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "a refused head fails the refresh");
        assert!(said.contains(commit) && said.contains(needle), "{said}");
        let shown = setup
            .cli(&["project", "show", "team/config"])
            .expect("show");
        assert!(
            shown.contains(&format!("REFUSED: {commit}")) && shown.contains(needle),
            "{shown}"
        );
        assert!(shown.contains(&format!("verified: {first}")), "{shown}");
    };
    let reset = || git(&repo, &["reset", "-q", "--hard", &first]);
    let foreign = commit(
        &repo,
        &[("manifests/cm.yaml", &config_map("3"))],
        &Sign::Ssh(&mallory),
    );
    refused(&foreign, "not in the allowed signers");
    reset();
    let unsigned = commit(
        &repo,
        &[("manifests/cm.yaml", &config_map("2"))],
        &Sign::Unsigned,
    );
    refused(&unsigned, "not signed");
    let slipped = commit(
        &repo,
        &[("manifests/cm.yaml", &config_map("4"))],
        &Sign::Ssh(&alice),
    );
    // The head is Alice's, and strict names the unsigned commit beneath.
    refused(&slipped, &format!("{unsigned}: not signed"));
    // A plan of a refused commit says so.
    let plan = setup
        .cli(&["agent", "plan", "prod", "--commit", &foreign])
        .expect("a plan of a refused commit");
    assert!(
        plan.contains("UNVERIFIED") && plan.contains("not in the allowed signers"),
        "{plan}"
    );

    // Told: the commit status fails, and `commit_unverified` goes out.
    wait(
        "the failed status and the notice",
        Duration::from_secs(20),
        || {
            let got = host.requests();
            let status = got.iter().any(|r| {
                let body = r.json();
                r.target == format!("/api/v1/repos/team/config/statuses/{unsigned}")
                    && body["state"] == "failure"
                    && body["context"] == "tether/verify"
            });
            let notice = got.iter().any(|r| {
                let body = r.json();
                r.target == "/hook"
                    && body["event"] == "commit_unverified"
                    && body["commit"] == unsigned.as_str()
            });
            status && notice
        },
    );
    assert!(
        setup.sync_of(&unsigned).is_none()
            && setup.sync_of(&foreign).is_none()
            && setup.sync_of(&slipped).is_none(),
        "no refused commit reached the agent"
    );
    assert_eq!(
        value().as_deref(),
        Some("\"1\""),
        "the cluster is unchanged"
    );

    // History rewritten onto the last verified commit; Bob's GPG-signed
    // commit verifies and is applied.
    reset();
    let good = commit(
        &repo,
        &[("manifests/cm.yaml", &config_map("5"))],
        &Sign::Gpg(&gnupg, &bob),
    );
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("a verified head refreshes");
    wait(
        "the GPG-signed commit to sync",
        Duration::from_secs(60),
        || setup.sync_of(&good).is_some_and(|s| s["state"] == "synced"),
    );
    assert_eq!(value().as_deref(), Some("\"5\""));
    let shown = setup
        .cli(&["project", "show", "team/config"])
        .expect("show");
    assert!(
        shown.contains(&format!("verified: {good}"))
            && shown.contains("gpg")
            && !shown.contains("REFUSED"),
        "{shown}"
    );
    wait("the success status", Duration::from_secs(20), || {
        host.requests().iter().any(|r| {
            r.target.ends_with(&format!("/statuses/{good}")) && r.json()["state"] == "success"
        })
    });

    // Rotation without a restart: Alice's key expires (valid-before a
    // past date); a commit she signs now verifies nothing.
    allow_alice(",valid-before=\"20200101\"");
    verify(&[]);
    let late = commit(
        &repo,
        &[("manifests/cm.yaml", &config_map("6"))],
        &Sign::Ssh(&alice),
    );
    let out = setup.cli_output(&["project", "refresh", "team/config"]);
    assert!(!out.status.success(), "an expired key's commit is refused");
    let shown = setup
        .cli(&["project", "show", "team/config"])
        .expect("show");
    assert!(shown.contains(&format!("REFUSED: {late}")), "{shown}");
    assert_eq!(
        value().as_deref(),
        Some("\"5\""),
        "the cluster is unchanged"
    );

    // Off: the next commit is applied unverified.
    setup
        .cli(&["project", "verify", "team/config", "--mode", "off"])
        .expect("off");
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait(
        "the unverified commit to sync",
        Duration::from_secs(60),
        || setup.sync_of(&late).is_some_and(|s| s["state"] == "synced"),
    );
    assert_eq!(value().as_deref(), Some("\"6\""));
}
