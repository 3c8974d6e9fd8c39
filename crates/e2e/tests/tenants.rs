//! What one tenant's agent token can and cannot do to kas: read another
//! tenant's repository, lock other agents out, outlive its revocation or
//! expiry, stay silent forever, grow kas's memory, or make kas post a
//! commit status or a notification it should not. A raw client speaks the
//! protocol directly, doing what agentk never would; kas and agentk are
//! the real processes, and what kas posts out goes to loopback receivers.

use tether_e2e as support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::receiver::Receiver;
use support::{Setup, commit, new_repo, raw, wait};
use tether_proto::v1::{AgentMessage, SyncReport, SyncState, agent_message, server_message};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";
/// A config whose one manifest project is its own configuration project.
const OWN_MANIFESTS: &str =
    "gitops:\n  manifest_projects:\n  - id: team/config\n    paths: [{glob: 'manifests/*.yaml'}]\n";
const CONFIG_MAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n";

/// Reads from `session` until the last message of a set of `project`;
/// returns the set's commit.
async fn set_of(session: &mut raw::Session, project: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let message = tokio::time::timeout_at(deadline, session.inbound.message())
            .await
            .unwrap_or_else(|_| panic!("no set of {project} within 30 s"))
            .expect("stream")
            .expect("open");
        if let Some(server_message::Message::Manifests(m)) = message.message
            && m.last
            && m.project_id == project
        {
            assert!(m.error.is_empty(), "{}", m.error);
            return m.commit_id;
        }
    }
}

/// A report that `commit` of `project` is synced, every object Current:
/// a commit status `success`, a `sync_succeeded` notification.
fn synced(project: &str, commit: &str) -> AgentMessage {
    AgentMessage {
        message: Some(agent_message::Message::SyncReport(SyncReport {
            project_id: project.into(),
            commit_id: commit.into(),
            state: SyncState::Synced as i32,
            ..Default::default()
        })),
    }
}

/// Reads from `session` until `done` holds for a Manifests message, or the
/// time runs out; returns the project ids of every Manifests seen.
async fn manifests_until(
    session: &mut raw::Session,
    timeout: Duration,
    mut done: impl FnMut(&str) -> bool,
) -> (Vec<String>, bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, session.inbound.message()).await else {
            return (seen, false);
        };
        let Ok(Some(message)) = next else {
            return (seen, false);
        };
        if let Some(server_message::Message::Manifests(m)) = message.message {
            seen.push(m.project_id.clone());
            if m.last && done(&m.project_id) {
                return (seen, true);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn another_groups_project_reaches_the_agent_only_once_granted() {
    let setup = Setup::start_with(&["--poll-interval", "1s"]);
    let secrets = setup.dir.path().join("secrets");
    new_repo(&secrets);
    commit(
        &secrets,
        &[(
            "db.yaml",
            Some(
                "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: hunter2}\n",
            ),
        )],
    );
    let apps = setup.dir.path().join("apps");
    new_repo(&apps);
    commit(
        &apps,
        &[(
            "web.yaml",
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n"),
        )],
    );
    let config = setup.dir.path().join("config");
    new_repo(&config);
    commit(
        &config,
        &[(
            CONFIG,
            Some("gitops:\n  manifest_projects:\n  - id: other-team/secrets\n  - id: team/apps\n"),
        )],
    );
    let token = setup.register_agent_in("prod", config.to_str().expect("utf-8"));
    for (id, dir) in [("other-team/secrets", &secrets), ("team/apps", &apps)] {
        setup
            .cli(&["project", "add", id, "--url", dir.to_str().expect("utf-8")])
            .expect("project");
    }

    let channel = raw::connect(&setup).await;
    let mut session = raw::session(channel, &token, Some(raw::hello("raw-0")))
        .await
        .expect("session");
    let (seen, done) =
        manifests_until(&mut session, Duration::from_secs(30), |p| p == "team/apps").await;
    assert!(done, "the agent's own group's project arrives: {seen:?}");
    let status = setup.agent("prod")["config"].clone();
    let errors = status["manifest_project_errors"].to_string();
    assert!(
        errors.contains("other-team/secrets")
            && errors.contains("kas project grant other-team/secrets --agent prod"),
        "{status}"
    );
    // Several polls later still nothing of the refused project.
    let (more, _) = manifests_until(&mut session, Duration::from_secs(3), |_| false).await;
    assert!(
        !seen.iter().chain(&more).any(|p| p == "other-team/secrets"),
        "{seen:?} {more:?}"
    );

    setup
        .cli(&["project", "grant", "other-team/secrets", "--agent", "prod"])
        .expect("grant");
    let (seen, done) = manifests_until(&mut session, Duration::from_secs(10), |p| {
        p == "other-team/secrets"
    })
    .await;
    assert!(done, "granted: the project arrives at once: {seen:?}");
    assert!(setup.agent("prod")["config"]["manifest_project_errors"] == serde_json::json!([]));
    let grants = setup
        .cli(&["project", "grants", "other-team/secrets", "-o", "json"])
        .expect("grants");
    assert!(grants.contains("\"prod\""), "{grants}");

    setup
        .cli(&[
            "project",
            "revoke-grant",
            "other-team/secrets",
            "--agent",
            "prod",
        ])
        .expect("revoke");
    wait("the refusal to show again", Duration::from_secs(10), || {
        setup.agent("prod")["config"]["manifest_project_errors"]
            .to_string()
            .contains("other-team/secrets")
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_from_one_address_never_lock_out_a_valid_agent() {
    let setup = Setup::start();
    let token = setup.register_agent("prod");
    let channel = raw::connect(&setup).await;
    for i in 0..15 {
        let refused = raw::session(channel.clone(), &raw::bogus_token(i), Some(raw::hello("x")))
            .await
            .expect_err("a bogus token is refused");
        assert!(
            matches!(
                refused.code(),
                tonic::Code::Unauthenticated | tonic::Code::ResourceExhausted
            ),
            "{refused:?}"
        );
    }
    // From the same address, at once: the valid agent is welcomed.
    let started = Instant::now();
    let mut session = raw::session(channel, &token, Some(raw::hello("ok")))
        .await
        .expect("a valid token is never refused for others' failures");
    let welcome = session.inbound.message().await.expect("message");
    assert!(
        matches!(
            welcome.and_then(|m| m.message),
            Some(server_message::Message::Welcome(_))
        ),
        "welcomed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not delayed: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_revoked_between_authentication_and_hello_gets_no_session() {
    let setup = Setup::start();
    let token = setup.register_agent("prod");
    let channel = raw::connect(&setup).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<AgentMessage>(4);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let call = tokio::spawn(async move {
        tether_proto::v1::agent_channel_client::AgentChannelClient::new(channel)
            .session(request)
            .await
            .map(|_| ())
    });
    // Let kas check the token while no Hello has come (the outcome must be
    // the same if it checks later: the token is then revoked outright).
    tokio::time::sleep(Duration::from_millis(300)).await;
    setup
        .cli(&["token", "revoke", "prod", "1"])
        .expect("revoked");
    tx.send(raw::hello("late")).await.expect("hello");
    let result = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("kas answers")
        .expect("task");
    let status = result.expect_err("no session for a revoked token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(setup.connections("prod").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_silent_after_hello_is_dropped_however_often_kas_polls() {
    let setup = Setup::start_with(&["--poll-interval", "1s"]);
    let token = setup.register_agent("prod");
    let channel = raw::connect(&setup).await;
    let started = Instant::now();
    let _session = raw::session(channel, &token, Some(raw::hello("quiet")))
        .await
        .expect("session");
    wait("the session to register", Duration::from_secs(5), || {
        setup.connections("prod").len() == 1
    });
    wait(
        "the silent session to be dropped",
        Duration::from_secs(40),
        || setup.connections("prod").is_empty(),
    );
    assert!(
        started.elapsed() >= Duration::from_secs(29),
        "dropped after three ping intervals, not before: {:?}",
        started.elapsed()
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_reports_for_made_up_projects_are_not_kept() {
    let setup = Setup::start();
    let token = setup.register_agent("prod");
    let channel = raw::connect(&setup).await;
    let mut session = raw::session(channel, &token, Some(raw::hello("flood")))
        .await
        .expect("session");
    let _welcome = session.inbound.message().await.expect("welcome");
    let before = rss_kib(setup.kas.child.id());
    let objects: Vec<tether_proto::v1::ObjectResult> = (0..20)
        .map(|i| tether_proto::v1::ObjectResult {
            kind: "ConfigMap".into(),
            name: format!("object-{i}-{}", "x".repeat(100)),
            ..Default::default()
        })
        .collect();
    for i in 0..10_000 {
        let report = SyncReport {
            project_id: format!("made-up/project-{i}"),
            commit_id: "0".repeat(40),
            objects: objects.clone(),
            ..Default::default()
        };
        session
            .tx
            .send(AgentMessage {
                message: Some(agent_message::Message::SyncReport(report)),
            })
            .await
            .expect("kas reads");
    }
    // A ping after the flood: its pong means kas has read every report.
    session
        .tx
        .send(AgentMessage {
            message: Some(agent_message::Message::Ping(tether_proto::v1::Ping {
                sequence: 7,
            })),
        })
        .await
        .expect("ping");
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), session.inbound.message())
            .await
            .expect("pong in time")
            .expect("stream")
            .expect("open");
        if matches!(message.message, Some(server_message::Message::Pong(p)) if p.sequence == 7) {
            break;
        }
    }
    let after = rss_kib(setup.kas.child.id());
    let syncs = setup
        .cli(&["agent", "gitops", "prod", "-o", "json"])
        .expect("gitops");
    assert_eq!(
        syncs.trim(),
        "[]",
        "no report of a project kas does not send"
    );
    // 10,000 kept reports of 20 objects each would be well over 30 MiB.
    assert!(
        after < before + 16 * 1024,
        "kas grew from {before} KiB to {after} KiB"
    );
    eprintln!("kas RSS before {before} KiB, after 10,000 reports {after} KiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn hundreds_of_never_reading_sessions_on_one_connection_are_capped() {
    let setup = Setup::start();
    let token = setup.register_agent("prod");
    let channel = raw::connect(&setup).await;
    let mut opened = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..500 {
        let (channel, token) = (channel.clone(), token.clone());
        tasks.spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                raw::session(channel, &token, Some(raw::hello(&format!("pod-{i}")))),
            )
            .await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Ok(session)) = joined.expect("task") {
            opened.push(session);
        }
    }
    let live = setup.connections("prod").len();
    assert!(
        opened.len() <= 32 && live <= 32,
        "{} sessions opened, {live} live",
        opened.len()
    );
    // kas still serves another agent connection at once.
    let other = raw::connect(&setup).await;
    let names: BTreeSet<String> = setup
        .connections("prod")
        .iter()
        .map(|c| c["pod_name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(names.len() <= 32);
    drop(opened);
    wait("the capped sessions to go", Duration::from_secs(30), || {
        setup.connections("prod").is_empty()
    });
    let mut session = raw::session(other, &token, Some(raw::hello("after")))
        .await
        .expect("a session once the others are gone");
    assert!(session.inbound.message().await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_expires_closes_its_session_and_tunnels() {
    let setup = Setup::start();
    let config = setup.dir.path().join("config");
    new_repo(&config);
    commit(&config, &[(CONFIG, Some("observability: {}\n"))]);
    setup
        .cli(&[
            "project",
            "add",
            "team/config",
            "--url",
            config.to_str().expect("utf-8"),
        ])
        .expect("project");
    setup
        .cli(&["agent", "create", "prod", "--project", "team/config"])
        .expect("agent");
    let created = Instant::now();
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(5);
    let expires = expires
        .format(&time::format_description::well_known::Rfc3339)
        .expect("rfc3339");
    let out = setup
        .cli(&[
            "token",
            "create",
            "prod",
            "--name",
            "short",
            "--expires-at",
            &expires,
        ])
        .expect("token");
    let token = out.lines().last().expect("token").trim().to_owned();
    let _agentk = setup.agentk(&token);
    wait(
        "agentk's session and tunnels",
        Duration::from_secs(5),
        || {
            let agent = setup.agent("prod");
            agent["tunnels"] == 2
                && agent["connections"]
                    .as_array()
                    .is_some_and(|c| c.len() == 1)
        },
    );
    wait(
        "the expired token's session and tunnels to close",
        Duration::from_secs(10),
        || {
            let agent = setup.agent("prod");
            agent["tunnels"] == 0 && agent["connections"].as_array().is_some_and(Vec::is_empty)
        },
    );
    assert!(
        created.elapsed() < Duration::from_secs(10),
        "{:?}",
        created.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_of_a_commit_kas_never_sent_posts_no_status() {
    let setup = Setup::start_with(&["--poll-interval", "1s"]);
    let host = Receiver::start();
    let repo = setup.dir.path().join("config");
    new_repo(&repo);
    let main = commit(
        &repo,
        &[
            (CONFIG, Some(OWN_MANIFESTS)),
            ("manifests/web.yaml", Some(CONFIG_MAP)),
        ],
    );
    // An unreviewed pull request: in the repository, not on the branch
    // kas follows.
    tether_testenv::git::git(&repo, &["checkout", "-q", "-b", "pr-1"]);
    let unreviewed = commit(
        &repo,
        &[(
            "manifests/web.yaml",
            Some(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {unreviewed: 'yes'}\n",
            ),
        )],
    );
    tether_testenv::git::git(&repo, &["checkout", "-q", "main"]);
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    setup.set_status_target("github", &host.url, "team/config", "t0ken");

    let channel = raw::connect(&setup).await;
    let mut session = raw::session(channel, &token, Some(raw::hello("raw-0")))
        .await
        .expect("session");
    assert_eq!(set_of(&mut session, "team/config").await, main);
    for forged in [
        unreviewed.clone(),
        format!("{main}/../../../../other-team/app/statuses/{main}"),
        format!("{unreviewed}?state=success"),
    ] {
        session
            .tx
            .send(synced("team/config", &forged))
            .await
            .expect("kas reads");
    }
    session
        .tx
        .send(synced("team/config", &main))
        .await
        .expect("kas reads");
    // One queue per project posts in order: once the sent commit's
    // success is here, a status for any report before it would be too.
    wait("the sent commit's success", Duration::from_secs(30), || {
        host.requests()
            .iter()
            .any(|r| r.json()["state"] == "success")
    });
    let posted = host.requests();
    let only = format!("/repos/team/config/statuses/{main}");
    assert!(
        posted
            .iter()
            .all(|r| r.method == "POST" && r.target == only),
        "a status for a commit kas never sent: {posted:#?}"
    );
    let history = setup
        .cli(&[
            "agent",
            "history",
            "prod",
            "--project",
            "team/config",
            "-o",
            "json",
        ])
        .expect("history");
    assert!(
        history.contains(&main) && !history.contains(&unreviewed) && !history.contains(".."),
        "only the sent commit's report is kept: {history}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_config_cannot_send_with_another_teams_notification_secret() {
    // Another team's Slack, and kas's own destination (its settings file).
    let theirs = Receiver::start();
    let kas_wide = Receiver::start();
    let settings_dir = tempfile::tempdir().expect("tempdir");
    let settings = settings_dir.path().join("kas.yaml");
    std::fs::write(
        &settings,
        "notifications:\n- provider: generic\n  url_secret: audit\n  events: [sync_succeeded]\n",
    )
    .expect("settings");
    let setup = Setup::start_with(&[
        "--poll-interval",
        "1s",
        "--config",
        settings.to_str().expect("utf-8"),
    ]);
    for (name, url) in [("audit", &kas_wide.url), ("their-slack", &theirs.url)] {
        let file = setup.dir.path().join(format!("{name}-url"));
        std::fs::write(&file, url).expect("url file");
        setup
            .cli(&[
                "notifications",
                "secret",
                "set",
                name,
                "--url-file",
                file.to_str().expect("utf-8"),
            ])
            .expect("notification secret");
    }
    let repo = setup.dir.path().join("config");
    new_repo(&repo);
    let config =
        format!("{OWN_MANIFESTS}notifications:\n- provider: slack\n  url_secret: their-slack\n");
    commit(
        &repo,
        &[
            (CONFIG, Some(config.as_str())),
            ("manifests/web.yaml", Some(CONFIG_MAP)),
        ],
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));

    let channel = raw::connect(&setup).await;
    let mut session = raw::session(channel, &token, Some(raw::hello("raw-0")))
        .await
        .expect("session");
    let sent = set_of(&mut session, "team/config").await;
    session
        .tx
        .send(synced("team/config", &sent))
        .await
        .expect("kas reads");
    wait(
        "kas's own destination to be told",
        Duration::from_secs(30),
        || !kas_wide.requests().is_empty(),
    );
    // Queued in the same call as kas's own: a delivery to the other team
    // would be here within a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        assert!(
            theirs.requests().is_empty(),
            "the tenant's config posted into another team's Slack: {:#?}",
            theirs.requests()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let errors = setup.agent("prod")["config"]["notification_errors"].to_string();
    assert!(
        errors.contains("notification secret their-slack is refused")
            && errors.contains("kas-wide")
            && errors.contains("kas notifications secret set team/NAME"),
        "{errors}"
    );
}
