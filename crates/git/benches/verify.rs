//! Verifying signed commits: `git verify-commit` as a user runs it (the
//! peer: the same git, ssh-keygen and gpg) against kas's `Verifier` (a
//! keyring of its own, every setting pinned, the output parsed), on the
//! same commits in the same run; and a `strict` walk (`commits_between`
//! and each commit verified) of the whole history.
//!
//! Run: `cargo bench -p tether-git --bench verify`. Prints figures;
//! asserts nothing about them.

use std::time::{Duration, Instant};

use tether_git::{CommitId, Source, TrustedKeys, Verifier};
use tether_testenv::signing::{self, GpgHome};

/// Commits of each format.
const COMMITS: usize = 20;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    tether_testenv::git::new_repo(&repo);
    let alice = signing::ssh_key(dir.path(), "alice");
    let home = GpgHome::new(dir.path(), "gnupg");
    let bob = home.generate("Bob <bob@example.com>", "1y", None);
    let mut ssh_commits = Vec::new();
    let mut gpg_commits = Vec::new();
    for i in 0..COMMITS {
        let message = format!("change {i}");
        ssh_commits.push(signing::ssh_commit(&repo, &alice, &message, None));
        gpg_commits.push(signing::gpg_commit(&repo, &home, &bob, &message));
    }
    let allowed_line = signing::allowed_signer("alice@example.com", "", &alice);
    let allowed = dir.path().join("allowed_signers");
    std::fs::write(&allowed, &allowed_line).expect("allowed");
    let keys = TrustedKeys {
        ssh_allowed_signers: Some(allowed_line),
        gpg_keys: Some(home.export(&bob)),
    };
    let built = Instant::now();
    let verifier = Verifier::new(&keys, dir.path()).expect("a keyring");
    let keyring = built.elapsed();
    let source = Source::new(repo.to_str().expect("utf-8"), &dir.path().join("mirrors"));
    let allowed_arg = format!("gpg.ssh.allowedSignersFile={}", allowed.display());

    println!("verify: {COMMITS} commits of each format, median of each");
    println!("  keyring built (allowed signers written, GPG key imported): {keyring:?}");
    for (format, commits) in [("SSH", &ssh_commits), ("GPG", &gpg_commits)] {
        let peer: Vec<Duration> = commits
            .iter()
            .map(|c| {
                let t = Instant::now();
                let gnupg = home.dir.to_str().expect("utf-8");
                signing::git_env(
                    &repo,
                    &[("GNUPGHOME", gnupg)],
                    &["-c", &allowed_arg, "verify-commit", c],
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
