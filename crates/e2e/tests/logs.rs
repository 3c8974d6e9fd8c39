//! `--log-format json` on kas and agentk: every line each writes is one
//! JSON object with its time, level, message and fields, as a log
//! collector reads them.

use tether_e2e as support;

use std::time::Duration;

use support::{Proc, Setup, wait};

/// Every non-empty line of `log` parsed; panics naming the first that is
/// not a JSON object with a timestamp, level and fields.
fn json_lines(what: &str, log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line}"));
            assert!(
                value["timestamp"].is_string()
                    && value["level"].is_string()
                    && value["fields"].is_object(),
                "{what}: not a log record: {line}"
            );
            value
        })
        .collect()
}

#[test]
fn both_programs_log_one_json_object_a_line() {
    let setup = Setup::start_with(&["--log-format", "json"]);
    let token = setup.register_agent("prod");
    let mut cmd = support::agentk_command(&support::AgentkSpec {
        token: &token,
        token_file: &setup.dir.path().join("agent-token"),
        address: &setup.agent_addr,
        ca: &setup.dir.path().join("kas/agent-ca.crt"),
        probes: support::free_port(),
        namespace: &setup.pod_namespace,
        pod: "agentk-0",
    });
    cmd.args(["--log-format", "json"]);
    let agentk = Proc::spawn(cmd, setup.dir.path().join("agentk.log"));
    wait("the agent connected", Duration::from_secs(60), || {
        !setup.connections("prod").is_empty()
    });
    let kas = json_lines("kas", &setup.kas.log());
    assert!(
        kas.iter()
            .any(|r| r["fields"]["message"] == "agent connected" && r["fields"]["agent"] == "prod"),
        "kas says the agent connected, with its name as a field"
    );
    let agentk_lines = json_lines("agentk", &agentk.log());
    assert!(!agentk_lines.is_empty(), "agentk logged nothing");
}
