//! Signing keys and signed commits for tests, made with the real
//! ssh-keygen, gpg and git, as users make them: an ed25519 SSH key signs
//! with `gpg.format=ssh`, a GPG key from its own GNUPGHOME.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(command: &mut Command) -> String {
    let out = command.output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An SSH key made with ssh-keygen.
#[derive(Clone, Debug)]
pub struct SshKey {
    pub private: PathBuf,
    /// `ssh-ed25519 AAAA…`
    pub public: String,
    /// `SHA256:…`
    pub fingerprint: String,
}

/// A new ed25519 key `dir/name` (no passphrase).
pub fn ssh_key(dir: &Path, name: &str) -> SshKey {
    let private = dir.join(name);
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&private));
    let public = std::fs::read_to_string(private.with_extension("pub")).expect("public key");
    let public = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let listed = run(Command::new("ssh-keygen")
        .arg("-lf")
        .arg(private.with_extension("pub")));
    let fingerprint = listed
        .split_whitespace()
        .nth(1)
        .expect("a fingerprint")
        .to_owned();
    SshKey {
        private,
        public,
        fingerprint,
    }
}

/// An allowed-signers line for `key` (`options`, if any, start with `,`).
pub fn allowed_signer(principal: &str, options: &str, key: &SshKey) -> String {
    format!("{principal} namespaces=\"git\"{options} {}\n", key.public)
}

/// A GNUPGHOME to sign with; gpg starts an agent in it, stopped on drop.
#[derive(Debug)]
pub struct GpgHome {
    pub dir: PathBuf,
}

impl GpgHome {
    /// A new, private (0700) home `parent/name`.
    pub fn new(parent: &Path, name: &str) -> Self {
        let dir = parent.join(name);
        std::fs::create_dir(&dir).expect("gnupg home");
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("0700");
        GpgHome { dir }
    }

    /// gpg on this home, in batch mode with an empty passphrase.
    pub fn gpg(&self) -> Command {
        let mut command = Command::new("gpg");
        command
            .env("GNUPGHOME", &self.dir)
            .args(["--batch", "--passphrase", ""]);
        command
    }

    /// A new ed25519 signing key expiring after `expire` (gpg's syntax),
    /// made at `at` (seconds since the epoch) or now; its fingerprint.
    pub fn generate(&self, user_id: &str, expire: &str, at: Option<i64>) -> String {
        let mut gpg = self.gpg();
        if let Some(at) = at {
            gpg.arg("--faked-system-time").arg(format!("{at}!"));
        }
        run(gpg.args(["--quick-gen-key", user_id, "ed25519", "sign", expire]));
        let listed = run(self.gpg().args(["--with-colons", "--list-keys", user_id]));
        listed
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.split(':').nth(8))
            .expect("a fingerprint")
            .to_owned()
    }

    /// The armored public key (`gpg --armor --export`).
    pub fn export(&self, fingerprint: &str) -> String {
        run(self.gpg().args(["--armor", "--export", fingerprint]))
    }

    /// Makes gpg (as git runs it, to sign) believe it is `at`.
    pub fn fake_time(&self, at: i64) {
        std::fs::write(
            self.dir.join("gpg.conf"),
            format!("faked-system-time {at}!\n"),
        )
        .expect("gpg.conf");
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.dir)
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

/// Runs git in `repo` with the fixed author of [`crate::git`] and extra
/// environment; its trimmed output.
pub fn git_env(repo: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_AUTHOR_NAME", "tether-test")
        .env("GIT_AUTHOR_EMAIL", "test@tether.invalid")
        .env("GIT_COMMITTER_NAME", "tether-test")
        .env("GIT_COMMITTER_EMAIL", "test@tether.invalid");
    for (key, value) in env {
        command.env(key, value);
    }
    run(&mut command).trim().to_owned()
}

/// Commits what is staged (or nothing) signed with `key`, at `date`
/// (git's date syntax) or now; the commit id.
pub fn ssh_commit(repo: &Path, key: &SshKey, message: &str, date: Option<&str>) -> String {
    let signing_key = format!("user.signingkey={}", key.private.display());
    let env: Vec<(&str, &str)> = date
        .map(|d| ("GIT_COMMITTER_DATE", d))
        .into_iter()
        .collect();
    git_env(
        repo,
        &env,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing_key,
            "commit",
            "-q",
            "--allow-empty",
            "-S",
            "-m",
            message,
        ],
    );
    git_env(repo, &[], &["rev-parse", "HEAD"])
}

/// Commits what is staged (or nothing) signed with the GPG key
/// `fingerprint` of `home`; the commit id.
pub fn gpg_commit(repo: &Path, home: &GpgHome, fingerprint: &str, message: &str) -> String {
    let signing_key = format!("user.signingkey={fingerprint}");
    let gnupg = home.dir.to_str().expect("utf-8");
    git_env(
        repo,
        &[("GNUPGHOME", gnupg)],
        &[
            "-c",
            "gpg.format=openpgp",
            "-c",
            &signing_key,
            "commit",
            "-q",
            "--allow-empty",
            "-S",
            "-m",
            message,
        ],
    );
    git_env(repo, &[], &["rev-parse", "HEAD"])
}
