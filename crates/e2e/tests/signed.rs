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
use std::process::Command;
use std::time::Duration;

use support::receiver::Receiver;
use support::{Setup, kubectl_get, new_repo, wait};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";

fn run(program: &str, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut command = Command::new(program);
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().expect("runs");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// How a commit is signed.
enum Sign<'a> {
    Unsigned,
    /// With this SSH private key file.
    Ssh(&'a Path),
    /// With this GPG key, from this GNUPGHOME.
    Gpg {
        home: &'a Path,
        key: &'a str,
    },
}

/// Writes `files` and commits them with the real git, signed as asked.
fn commit(repo: &Path, files: &[(&str, &str)], sign: &Sign<'_>) -> String {
    for (path, text) in files {
        let file = repo.join(path);
        std::fs::create_dir_all(file.parent().expect("a folder")).expect("folders");
        std::fs::write(file, text).expect("write");
    }
    let git = |args: &[&str], env: &[(&str, &Path)]| {
        let mut all = vec!["-C", repo.to_str().expect("utf-8")];
        all.extend_from_slice(args);
        let mut command = Command::new("git");
        command
            .args(&all)
            .env("GIT_AUTHOR_NAME", "Alice")
            .env("GIT_AUTHOR_EMAIL", "alice@example.com")
            .env("GIT_COMMITTER_NAME", "Alice")
            .env("GIT_COMMITTER_EMAIL", "alice@example.com");
        for (key, value) in env {
            command.env(key, value);
        }
        let out = command.output().expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    git(&["add", "-A"], &[]);
    match sign {
        Sign::Unsigned => git(&["commit", "-q", "--allow-empty", "-m", "unsigned"], &[]),
        Sign::Ssh(key) => git(
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("user.signingkey={}", key.display()),
                "commit",
                "-q",
                "-S",
                "--allow-empty",
                "-m",
                "signed with ssh",
            ],
            &[],
        ),
        Sign::Gpg { home, key } => git(
            &[
                "-c",
                "gpg.format=openpgp",
                "-c",
                &format!("user.signingkey={key}"),
                "commit",
                "-q",
                "-S",
                "--allow-empty",
                "-m",
                "signed with gpg",
            ],
            &[("GNUPGHOME", home)],
        ),
    };
    git(&["rev-parse", "HEAD"], &[])
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
    let alice = keys.join("alice");
    let mallory = keys.join("mallory");
    for key in [&alice, &mallory] {
        run(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "test",
                "-f",
                key.to_str().expect("utf-8"),
            ],
            &[],
        );
    }
    let alice_pub = std::fs::read_to_string(alice.with_extension("pub")).expect("alice.pub");
    let allowed = keys.join("allowed_signers");
    std::fs::write(&allowed, format!("alice@example.com {alice_pub}")).expect("allowed");
    let gnupg = keys.join("gnupg");
    std::fs::create_dir_all(&gnupg).expect("gnupg");
    std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("private");
    let home = [("GNUPGHOME", gnupg.as_path())];
    run(
        "gpg",
        &[
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "Bob <bob@example.com>",
            "ed25519",
            "sign",
            "1y",
        ],
        &home,
    );
    let bob = run("gpg", &["--list-keys", "--with-colons"], &home)
        .lines()
        .find_map(|l| {
            l.strip_prefix("fpr:")
                .map(|f| f.trim_matches(':').to_owned())
        })
        .expect("Bob's fingerprint");
    let bob_keys = keys.join("bob.asc");
    std::fs::write(&bob_keys, run("gpg", &["--armor", "--export", &bob], &home)).expect("bob.asc");

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
    let reset = || tether_testenv::git::git(&repo, &["reset", "-q", "--hard", &first]);
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
        &Sign::Gpg {
            home: &gnupg,
            key: &bob,
        },
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
    std::fs::write(
        &allowed,
        format!("alice@example.com valid-before=\"20200101\" {alice_pub}"),
    )
    .expect("rotated");
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
