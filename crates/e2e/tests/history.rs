//! What users look at is durable: the last sync of each manifest project,
//! the sync history and the config status are in kas's database, so a
//! restarted kas — or another kas on the same PostgreSQL — shows the same,
//! with no agent connected. Real kas and agentk processes, real git, the
//! real cluster, and a real PostgreSQL server.

use tether_e2e as support;

use std::time::Duration;

use serde_json::Value;
use support::{Setup, commit, new_repo, wait};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";

fn json(setup: &Setup, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&setup.cli(&args).expect("command succeeds")).expect("JSON")
}

/// Syncs two commits through agentk, then stops agentk; returns them.
fn two_syncs(setup: &Setup, ns: &str) -> (String, String) {
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n  - default_namespace: {ns}\n    paths:\n    - glob: '/manifests/*.yaml'\n"
    );
    let cm = |value: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{mode: {value}}}\n"
        )
    };
    let first = commit(
        &repo,
        &[
            (CONFIG, Some(&config)),
            ("manifests/cm.yaml", Some(&cm("one"))),
        ],
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let agentk = setup.agentk(&token);
    let synced = |commit: &str| {
        let syncs = json(setup, &["agent", "gitops", "prod"]);
        syncs.as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["commit"] == commit && s["state"] == "synced")
        })
    };
    wait("the first sync", Duration::from_secs(60), || synced(&first));
    let second = commit(&repo, &[("manifests/cm.yaml", Some(&cm("two")))]);
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait("the second sync", Duration::from_secs(60), || {
        synced(&second)
    });
    drop(agentk);
    wait("agentk to be gone", Duration::from_secs(30), || {
        setup.connections("prod").is_empty()
    });
    (first, second)
}

fn assert_shows(setup: &Setup, first: &str, second: &str) {
    let syncs = json(setup, &["agent", "gitops", "prod"]);
    assert_eq!(syncs[0]["commit"], second, "{syncs}");
    assert_eq!(syncs[0]["objects"][0]["name"], "settings", "{syncs}");
    let history = json(setup, &["agent", "history", "prod"]);
    let commits: Vec<&str> = history
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|s| s["commit"].as_str())
        .collect();
    assert_eq!(commits, [second, first], "newest first");
    let agent = json(setup, &["agent", "show", "prod"]);
    assert!(agent["connections"].as_array().is_some_and(Vec::is_empty));
    assert!(agent["config"]["commit"].is_string(), "{agent}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_kas_shows_the_same_syncs_history_and_config() {
    let ns = tether_testenv::shared()
        .namespace("history-sqlite")
        .await
        .expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut setup = Setup::start();
        setup.pod_namespace = ns.clone();
        let (first, second) = two_syncs(&setup, &ns);
        setup.kill_and_restart_kas();
        assert_shows(&setup, &first, &second);
    })
    .await
    .expect("test body");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_kas_on_the_same_postgres_shows_the_same() {
    let ns = tether_testenv::shared()
        .namespace("history-postgres")
        .await
        .expect("namespace");
    let ns = ns.name().to_owned();
    let url = tether_testenv::shared_postgres()
        .create_database()
        .expect("a fresh database");
    tokio::task::spawn_blocking(move || {
        let mut setup = Setup::start_with(&["--database", &url]);
        setup.pod_namespace = ns.clone();
        let (first, second) = two_syncs(&setup, &ns);
        let other = Setup::start_beside(&setup, &["--database", &url]);
        assert_shows(&other, &first, &second);
    })
    .await
    .expect("test body");
}
