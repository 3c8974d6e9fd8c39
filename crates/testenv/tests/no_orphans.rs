//! No cluster process outlives the test process that started it, however that
//! process ends.
//!
//! Each case re-runs this test binary as a child, in a mode where it starts a
//! cluster, records the pids of the cluster's processes, and then dies: by a
//! failing (panicking) test, or by SIGKILL, which runs no destructor at all.
//! The parent then checks that every recorded process is gone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MODE_ENV: &str = "TETHER_ORPHAN_CHILD_MODE";
const PIDS_ENV: &str = "TETHER_ORPHAN_PIDS_FILE";

/// Runs only as the child: started with `--ignored --exact` by the parent.
#[tokio::test]
#[ignore = "child half of the orphan tests; started by them"]
async fn orphan_child() {
    let Ok(mode) = std::env::var(MODE_ENV) else {
        return;
    };
    let pids_file = std::env::var(PIDS_ENV).expect("parent sets the pids file");
    let cluster = tether_testenv::shared();
    let lines: Vec<String> = cluster
        .processes()
        .iter()
        .map(|p| format!("{} {}", p.pid, p.name))
        .collect();
    std::fs::write(&pids_file, lines.join("\n")).expect("write pids");
    match mode.as_str() {
        "panic" => panic!("failing on purpose with a cluster running"),
        "sigkill" => unsafe {
            // SAFETY: kill(2) on our own pid.
            libc::kill(libc::getpid(), libc::SIGKILL);
        },
        other => panic!("unknown mode {other}"),
    }
}

#[test]
fn cluster_processes_die_with_a_panicking_test() {
    let pids = run_child("panic");
    assert_all_gone(&pids);
}

#[test]
fn cluster_processes_die_with_a_killed_test_process() {
    let pids = run_child("sigkill");
    assert_all_gone(&pids);
}

fn run_child(mode: &str) -> Vec<(u32, String)> {
    let pids_file: PathBuf =
        std::env::temp_dir().join(format!("tether-orphans-{}-{mode}", std::process::id()));
    let _ = std::fs::remove_file(&pids_file);
    // The child's output is captured: its deliberate failure would otherwise
    // print a failing test summary into this run's output.
    let out = Command::new(std::env::current_exe().expect("test binary path"))
        .args(["orphan_child", "--exact", "--ignored", "--nocapture"])
        .env(MODE_ENV, mode)
        .env(PIDS_ENV, &pids_file)
        .output()
        .expect("child test process runs");
    let child_output = || {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(
        !out.status.success(),
        "the child was meant to die, it exited with {}:\n{}",
        out.status,
        child_output()
    );
    let pids = read_pids(&pids_file)
        .unwrap_or_else(|| panic!("child recorded no pids:\n{}", child_output()));
    let _ = std::fs::remove_file(&pids_file);
    let names: Vec<&str> = pids.iter().map(|(_, n)| n.as_str()).collect();
    assert!(
        names.contains(&"etcd") && names.contains(&"kube-apiserver"),
        "child started {names:?}"
    );
    pids
}

fn read_pids(path: &Path) -> Option<Vec<(u32, String)>> {
    let text = std::fs::read_to_string(path).ok()?;
    let pids = text
        .lines()
        .filter_map(|l| {
            let (pid, name) = l.split_once(' ')?;
            Some((pid.parse().ok()?, name.to_owned()))
        })
        .collect();
    Some(pids)
}

/// A pid counts as gone when it names no live process, or now names another
/// program (the pid was reused).
fn is_running(pid: u32, name: &str) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    tether_testenv::supervisor::is_alive(pid) && String::from_utf8_lossy(&cmdline).contains(name)
}

fn assert_all_gone(pids: &[(u32, String)]) {
    // The kernel kills the children when the parent dies; allow a moment for
    // the signal to be delivered, polled rather than slept.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<_> = pids
            .iter()
            .filter(|(pid, name)| is_running(*pid, name))
            .collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "orphaned cluster processes: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
