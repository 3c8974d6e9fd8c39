//! Running a renderer (helm, kustomize) as an untrusted program: whoever
//! can push to a manifest project controls its input, and a template can
//! loop, allocate without end, print gigabytes or name a file or URL to
//! read. So each run gets a fresh folder and nothing else of kas's: the
//! kernel confines it to that folder and its own binary, with no network
//! ([`kernel`]); a cleared environment (no proxy, no credentials, no
//! kubeconfig), its own process group, an address-space limit, a deadline
//! (SIGTERM, then SIGKILL), and bounded output.

pub mod kernel;

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// What the system's git needs to run, read-only, in the sandbox: its
/// helpers (some are shell scripts, which run the system's utilities),
/// its libraries, the certificate authorities, and its templates. Read
/// and execute only: the sandbox's rules on the filesystem (nothing of
/// kas's) and the network (the proxy's port) hold for whatever runs.
pub const GIT_SYSTEM: [&str; 11] = [
    "/usr/bin",
    "/bin",
    "/usr/lib/git-core",
    "/usr/libexec/git-core",
    "/usr/share/git-core",
    "/usr/lib",
    "/usr/lib64",
    "/etc/ssl/certs",
    "/usr/share/ca-certificates",
    "/etc/ca-certificates",
    "/etc/ld.so.cache",
];

/// Confines a blocking `command` (one kas runs on a tenant's data outside
/// a render, such as `git verify-commit`) by the same kernel rules as a
/// render: prepared here, applied between fork and exec.
pub fn confine(
    command: &mut std::process::Command,
    confinement: &kernel::Confinement,
) -> Result<(), kernel::Unavailable> {
    use std::os::unix::process::CommandExt;
    let prepared = kernel::Prepared::new(confinement)?;
    // SAFETY: between fork and exec only the three async-signal-safe
    // calls of `Prepared::apply` are made, on memory the closure owns.
    unsafe {
        command.pre_exec(move || prepared.apply());
    }
    Ok(())
}

/// Bounds on one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    /// `RLIMIT_AS`, bytes. Go programs reserve address space freely, so
    /// this is a ceiling against runaway allocation, not a tight fit.
    pub address_space: u64,
    /// Standard output kept at most; past it the run fails.
    pub output_bytes: usize,
    /// Whether the kernel confines the run.
    pub sandbox: Mode,
}

/// Whether renders run confined by the kernel ([`kernel`]). `Off` is the
/// administrator's choice (`--render-sandbox=off`) on a kernel without
/// Landlock, said at every start and on the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Kernel,
    Off,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Kernel => "kernel",
            Mode::Off => "off",
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            address_space: 4 << 30,
            output_bytes: 20 << 20,
            sandbox: Mode::Kernel,
        }
    }
}

/// The time between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Standard error kept for the message: its start and its end (a Go
/// template error nests, and its cause is last).
const STDERR_HEAD: usize = 600;
const STDERR_TAIL: usize = 600;

/// One program to run in `dir`.
#[derive(Debug, Default)]
pub struct Invocation {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub dir: PathBuf,
    /// The whole environment of the program.
    pub env: Vec<(String, OsString)>,
    /// The folders it may read and write when confined: its export, its
    /// archive and its scratch folder, nothing else.
    pub folders: Vec<PathBuf>,
    /// Beyond them, for a render that fetches remote bases: the system's
    /// git and libraries (read, execute), devices (read, write), and the
    /// port of kas's egress proxy (see [`kernel::Confinement`]).
    pub system: Vec<PathBuf>,
    pub devices: Vec<PathBuf>,
    pub proxy_port: Option<u16>,
}

/// Why a run produced no output.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("cannot start {program}: {error}")]
    Spawn { program: String, error: io::Error },
    #[error(
        "cannot confine {program}: {error}; it is not run unconfined (--render-sandbox=off would)"
    )]
    Confine {
        program: String,
        error: kernel::Unavailable,
    },
    #[error("did not finish within {0:?} and was stopped")]
    Timeout(Duration),
    #[error("printed more than {0} bytes and was stopped")]
    TooLarge(usize),
    #[error("{0}")]
    Failed(String),
}

/// Runs `invocation` under `limits`; its standard output on success.
pub async fn run(invocation: &Invocation, limits: Limits) -> Result<Vec<u8>, Failure> {
    let mut command = tokio::process::Command::new(&invocation.program);
    command
        .args(&invocation.args)
        .current_dir(&invocation.dir)
        .env_clear()
        .envs(invocation.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own group: a deadline ends the program's children too.
        .process_group(0);
    let address_space = limits.address_space;
    let confined = match limits.sandbox {
        Mode::Off => None,
        Mode::Kernel => Some(
            kernel::Prepared::new(&kernel::Confinement {
                executables: vec![invocation.program.clone()],
                folders: invocation.folders.clone(),
                system: invocation.system.clone(),
                devices: invocation.devices.clone(),
                proxy_port: invocation.proxy_port,
            })
            .map_err(|error| Failure::Confine {
                program: invocation.program.display().to_string(),
                error,
            })?,
        ),
    };
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (setrlimit, prctl, landlock_restrict_self, seccomp), on memory the
    // closure owns and does not allocate.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: address_space,
                rlim_max: address_space,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(confined) = &confined {
                confined.apply()?;
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|error| Failure::Spawn {
        program: invocation.program.display().to_string(),
        error,
    })?;
    let pid = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let outcome = tokio::time::timeout(limits.timeout, async {
        let (out, err) = tokio::join!(
            read_bounded(stdout, limits.output_bytes + 1),
            read_ends(stderr)
        );
        let status = child.wait().await;
        (out, err, status)
    })
    .await;
    let Ok((out, err, status)) = outcome else {
        stop(pid, &mut child).await;
        return Err(Failure::Timeout(limits.timeout));
    };
    let out = out.map_err(|e| Failure::Failed(format!("reading its output: {e}")))?;
    if out.len() > limits.output_bytes {
        stop(pid, &mut child).await;
        return Err(Failure::TooLarge(limits.output_bytes));
    }
    let status = status.map_err(|e| Failure::Failed(format!("waiting for it: {e}")))?;
    if !status.success() {
        let message = err.unwrap_or_default();
        return Err(Failure::Failed(if message.is_empty() {
            format!("exited with {status}")
        } else {
            message
        }));
    }
    Ok(out)
}

/// Reads at most `limit` bytes (the rest is left unread: the program
/// blocks writing, then is stopped).
async fn read_bounded(pipe: Option<impl AsyncRead + Unpin>, limit: usize) -> io::Result<Vec<u8>> {
    let Some(pipe) = pipe else {
        return Ok(Vec::new());
    };
    let mut buffer = Vec::new();
    pipe.take(limit as u64).read_to_end(&mut buffer).await?;
    Ok(buffer)
}

/// Reads a pipe to its end, keeping its start and its end, joined by `…`
/// when something between was left out.
async fn read_ends(pipe: Option<impl AsyncRead + Unpin>) -> io::Result<String> {
    let Some(mut pipe) = pipe else {
        return Ok(String::new());
    };
    let (mut head, mut tail) = (Vec::new(), std::collections::VecDeque::new());
    let mut skipped = false;
    let mut buffer = [0u8; 4096];
    loop {
        let n = pipe.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        for &byte in &buffer[..n] {
            if head.len() < STDERR_HEAD {
                head.push(byte);
            } else {
                tail.push_back(byte);
                if tail.len() > STDERR_TAIL {
                    tail.pop_front();
                    skipped = true;
                }
            }
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let tail = String::from_utf8_lossy(tail.make_contiguous()).into_owned();
    Ok(match skipped {
        true => format!("{} … {}", head.trim(), tail.trim()),
        false => format!("{head}{tail}").trim().to_owned(),
    })
}

/// SIGTERM to the program's group, SIGKILL after the grace.
async fn stop(pid: Option<u32>, child: &mut tokio::process::Child) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        let _ = child.kill().await;
        return;
    };
    // SAFETY: kill has no memory preconditions; a negative pid names the
    // group the child leads.
    unsafe { libc::kill(-pid, libc::SIGTERM) };
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        // SAFETY: as above.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = child.wait().await;
    }
}

/// A fresh folder for one run, removed when dropped.
pub fn workspace() -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("tether-render-").tempdir()
}

/// The environment every renderer gets: a home inside its folder, and
/// Helm's folders there too, so that no plugin, repository or registry
/// login of the host is seen.
pub fn base_env(home: &Path) -> Vec<(String, OsString)> {
    let at = |sub: &str| home.join(sub).into_os_string();
    vec![
        ("HOME".into(), home.as_os_str().to_owned()),
        ("PATH".into(), "/nonexistent".into()),
        ("HELM_CACHE_HOME".into(), at("cache")),
        ("HELM_CONFIG_HOME".into(), at("config")),
        ("HELM_DATA_HOME".into(), at("data")),
        ("HELM_PLUGINS".into(), at("plugins")),
        ("HELM_NO_PLUGINS".into(), "1".into()),
        ("KUBECONFIG".into(), "/nonexistent".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, limits: Limits) -> Result<Vec<u8>, Failure> {
        let dir = workspace().expect("dir");
        let invocation = Invocation {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            dir: dir.path().to_owned(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            folders: vec![dir.path().to_owned()],
            ..Invocation::default()
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(run(&invocation, limits))
    }

    #[test]
    fn output_errors_deadlines_and_floods() {
        let limits = Limits {
            timeout: Duration::from_millis(500),
            sandbox: Mode::Off,
            ..Limits::default()
        };
        assert_eq!(sh("printf ok", limits).expect("runs"), b"ok");
        let Err(Failure::Failed(message)) = sh("echo broken values >&2; exit 3", limits) else {
            panic!("a failure")
        };
        assert_eq!(message, "broken values");
        let Err(Failure::Failed(message)) = sh(
            "yes nested | head -c 100000 >&2; echo cause >&2; exit 1",
            limits,
        ) else {
            panic!("a failure")
        };
        assert!(
            message.len() < 1400 && message.ends_with("cause"),
            "{message}"
        );
        assert!(message.contains(" … "));
        let started = std::time::Instant::now();
        assert!(matches!(sh("sleep 30", limits), Err(Failure::Timeout(_))));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "stopped, not waited for"
        );
        let small = Limits {
            output_bytes: 1000,
            ..limits
        };
        assert!(matches!(sh("yes", small), Err(Failure::TooLarge(1000))));
        // The environment is only what is given.
        assert_eq!(sh("printf \"$HOME\"", limits).expect("runs"), b"");
    }
}
