//! The web UI at fleet size: 1,000 agents registered, and one agent whose
//! last sync reported 5,000 objects (sent over a raw agent session, as
//! agentk would). Signed in as the admin, each page is fetched 20 times
//! over loopback HTTP; the figures are the time to the whole answer
//! (server render plus loopback), p50 and p95, with the answer's size.
//!
//! Run: `cargo build --release --bins && cargo bench -p tether-e2e --bench
//! ui`. Prints figures; asserts nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tether_credentials::Token;
use tether_e2e::bench::{ms, percentile, register_agents};
use tether_e2e::ui_client::{get, sign_in};
use tether_e2e::{Setup, commit, new_repo, raw, wait};
use tether_proto::v1::{self, AgentMessage, agent_message, server_message};

const AGENTS: usize = 1000;
const OBJECTS: usize = 5000;
const RUNS: usize = 20;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let setup = Setup::start_with(&["--poll-interval", "60s"]);
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    commit(
        &repo,
        &[
            (
                ".gitlab/agents/big/config.yaml",
                Some(
                    "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: apps\n    paths: [{glob: 'manifests/*.yaml'}]\n",
                ),
            ),
            (
                "manifests/cm.yaml",
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\n"),
            ),
        ],
    );
    let admin_text = std::fs::read_to_string(setup.dir.path().join("kas/admin-token"))?;
    let admin = Token::parse(admin_text.trim())?;
    let api: SocketAddr = setup.api.trim_start_matches("http://").parse()?;
    let client = tether_cli::client::ApiClient::new(&setup.api, &admin)?;
    let names: Vec<String> = (0..AGENTS - 1)
        .map(|i| format!("agent-{i:04}"))
        .chain(["big".to_owned()])
        .collect();
    let tokens = runtime.block_on(async {
        client
            .post(
                "/api/v1/projects",
                json!({ "id": "team/config", "url": repo.to_str().unwrap_or_default() }),
            )
            .await?;
        register_agents(&client, &names, "team/config").await
    })?;

    // `big` reports a sync of 5,000 objects for the commit it was sent,
    // then one for a later commit in which 500 of them differ.
    let big = tokens.last().cloned().unwrap_or_default();
    let (commit_id, later) = runtime.block_on(report_big_syncs(&setup, &big, &repo))?;
    wait(
        "the big syncs to be stored",
        Duration::from_secs(30),
        || setup.sync_of_agent("big", &later).is_some(),
    );
    let admin_cookie = sign_in(api, admin_text.trim())?;
    // A user, member of `team`: each agent is checked against its config's
    // `user_access` (`big`'s admits nobody; the others have none stored).
    let user_token = runtime.block_on(async {
        client
            .post(
                "/api/v1/users",
                json!({ "name": "viewer", "memberships": ["team"] }),
            )
            .await?;
        let created = client
            .post("/api/v1/users/viewer/tokens", json!({ "name": "bench" }))
            .await?;
        created["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no token in {created}"))
    })?;
    let user_cookie = sign_in(api, &user_token)?;
    let pages = [
        ("agents, page 1 of 20 (1,000 agents)", "/ui/".to_owned()),
        ("agents, page 20", "/ui/?page=19".to_owned()),
        (
            "agents, filtered (\"agent-09\")",
            "/ui/?q=agent-09".to_owned(),
        ),
        ("one agent", "/ui/agents/big".to_owned()),
        (
            "a sync of 5,000 objects (first 500)",
            format!("/ui/agents/big/sync?project=team%2Fconfig&commit={commit_id}"),
        ),
        (
            "the diff of two 5,000-object syncs (500 differ)",
            format!("/ui/agents/big/diff?project=team%2Fconfig&from={commit_id}&to={later}"),
        ),
        (
            "projects (one, config of 1,000 agents)",
            "/ui/projects".to_owned(),
        ),
        ("users", "/ui/users".to_owned()),
    ];
    let as_user = [(
        "agents, as a user (each of 1,000 agents checked against its config)",
        "/ui/".to_owned(),
    )];
    println!("| page | p50 | p95 | bytes |\n|---|---|---|---|");
    let admin = pages.into_iter().map(|p| (p, &admin_cookie));
    let user = as_user.into_iter().map(|p| (p, &user_cookie));
    for ((name, path), cookie) in admin.chain(user) {
        let mut times = Vec::with_capacity(RUNS);
        let mut bytes = 0;
        for _ in 0..RUNS {
            let started = Instant::now();
            let (status, body) = get(api, &path, cookie)?;
            times.push(started.elapsed());
            anyhow::ensure!(status == 200, "{path}: {status}");
            bytes = body.len();
        }
        times.sort();
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {bytes} |",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.95))
        );
    }
    Ok(())
}

/// Opens a raw session as `big`, waits for its manifests, commits again
/// and waits for those, then reports a synced set of 5,000 objects for the
/// first commit and the later commit's sync, in which 250 objects are new,
/// 250 gone and 250 InProgress. The two commits.
async fn report_big_syncs(
    setup: &Setup,
    token: &str,
    repo: &std::path::Path,
) -> anyhow::Result<(String, String)> {
    let channel = raw::connect(setup).await;
    let mut session = raw::session(channel, token, Some(raw::hello("big-0"))).await?;
    let first = loop {
        let next = tokio::time::timeout(Duration::from_secs(60), session.inbound.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("session ended"))?;
        if let Some(server_message::Message::Manifests(m)) = next.message
            && m.last
        {
            break m.commit_id;
        }
    };
    let later = commit(
        repo,
        &[(
            "manifests/cm2.yaml",
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: two}\n"),
        )],
    );
    // kas keeps reports only of commits it sent the session: let it send
    // the later one first.
    setup
        .cli(&["project", "refresh", "team/config"])
        .ok_or_else(|| anyhow::anyhow!("refresh failed"))?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(60), session.inbound.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("session ended"))?;
        if let Some(server_message::Message::Manifests(m)) = next.message
            && m.last
            && m.commit_id == later
        {
            break;
        }
    }
    for (commit, shift) in [(&first, 0), (&later, 250)] {
        let objects = (shift..OBJECTS + shift)
            .map(|i| v1::ObjectResult {
                group: String::new(),
                kind: if i % 5 == 0 { "Secret" } else { "ConfigMap" }.into(),
                namespace: format!("team-{:02}", i % 40),
                name: format!("object-{i:05}"),
                action: if shift == 0 || i % 20 == 1 {
                    "applied"
                } else {
                    "unchanged"
                }
                .into(),
                health: if shift > 0 && i % 20 == 1 {
                    "InProgress"
                } else {
                    "Current"
                }
                .into(),
                message: String::new(),
            })
            .collect();
        let report = v1::SyncReport {
            project_id: "team/config".into(),
            commit_id: commit.clone(),
            state: v1::SyncState::Synced as i32,
            applied: OBJECTS as u32,
            objects,
            ..Default::default()
        };
        session
            .tx
            .send(AgentMessage {
                message: Some(agent_message::Message::SyncReport(report)),
            })
            .await?;
    }
    // Keep the session until the reports are stored.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok((first, later))
}
