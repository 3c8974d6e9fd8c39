//! kas on PostgreSQL (`--database postgres://…`): records survive a kill
//! and restart, and two kas processes on one database see the same
//! agents and tokens. A real PostgreSQL server from tether-testenv.

use tether_e2e as support;

use support::Setup;

fn database() -> String {
    tether_testenv::shared_postgres()
        .create_database()
        .expect("a fresh database")
}

#[test]
fn records_live_in_postgres_across_restarts_and_processes() {
    let url = database();
    let mut first = Setup::start_with(&["--database", &url]);
    let token = first.register_agent("prod");
    first.kill_and_restart_kas();
    let agents = first.cli(&["agent", "list", "-o", "json"]).expect("agents");
    assert!(agents.contains("\"prod\""), "{agents}");

    // A second kas on the same database: the same agent, the same token.
    let second = Setup::start_beside(&first, &["--database", &url]);
    let shown = second
        .cli(&["agent", "show", "prod", "-o", "json"])
        .expect("the other kas knows the agent");
    assert!(shown.contains("team/config"), "{shown}");
    let tokens = second.cli(&["token", "list", "prod"]).expect("tokens");
    assert!(tokens.contains("first"), "{tokens}");
    // Revoked through the second, refused by the first.
    second
        .cli(&["token", "revoke", "prod", "1"])
        .expect("revoke");
    let listed = first
        .cli(&["token", "list", "prod", "-o", "json"])
        .expect("tokens");
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    assert!(listed[0]["revoked_at"].is_string(), "{listed}");
    assert!(!token.is_empty());
    // The password of the database URL never reaches the log.
    assert!(
        first.kas.log().contains("database=postgres://"),
        "{}",
        first.kas.log()
    );
}

#[test]
fn a_database_url_that_is_neither_postgres_nor_sqlite_is_refused() {
    let out = std::process::Command::new(support::kas_binary())
        .args(["serve", "--database", "mysql://kas:s3cret@db/kas"])
        .output()
        .expect("kas runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("neither postgres"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

/// A token revoked through one kas cuts the agent connected to another kas
/// on the same database within 2 s: the change travels over PostgreSQL's
/// LISTEN/NOTIFY, not a poll.
#[test]
fn a_revocation_through_one_kas_cuts_the_agent_on_another() {
    let url = database();
    let mut first = Setup::start_with(&["--database", &url]);
    first.pod_namespace = "default".into();
    let token = first.register_agent("prod");
    let _agentk = first.agentk(&token);
    support::wait(
        "agentk on the first kas",
        std::time::Duration::from_secs(30),
        || {
            let agent = first.agent("prod");
            agent["tunnels"] == 2
                && agent["connections"]
                    .as_array()
                    .is_some_and(|c| c.len() == 1)
        },
    );
    let second = Setup::start_beside(&first, &["--database", &url]);
    // Ready means following the feed (kas's /readyz checks it).
    support::wait(
        "the second kas to follow the feed",
        std::time::Duration::from_secs(10),
        || support::probe(second.admin, "/readyz") == Some(200),
    );
    second
        .cli(&["token", "revoke", "prod", "1"])
        .expect("revoked through the second");
    let revoked = std::time::Instant::now();
    support::wait(
        "the first kas to cut the agent",
        std::time::Duration::from_secs(2),
        || {
            let agent = first.agent("prod");
            agent["tunnels"] == 0 && agent["connections"].as_array().is_some_and(Vec::is_empty)
        },
    );
    eprintln!(
        "agent cut {:?} after the revocation on the other kas",
        revoked.elapsed()
    );
}

/// Notifications sent while a kas's listener reconnects are lost; after
/// the reconnect kas re-checks the tokens of its sessions. Here the token
/// is revoked behind every kas's back (no notification at all), then the
/// listener's connection is cut: the session must still go.
#[test]
fn after_a_gap_in_the_feed_kas_rechecks_its_sessions() {
    let url = database();
    let name = url.rsplit('/').next().expect("database name").to_owned();
    let pg = tether_testenv::shared_postgres();
    let mut kas = Setup::start_with(&["--database", &url]);
    kas.pod_namespace = "default".into();
    let token = kas.register_agent("prod");
    let _agentk = kas.agentk(&token);
    support::wait(
        "agentk connected",
        std::time::Duration::from_secs(30),
        || kas.connections("prod").len() == 1 && support::probe(kas.admin, "/readyz") == Some(200),
    );
    pg.psql(&name, "UPDATE agent_tokens SET revoked_at = 1 WHERE id = 1")
        .expect("revoked in the database only");
    pg.psql(
        &name,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND query ILIKE 'LISTEN%'"
        ),
    )
    .expect("the listener's connection is cut");
    // The revocation was written behind kas's back, so no change reached
    // the feed: only the re-check after the gap can close the session.
    support::wait(
        "the re-check to close the session",
        std::time::Duration::from_secs(10),
        || kas.connections("prod").is_empty(),
    );
}
