//! Owns the cluster's child processes on one dedicated thread.
//!
//! Why a thread: Linux delivers `PR_SET_PDEATHSIG` when the *thread* that
//! forked a child dies, not the process. Tests run on short-lived threads, so
//! a child forked by a test thread would be killed when that test returned.
//! Forking from a thread that lives exactly as long as the [`Supervisor`] (or
//! the whole process, for the shared cluster) gives the guarantee we want: the
//! children die with their owner whatever way the owner ends — return, panic,
//! Ctrl-C or SIGKILL — and no etcd or kube-apiserver is ever orphaned.
//!
//! Dropping the [`Supervisor`] stops every child, in reverse start order:
//! SIGTERM, a grace period, then SIGKILL.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long children get to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How much of a failed child's log an error carries.
const LOG_TAIL_LINES: usize = 30;

/// What to run, and where its output goes.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    /// Component name, used in errors (`etcd`, `kube-apiserver`, …).
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// stdout and stderr are both appended here.
    pub log: PathBuf,
    /// Run as this user and group id (PostgreSQL refuses to run as root).
    pub run_as: Option<(u32, u32)>,
}

/// A running child as seen from outside the supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub name: String,
    pub pid: u32,
}

/// Handle to the supervisor thread; dropping it stops every child.
#[derive(Debug)]
pub struct Supervisor {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

enum Request {
    Spawn(ProcessSpec, mpsc::Sender<Result<u32>>),
    Check(mpsc::Sender<Result<()>>),
    List(mpsc::Sender<Vec<ProcessInfo>>),
}

struct Managed {
    spec: ProcessSpec,
    child: Child,
}

// === impl Supervisor ===

impl Supervisor {
    pub fn start() -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tether-testenv-supervisor".into())
            .spawn(move || run(rx))
            .map_err(Error::io("start the process supervisor thread"))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Starts a child and returns its pid.
    pub fn spawn(&self, spec: ProcessSpec) -> Result<u32> {
        self.call(|reply| Request::Spawn(spec, reply))?
    }

    /// Fails with the log tail of the first child that has exited.
    pub fn check(&self) -> Result<()> {
        self.call(Request::Check)?
    }

    pub fn processes(&self) -> Vec<ProcessInfo> {
        self.call(Request::List).unwrap_or_default()
    }

    /// Stops every child and waits for the supervisor thread. Idempotent.
    pub fn stop(&mut self) {
        // Closing the channel ends the thread's loop, which stops the children.
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn call<T>(&self, request: impl FnOnce(mpsc::Sender<T>) -> Request) -> Result<T> {
        let gone = || Error::Binaries("the process supervisor has stopped".into());
        let (reply_tx, reply_rx) = mpsc::channel();
        let tx = self.tx.as_ref().ok_or_else(gone)?;
        tx.send(request(reply_tx)).map_err(|_| gone())?;
        reply_rx.recv().map_err(|_| gone())
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(rx: mpsc::Receiver<Request>) {
    let mut children: Vec<Managed> = Vec::new();
    for request in rx {
        match request {
            Request::Spawn(spec, reply) => {
                let result = spawn(&spec).map(|child| {
                    let pid = child.id();
                    children.push(Managed { spec, child });
                    pid
                });
                let _ = reply.send(result);
            }
            Request::Check(reply) => {
                let _ = reply.send(children.iter_mut().try_for_each(Managed::check));
            }
            Request::List(reply) => {
                let list = children
                    .iter()
                    .map(|m| ProcessInfo {
                        name: m.spec.name.clone(),
                        pid: m.child.id(),
                    })
                    .collect();
                let _ = reply.send(list);
            }
        }
    }
    stop_all(&mut children);
}

fn spawn(spec: &ProcessSpec) -> Result<Child> {
    let open_log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(Error::io(format!("open log {}", spec.log.display())))
    };
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(open_log()?)
        .stderr(open_log()?);
    if let Some((uid, gid)) = spec.run_as {
        cmd.uid(uid).gid(gid);
    }
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe functions (prctl, getppid, _exit); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect; then nobody
            // would ever kill this child.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(Error::io(format!(
        "start {} ({})",
        spec.name,
        spec.program.display()
    )))
}

/// Stops children in reverse start order, each completely before the next:
/// SIGTERM, then SIGKILL after the grace period.
///
/// The order matters. kube-apiserver's graceful shutdown still writes to etcd
/// (it removes itself from the `kubernetes` Service), while etcd's waits for
/// its clients' streams to close; signalled together, each waits for the other
/// until the grace period runs out. Clients first, storage last, and the whole
/// cluster stops in well under a second.
fn stop_all(children: &mut [Managed]) {
    let started = Instant::now();
    for m in children.iter_mut().rev() {
        signal(&m.child, libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            match m.child.try_wait() {
                Ok(Some(_)) | Err(_) => {
                    tracing::debug!(component = %m.spec.name, after = ?started.elapsed(), "stopped");
                    break;
                }
                Ok(None) if Instant::now() >= deadline => {
                    tracing::warn!(component = %m.spec.name, "did not stop on SIGTERM, killing");
                    let _ = m.child.kill();
                    let _ = m.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid we own and have not reaped yet, so it cannot
    // name a recycled process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

// === impl Managed ===

impl Managed {
    fn check(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::Exited {
                component: self.spec.name.clone(),
                status: status.to_string(),
                log: self.spec.log.clone(),
                log_tail: log_tail(&self.spec.log),
            }),
            Err(e) => Err(Error::Io {
                action: format!("check {}", self.spec.name),
                source: e,
            }),
        }
    }
}

/// Whether `pid` names a running process. A zombie does not count: it has
/// exited and only waits for its parent to reap it (a container's init may
/// never do so).
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !(state.starts_with('Z') || state.starts_with('X'))
        })
        .unwrap_or(false)
}

/// The last lines of a log file, for error messages.
pub(crate) fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec whose log is removed when the test's supervisor is done.
    fn spec(name: &str, script: &str) -> ProcessSpec {
        ProcessSpec {
            name: name.into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            log: std::env::temp_dir().join(format!(
                "tether-supervisor-{name}-{}.log",
                std::process::id()
            )),
            run_as: None,
        }
    }

    fn remove_log(name: &str) {
        let _ = std::fs::remove_file(spec(name, "").log);
    }

    #[test]
    fn dropping_the_supervisor_stops_its_children() {
        let sup = Supervisor::start().expect("starts");
        let pid = sup
            .spawn(spec("sleeper", "exec sleep 600"))
            .expect("spawns");
        assert!(is_alive(pid));
        drop(sup);
        assert!(!is_alive(pid), "child {pid} outlived its supervisor");
        remove_log("sleeper");
    }

    #[test]
    fn a_child_that_ignores_sigterm_is_killed() {
        let mut sup = Supervisor::start().expect("starts");
        let spec = spec(
            "stubborn",
            "trap '' TERM; echo trap-set; while :; do sleep 1; done",
        );
        let log = spec.log.clone();
        let pid = sup.spawn(spec).expect("spawns");
        // Stopping before the shell has installed its trap would test nothing.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("trap-set")
        {
            assert!(Instant::now() < deadline, "child never set its trap");
            std::thread::sleep(Duration::from_millis(10));
        }
        let stopping = Instant::now();
        sup.stop();
        assert!(
            stopping.elapsed() >= STOP_GRACE,
            "SIGTERM was honoured, the kill path was not taken"
        );
        assert!(!is_alive(pid), "child {pid} survived SIGKILL");
        remove_log("stubborn");
    }

    #[test]
    fn check_reports_an_exited_child_with_its_log() {
        let sup = Supervisor::start().expect("starts");
        sup.spawn(spec("crasher", "echo boom-from-child; exit 3"))
            .expect("spawns");
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            match sup.check() {
                Err(e) => break e,
                Ok(()) if Instant::now() > deadline => panic!("exit not noticed"),
                Ok(()) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let msg = err.to_string();
        assert!(
            msg.contains("crasher") && msg.contains("boom-from-child"),
            "{msg}"
        );
        remove_log("crasher");
    }
}
