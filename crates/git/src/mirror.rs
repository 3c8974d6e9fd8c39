//! Bare mirrors of remote repositories, fetched with the `git` program.
//!
//! Every run of git is bounded in time (a remote that hangs must not freeze
//! its project's poller), limited to the transports a repository URL
//! should use (never `ext::`, which runs commands), and never given a
//! password on its command line, where every user of the machine can read
//! it: the password reaches git through its environment and a credential
//! helper.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::GitError;

/// The transports git may use for a project's URL.
const ALLOWED_PROTOCOLS: &str = "file:git:http:https:ssh";
/// The environment variable the credential helper reads the password from.
const PASSWORD_ENV: &str = "TETHER_GIT_PASSWORD";
/// A credential helper that answers git's `get` with the password from
/// the environment, for the remote's own host only (a redirect to another
/// host, or anything else git asks about, gets nothing); it holds no
/// secret itself.
const CREDENTIAL_HELPER: &str = "!f() { test \"$1\" = get || exit 0; h=; \
     while IFS= read -r l && test -n \"$l\"; do case \"$l\" in host=*) h=\"${l#host=}\";; esac; done; \
     test \"$h\" = \"${TETHER_GIT_HOST}\" || exit 0; \
     test -n \"${TETHER_GIT_USERNAME}\" && echo \"username=${TETHER_GIT_USERNAME}\"; \
     echo \"password=${TETHER_GIT_PASSWORD}\"; }; f";
/// The host the helper answers for.
const HOST_ENV: &str = "TETHER_GIT_HOST";
/// The username the helper gives, for a URL that names none (a token
/// pushed to `https://host/repo.git`).
pub(crate) const USERNAME_ENV: &str = "TETHER_GIT_USERNAME";
/// After the timeout git gets SIGTERM, and this long later SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// The host (and port) of a URL as git names it to a credential helper:
/// `git.example.com:3000` of `https://user@git.example.com:3000/team/app`.
pub(crate) fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

/// A URL without its password, and the password.
pub(crate) fn split_password(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, password)) => (
                format!("{scheme}://{user}@{host}{path}"),
                Some(password.to_owned()),
            ),
            None => (url.to_owned(), None),
        },
        None => (url.to_owned(), None),
    }
}

/// A folder name unique to `key` and readable in a listing:
/// `<last path segment of the url>-<hash of the key>`.
pub(crate) fn folder_name(url: &str, key: &str) -> String {
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
    format!("{tail}-{:016x}", fnv1a(key.as_bytes()))
}

/// A stable hash (unlike `DefaultHasher`, the same across builds), so a
/// restarted kas finds its mirrors again.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(crate) fn update(
    url: &str,
    shown: &str,
    dir: &Path,
    timeout: Duration,
) -> Result<(), GitError> {
    let (url, password) = split_password(url);
    let password = password.as_deref();
    if dir.join("HEAD").exists() {
        // The URL may have changed (or, from an older kas, hold a password).
        run(
            shown,
            Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(["remote", "set-url", "origin", "--", &url]),
            None,
            timeout,
        )?;
        // A mirror's refspec is +refs/*:refs/*, and --prune drops branches
        // deleted upstream.
        run(
            shown,
            Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(["fetch", "--prune", "--quiet", "origin"]),
            password,
            timeout,
        )?;
        // Follow a change of the remote's default branch.
        let _ = run(
            shown,
            Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(["remote", "set-head", "origin", "--auto"]),
            password,
            timeout,
        );
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
            .args(["clone", "--mirror", "--quiet", "--", &url])
            .arg(&partial),
        password,
        timeout,
    )?;
    std::fs::rename(&partial, dir).map_err(|e| GitError::Fetch {
        url: shown.to_owned(),
        message: format!("cannot move the new mirror into place: {e}"),
    })
}

/// Runs git to completion within `timeout`; past it, git and everything it
/// started (ssh, git-remote-https) get SIGTERM, then SIGKILL.
fn run(
    shown: &str,
    command: &mut Command,
    password: Option<&str>,
    timeout: Duration,
) -> Result<(), GitError> {
    let host = host_of(shown);
    run_git(command, password.map(|p| (p, host.as_str())), timeout)
        .map(drop)
        .map_err(|failed| GitError::Fetch {
            url: shown.to_owned(),
            message: failed.message,
        })
}

/// How a run of git failed: its last line of stderr (passwords redacted),
/// and the whole of it (up to 64 KiB, redacted too) for callers that tell
/// one refusal from another.
#[derive(Debug)]
pub(crate) struct Failed {
    pub message: String,
    pub stderr: String,
}

/// Runs git to completion within `timeout` (its environment set for a
/// tenant's remote: no prompt, only real transports, the password through
/// the credential helper) and returns its stdout (up to 1 MiB).
pub(crate) fn run_git(
    command: &mut Command,
    password: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<String, Failed> {
    let fail = |message: String| Failed {
        message,
        stderr: String::new(),
    };
    if !command.get_envs().any(|(key, _)| key == "GIT_SSH_COMMAND") {
        command.env("GIT_SSH_COMMAND", ssh_command());
    }
    command
        // Never wait for a password on a terminal kas does not have.
        .env("GIT_TERMINAL_PROMPT", "0")
        // `ext::` and `fd::` would run commands: only real transports.
        .env("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
        .env("GIT_PROTOCOL_FROM_USER", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout reaches its children.
        .process_group(0);
    if let Some((password, host)) = password {
        command
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "credential.helper")
            .env("GIT_CONFIG_VALUE_0", CREDENTIAL_HELPER)
            .env(PASSWORD_ENV, password)
            .env(HOST_ENV, host);
    } else {
        command.env_remove(PASSWORD_ENV).env_remove(HOST_ENV);
    }
    let mut child = command
        .spawn()
        .map_err(|e| fail(format!("cannot run git: {e}")))?;
    // Read stderr on a thread of its own, so a chatty git never blocks on a
    // full pipe while we wait for it.
    let mut stderr_pipe = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(pipe) = stderr_pipe.as_mut() {
            let _ = pipe.take(64 * 1024).read_to_string(&mut text);
        }
        text
    });
    let mut stdout_pipe = child.stdout.take();
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(pipe) = stdout_pipe.as_mut() {
            let _ = pipe.take(1 << 20).read_to_string(&mut text);
            // Drain the rest so git never blocks on a full pipe.
            let _ = std::io::copy(pipe, &mut std::io::sink());
        }
        text
    });
    let started = Instant::now();
    // Polled from 1 ms, doubling to 20 ms: a verification or a resolve
    // takes milliseconds and should not wait out a fixed 20 ms step; a
    // fetch of minutes costs a poll every 20 ms.
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Ok(None) | Err(_) => break None,
        }
    };
    let Some(status) = status else {
        stop_group(&mut child);
        let _ = reader.join();
        let _ = out_reader.join();
        return Err(fail(format!(
            "git did not finish within {timeout:?} and was stopped"
        )));
    };
    let stderr = reader.join().unwrap_or_default();
    let stdout = out_reader.join().unwrap_or_default();
    if status.success() {
        return Ok(stdout);
    }
    // git may echo the URL it was given, password and all.
    let redacted = |line: &str| {
        line.split_whitespace()
            .map(|word| {
                let w = word.trim_matches(|c| c == '\'' || c == '"');
                if w.contains("://") {
                    crate::redact(w)
                } else {
                    word.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let last = stderr.trim().lines().last().unwrap_or("failed");
    Err(Failed {
        message: redacted(last),
        stderr: stderr.lines().map(redacted).collect::<Vec<_>>().join("\n"),
    })
}

/// SIGTERM to git's process group, then SIGKILL after [`KILL_GRACE`].
fn stop_group(child: &mut std::process::Child) {
    let group = i32::try_from(child.id()).unwrap_or(0);
    if group > 0 {
        // SAFETY: kill(2) with a negative pid signals that process group,
        // which we created for this child; it touches no memory.
        unsafe { libc::kill(-group, libc::SIGTERM) };
    }
    let deadline = Instant::now() + KILL_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if group > 0 {
        // SAFETY: as above.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    let _ = child.wait();
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
        let name = |url: &str| folder_name(url, url);
        let a = name("https://example.com/team/platform-config.git");
        let b = name("https://example.org/team/platform-config.git");
        assert!(a.starts_with("platform-config-"), "{a}");
        assert_ne!(a, b);
        assert_eq!(a, name("https://example.com/team/platform-config.git"));
        assert!(name("git@host:x/../../etc").starts_with("etc-"));
        let url = "https://example.com/shared.git";
        assert_ne!(folder_name(url, "team-a\nx"), folder_name(url, "team-b\nx"));
    }

    /// The helper as git runs it (`sh -c '<helper> "$@"' - get`), asked
    /// for the remote's host and for another one.
    #[test]
    fn the_credential_helper_answers_for_the_remote_host_only() {
        use std::io::Write as _;
        let ask = |host: &str| {
            let script = format!("{} \"$@\"", CREDENTIAL_HELPER.trim_start_matches('!'));
            let mut child = Command::new("sh")
                .args(["-c", &script, "helper", "get"])
                .env(PASSWORD_ENV, "s3cret")
                .env(HOST_ENV, "git.example.com:3000")
                .env(USERNAME_ENV, "tether")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("sh runs");
            let mut stdin = child.stdin.take().expect("stdin");
            write!(stdin, "protocol=https\nhost={host}\n\n").expect("asked");
            drop(stdin);
            let out = child.wait_with_output().expect("answered");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(
            ask("git.example.com:3000"),
            "username=tether\npassword=s3cret\n"
        );
        assert_eq!(ask("git.example.com.evil.net"), "");
        assert_eq!(ask("evil.net"), "");
    }

    #[test]
    fn hosts_are_named_as_git_names_them() {
        assert_eq!(
            host_of("https://deploy@git.example.com:3000/a.git"),
            "git.example.com:3000"
        );
        assert_eq!(
            host_of("http://127.0.0.1:8080/team/app.git"),
            "127.0.0.1:8080"
        );
        assert_eq!(host_of("https://deploy:***@github.com/a"), "github.com");
    }

    #[test]
    fn passwords_are_split_from_urls() {
        assert_eq!(
            split_password("https://deploy:s3cret@git.example.com/a.git"),
            (
                "https://deploy@git.example.com/a.git".into(),
                Some("s3cret".into())
            )
        );
        assert_eq!(
            split_password("https://token@git.example.com/a.git"),
            ("https://token@git.example.com/a.git".into(), None)
        );
        assert_eq!(split_password("/srv/a"), ("/srv/a".into(), None));
    }
}
