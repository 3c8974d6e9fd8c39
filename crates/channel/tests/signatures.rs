//! Signature verification runs in the render sandbox: a signature is a
//! tenant's input to ssh-keygen and gpg, so git and the tools it starts
//! write only the keyring's folder, read the repository and the system's
//! programs, and reach no network. Real git, ssh-keygen and gpg.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use tether_channel::signatures::{confine, confinement};
use tether_git::{CommitId, Source, TrustedKeys, Verifier};

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

/// A repository with one commit signed by an SSH key and one by a GPG key;
/// the keys as a policy gives them.
fn signed_repo(dir: &Path) -> (TrustedKeys, CommitId, CommitId) {
    let repo = dir.join("repo");
    tether_testenv::git::new_repo(&repo);
    let key = dir.join("alice");
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "alice",
            "-f",
            key.to_str().expect("utf-8"),
        ],
        &[],
    );
    let gnupg = dir.join("gnupg");
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
        .expect("a fingerprint");
    let repo_arg = repo.to_str().expect("utf-8");
    let git = |args: &[&str], env: &[(&str, &Path)]| {
        let mut all = vec![
            "-C",
            repo_arg,
            "-c",
            "user.name=Alice",
            "-c",
            "user.email=alice@example.com",
        ];
        all.extend_from_slice(args);
        run("git", &all, env)
    };
    let signing_key = format!("user.signingkey={}", key.display());
    git(
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing_key,
            "commit",
            "-q",
            "-S",
            "--allow-empty",
            "-m",
            "ssh",
        ],
        &[],
    );
    let ssh_commit = git(&["rev-parse", "HEAD"], &[]);
    git(
        &[
            "-c",
            &format!("user.signingkey={bob}"),
            "commit",
            "-q",
            "-S",
            "--allow-empty",
            "-m",
            "gpg",
        ],
        &home,
    );
    let gpg_commit = git(&["rev-parse", "HEAD"], &[]);
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("alice.pub");
    let keys = TrustedKeys {
        ssh_allowed_signers: Some(format!("alice@example.com {public}")),
        gpg_keys: Some(run("gpg", &["--armor", "--export", &bob], &home)),
    };
    (
        keys,
        CommitId::parse(&ssh_commit).expect("a commit id"),
        CommitId::parse(&gpg_commit).expect("a commit id"),
    )
}

#[test]
fn a_confined_verification_verifies_both_formats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (keys, ssh_commit, gpg_commit) = signed_repo(dir.path());
    let verifier = Verifier::new(&keys, dir.path())
        .expect("a keyring")
        .confined(Arc::new(confine));
    let source = Source::new(
        dir.path().join("repo").to_str().expect("utf-8"),
        &dir.path().join("mirrors"),
    );
    let ssh = source
        .verify_commit(&verifier, &ssh_commit)
        .expect("the SSH signature verifies in the sandbox");
    assert_eq!(ssh.signer, "alice@example.com");
    let gpg = source
        .verify_commit(&verifier, &gpg_commit)
        .expect("the GPG signature verifies in the sandbox");
    assert!(gpg.signer.contains("bob@example.com"), "{gpg:?}");
}

/// What the confinement refuses: a program under it reads nothing of kas
/// (a file beside the keyring's folder) and connects nowhere (a listener
/// on loopback sees no connection).
#[test]
fn a_confined_verification_reads_nothing_of_kas_and_reaches_no_network() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keyring = dir.path().join("keyring");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&keyring).expect("keyring");
    tether_testenv::git::new_repo(&repo);
    let secret = dir.path().join("kas-secret");
    std::fs::write(&secret, "not for tenants").expect("secret");

    let confined = |program: &str, args: &[&str]| {
        let mut command = Command::new(program);
        command
            .args(args)
            .env("HOME", &keyring)
            .env("GIT_CONFIG_NOSYSTEM", "1");
        confine(
            &mut command,
            std::slice::from_ref(&keyring),
            std::slice::from_ref(&repo),
        )
        .expect("confined");
        command.output().expect("runs")
    };
    let read = confined("cat", &[secret.to_str().expect("utf-8")]);
    assert!(!read.status.success(), "the file beside is refused");
    assert!(
        !String::from_utf8_lossy(&read.stdout).contains("not for tenants"),
        "nothing of it was read"
    );
    // The repository is readable, not writable.
    let listed = confined(
        "git",
        &[
            "-C",
            repo.to_str().expect("utf-8"),
            "rev-parse",
            "--git-dir",
        ],
    );
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let written = confined("touch", &[repo.join("planted").to_str().expect("utf-8")]);
    assert!(!written.status.success() && !repo.join("planted").exists());

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}/x.git", listener.local_addr().expect("addr"));
    let fetched = confined("git", &["ls-remote", &url]);
    assert!(!fetched.status.success(), "no network");
    assert!(listener.accept().is_err(), "the listener saw no connection");
    // The folders named are the whole of it.
    let c = confinement(std::slice::from_ref(&keyring), std::slice::from_ref(&repo));
    assert_eq!(c.folders, vec![keyring]);
    assert_eq!(c.proxy_port, None);
}
