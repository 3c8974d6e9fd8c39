//! Verifying signed commits: `git verify-commit` as a user runs it (the
//! peer: the same git, ssh-keygen and gpg) against kas's `Verifier` (a
//! keyring of its own, every setting pinned, the output parsed), on the
//! same commits in the same run; and a `strict` walk (`commits_between`
//! and each commit verified) of the whole history.
//!
//! Run: `cargo bench -p tether-git --bench verify`. Prints figures;
//! asserts nothing about them.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tether_git::{CommitId, Source, TrustedKeys, Verifier};

/// Commits of each format.
const COMMITS: usize = 20;

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

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    tether_testenv::git::new_repo(&repo);
    let key = dir.path().join("alice");
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
    let gnupg = dir.path().join("gnupg");
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
    let repo_arg = repo.to_str().expect("utf-8").to_owned();
    let signing_key = format!("user.signingkey={}", key.display());
    let bob_key = format!("user.signingkey={bob}");
    let mut ssh_commits = Vec::new();
    let mut gpg_commits = Vec::new();
    for i in 0..COMMITS {
        let message = format!("change {i}");
        run(
            "git",
            &[
                "-C",
                &repo_arg,
                "-c",
                "user.name=Alice",
                "-c",
                "user.email=alice@example.com",
                "-c",
                "gpg.format=ssh",
                "-c",
                &signing_key,
                "commit",
                "-q",
                "-S",
                "--allow-empty",
                "-m",
                &message,
            ],
            &[],
        );
        ssh_commits.push(run("git", &["-C", &repo_arg, "rev-parse", "HEAD"], &[]));
        run(
            "git",
            &[
                "-C",
                &repo_arg,
                "-c",
                "user.name=Bob",
                "-c",
                "user.email=bob@example.com",
                "-c",
                &bob_key,
                "commit",
                "-q",
                "-S",
                "--allow-empty",
                "-m",
                &message,
            ],
            &home,
        );
        gpg_commits.push(run("git", &["-C", &repo_arg, "rev-parse", "HEAD"], &[]));
    }
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("alice.pub");
    let allowed = dir.path().join("allowed_signers");
    std::fs::write(&allowed, format!("alice@example.com {public}")).expect("allowed");
    let keys = TrustedKeys {
        ssh_allowed_signers: Some(format!("alice@example.com {public}")),
        gpg_keys: Some(run("gpg", &["--armor", "--export", &bob], &home)),
    };
    let built = Instant::now();
    let verifier = Verifier::new(&keys, dir.path()).expect("a keyring");
    let keyring = built.elapsed();
    let source = Source::new(&repo_arg, &dir.path().join("mirrors"));
    let allowed_arg = format!("gpg.ssh.allowedSignersFile={}", allowed.display());

    println!("verify: {COMMITS} commits of each format, median of each");
    println!("  keyring built (allowed signers written, GPG key imported): {keyring:?}");
    for (format, commits) in [("SSH", &ssh_commits), ("GPG", &gpg_commits)] {
        let peer: Vec<Duration> = commits
            .iter()
            .map(|c| {
                let t = Instant::now();
                run(
                    "git",
                    &["-C", &repo_arg, "-c", &allowed_arg, "verify-commit", c],
                    &home,
                );
                t.elapsed()
            })
            .collect();
        let ours: Vec<Duration> = commits
            .iter()
            .map(|c| {
                let id = CommitId::parse(c).expect("a commit id");
                let t = Instant::now();
                source.verify_commit(&verifier, &id).expect("verifies");
                t.elapsed()
            })
            .collect();
        let (peer, ours) = (median(peer), median(ours));
        println!(
            "  {format}: git verify-commit {peer:?} · kas's Verifier {ours:?} (×{:.2})",
            ours.as_secs_f64() / peer.as_secs_f64()
        );
    }
    // strict: the whole history since the root, as a first walk without a
    // trust base checks it.
    let head = CommitId::parse(gpg_commits.last().expect("a head")).expect("a commit id");
    let t = Instant::now();
    let walked = source
        .commits_between(None, &head, 10_000)
        .expect("the history");
    let listed = t.elapsed();
    for commit in &walked {
        source.verify_commit(&verifier, commit).expect("verifies");
    }
    let total = t.elapsed();
    println!(
        "  strict walk of {} commits: listed in {listed:?}, all verified in {total:?} ({:?} a commit)",
        walked.len(),
        total / u32::try_from(walked.len()).unwrap_or(1)
    );
}
