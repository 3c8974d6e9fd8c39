//! A kas that is stopped (SIGTERM, as an orchestrator stops it) ends its
//! agents' sessions telling them to reconnect, and exits promptly; the
//! agents reconnect without a backoff. Real kas and agentk processes.

mod support;

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
