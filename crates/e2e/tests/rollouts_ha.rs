//! A rollout among replicas: three kas on PostgreSQL behind HAProxy, one
//! canary and two prod agentk processes. The replica driving the rollout
//! is killed (SIGKILL) in the middle of the canary wave's soak; another
//! takes the lease, goes on from what the store holds, and the rollout
//! completes with every agent on the commit. Labels set through one
//! replica select agents for a rollout driven by another.

use tether_e2e as support;

use std::time::Duration;

use support::fleet::Fleet;
use support::rollouts::{commit_configs, config_map, namespaces, version_in};
use support::{last_line, wait};
use tether_testenv::git::{commit, new_repo};

const AGENTS: [(&str, &str); 3] = [("canary", "canary"), ("prod-1", "prod"), ("prod-2", "prod")];

fn rollout_file(canary_soak: &str) -> String {
    format!(
        "waves:\n  - name: canary\n    agents: {{match_labels: {{env: canary}}}}\n    soak: {canary_soak}\n  - name: prod\n    agents: {{match_labels: {{env: prod}}}}\n    max_parallel: 1\nagent_timeout: 120s\n"
    )
}

/// The rollout as the first running replica shows it.
fn rollout(fleet: &Fleet) -> serde_json::Value {
    fleet
        .running()
        .into_iter()
        .find_map(|i| fleet.cli(i, &["rollout", "show", "team/apps", "-o", "json"]))
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_wave_loses_nothing_and_another_completes_the_rollout() {
    let namespaces = namespaces("e2e-rollout-ha", &AGENTS).await;
    tokio::task::spawn_blocking(move || run(&namespaces))
        .await
        .expect("test body");
}

fn run(namespaces: &[String]) {
    let mut fleet = Fleet::start(3, &["--poll-interval", "1s"]);
    let config = fleet.dir.path().join("config");
    new_repo(&config);
    commit_configs(&config, &AGENTS, namespaces, "");
    let apps = fleet.dir.path().join("apps");
    new_repo(&apps);
    let quick = rollout_file("1s");
    commit(
        &apps,
        &[
            (".tether/rollout.yaml", Some(quick.as_str())),
            ("manifests/web.yaml", Some(config_map("1").as_str())),
        ],
    );
    let url = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    fleet
        .cli(
            0,
            &["project", "add", "team/config", "--url", &url(&config)],
        )
        .expect("project");
    fleet
        .cli(1, &["project", "add", "team/apps", "--url", &url(&apps)])
        .expect("project");
    let mut agentks = Vec::new();
    for (i, ((name, env), ns)) in AGENTS.iter().zip(namespaces).enumerate() {
        // Created through one replica, labelled through another.
        fleet
            .cli(
                i % 3,
                &["agent", "create", name, "--project", "team/config"],
            )
            .expect("agent");
        fleet
            .cli(
                (i + 1) % 3,
                &["agent", "label", name, &format!("env={env}")],
            )
            .expect("labelled");
        let token = last_line(fleet.cli(i % 3, &["token", "create", name, "--name", "first"]));
        agentks.push(fleet.agentk(&token, &format!("agentk-{name}"), ns));
    }
    wait(
        "every agent on the first commit",
        Duration::from_secs(120),
        || {
            namespaces
                .iter()
                .all(|ns| version_in(ns).as_deref() == Some("1"))
        },
    );

    // Which replica drives is told by its metrics: the one whose count of
    // rollouts started grows with this commit.
    const STARTED: &str = "tether_kas_rollouts_started_total";
    const COMPLETED: &str = "tether_kas_rollouts_ended_total{phase=\"completed\"}";
    let started_before: Vec<f64> = (0..3).map(|i| fleet.metric(i, STARTED)).collect();
    // A commit whose canary soaks long enough to kill the driver in it.
    let slow = rollout_file("15s");
    let second = commit(
        &apps,
        &[
            (".tether/rollout.yaml", Some(slow.as_str())),
            ("manifests/web.yaml", Some(config_map("2").as_str())),
        ],
    );
    wait(
        "the canary soaking the second commit",
        Duration::from_secs(60),
        || {
            let r = rollout(&fleet);
            r["commit"] == second.as_str() && r["waves"][0]["phase"] == "soaking"
        },
    );
    assert_eq!(version_in(&namespaces[0]).as_deref(), Some("2"));
    assert!(
        namespaces[1..]
            .iter()
            .all(|ns| version_in(ns).as_deref() == Some("1")),
        "prod waits for the soak"
    );
    let driver = fleet
        .running()
        .into_iter()
        .find(|&i| fleet.metric(i, STARTED) > started_before[i])
        .expect("one replica counts the rollout it started");
    let completed_before: Vec<f64> = (0..3).map(|i| fleet.metric(i, COMPLETED)).collect();
    fleet.kill(driver);

    wait(
        "another replica completing the rollout",
        Duration::from_secs(120),
        || {
            let r = rollout(&fleet);
            r["commit"] == second.as_str() && r["phase"] == "completed"
        },
    );
    assert!(
        namespaces
            .iter()
            .all(|ns| version_in(ns).as_deref() == Some("2")),
        "every agent on the second commit"
    );
    let r = rollout(&fleet);
    let soak_since = r["waves"][0]["soak_since"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let ended = r["waves"][0]["ended_at"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        soak_since < ended,
        "the soak kept its start across the takeover: {r}"
    );
    let took_over = fleet
        .running()
        .into_iter()
        .any(|i| fleet.metric(i, COMPLETED) > completed_before[i]);
    assert!(took_over, "a survivor counts the rollout it completed");
    drop(agentks);
}
