//! Signature verification of commits and tags, with the keys an
//! administrator allows for a project.
//!
//! The checking is git's own (`git verify-commit --raw`, `git verify-tag
//! --raw`), which runs `ssh-keygen -Y find-principals/verify` for SSH
//! signatures (at the committer's time, so `valid-after`/`valid-before`
//! apply) and `gpg --verify` for OpenPGP ones. kas only reads the raw
//! output of those tools and decides.
//!
//! Invariant: an object verifies only when git exits with success and the
//! tool's output names an allowed key (or, for an OpenPGP key that has
//! expired since, when the signature was made while it was valid).
//! Everything else, including output kas does not recognise, is
//! [`Unverified`] with a reason: verification fails closed.
//!
//! Nothing the repository says may change the outcome. A local repository's
//! config is written by its tenant, so every run of git here pins, on its
//! command line (which wins over every config file), the programs, the
//! allowed-signers and revocation files and the trust level; runs with no
//! system or user config; and ignores replace refs and grafts, which would
//! make git check another object than the one kas reads.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::mirror::{Failed, run_git};
use crate::{CommitId, GitError, Source};

/// How long one verification (git and the gpg or ssh-keygen it runs) may
/// take before it is stopped; a signature is checked in milliseconds, so
/// only a stuck tool gets near this.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many bytes of a tool's output reach a message: the output
/// repeats attacker-controlled data (a commit's signature header).
const MAX_DETAIL: usize = 300;
/// The file of the verifier's folder git gets as `gpg.ssh.allowedSignersFile`.
const ALLOWED_SIGNERS: &str = "allowed_signers";
/// An empty revocation file, so that a repository's own
/// `gpg.ssh.revocationFile` (a FIFO, a huge file) is never read.
const REVOKED_KEYS: &str = "revoked_keys";
/// The GNUPGHOME inside the verifier's folder.
const GNUPG_HOME: &str = "gnupg";
/// The keyring holds only the administrator's keys, so every key in it is
/// trusted (`trust-model always`); gpg must never fetch or import a key
/// (a signature can carry its own key block, a keyserver can serve any
/// key), never reach the network and never start an agent or dirmngr.
const GPG_CONF: &str = "\
trust-model always
no-auto-key-retrieve
no-auto-key-import
no-auto-key-locate
disable-dirmngr
no-autostart
no-auto-check-trustdb
no-greeting
";
/// The last line the verification wrapper prints: git's exit code.
const EXIT_MARKER: &str = "tether-verify-exit ";
/// git writes the tools' raw output to stderr and `run_git` returns only
/// stdout on success: the shell merges the two and adds git's exit code,
/// on a line of its own (output without a final newline cannot swallow
/// it) that nothing git prints can follow.
const VERIFY_SCRIPT: &str =
    "git \"$@\" 2>&1; code=$?; printf '\\n%s%s\\n' 'tether-verify-exit ' \"$code\"";
/// The SSH key types an allowed-signers line may name.
const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// The keys an administrator allows for a project, as the text of the two
/// files: an SSH allowed-signers file (git's `gpg.ssh.allowedSignersFile`
/// format, `valid-after`/`valid-before` for expiry and rotation) and
/// armored OpenPGP public keys. Either may be absent, not both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    pub ssh_allowed_signers: Option<String>,
    pub gpg_keys: Option<String>,
}

/// Why a [`Verifier`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The key files are unusable; every problem found, with its line.
    #[error("the trusted keys are not usable: {}", problems.join("; "))]
    Keys { problems: Vec<String> },
    /// The verifier's folder could not be set up.
    #[error("cannot set up the signature verifier: {what}: {message}")]
    Setup { what: String, message: String },
}

/// A ready-to-use keyring: a private folder (0700) with the allowed-signers
/// file and a GNUPGHOME into which the OpenPGP keys were imported.
///
/// Built once per key set (an import takes tens of milliseconds; kas caches
/// the verifier by the keys' hash) and shared by concurrent verifications,
/// which only read it. Dropping it removes the folder.
pub struct Verifier {
    folder: Folder,
    /// The primary fingerprints gpg imported: a good signature must name
    /// one, whatever else found its way into the keyring.
    gpg_fingerprints: Vec<String>,
    /// Confines each verification (git, and the ssh-keygen or gpg it runs
    /// on a tenant's signature) before it starts.
    confine: Option<Confine>,
}

/// Confines a command that reads a tenant's signature: given the folder
/// it may write (the keyring's) and those it may only read (the
/// repository), it prepares the command so the kernel holds it to them.
/// kas gives its render sandbox here; this crate knows no kernel rules.
pub type Confine = std::sync::Arc<
    dyn Fn(&mut Command, &[std::path::PathBuf], &[std::path::PathBuf]) -> std::io::Result<()>
        + Send
        + Sync,
>;

/// How a commit or tag was signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureFormat {
    Ssh,
    Gpg,
}

/// Who signed a commit or tag that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// The full id of the commit or tag object.
    pub object: String,
    pub format: SignatureFormat,
    /// The SSH principal of the allowed-signers line, or the GPG key's
    /// primary user id.
    pub signer: String,
    /// `SHA256:…` for an SSH key, the primary key's fingerprint for GPG.
    pub key: String,
}

/// Which kind of object a verification was about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Commit,
    Tag,
}

/// The commit or tag an [`Unverified`] is about: its full id, or the
/// reference asked about when it named no object kas could find.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub kind: ObjectKind,
    pub id: String,
}

/// Why a commit or tag does not verify. Every string in it that came from
/// a tool is cleaned of control characters and bounded in length.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    #[error("{object}: not signed")]
    Unsigned { object: Object },
    /// A valid signature by a key that is not allowed; `key` is its
    /// fingerprint (or GPG key id) when the tools said it.
    #[error("{object}: {}", unknown_key(*format, key.as_deref()))]
    UnknownKey {
        object: Object,
        format: SignatureFormat,
        key: Option<String>,
    },
    /// The signature is not one of this content: the object was changed
    /// after signing, or the signature copied from elsewhere.
    #[error("{object}: the signature does not match its content{}", by(*format, key.as_deref(), signer.as_deref()))]
    BadSignature {
        object: Object,
        format: SignatureFormat,
        key: Option<String>,
        signer: Option<String>,
    },
    /// Signed by an allowed key outside the time it is valid for;
    /// `reason` says when, e.g. "after it expired (signed at …,
    /// valid-before …)".
    #[error("{object}: signed by {} key {key}{} {reason}", format_name(*format), signer.as_deref().map(|s| format!(" ({s})")).unwrap_or_default())]
    Expired {
        object: Object,
        format: SignatureFormat,
        key: String,
        signer: Option<String>,
        reason: String,
    },
    /// Signed by a key that has been revoked: it verifies nothing any more,
    /// whenever the signature was made.
    #[error("{object}: signed by {} key {key}{}, which is revoked", format_name(*format), signer.as_deref().map(|s| format!(" ({s})")).unwrap_or_default())]
    Revoked {
        object: Object,
        format: SignatureFormat,
        key: String,
        signer: Option<String>,
    },
    /// Anything else: the signature could not be checked, or the tools
    /// said something kas does not recognise.
    #[error("{object}: cannot verify the signature: {message}")]
    Failed { object: Object, message: String },
}

// === impl Verifier ===

impl Verifier {
    /// Checks `keys` and builds the keyring in a new folder under
    /// `scratch`. Refuses, naming every problem: no keys at all, an
    /// allowed-signers line that is not `<principals> [options] <key type>
    /// <base64 key>`, a private key, OpenPGP text from which gpg imports no
    /// key.
    pub fn new(keys: &TrustedKeys, scratch: &Path) -> Result<Verifier, VerifyError> {
        let present = |text: &Option<String>| {
            text.as_deref()
                .filter(|t| !t.trim().is_empty())
                .map(str::to_owned)
        };
        let ssh = present(&keys.ssh_allowed_signers);
        let gpg = present(&keys.gpg_keys);
        if ssh.is_none() && gpg.is_none() {
            return Err(VerifyError::Keys {
                problems: vec![
                    "there are none: give an SSH allowed-signers file, OpenPGP public keys, or both"
                        .to_owned(),
                ],
            });
        }
        let mut problems = Vec::new();
        if let Some(text) = &ssh {
            problems.extend(check_allowed_signers(text));
        }
        if let Some(text) = &gpg
            && text.contains("PRIVATE KEY BLOCK")
        {
            problems.push(
                "the OpenPGP keys include a private key: give only public keys (gpg --armor --export)"
                    .to_owned(),
            );
        }
        if !problems.is_empty() {
            return Err(VerifyError::Keys { problems });
        }

        let folder = Folder::create(scratch)?;
        let dir = folder.path();
        // Always a file, empty for a GPG-only keyring: git is always told
        // which file to use, so no other config can name one.
        write_private(
            &dir.join(ALLOWED_SIGNERS),
            ssh.as_deref().unwrap_or_default(),
        )?;
        write_private(&dir.join(REVOKED_KEYS), "")?;
        let gnupg = dir.join(GNUPG_HOME);
        create_private_dir(&gnupg)?;
        write_private(&gnupg.join("gpg.conf"), GPG_CONF)?;
        let gpg_fingerprints = match &gpg {
            Some(text) => import_gpg_keys(dir, text)?,
            None => Vec::new(),
        };
        Ok(Verifier {
            folder,
            gpg_fingerprints,
            confine: None,
        })
    }

    /// Runs every verification confined by `confine`.
    pub fn confined(mut self, confine: Confine) -> Self {
        self.confine = Some(confine);
        self
    }

    /// Runs `git <subcommand> --raw <id>` (verify-commit or verify-tag) in
    /// `repo` and decides from its output.
    fn verify(&self, repo: &Path, object: Object) -> Result<Signed, Unverified> {
        let subcommand = match object.kind {
            ObjectKind::Commit => "verify-commit",
            ObjectKind::Tag => "verify-tag",
        };
        let failed = |message: String| Unverified::Failed {
            object: object.clone(),
            message,
        };
        refuse_replaced_objects(repo).map_err(failed)?;
        let mut command = Command::new("/bin/sh");
        command.args(["-c", VERIFY_SCRIPT, "sh"]);
        isolate(&mut command, Some(self.folder.path()));
        enter_repo(&mut command, repo).map_err(failed)?;
        command
            .args(self.pinned_config())
            .args([subcommand, "--raw", &object.id]);
        if let Some(confine) = &self.confine {
            confine(
                &mut command,
                &[self.folder.path().to_owned()],
                &[repo.to_owned()],
            )
            .map_err(|e| failed(format!("cannot confine the verification: {e}")))?;
        }
        let stdout = run_git(&mut command, None, VERIFY_TIMEOUT)
            .map_err(|f: Failed| failed(clean(&f.message, MAX_DETAIL)))?;
        let Some((output, code)) = split_exit_code(&stdout) else {
            return Err(failed("the output of git was cut short".to_owned()));
        };
        let output = output.replace(&format!("{}/", self.folder.path().display()), "");
        decide(&object, code, &output, self)
    }

    /// `-c` options that override anything a repository's config says
    /// about verification (the command line is read last and wins).
    fn pinned_config(&self) -> Vec<OsString> {
        let dir = self.folder.path();
        let mut pairs: Vec<(&str, OsString)> = vec![
            // The programs: a tenant's config could name any command.
            ("gpg.program", "gpg".into()),
            ("gpg.openpgp.program", "gpg".into()),
            // Never gpgsm, which may reach the network for CRLs; an X.509
            // signature handed to gpg is "no OpenPGP data", refused.
            ("gpg.x509.program", "gpg".into()),
            ("gpg.ssh.program", "ssh-keygen".into()),
            // The administrator's signers, never the repository's.
            (
                "gpg.ssh.allowedSignersFile",
                dir.join(ALLOWED_SIGNERS).into(),
            ),
            ("gpg.ssh.revocationFile", dir.join(REVOKED_KEYS).into()),
            // kas decides on trust itself; a raised level would only make
            // git's verdict disagree with the tool's.
            ("gpg.minTrustLevel", "undefined".into()),
        ];
        pairs.extend(object_pins());
        to_config_args(pairs)
    }

    /// Whether a fingerprint is one of the keys imported from the
    /// administrator's file.
    fn allows_gpg_key(&self, fingerprint: &str) -> bool {
        self.gpg_fingerprints
            .iter()
            .any(|f| f.eq_ignore_ascii_case(fingerprint))
    }

    /// The expiry (seconds since the epoch) that applies to a signature by
    /// `signing_key` (a primary key or a subkey) of the key `primary`: the
    /// earlier of the two keys' expiries, as gpg lists them now.
    fn gpg_key_expiry(&self, signing_key: &str, primary: &str) -> Result<Option<i64>, String> {
        let mut command = Command::new("gpg");
        command.args([
            "--batch",
            "--no-tty",
            "--with-colons",
            "--fixed-list-mode",
            "--list-keys",
            "--",
            primary,
        ]);
        isolate(&mut command, Some(self.folder.path()));
        let listing = run_git(&mut command, None, VERIFY_TIMEOUT)
            .map_err(|f| format!("cannot list the key: {}", clean(&f.message, MAX_DETAIL)))?;
        let keys = parse_key_listing(&listing);
        let expiry_of = |fpr: &str| {
            keys.iter()
                .find(|(f, _)| f.eq_ignore_ascii_case(fpr))
                .map(|(_, expiry)| *expiry)
        };
        let (Some(signing), Some(main)) = (expiry_of(signing_key), expiry_of(primary)) else {
            return Err("the signing key is not in the keyring".to_owned());
        };
        Ok(match (signing, main) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("folder", &self.folder.path())
            .field("gpg_fingerprints", &self.gpg_fingerprints)
            .field("confined", &self.confine.is_some())
            .finish()
    }
}

// === impl Source ===

impl Source {
    /// Verifies the signature of `commit` with `verifier`'s keys: who
    /// signed it, or why it does not verify.
    pub fn verify_commit(
        &self,
        verifier: &Verifier,
        commit: &CommitId,
    ) -> Result<Signed, Unverified> {
        verifier.verify(
            self.git_dir(),
            Object {
                kind: ObjectKind::Commit,
                id: commit.to_string(),
            },
        )
    }

    /// When `reference` names an annotated tag (`refs/tags/<name>`, or a
    /// `<name>` that [`Source::resolve`] would take as a tag rather than a
    /// branch, or a tag object's id): verifies the tag's signature.
    /// `Ok(None)` when it is not an annotated tag (a branch, a commit id, a
    /// lightweight tag).
    ///
    /// The tag object is verified by its id, so what was checked cannot
    /// change under git's feet; a caller that also resolves the reference
    /// should compare the commit the tag names with the one it serves.
    pub fn verify_tag(
        &self,
        verifier: &Verifier,
        reference: &str,
    ) -> Result<Option<Signed>, Unverified> {
        let failed = |message: String| Unverified::Failed {
            object: Object {
                kind: ObjectKind::Tag,
                id: clean(reference, MAX_DETAIL),
            },
            message,
        };
        let Some(id) = self.annotated_tag(reference).map_err(failed)? else {
            return Ok(None);
        };
        verifier
            .verify(
                self.git_dir(),
                Object {
                    kind: ObjectKind::Tag,
                    id,
                },
            )
            .map(Some)
    }

    /// The commits reachable from `head` and not from `base` (all of
    /// `head`'s ancestors when `base` is `None`), oldest first, merge
    /// commits included: what strict verification checks between the last
    /// verified commit and a new head. More than `limit` is
    /// [`GitError::OverLimit`].
    pub fn commits_between(
        &self,
        base: Option<&CommitId>,
        head: &CommitId,
        limit: usize,
    ) -> Result<Vec<CommitId>, GitError> {
        let what = match base {
            Some(base) => format!("commits since {base}"),
            None => "commits".to_owned(),
        };
        let read_error = |message: String| GitError::Read {
            location: self.display_url(),
            what: what.clone(),
            message,
        };
        let mut command = Command::new("git");
        isolate(&mut command, None);
        enter_repo(&mut command, self.git_dir()).map_err(read_error)?;
        command
            .args(to_config_args(object_pins()))
            .arg("rev-list")
            .arg("--reverse")
            // One more than allowed, to tell "exactly the limit" from "more".
            .arg(format!("--max-count={}", limit.saturating_add(1)))
            .arg(head.to_string());
        if let Some(base) = base {
            command.arg(format!("^{base}"));
        }
        command.arg("--");
        let out = run_git(&mut command, None, VERIFY_TIMEOUT)
            .map_err(|f| read_error(clean(&f.message, MAX_DETAIL)))?;
        let commits = out
            .lines()
            .map(|line| {
                CommitId::parse(line.trim()).ok_or_else(|| {
                    read_error(format!("git rev-list printed {:?}", clean(line, 80)))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if commits.len() > limit {
            return Err(GitError::OverLimit {
                what,
                commit: head.to_string(),
                limit: u64::try_from(limit).unwrap_or(u64::MAX),
            });
        }
        Ok(commits)
    }

    /// The id of the annotated tag `reference` names, `None` when it names
    /// something else. Short names are taken as [`Source::resolve`] takes
    /// them: a branch first, then a tag.
    fn annotated_tag(&self, reference: &str) -> Result<Option<String>, String> {
        let repo = gix::open(self.git_dir()).map_err(|e| {
            format!(
                "cannot open the repository: {}",
                clean(&e.to_string(), MAX_DETAIL)
            )
        })?;
        let is_tag = |id: gix::ObjectId| {
            repo.find_header(id)
                .map(|h| h.kind() == gix::object::Kind::Tag)
                .unwrap_or(false)
        };
        let candidates: Vec<String> = if reference.starts_with("refs/tags/") {
            vec![reference.to_owned()]
        } else if reference.starts_with("refs/") {
            return Ok(None);
        } else {
            vec![
                format!("refs/heads/{reference}"),
                format!("refs/tags/{reference}"),
            ]
        };
        for name in candidates {
            let found = repo.try_find_reference(name.as_str()).map_err(|e| {
                format!(
                    "cannot read {}: {}",
                    clean(&name, 80),
                    clean(&e.to_string(), 200)
                )
            })?;
            let Some(mut found) = found else { continue };
            if name.starts_with("refs/heads/") {
                return Ok(None);
            }
            // Follow symbolic refs, but stop at the first object: peeling
            // would go past the tag to its commit.
            let id = found
                .follow_to_object()
                .map_err(|e| {
                    format!(
                        "cannot read {}: {}",
                        clean(&name, 80),
                        clean(&e.to_string(), 200)
                    )
                })?
                .detach();
            return Ok(is_tag(id).then(|| id.to_string()));
        }
        match gix::ObjectId::from_hex(reference.as_bytes()) {
            Ok(id) if is_tag(id) => Ok(Some(id.to_string())),
            _ => Ok(None),
        }
    }
}

// === running git and gpg ===

/// `-C <repo>` (a local repository may be a working tree), with the folder
/// holding it as a ceiling: a local path that is not a repository must
/// not be taken for one of its parents, which gix (reading the files)
/// would not do either.
fn enter_repo(command: &mut Command, repo: &Path) -> Result<(), String> {
    let dir =
        std::fs::canonicalize(repo).map_err(|e| format!("cannot open the repository: {e}"))?;
    command.arg("-C").arg(&dir);
    if let Some(parent) = dir.parent() {
        command.env("GIT_CEILING_DIRECTORIES", parent);
    }
    Ok(())
}

/// Fails when gix, which reads the files kas serves, would read other
/// objects than git verifies. git here never follows replace refs; gix
/// 0.83 follows them exactly when a repository's config says
/// `core.useReplaceRefs = false` (its check is inverted), which a tenant
/// can write in a local repository: the signature of one commit would then
/// vouch for another's files.
fn refuse_replaced_objects(repo: &Path) -> Result<(), String> {
    let opened = gix::open(repo).map_err(|e| {
        format!(
            "cannot open the repository: {}",
            clean(&e.to_string(), MAX_DETAIL)
        )
    })?;
    if opened.objects.store_ref().replacements().next().is_some() {
        return Err(
            "the repository replaces objects (refs/replace/ with core.useReplaceRefs set), so what kas reads could differ from what is verified"
                .to_owned(),
        );
    }
    Ok(())
}

/// Settings that make git see exactly the objects kas reads with gix:
/// replace refs (which a push or a mirror fetch can bring) would have git
/// check another object than the one of that id, and a commit-graph file
/// written in a local repository could lie about parents.
fn object_pins() -> Vec<(&'static str, OsString)> {
    vec![
        ("core.useReplaceRefs", "false".into()),
        ("core.commitGraph", "false".into()),
        ("core.fsmonitor", "false".into()),
        // GIT_GRAFT_FILE names a file (/dev/null), which git's advice
        // would otherwise mention on every run.
        ("advice.graftFileDeprecated", "false".into()),
    ]
}

fn to_config_args(pairs: Vec<(&str, OsString)>) -> Vec<OsString> {
    pairs
        .into_iter()
        .flat_map(|(key, value)| {
            let mut setting = OsString::from(format!("{key}="));
            setting.push(value);
            [OsString::from("-c"), setting]
        })
        .collect()
}

/// Nothing of kas's own environment reaches git, gpg or ssh-keygen: no
/// system or user git config, no `GIT_DIR` or `GIT_CONFIG_*`; the
/// verifier's folder as home and its GNUPGHOME; the C locale, whose
/// messages are the ones parsed here; UTC, in which `valid-after` and
/// `valid-before` without a zone are read, whatever the machine's zone.
/// Call it first: it clears the environment.
fn isolate(command: &mut Command, verifier: Option<&Path>) {
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    if let Some(home) = verifier {
        command
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home)
            // git writes the signature and its payload to temporary files
            // for ssh-keygen and gpg: in the keyring's private folder, the
            // one a confined verification may write.
            .env("TMPDIR", home)
            .env("GNUPGHOME", home.join(GNUPG_HOME));
    }
    command
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_NO_REPLACE_OBJECTS", "1")
        .env("GIT_GRAFT_FILE", "/dev/null")
        .env("LC_ALL", "C")
        .env("TZ", "UTC");
}

/// The output before the wrapper's last line, and git's exit code.
fn split_exit_code(stdout: &str) -> Option<(&str, i32)> {
    let body = stdout.strip_suffix('\n').unwrap_or(stdout);
    let (output, last) = match body.rsplit_once('\n') {
        Some((output, last)) => (output, last),
        None => ("", body),
    };
    let code = last.strip_prefix(EXIT_MARKER)?.trim().parse().ok()?;
    Some((output, code))
}

/// Imports the armored keys into the verifier's GNUPGHOME and returns the
/// primary fingerprints gpg reports imported.
fn import_gpg_keys(dir: &Path, text: &str) -> Result<Vec<String>, VerifyError> {
    let file = dir.join(GNUPG_HOME).join("import.asc");
    write_private(&file, text)?;
    let mut command = Command::new("gpg");
    command
        .args(["--batch", "--no-tty", "--status-fd", "1", "--import", "--"])
        .arg(&file);
    isolate(&mut command, Some(dir));
    let result = run_git(&mut command, None, VERIFY_TIMEOUT);
    let _ = std::fs::remove_file(&file);
    let status = match result {
        Ok(status) => status,
        Err(failed) => {
            // gpg's reason, not its totals and progress.
            let lines: Vec<&str> = failed
                .stderr
                .lines()
                .map(|l| l.trim_start_matches("gpg: "))
                .filter(|l| {
                    !l.starts_with("Total number processed")
                        && !l.starts_with("keybox ")
                        && !l.starts_with("invalid radix64")
                        && !l.contains("gpg-agent")
                })
                .collect();
            let reason = if lines
                .iter()
                .any(|l| l.contains("no valid OpenPGP data found"))
            {
                "no valid OpenPGP data found".to_owned()
            } else {
                clean(lines.last().copied().unwrap_or("gpg failed"), MAX_DETAIL)
            };
            return Err(VerifyError::Keys {
                problems: vec![format!(
                    "gpg imports no key from the OpenPGP keys: {reason} (give armored public keys: gpg --armor --export)"
                )],
            });
        }
    };
    let mut fingerprints: Vec<String> = status
        .lines()
        .filter_map(|line| line.strip_prefix("[GNUPG:] IMPORT_OK "))
        .filter_map(|rest| rest.split_whitespace().nth(1))
        .filter(|f| f.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_ascii_uppercase)
        .collect();
    fingerprints.sort();
    fingerprints.dedup();
    if fingerprints.is_empty() {
        return Err(VerifyError::Keys {
            problems: vec!["gpg imports no key from the OpenPGP keys: give armored public keys (gpg --armor --export)".to_owned()],
        });
    }
    Ok(fingerprints)
}

/// `(fingerprint, expiry)` of every key and subkey in a `gpg --with-colons
/// --fixed-list-mode` listing: a `pub`/`sub` record carries the expiry in
/// field 7, the `fpr` record after it the fingerprint.
fn parse_key_listing(listing: &str) -> Vec<(String, Option<i64>)> {
    let mut keys = Vec::new();
    let mut expiry: Option<Option<i64>> = None;
    for line in listing.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.first().copied() {
            Some("pub" | "sub") => {
                expiry = Some(fields.get(6).and_then(|e| e.parse().ok()));
            }
            Some("fpr") => {
                if let (Some(e), Some(fpr)) = (expiry.take(), fields.get(9)) {
                    keys.push(((*fpr).to_owned(), e));
                }
            }
            _ => {}
        }
    }
    keys
}

// === deciding from the tools' output ===

/// The verdict on `object` from git's exit code and the raw output of
/// gpg (status lines) or ssh-keygen.
fn decide(
    object: &Object,
    code: i32,
    output: &str,
    verifier: &Verifier,
) -> Result<Signed, Unverified> {
    let failed = |message: String| Unverified::Failed {
        object: object.clone(),
        message,
    };
    // 0 and 1 are git's verdicts; anything else (128) is git dying, whose
    // message may quote the signature header: never parse that.
    if code != 0 && code != 1 {
        return Err(failed(summary(output)));
    }
    // git's advice (`hint: …`) is never a verdict.
    let output = output
        .lines()
        .filter(|l| !l.starts_with("hint:"))
        .collect::<Vec<_>>()
        .join("\n");
    let output = output.as_str();
    let trimmed = output.trim();
    if code == 1 && (trimmed.is_empty() || trimmed == "error: no signature found") {
        return Err(Unverified::Unsigned {
            object: object.clone(),
        });
    }
    if output.lines().any(|l| l.starts_with("[GNUPG:] ")) {
        decide_gpg(object, code, output, verifier)
    } else {
        decide_ssh(object, code, output)
    }
}

fn decide_ssh(object: &Object, code: i32, output: &str) -> Result<Signed, Unverified> {
    let format = SignatureFormat::Ssh;
    let failed = |message: String| Unverified::Failed {
        object: object.clone(),
        message,
    };
    let good_for = output
        .lines()
        .find_map(|l| l.strip_prefix("Good \"git\" signature for "));
    // check-novalidate's line, printed when no allowed principal matched:
    // the signature is sound, and this is its key.
    let key_seen = output
        .lines()
        .find_map(|l| l.strip_prefix("Good \"git\" signature with "))
        .and_then(|rest| {
            rest.rsplit_once(" key ")
                .map(|(_, fpr)| clean(fpr.trim(), 100))
        });
    if code == 0 {
        let parsed = good_for.and_then(|rest| {
            let (rest, key) = rest.rsplit_once(" key ")?;
            let (principal, _key_type) = rest.rsplit_once(" with ")?;
            Some((principal, key.trim()))
        });
        return match parsed {
            Some((principal, key)) if key.starts_with("SHA256:") && !principal.is_empty() => {
                Ok(Signed {
                    object: object.id.clone(),
                    format,
                    signer: clean(principal, 200),
                    key: clean(key, 100),
                })
            }
            _ => Err(failed(format!(
                "git accepted it but ssh-keygen said {}",
                summary(output)
            ))),
        };
    }
    if output.contains("incorrect signature") {
        return Err(Unverified::BadSignature {
            object: object.clone(),
            format,
            key: key_seen,
            signer: None,
        });
    }
    let window = output.lines().find_map(|l| {
        if let Some((_, rest)) = l.split_once("key has expired: verify time ") {
            let (at, limit) = rest.split_once(" > valid-before ")?;
            Some(format!(
                "after it expired (signed at {} UTC, valid-before {} UTC)",
                clean(at, 40),
                clean(limit, 40)
            ))
        } else if let Some((_, rest)) = l.split_once("key is not yet valid: verify time ") {
            let (at, limit) = rest.split_once(" < valid-after ")?;
            Some(format!(
                "before it became valid (signed at {} UTC, valid-after {} UTC)",
                clean(at, 40),
                clean(limit, 40)
            ))
        } else {
            None
        }
    });
    if let (Some(reason), Some(key)) = (window, key_seen.clone()) {
        return Err(Unverified::Expired {
            object: object.clone(),
            format,
            key,
            signer: None,
            reason,
        });
    }
    if output.contains("not permitted for use in signature namespace") {
        return Err(failed(
            "the allowed signers do not permit its key to sign git objects (see the line's namespaces option)"
                .to_owned(),
        ));
    }
    // A sound signature by a key not allowed: check-novalidate named its
    // key. Without that line the signature is not even readable.
    if output.lines().any(|l| l.trim() == "No principal matched.") && key_seen.is_some() {
        return Err(Unverified::UnknownKey {
            object: object.clone(),
            format,
            key: key_seen,
        });
    }
    Err(failed(summary(output)))
}

/// The signature statuses of which gpg prints exactly one per signature.
const GPG_VERDICTS: &[&str] = &[
    "GOODSIG",
    "EXPSIG",
    "EXPKEYSIG",
    "REVKEYSIG",
    "BADSIG",
    "ERRSIG",
];

fn decide_gpg(
    object: &Object,
    code: i32,
    output: &str,
    verifier: &Verifier,
) -> Result<Signed, Unverified> {
    let format = SignatureFormat::Gpg;
    let failed = |message: String| Unverified::Failed {
        object: object.clone(),
        message,
    };
    let statuses: Vec<(&str, &str)> = output
        .lines()
        .filter_map(|l| l.strip_prefix("[GNUPG:] "))
        .map(|l| l.split_once(' ').unwrap_or((l, "")))
        .collect();
    let find = |keyword: &str| {
        statuses
            .iter()
            .find(|(k, _)| *k == keyword)
            .map(|(_, rest)| *rest)
    };
    let verdicts: Vec<(&str, &str)> = statuses
        .iter()
        .filter(|(k, _)| GPG_VERDICTS.contains(k))
        .copied()
        .collect();
    let [(verdict, rest)] = verdicts.as_slice() else {
        if verdicts.len() > 1 {
            return Err(failed(
                "it carries more than one OpenPGP signature; kas accepts exactly one".to_owned(),
            ));
        }
        if find("NODATA").is_some() {
            return Err(failed(
                "the signature is not OpenPGP data (kas accepts OpenPGP and SSH signatures only)"
                    .to_owned(),
            ));
        }
        return Err(failed(summary(output)));
    };
    // `<key id> <user id>` for GOODSIG, EXPSIG, EXPKEYSIG, REVKEYSIG, BADSIG.
    let (key_id, user_id) = rest.split_once(' ').unwrap_or((rest, ""));
    let key_id = clean(key_id, 64);
    let user_id = (!user_id.is_empty()).then(|| clean(&percent_decode(user_id), 200));
    // VALIDSIG <signing key fpr> <date> <sig timestamp> <expiry> <version>
    // <reserved> <pk algo> <hash algo> <class> <primary key fpr>.
    let valid = find("VALIDSIG").map(|rest| rest.split(' ').collect::<Vec<_>>());
    let fingerprints = valid.as_ref().and_then(|f| {
        let signing = f.first()?;
        let primary = f.get(9).unwrap_or(signing);
        let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
        (hex(signing) && hex(primary))
            .then(|| (signing.to_ascii_uppercase(), primary.to_ascii_uppercase()))
    });
    let signed_at = valid
        .as_ref()
        .and_then(|f| f.get(2))
        .and_then(|t| parse_gpg_time(t));
    match *verdict {
        "GOODSIG" | "EXPKEYSIG" => {
            let Some((signing, primary)) = fingerprints else {
                return Err(failed(
                    "gpg reported no valid signature fingerprint".to_owned(),
                ));
            };
            if !verifier.allows_gpg_key(&primary) {
                return Err(Unverified::UnknownKey {
                    object: object.clone(),
                    format,
                    key: Some(primary),
                });
            }
            let signed = Signed {
                object: object.id.clone(),
                format,
                signer: user_id.unwrap_or_default(),
                key: primary.clone(),
            };
            if *verdict == "GOODSIG" {
                return if code == 0 {
                    Ok(signed)
                } else {
                    Err(failed(format!(
                        "gpg reported a good signature but git refused it: {}",
                        summary(output)
                    )))
                };
            }
            // The key has expired since: the signature stands if it was
            // made while the key was valid.
            let Some(signed_at) = signed_at else {
                return Err(failed("gpg reported no signature time".to_owned()));
            };
            let expiry = verifier
                .gpg_key_expiry(&signing, &primary)
                .map_err(failed)?;
            match expiry {
                Some(expiry) if signed_at < expiry => Ok(signed),
                Some(expiry) => Err(Unverified::Expired {
                    object: object.clone(),
                    format,
                    key: primary,
                    signer: Some(signed.signer),
                    reason: format!(
                        "after it expired (signed at {}, expired at {})",
                        format_time(signed_at),
                        format_time(expiry)
                    ),
                }),
                None => Err(failed(
                    "gpg says the key expired but lists no expiry".to_owned(),
                )),
            }
        }
        "EXPSIG" => Err(Unverified::Expired {
            object: object.clone(),
            format,
            key: fingerprints.map_or(key_id, |(_, primary)| primary),
            signer: user_id,
            reason: "but the signature itself has expired".to_owned(),
        }),
        "REVKEYSIG" => Err(Unverified::Revoked {
            object: object.clone(),
            format,
            key: fingerprints.map_or(key_id, |(_, primary)| primary),
            signer: user_id,
        }),
        "BADSIG" => Err(Unverified::BadSignature {
            object: object.clone(),
            format,
            key: Some(key_id),
            signer: user_id,
        }),
        _ => {
            // ERRSIG <key id> <pk algo> <hash algo> <class> <time> <rc> [<fpr>]
            let fields: Vec<&str> = rest.split(' ').collect();
            let rc = fields.get(5).copied().unwrap_or_default();
            if rc == "9" || find("NO_PUBKEY").is_some() {
                let key = fields
                    .get(6)
                    .filter(|f| f.len() >= 32 && f.chars().all(|c| c.is_ascii_hexdigit()))
                    .map_or(key_id, |f| f.to_ascii_uppercase());
                return Err(Unverified::UnknownKey {
                    object: object.clone(),
                    format,
                    key: Some(key),
                });
            }
            let why = match rc {
                "4" => "it uses an algorithm gpg does not support",
                _ => "gpg could not check it",
            };
            Err(failed(format!("{why} (gpg error code {})", clean(rc, 8))))
        }
    }
}

// === messages ===

fn format_name(format: SignatureFormat) -> &'static str {
    match format {
        SignatureFormat::Ssh => "SSH",
        SignatureFormat::Gpg => "GPG",
    }
}

fn unknown_key(format: SignatureFormat, key: Option<&str>) -> String {
    match (format, key) {
        (SignatureFormat::Ssh, Some(key)) => {
            format!("signed with SSH key {key}, which is not in the allowed signers")
        }
        (SignatureFormat::Ssh, None) => {
            "signed with an SSH key that is not in the allowed signers".to_owned()
        }
        (SignatureFormat::Gpg, Some(key)) => {
            format!("signed with GPG key {key}, which is not among the allowed GPG keys")
        }
        (SignatureFormat::Gpg, None) => {
            "signed with a GPG key that is not among the allowed GPG keys".to_owned()
        }
    }
}

fn by(format: SignatureFormat, key: Option<&str>, signer: Option<&str>) -> String {
    match (key, signer) {
        (Some(key), Some(signer)) => format!(
            " (signed by {signer} with {} key {key})",
            format_name(format)
        ),
        (Some(key), None) => format!(" (signed with {} key {key})", format_name(format)),
        (None, Some(signer)) => format!(" (signed by {signer})"),
        (None, None) => String::new(),
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ObjectKind::Commit => write!(f, "commit {}", self.id),
            ObjectKind::Tag => write!(f, "tag {}", self.id),
        }
    }
}

impl fmt::Display for SignatureFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(format_name(*self))
    }
}

impl Unverified {
    /// The commit or tag this is about.
    pub fn object(&self) -> &Object {
        match self {
            Unverified::Unsigned { object }
            | Unverified::UnknownKey { object, .. }
            | Unverified::BadSignature { object, .. }
            | Unverified::Expired { object, .. }
            | Unverified::Revoked { object, .. }
            | Unverified::Failed { object, .. } => object,
        }
    }
}

/// A tool's output as one line fit for a message.
fn summary(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return "git failed without saying why".to_owned();
    }
    clean(&lines.join("; "), MAX_DETAIL)
}

/// `text` without control characters (each becomes a space; a terminal
/// escape in a commit must not reach a log), at most `max` bytes.
fn clean(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > max {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

/// gpg's status lines escape bytes as `%XX`.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A gpg status time: seconds since the epoch, or ISO 8601 basic
/// (`20261106T000000`, UTC).
fn parse_gpg_time(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse() {
        return Some(seconds);
    }
    let (date, time) = text.split_once('T')?;
    let number = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.chars().all(|c| c.is_ascii_digit())).then(|| s.parse().ok())?
    };
    if date.len() != 8 || time.len() != 6 {
        return None;
    }
    let (y, m, d) = (
        number(&date[..4])?,
        number(&date[4..6])?,
        number(&date[6..])?,
    );
    let (hh, mm, ss) = (
        number(&time[..2])?,
        number(&time[2..4])?,
        number(&time[4..])?,
    );
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// `2026-11-06T00:00:00Z`.
fn format_time(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

// === the allowed-signers file ===

/// Every problem of an allowed-signers file, by line. ssh-keygen skips a
/// line it cannot read (and that signer's commits would then fail with no
/// word why): kas refuses the file instead, saying which line and why.
fn check_allowed_signers(text: &str) -> Vec<String> {
    if text.contains("PRIVATE KEY") {
        return vec![
            "the allowed signers hold a private key: give public keys (the .pub file)".to_owned(),
        ];
    }
    let mut problems = Vec::new();
    let mut keys = 0;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match check_signer_line(line) {
            Ok(()) => keys += 1,
            Err(problem) => problems.push(format!("allowed signers line {}: {problem}", index + 1)),
        }
    }
    if keys == 0 && problems.is_empty() {
        problems.push("the allowed signers have no key line".to_owned());
    }
    problems
}

/// `<principals> [options] <key type> <base64 key> [comment]`.
fn check_signer_line(line: &str) -> Result<(), String> {
    const SHAPE: &str = "a line is `<principals> [options] <key type> <base64 key>`";
    let (principals, rest) = take_token(line).ok_or_else(|| format!("no principal ({SHAPE})"))?;
    if principals.is_empty() {
        return Err(format!("no principal ({SHAPE})"));
    }
    let (mut next, mut rest) = take_token(rest).ok_or_else(|| format!("no key ({SHAPE})"))?;
    if !SSH_KEY_TYPES.contains(&next) {
        check_options(next)?;
        (next, rest) = take_token(rest).ok_or_else(|| format!("no key ({SHAPE})"))?;
    }
    let key_type = next;
    if !SSH_KEY_TYPES.contains(&key_type) {
        return Err(format!(
            "{:?} is not an SSH key type ({SHAPE})",
            clean(key_type, 60)
        ));
    }
    let (key, _comment) =
        take_token(rest).ok_or_else(|| format!("no base64 key after {key_type}"))?;
    let blob = decode_base64(key).ok_or_else(|| "the key is not valid base64".to_owned())?;
    let named = blob
        .get(..4)
        .and_then(|len| usize::try_from(u32::from_be_bytes(len.try_into().ok()?)).ok())
        .and_then(|len| blob.get(4..4 + len));
    match named {
        Some(named) if named == key_type.as_bytes() => Ok(()),
        Some(named) => Err(format!(
            "the line says {key_type} but the key is {}",
            clean(&String::from_utf8_lossy(named), 60)
        )),
        None => Err("the key is not an SSH public key".to_owned()),
    }
}

/// The first whitespace-separated token (quotes keep spaces in it) and the
/// rest, trimmed.
fn take_token(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    if text.is_empty() {
        return None;
    }
    let mut quoted = false;
    let end = text
        .char_indices()
        .find(|(_, c)| {
            if *c == '"' {
                quoted = !quoted;
            }
            c.is_whitespace() && !quoted
        })
        .map_or(text.len(), |(i, _)| i);
    Some((&text[..end], text[end..].trim_start()))
}

/// The options ssh-keygen knows for an allowed signer, with their values'
/// shapes.
fn check_options(options: &str) -> Result<(), String> {
    let mut quoted = false;
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, c) in options.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&options[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err("an option's quote is not closed".to_owned());
    }
    parts.push(&options[start..]);
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (part, None),
        };
        let value = value.map(|v| {
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        });
        match (name.to_ascii_lowercase().as_str(), value) {
            ("cert-authority", None) => {}
            ("namespaces", Some(v)) if !v.is_empty() => {}
            ("valid-after" | "valid-before", Some(v)) if is_ssh_time(v) => {}
            ("valid-after" | "valid-before", Some(v)) => {
                return Err(format!(
                    "{name}={:?} is not a time (YYYYMMDD[HHMM[SS]][Z])",
                    clean(v, 40)
                ));
            }
            _ => {
                return Err(format!(
                    "{:?} is not an allowed-signers option or key type (options: cert-authority, namespaces, valid-after, valid-before)",
                    clean(part, 60)
                ));
            }
        }
    }
    Ok(())
}

/// ssh-keygen's `YYYYMMDD[HHMM[SS]][Z]`.
fn is_ssh_time(value: &str) -> bool {
    let digits = value.strip_suffix(['Z', 'z']).unwrap_or(value);
    matches!(digits.len(), 8 | 12 | 14) && digits.chars().all(|c| c.is_ascii_digit())
}

/// Standard base64 with optional padding; `None` when it is not.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
        }
    }
    (bits < 6 && !text.is_empty()).then_some(out)
}

// === the verifier's folder ===

/// A private folder, removed with everything in it when dropped.
struct Folder(PathBuf);

impl Folder {
    fn create(scratch: &Path) -> Result<Folder, VerifyError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(scratch).map_err(|e| setup(scratch, e))?;
        loop {
            let name = format!(
                "verifier-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let path = scratch.join(name);
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Folder(path)),
                // Left by an earlier kas with this pid: take the next name.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(setup(&path, e)),
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup(path: &Path, e: std::io::Error) -> VerifyError {
    VerifyError::Setup {
        what: path.display().to_string(),
        message: e.to_string(),
    }
}

fn create_private_dir(path: &Path) -> Result<(), VerifyError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|e| setup(path, e))
}

fn write_private(path: &Path, text: &str) -> Result<(), VerifyError> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|e| setup(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ5goP3Y40wKPe+qwTgs/tgvuk9YfDsWwL7+HWyMaZje";

    fn commit(id: &str) -> Object {
        Object {
            kind: ObjectKind::Commit,
            id: id.to_owned(),
        }
    }

    fn verifier_with(fingerprints: &[&str]) -> Verifier {
        Verifier {
            folder: Folder(PathBuf::from("/nonexistent/tether-verifier")),
            gpg_fingerprints: fingerprints.iter().map(|f| (*f).to_owned()).collect(),
            confine: None,
        }
    }

    #[test]
    fn allowed_signers_lines_are_checked_one_by_one() {
        let ok = format!(
            "# team\nalice@example.com namespaces=\"git\",valid-before=\"20300101\" {ALICE} alice\n\
             bob@example.com,carol@example.com {ALICE}\n*@example.com cert-authority {ALICE}\n"
        );
        assert_eq!(check_allowed_signers(&ok), Vec::<String>::new());

        let bad = format!(
            "alice@example.com\n\
             bob namespaces=\"git\" ssh-ed25519 AAAAnot*base64\n\
             carol bogus=\"1\" {ALICE}\n\
             dave valid-before=\"yesterday\" {ALICE}\n\
             erin ssh-rsa {}\n",
            ALICE.split_once(' ').map(|(_, k)| k).unwrap_or_default()
        );
        let problems = check_allowed_signers(&bad);
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(
            problems[0].starts_with("allowed signers line 1: no key"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].contains("line 2: the key is not valid base64"),
            "{}",
            problems[1]
        );
        assert!(
            problems[2].contains("line 3: \"bogus=\\\"1\\\"\" is not an allowed-signers option"),
            "{}",
            problems[2]
        );
        assert!(
            problems[3].contains("line 4: valid-before=\"yesterday\" is not a time"),
            "{}",
            problems[3]
        );
        assert!(
            problems[4].contains("line 5: the line says ssh-rsa but the key is ssh-ed25519"),
            "{}",
            problems[4]
        );

        assert_eq!(
            check_allowed_signers("# only comments\n\n"),
            vec!["the allowed signers have no key line".to_owned()]
        );
        assert!(
            check_allowed_signers("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n")[0]
                .contains("private key")
        );
    }

    #[test]
    fn the_exit_code_is_the_wrappers_last_line() {
        assert_eq!(
            split_exit_code("a\nb\n\ntether-verify-exit 1\n"),
            Some(("a\nb\n", 1))
        );
        assert_eq!(
            split_exit_code("no newline\ntether-verify-exit 1\n"),
            Some(("no newline", 1))
        );
        assert_eq!(split_exit_code("tether-verify-exit 0\n"), Some(("", 0)));
        // Output cut short (the 1 MiB bound) has no marker last.
        assert_eq!(split_exit_code("tether-verify-exit 0\nmore"), None);
    }

    #[test]
    fn ssh_outputs_decide_as_git_printed_them() {
        let object = commit("11c8249b05d378234c76301a7f07346b54a7fc3a");
        let v = verifier_with(&[]);
        let good = "Good \"git\" signature for alice@example.com with ED25519 key SHA256:5zPeUiWaj3AC2zkAi4wqkkwmnMDEHMV/0V1iWQxUKgA";
        let signed = decide(&object, 0, good, &v).expect("good");
        assert_eq!(signed.signer, "alice@example.com");
        assert_eq!(
            signed.key,
            "SHA256:5zPeUiWaj3AC2zkAi4wqkkwmnMDEHMV/0V1iWQxUKgA"
        );
        // The same line with a failing exit is not good.
        assert!(matches!(
            decide(&object, 1, good, &v),
            Err(Unverified::Failed { .. })
        ));

        let unknown = "Good \"git\" signature with ED25519 key SHA256:1/H6kyJcmWd3U1dI959I04t7+4AYTlvL3BXsV7Tr24A\nNo principal matched.";
        let err = decide(&object, 1, unknown, &v).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "commit 11c8249b05d378234c76301a7f07346b54a7fc3a: signed with SSH key SHA256:1/H6kyJcmWd3U1dI959I04t7+4AYTlvL3BXsV7Tr24A, which is not in the allowed signers"
        );
        // "Good ... with" is check-novalidate's: never a success.
        assert!(decide(&object, 0, unknown, &v).is_err());

        let expired = "Good \"git\" signature with ED25519 key SHA256:5zPe\n\
            allowed_signers:1: key has expired: verify time 2026-12-07T10:31:18 > valid-before 2020-01-01T00:00:00\nNo principal matched.";
        let err = decide(&object, 1, expired, &v).expect_err("expired");
        assert!(matches!(err, Unverified::Expired { .. }), "{err:?}");
        assert!(err.to_string().ends_with("signed by SSH key SHA256:5zPe after it expired (signed at 2026-12-07T10:31:18 UTC, valid-before 2020-01-01T00:00:00 UTC)"), "{err}");

        let unreadable = "Could not verify signature.\nsshsig_dearmor: decode base64: invalid format\nNo principal matched.";
        assert!(matches!(
            decide(&object, 1, unreadable, &v),
            Err(Unverified::Failed { .. })
        ));

        let bad = "Could not verify signature.\nSignature verification failed: incorrect signature";
        assert!(matches!(
            decide(&object, 1, bad, &v),
            Err(Unverified::BadSignature { .. })
        ));
        assert!(matches!(
            decide(&object, 1, "", &v),
            Err(Unverified::Unsigned { .. })
        ));
    }

    #[test]
    fn gpg_statuses_decide_as_gpg_printed_them() {
        let object = commit("31028bc87b4a2bb3cb1d99f34778d6f5d2b2cd8d");
        let fpr = "8664AAB844CBEA8234FF885BB4B31E3A0831182A";
        let v = verifier_with(&[fpr]);
        let good = format!(
            "[GNUPG:] NEWSIG\n[GNUPG:] KEY_CONSIDERED {fpr} 0\n[GNUPG:] SIG_ID 37qN 2026-12-07 1796639478\n\
             [GNUPG:] GOODSIG B4B31E3A0831182A Alice%20%1B[31m <alice@example.com>\n\
             [GNUPG:] VALIDSIG {fpr} 2026-12-07 1796639478 0 4 0 22 8 00 {fpr}\n"
        );
        let signed = decide(&object, 0, &good, &v).expect("good");
        assert_eq!(signed.key, fpr);
        // Escapes decoded, control characters gone.
        assert_eq!(signed.signer, "Alice  [31m <alice@example.com>");
        // A key that is not among the imported ones is not good, whatever
        // gpg found in its keyring.
        let other = verifier_with(&["2DBEE6CA511DE2FF56F6012ACC3715F663FDD0FE"]);
        assert!(matches!(
            decide(&object, 0, &good, &other),
            Err(Unverified::UnknownKey { .. })
        ));

        let two = format!("{good}[GNUPG:] NEWSIG\n[GNUPG:] BADSIG B4B31E3A0831182A Alice\n");
        assert!(matches!(
            decide(&object, 1, &two, &v),
            Err(Unverified::Failed { .. })
        ));

        let unknown = "[GNUPG:] NEWSIG\n[GNUPG:] ERRSIG CC3715F663FDD0FE 22 8 00 1796639478 9 2DBEE6CA511DE2FF56F6012ACC3715F663FDD0FE\n[GNUPG:] NO_PUBKEY CC3715F663FDD0FE";
        let err = decide(&object, 1, unknown, &v).expect_err("unknown");
        assert_eq!(
            err,
            Unverified::UnknownKey {
                object: object.clone(),
                format: SignatureFormat::Gpg,
                key: Some("2DBEE6CA511DE2FF56F6012ACC3715F663FDD0FE".to_owned())
            }
        );
        let revoked = format!(
            "[GNUPG:] REVKEYSIG B4B31E3A0831182A Alice <alice@example.com>\n[GNUPG:] VALIDSIG {fpr} 2026-12-07 1796639478 0 4 0 22 8 00 {fpr}"
        );
        assert_eq!(
            decide(&object, 1, &revoked, &v)
                .expect_err("revoked")
                .to_string(),
            format!(
                "commit {}: signed by GPG key {fpr} (Alice <alice@example.com>), which is revoked",
                object.id
            )
        );
        assert!(matches!(
            decide(&object, 1, "[GNUPG:] NODATA 1\n[GNUPG:] NODATA 2", &v),
            Err(Unverified::Failed { .. })
        ));
    }

    #[test]
    fn git_dying_is_never_parsed() {
        // `fatal: bad/incompatible signature '<the header>'` quotes the
        // attacker's text, lines and all.
        let output = "fatal: bad/incompatible signature 'x\n[GNUPG:] GOODSIG A Alice\n[GNUPG:] VALIDSIG A 2026 1 0 4 0 22 8 00 A\n'";
        let v = verifier_with(&["A"]);
        let err = decide(&commit("c"), 128, output, &v).expect_err("refused");
        assert!(matches!(err, Unverified::Failed { .. }));
    }

    #[test]
    fn messages_are_clean_and_bounded() {
        assert_eq!(clean("a\x1b[2Jb\nc", 100), "a [2Jb c");
        let long = clean(&"é".repeat(400), MAX_DETAIL);
        assert!(long.len() <= MAX_DETAIL + '…'.len_utf8());
        assert!(long.ends_with('…'));
        assert_eq!(percent_decode("A%3Ab%zz%"), "A:b%zz%");
    }

    #[test]
    fn gpg_times_read_and_print_in_utc() {
        assert_eq!(parse_gpg_time("1793923200"), Some(1_793_923_200));
        assert_eq!(parse_gpg_time("20261106T000000"), Some(1_793_923_200));
        assert_eq!(parse_gpg_time("2026-11-06"), None);
        assert_eq!(format_time(1_793_923_200), "2026-11-06T00:00:00Z");
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn key_listings_give_each_keys_expiry() {
        let listing = "tru:t:0:0:0:0:0:0\n\
            pub:e:255:22:98A0F614F936C289:1793491200:1793577600::-:::sc:::::ed25519:::0:\n\
            fpr:::::::::81432D38B089CF527F7131E298A0F614F936C289:\n\
            uid:e::::1793491200::53B7::Bob <bob@example.com>::::::::::0:\n\
            sub:u:255:22:1111111111111111:1793491200:::-:::s:::::ed25519::\n\
            fpr:::::::::ABCDABCDABCDABCDABCDABCD1111111111111111:\n";
        assert_eq!(
            parse_key_listing(listing),
            vec![
                (
                    "81432D38B089CF527F7131E298A0F614F936C289".to_owned(),
                    Some(1_793_577_600)
                ),
                ("ABCDABCDABCDABCDABCDABCD1111111111111111".to_owned(), None),
            ]
        );
    }

    #[test]
    fn base64_is_decoded_strictly() {
        assert_eq!(decode_base64("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("aGVsbG8"), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("aGV*"), None);
        assert_eq!(decode_base64("a"), None);
        assert_eq!(decode_base64(""), None);
    }
}
