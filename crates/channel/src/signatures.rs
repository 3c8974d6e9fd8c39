//! Signed commits: a project under a signature policy (`kas project
//! verify`) gives its agents nothing of a commit that does not verify.
//!
//! The poller asks [`Signatures::check_head`] before it publishes a head;
//! a refused head leaves the last verified commit published, so agents
//! keep it. Everything else that reaches an agent (another ref a config
//! follows, a pin, a rollback) passes [`Gate::check`] at the one place
//! commits are sent. Verification itself is `tether_git::verify`: the
//! real `git verify-commit` against a keyring kas builds from the
//! administrator's files, never from the repository.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tether_git::{CommitId, Source};
use tether_git::{Signed, TrustedKeys, Verifier};
use tether_store::{VerifyMode, VerifyPolicy};

/// Commits walked by one `strict` check at most; past it the head is
/// refused (a new trust base is the way on), so a pushed history of a
/// million commits cannot stall the poller.
pub const STRICT_LIMIT: usize = 2000;
/// Keyrings kept at most (one per key set in use).
const MAX_KEYRINGS: usize = 256;
/// Verified commits remembered at most, across projects.
const MAX_REMEMBERED: usize = 20_000;

/// What a check of a head found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    /// It verifies; who signed it (the head, or the tag naming it).
    Verified { signer: String },
    /// It does not; which commit, why, and which key or signer.
    Refused { reason: String },
}

/// Keyrings and the commits they verified, shared by every poller.
pub struct Signatures {
    scratch: PathBuf,
    /// Whether verifications run in the render sandbox (kas's
    /// `--render-sandbox`: off only on a kernel without Landlock).
    sandbox: Mutex<tether_render::SandboxMode>,
    keyrings: Mutex<HashMap<u64, Arc<Verifier>>>,
    /// Who signed each (policy, commit) that verified: a commit is checked
    /// once per policy, not once per poll and follower.
    verified: Mutex<HashMap<(u64, String), String>>,
}

impl std::fmt::Debug for Signatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signatures")
            .field("scratch", &self.scratch)
            .finish_non_exhaustive()
    }
}

/// A project's policy, ready to check commits against: what a [`Head`]
/// carries so that every path to an agent can ask.
///
/// [`Head`]: crate::repos::Head
#[derive(Clone)]
pub struct Gate {
    signatures: Arc<Signatures>,
    policy: VerifyPolicy,
    key: u64,
    /// The project's own ref, whose tag signature counts.
    git_ref: Option<String>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("mode", &self.policy.mode)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A stable key of a policy's keys and mode (a rotation makes a new one).
fn policy_key(policy: &VerifyPolicy) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    policy.mode.as_str().hash(&mut hasher);
    policy.ssh_allowed_signers.hash(&mut hasher);
    policy.gpg_keys.hash(&mut hasher);
    hasher.finish()
}

/// `ssh alice@example.com SHA256:…` or `gpg Alice <alice@…> 0123…`.
pub fn signer_text(signed: &Signed) -> String {
    let format = match signed.format {
        tether_git::SignatureFormat::Ssh => "ssh",
        tether_git::SignatureFormat::Gpg => "gpg",
    };
    format!("{format} {} {}", signed.signer, signed.key)
}

impl Signatures {
    /// Keyrings are built under `scratch`, a folder of kas's own.
    pub fn new(scratch: PathBuf) -> Arc<Self> {
        Arc::new(Signatures {
            scratch,
            sandbox: Mutex::new(tether_render::SandboxMode::Kernel),
            keyrings: Mutex::default(),
            verified: Mutex::default(),
        })
    }

    /// Whether verifications are confined by the kernel (the render
    /// sandbox's mode); keyrings built after this use it.
    pub fn set_sandbox(&self, mode: tether_render::SandboxMode) {
        *lock(&self.sandbox) = mode;
        lock(&self.keyrings).clear();
    }

    /// The gate of a project under `policy` (following `git_ref`).
    pub fn gate(self: &Arc<Self>, policy: VerifyPolicy, git_ref: Option<String>) -> Gate {
        Gate {
            key: policy_key(&policy),
            signatures: self.clone(),
            policy,
            git_ref,
        }
    }

    fn keyring(&self, gate: &Gate) -> Result<Arc<Verifier>, String> {
        if let Some(found) = lock(&self.keyrings).get(&gate.key) {
            return Ok(found.clone());
        }
        let keys = TrustedKeys {
            ssh_allowed_signers: gate.policy.ssh_allowed_signers.clone(),
            gpg_keys: gate.policy.gpg_keys.clone(),
        };
        std::fs::create_dir_all(&self.scratch)
            .map_err(|e| format!("cannot create {}: {e}", self.scratch.display()))?;
        let mut verifier = Verifier::new(&keys, &self.scratch)
            .map_err(|e| format!("the project's signature policy cannot be used: {e}"))?;
        if *lock(&self.sandbox) == tether_render::SandboxMode::Kernel {
            verifier = verifier.confined(Arc::new(confine));
        }
        let verifier = Arc::new(verifier);
        let mut keyrings = lock(&self.keyrings);
        if keyrings.len() >= MAX_KEYRINGS {
            keyrings.clear();
        }
        keyrings.insert(gate.key, verifier.clone());
        Ok(verifier)
    }

    fn remember(&self, key: u64, commit: &str, signer: &str) {
        let mut verified = lock(&self.verified);
        if verified.len() >= MAX_REMEMBERED {
            verified.clear();
        }
        verified.insert((key, commit.to_owned()), signer.to_owned());
    }

    /// Who signed `commit`, if it verified under the policy `key`.
    fn known(&self, key: u64, commit: &str) -> Option<String> {
        lock(&self.verified).get(&(key, commit.to_owned())).cloned()
    }
}

/// What git and the ssh-keygen or gpg it runs on a tenant's signature need
/// beside the system's git: the user and group names ssh-keygen looks up.
const VERIFY_SYSTEM: [&str; 3] = ["/etc/passwd", "/etc/group", "/etc/nsswitch.conf"];

/// A verification confined as a render is: it writes only the keyring's
/// folder, reads the repository and the system's programs, and has no
/// network at all. A signature is a tenant's input to ssh-keygen and gpg.
pub fn confinement(
    writable: &[PathBuf],
    readable: &[PathBuf],
) -> tether_render::sandbox::kernel::Confinement {
    tether_render::sandbox::kernel::Confinement {
        executables: Vec::new(),
        folders: writable.to_vec(),
        system: tether_render::sandbox::GIT_SYSTEM
            .iter()
            .chain(VERIFY_SYSTEM.iter())
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .chain(readable.iter().cloned())
            .collect(),
        devices: vec!["/dev/null".into(), "/dev/urandom".into()],
        proxy_port: None,
    }
}

/// Confines `command` by [`confinement`].
pub fn confine(
    command: &mut std::process::Command,
    writable: &[PathBuf],
    readable: &[PathBuf],
) -> std::io::Result<()> {
    tether_render::sandbox::confine(command, &confinement(writable, readable))
        .map_err(|e| std::io::Error::other(e.to_string()))
}

impl Gate {
    /// Whether `head`, the commit the project's own ref points to, may be
    /// given to agents. `verified` is the last commit that verified (the
    /// store's, shared by replicas): under `strict`, every commit since it
    /// (or since the trust base, the first time) must verify too.
    pub async fn check_head(
        &self,
        source: &Source,
        head: &CommitId,
        verified: Option<&str>,
    ) -> Checked {
        let gate = self.clone();
        let source = source.clone();
        let head = head.clone();
        let verified = verified.map(str::to_owned);
        tokio::task::spawn_blocking(move || gate.check_head_blocking(&source, &head, verified))
            .await
            .unwrap_or_else(|e| Checked::Refused {
                reason: format!("verification panicked: {e}"),
            })
    }

    fn check_head_blocking(
        &self,
        source: &Source,
        head: &CommitId,
        verified: Option<String>,
    ) -> Checked {
        let head_text = head.to_string();
        let keyring = match self.signatures.keyring(self) {
            Ok(keyring) => keyring,
            Err(reason) => return Checked::Refused { reason },
        };
        // The project's ref, when it is a signed tag, must verify too. It
        // never vouches for the commit alone: it is looked up after the
        // head was resolved, and could have moved since.
        let tag = match self.git_ref.as_deref() {
            Some(reference) => match source.verify_tag(&keyring, reference) {
                Ok(tag) => tag,
                Err(refused) => {
                    return Checked::Refused {
                        reason: format!("tag {reference}: {refused}"),
                    };
                }
            },
            None => None,
        };
        // The head, and under `strict` every commit since the last
        // verified one (or the trust base): oldest first, the head last,
        // also when the branch moved back behind the base.
        let base = verified
            .as_deref()
            .or(self.policy.trust_base.as_deref())
            .and_then(CommitId::parse);
        let mut commits = match (self.policy.mode, &base) {
            (VerifyMode::Strict, Some(base)) => {
                match source.commits_between(Some(base), head, STRICT_LIMIT) {
                    Ok(commits) => commits,
                    Err(e) => {
                        return Checked::Refused {
                            reason: format!(
                                "commit {head_text}: cannot list the commits since {base}: {e}"
                            ),
                        };
                    }
                }
            }
            _ => Vec::new(),
        };
        commits.retain(|c| c != head);
        commits.push(head.clone());
        let mut signer = String::new();
        for commit in &commits {
            match self.verify_one(source, &keyring, commit) {
                Ok(who) => signer = who,
                Err(reason) if commit == head => return Checked::Refused { reason },
                Err(reason) => {
                    return Checked::Refused {
                        reason: format!(
                            "{reason} (between the last verified commit and the head {head_text}; strict verifies every commit)"
                        ),
                    };
                }
            }
        }
        if let Some(tag) = &tag {
            signer = format!("{} (tag), {signer}", signer_text(tag));
        }
        Checked::Verified { signer }
    }

    /// One commit's own signature, remembered once it verifies.
    fn verify_one(
        &self,
        source: &Source,
        keyring: &Verifier,
        commit: &CommitId,
    ) -> Result<String, String> {
        let text = commit.to_string();
        if let Some(signer) = self.signatures.known(self.key, &text) {
            return Ok(signer);
        }
        match source.verify_commit(keyring, commit) {
            Ok(signed) => {
                let signer = signer_text(&signed);
                self.signatures.remember(self.key, &text, &signer);
                Ok(signer)
            }
            Err(refused) => Err(refused.to_string()),
        }
    }

    /// Whether `commit`, about to be sent to an agent though it is not the
    /// head just checked (another ref, a pin, a rollback), carries a
    /// signature of the policy's keys. Its history is not walked: it is
    /// a commit an operator or a config chose by name.
    pub async fn check(&self, source: &Source, commit: &CommitId) -> Result<(), String> {
        if self
            .signatures
            .known(self.key, &commit.to_string())
            .is_some()
        {
            return Ok(());
        }
        let gate = self.clone();
        let source = source.clone();
        let commit = commit.clone();
        tokio::task::spawn_blocking(move || {
            let keyring = gate.signatures.keyring(&gate)?;
            gate.verify_one(&source, &keyring, &commit).map(drop)
        })
        .await
        .unwrap_or_else(|e| Err(format!("verification panicked: {e}")))
    }

    /// The policy's mode.
    pub fn mode(&self) -> VerifyMode {
        self.policy.mode
    }

    /// Whether `policy` is this gate's (keys and mode): a replica that
    /// does not poll compares, so a new policy reaches every replica.
    pub fn is_for(&self, policy: Option<&VerifyPolicy>) -> bool {
        policy.is_some_and(|p| policy_key(p) == self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: VerifyMode, ssh: &str) -> VerifyPolicy {
        VerifyPolicy {
            mode,
            ssh_allowed_signers: Some(ssh.to_owned()),
            gpg_keys: None,
            trust_base: None,
            set_at: 0,
        }
    }

    #[test]
    fn a_rotation_or_a_new_mode_is_a_new_policy_and_the_set_time_is_not() {
        let a = policy(VerifyMode::Head, "a");
        let later = VerifyPolicy {
            set_at: 99,
            ..a.clone()
        };
        assert_eq!(policy_key(&a), policy_key(&later));
        assert_ne!(policy_key(&a), policy_key(&policy(VerifyMode::Strict, "a")));
        assert_ne!(policy_key(&a), policy_key(&policy(VerifyMode::Head, "b")));
    }
}
