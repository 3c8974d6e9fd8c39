//! `make cluster` (the `tether-cluster` program) keeps its promises: its
//! kubeconfig works as soon as it appears, and SIGTERM stops every process it
//! started before it exits.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Kills the program if the test fails half-way; its cluster then dies with it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn writes_a_working_kubeconfig_and_stops_everything_on_sigterm() {
    let kubectl = tether_testenv::Binaries::locate()
        .expect("cluster binaries")
        .kubectl();
    // Named like the test clusters' folders, so scripts/test.sh notices a leak.
    let dir = std::env::temp_dir().join(format!("tether-testenv-{}-bin", std::process::id()));
    let mut program = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_tether-cluster"))
            .args(["--nodes", "1", "--dir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("tether-cluster starts"),
    );

    let stdout = program.0.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut pids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("tether-cluster reports readiness within the deadline");
        if let Some((name, pid)) = line.trim().split_once(" pid ") {
            pids.push((
                pid.trim().parse::<u32>().expect("numeric pid"),
                name.trim().to_owned(),
            ));
        }
        if line.contains("press Ctrl-C") {
            break;
        }
    }
    assert_eq!(
        pids.len(),
        5,
        "etcd, apiserver, controller-manager, scheduler, kwok: {pids:?}"
    );

    let readyz = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .args(["get", "--raw", "/readyz"])
        .output()
        .expect("kubectl runs");
    assert_eq!(String::from_utf8_lossy(&readyz.stdout).trim(), "ok");

    // SAFETY: kill(2) on a child we own and have not reaped.
    unsafe { libc::kill(program.0.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = program.0.try_wait().expect("wait works") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "tether-cluster did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "graceful stop exits 0, got {status}");
    // It waited for its children before exiting: none may be left.
    let alive: Vec<_> = pids
        .iter()
        .filter(|(pid, _)| tether_testenv::supervisor::is_alive(*pid))
        .collect();
    assert!(
        alive.is_empty(),
        "still running after tether-cluster exited: {alive:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
