//! Writing to a project: a scratch working copy of one branch, a commit,
//! and a push that never overwrites what someone else pushed.
//!
//! kas writes back (image updates) into a folder of its own per change:
//! it fetches only the tip of the branch it starts from, commits there and
//! pushes. A push to the branch it started from is a plain push: when the
//! branch moved meanwhile git refuses it ([`Pushed::Moved`]), and the
//! caller makes its change again on the new tip. A push to a branch of its
//! own (`push_branch`) replaces that branch, but only if it still is what
//! kas fetched (`--force-with-lease`).
//!
//! The remote is the tenant's: every run of git has the bounds of
//! [`crate::mirror`] (a deadline, only real transports, no prompt), the
//! password goes through the credential helper, an SSH key through
//! `GIT_SSH_COMMAND`, never on a command line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::mirror::{Failed, USERNAME_ENV, host_of, run_git, split_password};

/// How kas authenticates to push.
#[derive(Clone, Default)]
pub enum PushAuth {
    /// The URL as given (a local path, or credentials git finds itself).
    #[default]
    None,
    /// An HTTPS token, sent as the password (GitHub, GitLab, Gitea and
    /// Bitbucket all take a token so).
    Token(String),
    /// A private key file for SSH.
    SshKey(PathBuf),
}

impl std::fmt::Debug for PushAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PushAuth::None => "None",
            PushAuth::Token(_) => "Token(..)",
            PushAuth::SshKey(_) => "SshKey(..)",
        })
    }
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("git {step} in {url} failed: {message}")]
    Git {
        step: &'static str,
        url: String,
        message: String,
    },
    #[error("branch {branch:?} does not exist in {url}")]
    NoBranch { url: String, branch: String },
    #[error("cannot prepare {}: {source}", path.display())]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The branch now holds this commit.
    Done { commit: String },
    /// The branch moved since it was fetched: nothing was written.
    Moved,
}

/// A scratch working copy of one remote.
pub struct Worktree {
    dir: PathBuf,
    url: String,
    shown: String,
    password: Option<String>,
    ssh_key: Option<PathBuf>,
    timeout: Duration,
}

impl std::fmt::Debug for Worktree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worktree")
            .field("dir", &self.dir)
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl Worktree {
    /// An empty repository in `dir` (created, or emptied) whose `origin`
    /// is `url`.
    pub fn create(
        dir: &Path,
        url: &str,
        auth: PushAuth,
        timeout: Duration,
    ) -> Result<Self, PushError> {
        let folder = |source| PushError::Folder {
            path: dir.to_owned(),
            source,
        };
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(folder(e)),
        }
        std::fs::create_dir_all(dir).map_err(folder)?;
        let (url, embedded) = split_password(url);
        let (password, ssh_key) = match auth {
            PushAuth::None => (embedded, None),
            PushAuth::Token(token) => (Some(token), None),
            PushAuth::SshKey(key) => (embedded, Some(key)),
        };
        let tree = Worktree {
            dir: dir.to_owned(),
            shown: crate::redact(&url),
            url,
            password,
            ssh_key,
            timeout,
        };
        tree.git("init", &["init", "--quiet", "--initial-branch=tether-work"])?;
        tree.git(
            "remote add",
            &["remote", "add", "origin", "--", &tree.url.clone()],
        )?;
        Ok(tree)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Fetches the tip of `branch` (only it, no history): its commit, or
    /// `None` when the remote has no such branch.
    pub fn fetch(&self, branch: &str) -> Result<Option<String>, PushError> {
        let remote_ref = format!("refs/remotes/origin/{branch}");
        let spec = format!("+refs/heads/{branch}:{remote_ref}");
        match self.git(
            "fetch",
            &[
                "fetch",
                "--quiet",
                "--depth=1",
                "--no-tags",
                "origin",
                &spec,
            ],
        ) {
            Ok(_) => {}
            Err(PushError::Git { message, .. })
                if message.contains("couldn't find remote ref")
                    || message.contains("not our ref") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        self.rev(&remote_ref).map(Some)
    }

    /// The working copy at `commit`, every file as committed.
    pub fn checkout(&self, commit: &str) -> Result<(), PushError> {
        self.git(
            "checkout",
            &[
                "checkout",
                "--quiet",
                "--force",
                "-B",
                "tether-work",
                commit,
            ],
        )?;
        self.git("clean", &["clean", "--quiet", "-d", "--force", "-x"])?;
        Ok(())
    }

    /// Commits every change of the working copy: the new commit, or `None`
    /// when nothing changed.
    pub fn commit_all(
        &self,
        author: (&str, &str),
        message: &str,
    ) -> Result<Option<String>, PushError> {
        self.git("add", &["add", "--all"])?;
        if self.git("diff", &["diff", "--cached", "--quiet"]).is_ok() {
            return Ok(None);
        }
        let message_file = self.dir.join(".git").join("TETHER_MESSAGE");
        std::fs::write(&message_file, message).map_err(|source| PushError::Folder {
            path: message_file.clone(),
            source,
        })?;
        let (name, email) = author;
        let file = message_file.to_string_lossy().into_owned();
        let mut command = self.command();
        command
            .env("GIT_AUTHOR_NAME", name)
            .env("GIT_AUTHOR_EMAIL", email)
            .env("GIT_COMMITTER_NAME", name)
            .env("GIT_COMMITTER_EMAIL", email)
            .args([
                "-c",
                "commit.gpgsign=false",
                "commit",
                "--quiet",
                "--no-verify",
                "-F",
                &file,
            ]);
        self.run("commit", &mut command)?;
        self.rev("HEAD").map(Some)
    }

    /// The tree of `rev` (to tell whether two commits hold the same files).
    pub fn tree(&self, rev: &str) -> Result<String, PushError> {
        self.rev(&format!("{rev}^{{tree}}"))
    }

    /// Pushes HEAD to `branch`. `replacing`: the commit the branch must
    /// still be at for HEAD to replace it (a branch of kas's own), `None`
    /// for a fast-forward push only.
    pub fn push(&self, branch: &str, replacing: Option<Option<&str>>) -> Result<Pushed, PushError> {
        let target = format!("HEAD:refs/heads/{branch}");
        let mut args = vec!["push".to_owned(), "--quiet".into()];
        if let Some(expected) = replacing {
            args.push(format!(
                "--force-with-lease=refs/heads/{branch}:{}",
                expected.unwrap_or("")
            ));
        }
        args.extend(["origin".into(), target]);
        let mut command = self.command();
        command.args(&args);
        match run_git(
            &mut command,
            self.secret()
                .as_ref()
                .map(|(p, h)| (p.as_str(), h.as_str())),
            self.timeout,
        ) {
            Ok(_) => self.rev("HEAD").map(|commit| Pushed::Done { commit }),
            Err(Failed { stderr, message }) => {
                if stderr.contains("[rejected]")
                    || stderr.contains("stale info")
                    || stderr.contains("fetch first")
                {
                    Ok(Pushed::Moved)
                } else {
                    Err(PushError::Git {
                        step: "push",
                        url: self.shown.clone(),
                        message,
                    })
                }
            }
        }
    }

    /// The password and the host it is for.
    fn secret(&self) -> Option<(String, String)> {
        self.password.clone().map(|p| (p, host_of(&self.url)))
    }

    fn rev(&self, rev: &str) -> Result<String, PushError> {
        self.git("rev-parse", &["rev-parse", "--verify", "--quiet", rev])
            .map(|out| out.trim().to_owned())
    }

    fn command(&self) -> Command {
        let mut command = Command::new("git");
        command.arg("-C").arg(&self.dir);
        // A token for a URL without a user: git asks for a username too,
        // and any non-empty one works on GitHub, GitLab, Gitea and
        // Bitbucket with a token.
        if self.password.is_some() && !has_user(&self.url) {
            command.env(USERNAME_ENV, "tether");
        } else {
            command.env_remove(USERNAME_ENV);
        }
        if let Some(key) = &self.ssh_key {
            command.env(
                "GIT_SSH_COMMAND",
                format!(
                    "ssh -o BatchMode=yes -o IdentitiesOnly=yes -i '{}'",
                    key.display().to_string().replace('\'', "")
                ),
            );
        }
        command
    }

    fn git(&self, step: &'static str, args: &[&str]) -> Result<String, PushError> {
        let mut command = self.command();
        command.args(args);
        self.run(step, &mut command)
    }

    fn run(&self, step: &'static str, command: &mut Command) -> Result<String, PushError> {
        run_git(
            command,
            self.secret()
                .as_ref()
                .map(|(p, h)| (p.as_str(), h.as_str())),
            self.timeout,
        )
        .map_err(|failed| PushError::Git {
            step,
            url: self.shown.clone(),
            message: failed.message,
        })
    }
}

/// Whether `url` names a user (`https://user@host/…`).
fn has_user(url: &str) -> bool {
    url.split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or_default().contains('@'))
        .unwrap_or(false)
}
