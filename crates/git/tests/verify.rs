//! Verifying commit and tag signatures made with the real git, ssh-keygen
//! and gpg, in repositories read in place and through a mirror.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;
use tether_git::{
    CommitId, GitError, ObjectKind, SignatureFormat, Source, TrustedKeys, Unverified, Verifier,
    VerifyError,
};
use tether_testenv::git::{commit, git, new_repo};
use tether_testenv::signing::{self, GpgHome, SshKey, allowed_signer as signer, git_env, ssh_key};

fn run(command: &mut Command) -> String {
    let out = command.output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn now() -> i64 {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    i64::try_from(seconds).expect("a plausible time")
}

// === repositories ===

/// An empty commit signed with an SSH key, committed at `date` (git's
/// date syntax) or now.
fn ssh_commit(repo: &Path, key: &SshKey, message: &str, date: Option<&str>) -> CommitId {
    CommitId::parse(&signing::ssh_commit(repo, key, message, date)).expect("a commit id")
}

/// An empty commit signed with a GPG key.
fn gpg_commit(repo: &Path, home: &GpgHome, fingerprint: &str, message: &str) -> CommitId {
    CommitId::parse(&signing::gpg_commit(repo, home, fingerprint, message)).expect("a commit id")
}

fn head(repo: &Path) -> CommitId {
    CommitId::parse(&git(repo, &["rev-parse", "HEAD"])).expect("a commit id")
}

/// Writes a commit object of `text` (no ref moves) and returns its id.
fn write_commit_object(repo: &Path, text: &str) -> CommitId {
    let file = repo.join(".git").join("crafted-object");
    std::fs::write(&file, text).expect("write the object");
    let id = git(
        repo,
        &[
            "hash-object",
            "-t",
            "commit",
            "-w",
            "--literally",
            file.to_str().expect("utf-8"),
        ],
    );
    let _ = std::fs::remove_file(&file);
    CommitId::parse(&id).expect("a commit id")
}

/// A temporary folder with a repository (one unsigned commit) and a
/// folder for verifiers.
struct Fixture {
    tmp: TempDir,
    repo: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = tmp.path().join("config");
        new_repo(&repo);
        commit(&repo, &[("manifests/app.yaml", Some("kind: ConfigMap\n"))]);
        Fixture { tmp, repo }
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    fn source(&self) -> Source {
        Source::new(
            self.repo.to_str().expect("utf-8"),
            &self.path().join("mirrors"),
        )
    }

    fn verifier(&self, ssh: Option<&str>, gpg: Option<&str>) -> Verifier {
        Verifier::new(
            &TrustedKeys {
                ssh_allowed_signers: ssh.map(str::to_owned),
                gpg_keys: gpg.map(str::to_owned),
            },
            &self.path().join("verifiers"),
        )
        .expect("the keys are usable")
    }
}

// === commits ===

#[test]
fn ssh_signed_commit_verifies_with_its_principal_and_fingerprint() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let id = ssh_commit(&f.repo, &alice, "signed by alice", None);
    let verifier = f.verifier(Some(&signer("alice@example.com", "", &alice)), None);

    let started = Instant::now();
    let signed = f.source().verify_commit(&verifier, &id).expect("verifies");
    eprintln!("one SSH verification took {:?}", started.elapsed());

    assert_eq!(signed.object, id.to_string());
    assert_eq!(signed.format, SignatureFormat::Ssh);
    assert_eq!(signed.signer, "alice@example.com");
    assert_eq!(signed.key, alice.fingerprint);
}

#[test]
fn gpg_signed_commit_verifies_with_its_user_id_and_fingerprint() {
    let f = Fixture::new();
    let home = GpgHome::new(f.path(), "alice-gnupg");
    let fpr = home.generate("Alice <alice@example.com>", "1y", None);
    let id = gpg_commit(&f.repo, &home, &fpr, "signed by alice");
    let verifier = f.verifier(None, Some(&home.export(&fpr)));

    let started = Instant::now();
    let signed = f.source().verify_commit(&verifier, &id).expect("verifies");
    eprintln!("one GPG verification took {:?}", started.elapsed());

    assert_eq!(signed.object, id.to_string());
    assert_eq!(signed.format, SignatureFormat::Gpg);
    assert_eq!(signed.signer, "Alice <alice@example.com>");
    assert_eq!(signed.key, fpr);
}

#[test]
fn unsigned_commit_is_unsigned() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let verifier = f.verifier(Some(&signer("alice@example.com", "", &alice)), None);
    let id = head(&f.repo);
    let err = f
        .source()
        .verify_commit(&verifier, &id)
        .expect_err("refused");
    assert!(matches!(err, Unverified::Unsigned { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("commit {id}: not signed"));
}

#[test]
fn commit_signed_with_an_ssh_key_not_allowed_is_refused_naming_the_key() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let mallory = ssh_key(f.path(), "mallory");
    let id = ssh_commit(&f.repo, &mallory, "signed by mallory", None);
    let verifier = f.verifier(Some(&signer("alice@example.com", "", &alice)), None);
    let err = f
        .source()
        .verify_commit(&verifier, &id)
        .expect_err("refused");
    assert_eq!(
        err,
        Unverified::UnknownKey {
            object: err.object().clone(),
            format: SignatureFormat::Ssh,
            key: Some(mallory.fingerprint.clone()),
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "commit {id}: signed with SSH key {}, which is not in the allowed signers",
            mallory.fingerprint
        )
    );
}

#[test]
fn commit_signed_with_a_gpg_key_not_allowed_is_refused_naming_the_key() {
    let f = Fixture::new();
    let home = GpgHome::new(f.path(), "gnupg");
    let alice = home.generate("Alice <alice@example.com>", "1y", None);
    let mallory = home.generate("Mallory <mallory@example.com>", "1y", None);
    let id = gpg_commit(&f.repo, &home, &mallory, "signed by mallory");
    let verifier = f.verifier(None, Some(&home.export(&alice)));
    let err = f
        .source()
        .verify_commit(&verifier, &id)
        .expect_err("refused");
    assert!(
        matches!(&err, Unverified::UnknownKey { format: SignatureFormat::Gpg, key: Some(key), .. } if *key == mallory),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!(
            "signed with GPG key {mallory}, which is not among the allowed GPG keys"
        )),
        "{err}"
    );
}

#[test]
fn an_ssh_only_keyring_refuses_a_gpg_signature_and_the_reverse() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let home = GpgHome::new(f.path(), "gnupg");
    let fpr = home.generate("Alice <alice@example.com>", "1y", None);
    let gpg_signed = gpg_commit(&f.repo, &home, &fpr, "gpg");
    let ssh_signed = ssh_commit(&f.repo, &alice, "ssh", None);

    let ssh_only = f.verifier(Some(&signer("alice@example.com", "", &alice)), None);
    let err = f
        .source()
        .verify_commit(&ssh_only, &gpg_signed)
        .expect_err("refused");
    assert!(
        matches!(
            err,
            Unverified::UnknownKey {
                format: SignatureFormat::Gpg,
                ..
            }
        ),
        "{err:?}"
    );

    let gpg_only = f.verifier(None, Some(&home.export(&fpr)));
    let err = f
        .source()
        .verify_commit(&gpg_only, &ssh_signed)
        .expect_err("refused");
    assert!(
        matches!(
            err,
            Unverified::UnknownKey {
                format: SignatureFormat::Ssh,
                ..
            }
        ),
        "{err:?}"
    );
}

/// A signed commit's object with its message changed, the signature
/// header kept: what an attacker without the key can make.
fn tampered_copy(repo: &Path, signed: &CommitId, from: &str, to: &str) -> CommitId {
    let text = format!(
        "{}\n",
        git(repo, &["cat-file", "commit", &signed.to_string()])
    );
    assert!(text.contains(from));
    write_commit_object(repo, &text.replace(from, to))
}

#[test]
fn ssh_signature_over_other_content_is_bad() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let signed = ssh_commit(&f.repo, &alice, "deploy v1", None);
    let tampered = tampered_copy(&f.repo, &signed, "deploy v1", "deploy evil");
    let verifier = f.verifier(Some(&signer("alice@example.com", "", &alice)), None);
    let err = f
        .source()
        .verify_commit(&verifier, &tampered)
        .expect_err("refused");
    assert!(
        matches!(
            err,
            Unverified::BadSignature {
                format: SignatureFormat::Ssh,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("commit {tampered}: the signature does not match its content")
    );
    // The original still verifies.
    f.source()
        .verify_commit(&verifier, &signed)
        .expect("verifies");
}

#[test]
fn gpg_signature_over_other_content_is_bad() {
    let f = Fixture::new();
    let home = GpgHome::new(f.path(), "gnupg");
    let fpr = home.generate("Alice <alice@example.com>", "1y", None);
    let signed = gpg_commit(&f.repo, &home, &fpr, "deploy v1");
    let tampered = tampered_copy(&f.repo, &signed, "deploy v1", "deploy evil");
    let verifier = f.verifier(None, Some(&home.export(&fpr)));
    let err = f
        .source()
        .verify_commit(&verifier, &tampered)
        .expect_err("refused");
    assert!(
        matches!(
            err,
            Unverified::BadSignature {
                format: SignatureFormat::Gpg,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "commit {tampered}: the signature does not match its content (signed by Alice <alice@example.com> with GPG key "
        )),
        "{err}"
    );
}

#[test]
fn ssh_key_counts_only_within_its_validity() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let before = ssh_commit(&f.repo, &alice, "in time", Some("2019-06-01T00:00:00Z"));
    let after = ssh_commit(&f.repo, &alice, "too late", None);
    let verifier = f.verifier(
        Some(&signer(
            "alice@example.com",
            ",valid-before=\"20200101Z\"",
            &alice,
        )),
        None,
    );

    let signed = f
        .source()
        .verify_commit(&verifier, &before)
        .expect("signed in time");
    assert_eq!(signed.key, alice.fingerprint);

    let err = f
        .source()
        .verify_commit(&verifier, &after)
        .expect_err("too late");
    assert!(
        matches!(&err, Unverified::Expired { key, .. } if *key == alice.fingerprint),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "commit {after}: signed by SSH key {} after it expired (signed at ",
            alice.fingerprint
        )) && message.ends_with("valid-before 2020-01-01T00:00:00 UTC)"),
        "{message}"
    );
}

#[test]
fn ssh_key_not_yet_valid_is_refused() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let id = ssh_commit(&f.repo, &alice, "early", None);
    let verifier = f.verifier(
        Some(&signer(
            "alice@example.com",
            ",valid-after=\"20990101\"",
            &alice,
        )),
        None,
    );
    let err = f
        .source()
        .verify_commit(&verifier, &id)
        .expect_err("too early");
    assert!(matches!(err, Unverified::Expired { .. }), "{err:?}");
    assert!(err.to_string().contains("before it became valid"), "{err}");
}

/// A key rotated out keeps verifying what it signed while it was valid,
/// and the new key takes over from then.
#[test]
fn ssh_key_rotation_keeps_old_commits_verified() {
    let f = Fixture::new();
    let old = ssh_key(f.path(), "old");
    let new = ssh_key(f.path(), "new");
    let by_old = ssh_commit(&f.repo, &old, "old key", Some("2019-06-01T00:00:00Z"));
    let by_new = ssh_commit(&f.repo, &new, "new key", None);
    let late_old = ssh_commit(&f.repo, &old, "old key, too late", None);
    let signers = format!(
        "{}{}",
        signer("alice@example.com", ",valid-before=\"20200101Z\"", &old),
        signer("alice@example.com", ",valid-after=\"20200101Z\"", &new)
    );
    let verifier = f.verifier(Some(&signers), None);
    assert_eq!(
        f.source()
            .verify_commit(&verifier, &by_old)
            .expect("old")
            .key,
        old.fingerprint
    );
    assert_eq!(
        f.source()
            .verify_commit(&verifier, &by_new)
            .expect("new")
            .key,
        new.fingerprint
    );
    assert!(matches!(
        f.source().verify_commit(&verifier, &late_old),
        Err(Unverified::Expired { .. })
    ));
}

#[test]
fn gpg_key_expired_since_still_verifies_what_it_signed_while_valid() {
    let f = Fixture::new();
    let home = GpgHome::new(f.path(), "gnupg");
    let created = now() - 30 * 86_400;
    let fpr = home.generate("Bob <bob@example.com>", "1d", Some(created));
    home.fake_time(created + 3600);
    let id = gpg_commit(&f.repo, &home, &fpr, "signed the first hour");
    let verifier = f.verifier(None, Some(&home.export(&fpr)));
    let signed = f
        .source()
        .verify_commit(&verifier, &id)
        .expect("signed while valid");
    assert_eq!(signed.key, fpr);
    assert_eq!(signed.signer, "Bob <bob@example.com>");
}

#[test]
fn gpg_signature_made_after_the_key_expired_is_expired() {
    let f = Fixture::new();
    let home = GpgHome::new(f.path(), "gnupg");
    let created = now() - 30 * 86_400;
    let fpr = home.generate("Carol <carol@example.com>", "never", Some(created));
    // Sign on day 5, then give the key (from its first hour) one day of
    // life: the signature is from after its expiry.
    home.fake_time(created + 5 * 86_400);
    let id = gpg_commit(&f.repo, &home, &fpr, "signed on day five");
    home.fake_time(created + 3600);
    run(home.gpg().args(["--quick-set-expire", &fpr, "1d"]));
    let verifier = f.verifier(None, Some(&home.export(&fpr)));
    let err = f
        .source()
        .verify_commit(&verifier, &id)
        .expect_err("expired");
    assert!(
        matches!(&err, Unverified::Expired { key, .. } if *key == fpr),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("after it expired (signed at "),
        "{err}"
    );
}

#[test]
fn revoked_gpg_key_verifies_nothing() {
    let f = Fixture::new();
    let home = GpgHome::new(f.path(), "gnupg");
    let fpr = home.generate("Alice <alice@example.com>", "1y", None);
    let id = gpg_commit(&f.repo, &home, &fpr, "signed before the revocation");
    // gpg wrote a revocation certificate when it made the key; the
    // administrator's file now carries the key and its revocation.
    let certificate =
        std::fs::read_to_string(home.dir.join("openpgp-revocs.d").join(format!("{fpr}.rev")))
            .expect("revocation certificate");
    let certificate = certificate.replace(":-----BEGIN", "-----BEGIN");
    let keys = format!("{}{certificate}", home.export(&fpr));
    let verifier = f.verifier(None, Some(&keys));
    let err = f
        .source()
        .verify_commit(&verifier, &id)
        .expect_err("revoked");
    assert!(
        matches!(&err, Unverified::Revoked { key, .. } if *key == fpr),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "commit {id}: signed by GPG key {fpr} (Alice <alice@example.com>), which is revoked"
        )
    );
}

#[test]
fn a_garbled_signature_header_fails_without_echoing_control_characters() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let verifier = f.verifier(Some(&signer("alice@example.com", "", &alice)), None);
    let tree = git(&f.repo, &["rev-parse", "HEAD^{tree}"]);
    let filler = "A".repeat(2000);
    let text = format!(
        "tree {tree}\nauthor a <a@x> 1700000000 +0000\ncommitter a <a@x> 1700000000 +0000\n\
         gpgsig \x1b[2Jnot a signature\n [GNUPG:] GOODSIG 0 Alice\n {filler}\n\nmessage\n"
    );
    let id = write_commit_object(&f.repo, &text);
    let err = f
        .source()
        .verify_commit(&verifier, &id)
        .expect_err("refused");
    let Unverified::Failed { message, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(!message.chars().any(char::is_control), "{message:?}");
    assert!(message.len() <= 310, "{} bytes", message.len());
}

#[test]
fn an_x509_signature_is_refused() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let verifier = f.verifier(Some(&signer("alice@example.com", "", &alice)), None);
    let tree = git(&f.repo, &["rev-parse", "HEAD^{tree}"]);
    let text = format!(
        "tree {tree}\nauthor a <a@x> 1700000000 +0000\ncommitter a <a@x> 1700000000 +0000\n\
         gpgsig -----BEGIN SIGNED MESSAGE-----\n MIIBxyz\n -----END SIGNED MESSAGE-----\n\nmessage\n"
    );
    let id = write_commit_object(&f.repo, &text);
    let err = f
        .source()
        .verify_commit(&verifier, &id)
        .expect_err("refused");
    assert!(matches!(err, Unverified::Failed { .. }), "{err:?}");
    assert!(err.to_string().contains("not OpenPGP data"), "{err}");
}

// === tags ===

#[test]
fn signed_annotated_tags_verify_and_other_references_are_not_tags() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let home = GpgHome::new(f.path(), "gnupg");
    let fpr = home.generate("Alice <alice@example.com>", "1y", None);
    let key = format!("user.signingkey={}", alice.private.display());
    git(
        &f.repo,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &key,
            "tag",
            "-s",
            "-m",
            "release",
            "v1-ssh",
        ],
    );
    let gpg_key = format!("user.signingkey={fpr}");
    git_env(
        &f.repo,
        &[("GNUPGHOME", home.dir.to_str().expect("utf-8"))],
        &["-c", &gpg_key, "tag", "-s", "-m", "release", "v1-gpg"],
    );
    git(&f.repo, &["tag", "-a", "-m", "unsigned", "v1-plain"]);
    git(&f.repo, &["tag", "v1-light"]);
    let verifier = f.verifier(
        Some(&signer("alice@example.com", "", &alice)),
        Some(&home.export(&fpr)),
    );
    let source = f.source();

    let ssh_tag = git(&f.repo, &["rev-parse", "refs/tags/v1-ssh"]);
    let signed = source
        .verify_tag(&verifier, "v1-ssh")
        .expect("verifies")
        .expect("a tag");
    assert_eq!(
        (signed.object.as_str(), signed.format),
        (ssh_tag.as_str(), SignatureFormat::Ssh)
    );
    assert_eq!(signed.key, alice.fingerprint);
    let signed = source
        .verify_tag(&verifier, "refs/tags/v1-ssh")
        .expect("verifies")
        .expect("a tag");
    assert_eq!(signed.object, ssh_tag);

    let signed = source
        .verify_tag(&verifier, "v1-gpg")
        .expect("verifies")
        .expect("a tag");
    assert_eq!(
        (signed.format, signed.key.as_str()),
        (SignatureFormat::Gpg, fpr.as_str())
    );

    let err = source
        .verify_tag(&verifier, "v1-plain")
        .expect_err("unsigned");
    assert!(
        matches!(&err, Unverified::Unsigned { object } if object.kind == ObjectKind::Tag),
        "{err:?}"
    );
    let plain = git(&f.repo, &["rev-parse", "refs/tags/v1-plain"]);
    assert_eq!(err.to_string(), format!("tag {plain}: not signed"));

    assert_eq!(
        source.verify_tag(&verifier, "v1-light").expect("not a tag"),
        None
    );
    assert_eq!(
        source.verify_tag(&verifier, "main").expect("a branch"),
        None
    );
    let commit_id = head(&f.repo).to_string();
    assert_eq!(
        source.verify_tag(&verifier, &commit_id).expect("a commit"),
        None
    );
    assert_eq!(
        source
            .verify_tag(&verifier, "no-such-ref")
            .expect("nothing"),
        None
    );
}

/// `resolve` takes a short name as a branch before a tag: so does
/// `verify_tag`, or it would vouch for another commit than the one read.
#[test]
fn a_branch_named_like_a_tag_is_the_branch() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let key = format!("user.signingkey={}", alice.private.display());
    git(
        &f.repo,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &key,
            "tag",
            "-s",
            "-m",
            "release",
            "v1",
        ],
    );
    git(&f.repo, &["branch", "v1"]);
    let verifier = f.verifier(Some(&signer("alice@example.com", "", &alice)), None);
    assert_eq!(
        f.source().verify_tag(&verifier, "v1").expect("a branch"),
        None
    );
    assert!(
        f.source()
            .verify_tag(&verifier, "refs/tags/v1")
            .expect("the tag")
            .is_some()
    );
}

// === commits between two heads ===

#[test]
fn commits_between_lists_every_new_commit_oldest_first_merges_included() {
    let f = Fixture::new();
    let source = f.source();
    let base = head(&f.repo);
    let on_main = commit(&f.repo, &[("a", Some("1"))]);
    git(
        &f.repo,
        &["checkout", "-q", "-b", "side", &base.to_string()],
    );
    let on_side = commit(&f.repo, &[("b", Some("2"))]);
    git(&f.repo, &["checkout", "-q", "main"]);
    git(
        &f.repo,
        &["merge", "-q", "--no-ff", "-m", "merge side", "side"],
    );
    let merge = head(&f.repo);

    let between = source
        .commits_between(Some(&base), &merge, 10)
        .expect("listed");
    let ids: Vec<String> = between.iter().map(ToString::to_string).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.contains(&on_main) && ids.contains(&on_side), "{ids:?}");
    assert_eq!(ids[2], merge.to_string(), "the merge comes last");

    let all = source.commits_between(None, &merge, 10).expect("listed");
    assert_eq!(all.len(), 4);
    assert_eq!(all[0], base, "the root comes first");

    assert_eq!(
        source
            .commits_between(Some(&merge), &merge, 10)
            .expect("none"),
        vec![]
    );
    assert_eq!(
        source
            .commits_between(Some(&base), &merge, 3)
            .expect("exactly the limit")
            .len(),
        3
    );
    match source.commits_between(Some(&base), &merge, 2) {
        Err(GitError::OverLimit {
            limit: 2, commit, ..
        }) => assert_eq!(commit, merge.to_string()),
        other => panic!("{other:?}"),
    }
}

// === sources ===

#[test]
fn a_mirror_verifies_like_the_repository_itself() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let home = GpgHome::new(f.path(), "gnupg");
    let fpr = home.generate("Alice <alice@example.com>", "1y", None);
    let by_ssh = ssh_commit(&f.repo, &alice, "ssh", None);
    let by_gpg = gpg_commit(&f.repo, &home, &fpr, "gpg");
    let key = format!("user.signingkey={}", alice.private.display());
    git(
        &f.repo,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &key,
            "tag",
            "-s",
            "-m",
            "release",
            "v1",
        ],
    );
    let url = format!("file://{}", f.repo.display());
    let mirror = Source::new(&url, &f.path().join("mirrors"));
    mirror.update().expect("mirrored");
    let verifier = f.verifier(
        Some(&signer("alice@example.com", "", &alice)),
        Some(&home.export(&fpr)),
    );

    assert_eq!(
        mirror.verify_commit(&verifier, &by_ssh).expect("ssh").key,
        alice.fingerprint
    );
    assert_eq!(
        mirror.verify_commit(&verifier, &by_gpg).expect("gpg").key,
        fpr
    );
    assert!(
        mirror
            .verify_tag(&verifier, "v1")
            .expect("verifies")
            .is_some()
    );
    let base = mirror.resolve(None).expect("HEAD");
    assert_eq!(base, by_gpg);
    assert_eq!(
        mirror
            .commits_between(Some(&by_ssh), &by_gpg, 5)
            .expect("listed"),
        vec![by_gpg.clone()]
    );
    assert!(matches!(
        mirror.verify_commit(&verifier, &commit_before(&f.repo, &by_ssh)),
        Err(Unverified::Unsigned { .. })
    ));
}

fn commit_before(repo: &Path, id: &CommitId) -> CommitId {
    CommitId::parse(&git(repo, &["rev-parse", &format!("{id}~1")])).expect("a parent")
}

/// A local repository's config is its tenant's: it must not widen the
/// allowed signers, swap the programs, or raise the trust level.
#[test]
fn a_repository_config_cannot_change_the_verdict() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let mallory = ssh_key(f.path(), "mallory");
    let by_alice = ssh_commit(&f.repo, &alice, "alice", None);
    let by_mallory = ssh_commit(&f.repo, &mallory, "mallory", None);

    let evil_signers = f.repo.join(".git").join("evil_signers");
    std::fs::write(&evil_signers, signer("alice@example.com", "", &mallory)).expect("write");
    let marker = f.path().join("the repository ran a program");
    let program = f.repo.join(".git").join("evil.sh");
    std::fs::write(&program, format!("#!/bin/sh\ntouch '{}'\necho 'Good \"git\" signature for alice@example.com with ED25519 key {}' >&2\nexit 0\n", marker.display(), alice.fingerprint)).expect("write");
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let program = program.to_str().expect("utf-8");
    for (key, value) in [
        (
            "gpg.ssh.allowedSignersFile",
            evil_signers.to_str().expect("utf-8"),
        ),
        ("gpg.ssh.program", program),
        ("gpg.program", program),
        ("gpg.openpgp.program", program),
        ("gpg.x509.program", program),
        ("gpg.minTrustLevel", "ultimate"),
        ("gpg.ssh.revocationFile", "/dev/zero"),
        ("core.fsmonitor", program),
        ("core.useReplaceRefs", "true"),
    ] {
        git(&f.repo, &["config", key, value]);
    }
    let verifier = f.verifier(Some(&signer("alice@example.com", "", &alice)), None);

    let err = f
        .source()
        .verify_commit(&verifier, &by_mallory)
        .expect_err("refused");
    assert!(matches!(err, Unverified::UnknownKey { .. }), "{err:?}");
    let signed = f
        .source()
        .verify_commit(&verifier, &by_alice)
        .expect("still verifies");
    assert_eq!(signed.key, alice.fingerprint);
    assert!(!marker.exists(), "a program named by the repository ran");
}

/// `refs/replace/<id>` makes git read another object in place of `<id>`;
/// gix, which reads the files kas serves, does not: verification must
/// check the object of that id.
#[test]
fn a_replace_ref_does_not_lend_a_signature() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let unsigned = head(&f.repo);
    let signed = ssh_commit(&f.repo, &alice, "signed", None);
    git(
        &f.repo,
        &["replace", &unsigned.to_string(), &signed.to_string()],
    );
    let verifier = f.verifier(Some(&signer("alice@example.com", "", &alice)), None);
    let err = f
        .source()
        .verify_commit(&verifier, &unsigned)
        .expect_err("refused");
    assert!(matches!(err, Unverified::Unsigned { .. }), "{err:?}");
}

/// gix 0.83 follows replace refs when a repository's config turns them
/// off (its check is inverted): then the files kas reads for an id are
/// not the ones signed, and nothing verifies.
#[test]
fn a_repository_whose_reads_follow_replace_refs_verifies_nothing() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let signed = ssh_commit(&f.repo, &alice, "signed", None);
    let evil = commit(&f.repo, &[("manifests/app.yaml", Some("kind: Evil\n"))]);
    git(&f.repo, &["replace", &signed.to_string(), &evil]);
    git(&f.repo, &["config", "core.useReplaceRefs", "false"]);
    let verifier = f.verifier(Some(&signer("alice@example.com", "", &alice)), None);
    let err = f
        .source()
        .verify_commit(&verifier, &signed)
        .expect_err("refused");
    assert!(
        matches!(&err, Unverified::Failed { message, .. } if message.contains("replaces objects")),
        "{err:?}"
    );
}

/// A path that is not a repository is not verified against a repository
/// in a folder above it.
#[test]
fn a_folder_inside_a_repository_is_not_that_repository() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let signed = ssh_commit(&f.repo, &alice, "signed", None);
    let inner = f.repo.join("manifests");
    let source = Source::new(inner.to_str().expect("utf-8"), &f.path().join("mirrors"));
    let verifier = f.verifier(Some(&signer("alice@example.com", "", &alice)), None);
    let err = source
        .verify_commit(&verifier, &signed)
        .expect_err("not a repository");
    assert!(matches!(err, Unverified::Failed { .. }), "{err:?}");
}

// === the verifier ===

#[test]
fn one_verifier_serves_many_threads_at_once() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let home = GpgHome::new(f.path(), "gnupg");
    let fpr = home.generate("Alice <alice@example.com>", "1y", None);
    let by_ssh = ssh_commit(&f.repo, &alice, "ssh", None);
    let by_gpg = gpg_commit(&f.repo, &home, &fpr, "gpg");
    let verifier = f.verifier(
        Some(&signer("alice@example.com", "", &alice)),
        Some(&home.export(&fpr)),
    );
    let source = f.source();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (source, verifier) = (&source, &verifier);
                let id = if i % 2 == 0 {
                    by_ssh.clone()
                } else {
                    by_gpg.clone()
                };
                scope.spawn(move || source.verify_commit(verifier, &id))
            })
            .collect();
        for handle in handles {
            handle.join().expect("no panic").expect("verifies");
        }
    });
}

#[test]
fn dropping_the_verifier_removes_its_folder() {
    let f = Fixture::new();
    let alice = ssh_key(f.path(), "alice");
    let home = GpgHome::new(f.path(), "gnupg");
    let fpr = home.generate("Alice <alice@example.com>", "1y", None);
    let verifier = f.verifier(
        Some(&signer("alice@example.com", "", &alice)),
        Some(&home.export(&fpr)),
    );
    let scratch = f.path().join("verifiers");
    let folders: Vec<_> = std::fs::read_dir(&scratch).expect("listed").collect();
    assert_eq!(folders.len(), 1);
    let folder = folders[0].as_ref().expect("an entry").path();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&folder).expect("stat").permissions(),
    );
    assert_eq!(mode & 0o777, 0o700);
    drop(verifier);
    assert!(!folder.exists());
}

fn refused(keys: TrustedKeys, scratch: &Path) -> String {
    match Verifier::new(&keys, scratch) {
        Err(e @ VerifyError::Keys { .. }) => e.to_string(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unusable_key_files_are_refused_with_what_is_wrong() {
    let f = Fixture::new();
    let scratch = f.path().join("verifiers");
    let alice = ssh_key(f.path(), "alice");

    let none = refused(TrustedKeys::default(), &scratch);
    assert!(none.contains("there are none"), "{none}");
    let empty = refused(
        TrustedKeys {
            ssh_allowed_signers: Some("\n# nothing\n".into()),
            gpg_keys: Some("  ".into()),
        },
        &scratch,
    );
    assert!(empty.contains("no key line"), "{empty}");

    let garbage = refused(
        TrustedKeys {
            ssh_allowed_signers: Some(format!(
                "{}just some words\nbob ssh-ed25519 AAAA!!!!\n",
                signer("alice@example.com", "", &alice)
            )),
            gpg_keys: None,
        },
        &scratch,
    );
    assert!(
        garbage.contains("allowed signers line 2: \"some\" is not an allowed-signers option"),
        "{garbage}"
    );
    assert!(
        garbage.contains("allowed signers line 3: the key is not valid base64"),
        "{garbage}"
    );

    let gpg_garbage = refused(
        TrustedKeys {
            ssh_allowed_signers: None,
            gpg_keys: Some("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n-----END PGP PUBLIC KEY BLOCK-----\n".into()),
        },
        &scratch,
    );
    assert!(
        gpg_garbage
            .contains("gpg imports no key from the OpenPGP keys: no valid OpenPGP data found"),
        "{gpg_garbage}"
    );

    let private = refused(
        TrustedKeys {
            ssh_allowed_signers: None,
            gpg_keys: Some("-----BEGIN PGP PRIVATE KEY BLOCK-----\n".into()),
        },
        &scratch,
    );
    assert!(private.contains("private key"), "{private}");
    let ssh_private = std::fs::read_to_string(&alice.private).expect("read");
    let private = refused(
        TrustedKeys {
            ssh_allowed_signers: Some(ssh_private),
            gpg_keys: None,
        },
        &scratch,
    );
    assert!(private.contains("private key"), "{private}");

    // Nothing is left behind by a refusal.
    let left = std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0);
}
