//! Notifications from real kas and agentk: an agent whose config names a
//! generic destination (its URL and signing key held by kas as a
//! notification secret of the agent's top-level group, `team/audit`) is
//! told of a sync that succeeded, of one that failed (once, though the
//! agent reports it again), and of the agent gone for longer than
//! `--notify-disconnected-after`. The receiver checks each signature as a
//! real one would.

use tether_e2e as support;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{Setup, commit, new_repo, wait};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";
const KEY: &str = "receiver-signing-key";

/// (event, body, signature) of each delivery.
type Deliveries = Arc<Mutex<Vec<(String, Vec<u8>, String)>>>;

/// A minimal HTTP receiver on a thread: records each POST, answers 200.
fn receiver() -> (String, Deliveries) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let got: Deliveries = Arc::default();
    let log = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let (mut length, mut event, mut signature) = (0usize, String::new(), String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap_or_default();
                let value = value.trim().to_owned();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().unwrap_or(0),
                    "x-tether-event" => event = value,
                    "x-tether-signature" => signature = value,
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            log.lock().expect("log").push((event, body, signature));
            let mut stream = reader.into_inner();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

fn events(got: &Deliveries) -> Vec<String> {
    got.lock()
        .expect("log")
        .iter()
        .map(|(e, _, _)| e.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agents_events_reach_its_destination_signed_and_once() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-notify").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || notified(&ns))
        .await
        .expect("test body");
}

fn notified(ns: &str) {
    let (url, got) = receiver();
    let mut setup = Setup::start_with(&[
        "--poll-interval",
        "60s",
        "--notify-disconnected-after",
        "2s",
    ]);
    setup.pod_namespace = ns.to_owned();
    setup.set_notification_secret("team/audit", &url, Some(KEY));
    let listed = setup
        .cli(&["notifications", "secret", "list", "-o", "json"])
        .expect("list");
    assert!(
        listed.contains("team/audit") && !listed.contains(&url),
        "{listed}"
    );

    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    paths: [{{glob: 'manifests/*.yaml'}}]\nnotifications:\n- provider: generic\n  url_secret: team/audit\n  events: [sync_succeeded, sync_failed, agent_disconnected]\n"
    );
    let good = commit(
        &repo,
        &[
            (CONFIG, Some(config.as_str())),
            (
                "manifests/cm.yaml",
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: told}\ndata: {a: '1'}\n"),
            ),
        ],
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let mut agentk = setup.agentk(&token);
    wait("sync_succeeded to be told", Duration::from_secs(90), || {
        events(&got).contains(&"sync_succeeded".to_owned())
    });

    // A commit that cannot apply: told once, though reported again.
    let bad = commit(
        &repo,
        &[(
            "manifests/cm.yaml",
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Not_Valid}\n"),
        )],
    );
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait("sync_failed to be told", Duration::from_secs(60), || {
        events(&got).contains(&"sync_failed".to_owned())
    });
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");

    // The agent goes away: told after the grace period.
    let _ = agentk.child.kill();
    let _ = agentk.child.wait();
    wait(
        "agent_disconnected to be told",
        Duration::from_secs(60),
        || events(&got).contains(&"agent_disconnected".to_owned()),
    );

    let deliveries = got.lock().expect("log").clone();
    for (event, body, signature) in &deliveries {
        assert_eq!(
            signature,
            &tether_notify::notifications::sign(KEY, body),
            "{event}: signed with the secret's key"
        );
        let json: serde_json::Value = serde_json::from_slice(body).expect("JSON");
        assert_eq!(json["agent"], "prod");
        match event.as_str() {
            "sync_succeeded" => assert_eq!(json["commit"], good),
            "sync_failed" => {
                assert_eq!(json["commit"], bad);
                assert!(
                    json["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("Not_Valid")),
                    "{json}"
                );
            }
            _ => {}
        }
    }
    let failed = deliveries
        .iter()
        .filter(|(e, _, _)| e == "sync_failed")
        .count();
    assert_eq!(failed, 1, "once per commit: {:?}", events(&got));
}
