//! Signature verification runs in the render sandbox: a signature is a
//! tenant's input to ssh-keygen and gpg, so git and the tools it starts
//! write only the keyring's folder, read the repository and the system's
//! programs, and reach no network. Real git, ssh-keygen and gpg.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use tether_channel::signatures::{confine, confinement};
use tether_git::{CommitId, Source, TrustedKeys, Verifier};
use tether_testenv::signing::{self, GpgHome};

/// A repository with one commit signed by an SSH key and one by a GPG key;
/// the keys as a policy gives them.
fn signed_repo(dir: &Path) -> (TrustedKeys, CommitId, CommitId, GpgHome) {
    let repo = dir.join("repo");
    tether_testenv::git::new_repo(&repo);
    let alice = signing::ssh_key(dir, "alice");
    let home = GpgHome::new(dir, "gnupg");
    let bob = home.generate("Bob <bob@example.com>", "1y", None);
    let ssh_commit = signing::ssh_commit(&repo, &alice, "ssh", None);
    let gpg_commit = signing::gpg_commit(&repo, &home, &bob, "gpg");
    let keys = TrustedKeys {
        ssh_allowed_signers: Some(signing::allowed_signer("alice@example.com", "", &alice)),
        gpg_keys: Some(home.export(&bob)),
    };
    (
        keys,
        CommitId::parse(&ssh_commit).expect("a commit id"),
        CommitId::parse(&gpg_commit).expect("a commit id"),
        home,
    )
}

#[test]
fn a_confined_verification_verifies_both_formats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (keys, ssh_commit, gpg_commit, _home) = signed_repo(dir.path());
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
