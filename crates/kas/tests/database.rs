//! kas on PostgreSQL (`--database postgres://…`): records survive a kill
//! and restart, and two kas processes on one database see the same
//! agents and tokens. A real PostgreSQL server from tether-testenv.

mod support;

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
    let second = Setup::start_with(&["--database", &url]);
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
    let out = std::process::Command::new(support::KAS)
        .args(["serve", "--database", "mysql://kas:s3cret@db/kas"])
        .output()
        .expect("kas runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("neither postgres"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}
