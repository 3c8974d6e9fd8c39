//! Bare mirrors of remote repositories, fetched with the `git` program.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::GitError;

/// A folder name unique to `url` and readable in a listing:
/// `<last path segment>-<hash of the url>`.
pub(crate) fn folder_name(url: &str) -> String {
    let tail: String = url
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("repo")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(40)
        .collect();
    format!("{tail}-{:016x}", fnv1a(url.as_bytes()))
}

/// A stable hash (unlike `DefaultHasher`, the same across builds), so a
/// restarted kas finds its mirrors again.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(crate) fn update(url: &str, shown: &str, dir: &Path) -> Result<(), GitError> {
    if dir.join("HEAD").exists() {
        // A mirror's refspec is +refs/*:refs/*, and --prune drops branches
        // deleted upstream.
        run(
            shown,
            Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(["fetch", "--prune", "--quiet", "origin"]),
        )?;
        // Follow a change of the remote's default branch.
        let _ = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["remote", "set-head", "origin", "--auto"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| GitError::Fetch {
            url: shown.to_owned(),
            message: format!("cannot create {}: {e}", parent.display()),
        })?;
    }
    // Clone into a temporary name and rename, so that a kas killed mid-clone
    // never leaves a half mirror that looks complete.
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    run(
        shown,
        Command::new("git")
            .args(["clone", "--mirror", "--quiet", "--", url])
            .arg(&partial),
    )?;
    std::fs::rename(&partial, dir).map_err(|e| GitError::Fetch {
        url: shown.to_owned(),
        message: format!("cannot move the new mirror into place: {e}"),
    })
}

fn run(shown: &str, command: &mut Command) -> Result<(), GitError> {
    let output = command
        // Never wait for a password on a terminal kas does not have.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSH_COMMAND", ssh_command())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| GitError::Fetch {
            url: shown.to_owned(),
            message: format!("cannot run git: {e}"),
        })?;
    if output.status.success() {
        return Ok(());
    }
    // git may echo the URL it was given, password and all.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.trim().lines().last().unwrap_or("failed");
    let message = last
        .split_whitespace()
        .map(|word| {
            let w = word.trim_matches(|c| c == '\'' || c == '"');
            if w.contains("://") {
                crate::redact(w)
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    Err(GitError::Fetch {
        url: shown.to_owned(),
        message,
    })
}

/// Batch mode: an SSH key that needs a passphrase fails instead of hanging.
fn ssh_command() -> String {
    std::env::var("GIT_SSH_COMMAND").unwrap_or_else(|_| "ssh -o BatchMode=yes".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_are_readable_and_distinct() {
        let a = folder_name("https://example.com/team/platform-config.git");
        let b = folder_name("https://example.org/team/platform-config.git");
        assert!(a.starts_with("platform-config-"), "{a}");
        assert_ne!(a, b);
        assert_eq!(
            a,
            folder_name("https://example.com/team/platform-config.git")
        );
        assert!(folder_name("git@host:x/../../etc").starts_with("etc-"));
    }
}
