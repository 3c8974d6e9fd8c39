//! A kas that is stopped (SIGTERM, as an orchestrator stops it) ends its
//! agents' sessions telling them to reconnect, and exits promptly; the
//! agents reconnect without a backoff. Real kas and agentk processes.

use tether_e2e as support;

use std::time::Duration;

use support::{Setup, wait};

#[test]
fn a_stopping_kas_tells_its_agents_to_reconnect_and_exits() {
    let mut setup = Setup::start();
    let token = setup.register_agent("prod");
    let agentk = setup.agentk(&token);
    wait("agentk connected", Duration::from_secs(30), || {
        setup.connections("prod").len() == 1
    });
    let took = setup.terminate_kas(Duration::from_secs(15));
    eprintln!("kas exited {took:?} after SIGTERM");
    wait(
        "agentk to be told to reconnect",
        Duration::from_secs(5),
        || agentk.log().contains("kas is shutting down; reconnecting"),
    );
    assert!(
        setup.kas.log().contains("kas is shutting down"),
        "{}",
        setup.kas.log()
    );
    setup.restart_kas();
    wait(
        "agentk back on the restarted kas",
        Duration::from_secs(15),
        || setup.connections("prod").len() == 1,
    );
}

/// A watch in flight through the proxy when kas is stopped ends cleanly
/// (kubectl exits 0 with what it saw, as when the API server ends a
/// watch), so that clients re-watch elsewhere at once; kas then exits
/// without waiting out its grace period.
#[test]
fn a_stopping_kas_ends_a_watch_in_flight_cleanly() {
    let mut setup = Setup::start();
    let repo = setup.dir.path().join("repo");
    support::new_repo(&repo);
    support::commit(
        &repo,
        &[(
            ".gitlab/agents/prod/config.yaml",
            Some("user_access:\n  projects:\n  - id: team/config\n"),
        )],
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let _agentk = setup.agentk(&token);
    setup.wait_for_tunnels();
    let (_, kubeconfig) = support::user_with_kubeconfig(&setup, "alice");
    let watch = support::kubectl(&kubeconfig)
        .args([
            "get",
            "--raw",
            "/k8s-proxy/api/v1/namespaces?watch=1&timeoutSeconds=3",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    // kas logs a request once its response has started: the watch is open.
    wait("the watch to be proxied", Duration::from_secs(10), || {
        setup
            .kas
            .log()
            .lines()
            .any(|l| l.contains("proxied") && l.contains("watch=1") && l.contains("status=200"))
    });
    let took = setup.terminate_kas(Duration::from_secs(15));
    let out = watch.wait_with_output().expect("kubectl ends");
    assert!(
        out.status.success(),
        "the watch was cut: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ADDED\""));
    eprintln!("kas exited {took:?} after SIGTERM, having ended the watch in flight cleanly");
    // The watch ended when the drain began (its client re-watches through
    // another replica), not when the grace period ran out.
    assert!(
        took < Duration::from_secs(5),
        "kas held the watch until the grace ran out: {took:?}"
    );
}
