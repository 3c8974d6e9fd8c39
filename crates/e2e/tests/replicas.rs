//! Three kas replicas sharing PostgreSQL behind a real HAProxy, tested as
//! an operator would: agents connect through the balancer (their sessions
//! and tunnels land wherever it sends them), `kubectl` through every
//! replica reaches every agent, a token revoked through one replica cuts
//! the agent wherever it is, and when the replica holding agents is killed
//! they reconnect elsewhere and the proxy serves them again; a rolling
//! restart under load fails no request; and after every replica restarts,
//! each shows the same config status and sync history.

use tether_e2e as support;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use support::fleet::Fleet;
use support::{last_line, wait};
use tether_testenv::git::{commit, new_repo};

const AGENTS: [&str; 3] = ["north", "south", "east"];

/// Registers [`AGENTS`] (see [`Fleet::register_ci_agents`]) and writes the
/// CI token to a file; returns the agent tokens and that file.
fn register(fleet: &Fleet) -> (Vec<String>, PathBuf) {
    let (tokens, ci) = fleet.register_ci_agents(&AGENTS);
    let token_file = fleet.dir.path().join("ci.token");
    std::fs::write(&token_file, ci).expect("token file");
    (tokens, token_file)
}

/// Registers and connects every agent of [`AGENTS`] through the balancer.
fn connect_all(fleet: &Fleet) -> (Vec<support::Proc>, PathBuf) {
    let (tokens, token_file) = register(fleet);
    let agentks = AGENTS
        .iter()
        .zip(&tokens)
        .map(|(agent, token)| fleet.agentk(token, &format!("{agent}-0"), "default"))
        .collect();
    wait(
        "every agent connected through HAProxy",
        Duration::from_secs(60),
        || all_connected(fleet, &AGENTS),
    );
    (agentks, token_file)
}

fn kubectl_get_namespace(kubeconfig: &std::path::Path) -> Output {
    support::kubectl(kubeconfig)
        .args([
            "get",
            "namespace",
            "default",
            "-o",
            "name",
            "--request-timeout=20s",
        ])
        .output()
        .expect("kubectl runs")
}

/// Every running replica reaches every agent of `agents`.
fn every_replica_reaches(fleet: &Fleet, agents: &[&str], token_file: &std::path::Path) -> bool {
    for i in fleet.running() {
        for agent in agents {
            let kubeconfig = fleet.kubeconfig(i, agent, token_file);
            let out = kubectl_get_namespace(&kubeconfig);
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() || stdout.trim() != "namespace/default" {
                eprintln!(
                    "replica {i} → {agent}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                return false;
            }
        }
    }
    true
}

/// Each agent has its one session and two tunnels somewhere.
fn all_connected(fleet: &Fleet, agents: &[&str]) -> bool {
    agents.iter().all(|agent| {
        let mut tunnels = 0;
        let mut sessions = 0;
        for i in fleet.running() {
            let shown = fleet.agent(i, agent);
            tunnels += shown["tunnels"].as_u64().unwrap_or(0);
            sessions += shown["connections"].as_array().map_or(0, Vec::len);
        }
        tunnels == 2 && sessions == 1
    })
}

#[test]
fn three_replicas_behind_haproxy_route_revoke_and_fail_over() {
    let mut fleet = Fleet::start(3, &["--tunnel-wait", "20s"]);
    let (tokens, token_file) = register(&fleet);
    let _agentks: Vec<_> = AGENTS
        .iter()
        .zip(&tokens)
        .map(|(agent, token)| fleet.agentk(token, &format!("{agent}-0"), "default"))
        .collect();
    wait(
        "every agent connected through HAProxy",
        Duration::from_secs(60),
        || all_connected(&fleet, &AGENTS),
    );
    for agent in AGENTS {
        eprintln!("{agent}: tunnels per replica {:?}", fleet.tunnels(agent));
    }

    // kubectl through each replica reaches every agent: with three agents'
    // six tunnels spread by the balancer, most requests cross replicas.
    assert!(every_replica_reaches(&fleet, &AGENTS, &token_file));
    let routed: f64 = (0..3)
        .map(|i| fleet.metric(i, "tether_kas_proxy_requests_total{route=\"forwarded\"}"))
        .sum();
    assert!(routed > 0.0, "no request was routed between replicas");
    let served_routed: f64 = (0..3)
        .map(|i| fleet.metric(i, "tether_kas_proxy_requests_total{route=\"from_peer\"}"))
        .sum();
    assert!(served_routed > 0.0, "no replica served a routed request");

    // The private listener takes only a proof made with the replicas' key
    // for that method and path, recent: not the shared secret itself, not
    // a proof for another path, not an old one.
    let private = fleet.replicas[0].private;
    let secret = std::fs::read_to_string(fleet.dir.path().join("private-secret")).expect("secret");
    let key = tether_replicas::auth::RouteKey::new(
        &tether_replicas::Secret::new(secret.trim()).expect("a secret"),
    );
    let namespaces = "/k8s-proxy/api/v1/namespaces";
    let now = tether_replicas::auth::now();
    // The listener's own refusal names it; past it, the proxy answers
    // (here 401 too: the request carries no agent credentials).
    let refused_by_listener = |header: String| {
        let out = std::process::Command::new("curl")
            .args(["-sk", "-w", "\n%{http_code}"])
            .arg(format!("https://{private}{namespaces}"))
            .args(["-H", &header])
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.ends_with("401") && text.contains("private listener")
    };
    let proof = |path: &str, at: u64| {
        let value = key.sign(&http::Method::GET, path, at);
        format!("tether-route: {}", value.to_str().expect("ASCII"))
    };
    for (what, header) in [
        ("a guess", "tether-route: guess".to_owned()),
        (
            "the secret itself",
            format!("tether-route: {}", secret.trim()),
        ),
        (
            "the old header with the secret",
            format!("tether-route-secret: {}", secret.trim()),
        ),
        (
            "a proof for another path",
            proof("/k8s-proxy/api/v1/secrets", now),
        ),
        ("a proof 2 minutes old", proof(namespaces, now - 120)),
    ] {
        assert!(refused_by_listener(header), "{what}");
    }
    assert!(
        !refused_by_listener(proof(namespaces, now)),
        "a fresh proof for the path passes the listener"
    );

    // Revoke `north`'s token through a replica that does not hold its
    // session: every replica cuts it within 2 s.
    let holder = (0..3)
        .find(|i| {
            fleet.agent(*i, "north")["connections"]
                .as_array()
                .is_some_and(|c| !c.is_empty())
        })
        .expect("a replica holds north's session");
    let other = (holder + 1) % 3;
    fleet
        .cli(other, &["token", "revoke", "north", "1"])
        .expect("revoked");
    let revoked = Instant::now();
    wait("north cut on every replica", Duration::from_secs(2), || {
        (0..3).all(|i| {
            let shown = fleet.agent(i, "north");
            shown["tunnels"] == 0 && shown["connections"].as_array().is_some_and(Vec::is_empty)
        })
    });
    eprintln!(
        "north cut everywhere {:?} after the revocation through replica {other}",
        revoked.elapsed()
    );

    // North has no tunnel anywhere now. A forged credential for it is
    // refused where it arrives (401), before any routing: it neither
    // waits --tunnel-wait (20 s) for a tunnel nor ends 503.
    let forged = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .args([
            "-H",
            "Authorization: Bearer pat:north:glpat-forged0000000000000",
        ])
        .arg(format!(
            "https://{}/k8s-proxy/api/v1/namespaces",
            fleet.replicas[other].proxy
        ))
        .output()
        .expect("curl runs");
    assert_eq!(
        String::from_utf8_lossy(&forged.stdout),
        "401",
        "refused before routing"
    );

    // kill -9 the replica holding the most tunnels of the others.
    let rest = ["south", "east"];
    let victim = (0..3)
        .max_by_key(|i| {
            rest.iter()
                .map(|a| fleet.agent(*i, a)["tunnels"].as_u64().unwrap_or(0))
                .sum::<u64>()
        })
        .expect("a replica");
    let held: u64 = rest
        .iter()
        .map(|a| fleet.agent(victim, a)["tunnels"].as_u64().unwrap_or(0))
        .sum();
    fleet.kill(victim);
    let killed = Instant::now();
    wait(
        "the agents reconnected to the survivors",
        Duration::from_secs(60),
        || all_connected(&fleet, &rest),
    );
    let reconnected = killed.elapsed();
    wait(
        "the proxy to serve them again everywhere",
        Duration::from_secs(60),
        || every_replica_reaches(&fleet, &rest, &token_file),
    );
    eprintln!(
        "failover: replica {victim} (holding {held} tunnels) killed; agents reconnected in {reconnected:?}, proxied again through every survivor in {:?}",
        killed.elapsed()
    );

    // The killed replica comes back, and serves every agent too.
    fleet.start_replica(victim);
    wait(
        "the restarted replica to reach everyone",
        Duration::from_secs(60),
        || every_replica_reaches(&fleet, &rest, &token_file),
    );
}

/// Two replicas, each with a session of the same config project (a remote
/// repository, so a poll is a fetch): the project is polled by one of them
/// at a time, the other learns new heads from it, and a refresh through
/// either answers with the new commit.
#[test]
fn one_git_poll_per_project_for_the_whole_service() {
    let fleet = Fleet::start(2, &["--poll-interval", "1s"]);
    let repo = fleet.dir.path().join("upstream");
    new_repo(&repo);
    let config = |level: &str| format!("observability:\n  logging:\n    level: {level}\n");
    let info = config("info");
    let first = commit(
        &repo,
        &[
            (".gitlab/agents/west/config.yaml", Some(info.as_str())),
            (".gitlab/agents/central/config.yaml", Some(info.as_str())),
        ],
    );
    let url = format!("file://{}", repo.display());
    fleet
        .cli(0, &["project", "add", "team/config", "--url", &url])
        .expect("project");
    let mut agentks = Vec::new();
    for (i, agent) in ["west", "central"].into_iter().enumerate() {
        fleet
            .cli(i, &["agent", "create", agent, "--project", "team/config"])
            .expect("agent");
        let token = last_line(fleet.cli(i, &["token", "create", agent, "--name", "first"]));
        let address = format!("grpcs://{}", fleet.replicas[i].agent);
        agentks.push(fleet.agentk_via(&token, &format!("{agent}-0"), "default", &address));
    }
    let commit_on = |i: usize, agent: &str| {
        fleet.agent(i, agent)["config"]["commit"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    wait("both agents configured", Duration::from_secs(60), || {
        commit_on(0, "west") == first && commit_on(1, "central") == first
    });

    let before: u64 = (0..2).map(|i| fleet.git_polls(i)).sum();
    let window = Duration::from_secs(8);
    std::thread::sleep(window);
    let polls: Vec<u64> = (0..2).map(|i| fleet.git_polls(i)).collect();
    let during = polls.iter().sum::<u64>() - before;
    eprintln!(
        "git polls in {window:?} at a 1 s interval, both replicas together: {during} (now {polls:?})"
    );
    // One poller: about 8. One per replica would be about 16.
    assert!(
        during <= 11,
        "{during} polls: more than one replica polls the project"
    );
    assert!(during >= 5, "{during} polls: the project is hardly polled");

    // A new commit reaches both agents, whichever replica polled it.
    let debug = config("debug");
    let second = commit(
        &repo,
        &[(".gitlab/agents/central/config.yaml", Some(debug.as_str()))],
    );
    let pushed = Instant::now();
    wait(
        "both agents on the new commit",
        Duration::from_secs(10),
        || commit_on(0, "west") == second && commit_on(1, "central") == second,
    );
    eprintln!(
        "new commit on both replicas' agents in {:?}",
        pushed.elapsed()
    );

    // A refresh through either replica answers with the newest commit.
    for i in 0..2 {
        let warn = config(if i == 0 { "warn" } else { "error" });
        let head = commit(
            &repo,
            &[(".gitlab/agents/west/config.yaml", Some(warn.as_str()))],
        );
        let refreshed = fleet
            .cli(i, &["project", "refresh", "team/config"])
            .expect("refresh");
        assert!(refreshed.contains(&head), "replica {i}: {refreshed}");
        wait(
            "west on the refreshed commit",
            Duration::from_secs(10),
            || commit_on(0, "west") == head,
        );
    }
    drop(agentks);
}

/// A rolling restart of all three replicas (SIGTERM, wait for the exit,
/// start again, wait for every agent) under 20 requests/s through the
/// balancer's proxy port and an open watch: no request fails, the watch
/// resumes from its resourceVersion and sees what happened meanwhile, and
/// every agent ends up connected.
#[test]
fn a_rolling_restart_under_load_fails_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use support::fleet::client::Target;

    let mut fleet = Fleet::start(3, &["--tunnel-wait", "30s"]);
    let (_agentks, token_file) = connect_all(&fleet);
    let targets: Vec<Target> = AGENTS
        .iter()
        .map(|agent| {
            Target::new(
                fleet.proxy,
                &fleet.ca(),
                &fleet.kubeconfig(0, agent, &token_file),
            )
        })
        .collect();
    let cluster = tether_testenv::shared();
    let marker = format!("rolling-{}", std::process::id());

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let watch_restarts = Arc::new(AtomicUsize::new(0));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // 20 requests per second, round robin over the agents.
    let load = {
        let (stop, sent, failures, targets) = (
            stop.clone(),
            sent.clone(),
            failures.clone(),
            targets.clone(),
        );
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            let mut n = 0usize;
            let mut in_flight = tokio::task::JoinSet::new();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let target = targets[n % targets.len()].clone();
                n += 1;
                let (sent, failures) = (sent.clone(), failures.clone());
                in_flight.spawn(async move {
                    let started = Instant::now();
                    let result = target.get("/api/v1/namespaces/default").await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    match result {
                        Ok((200, _)) => {}
                        Ok((status, body)) => failures
                            .lock()
                            .expect("lock")
                            .push(format!("{status} after {:?}: {body}", started.elapsed())),
                        Err(e) => failures
                            .lock()
                            .expect("lock")
                            .push(format!("{e} after {:?}", started.elapsed())),
                    }
                });
            }
            while in_flight.join_next().await.is_some() {}
        })
    };
    // A watch of ConfigMaps in `default`, resumed from the last
    // resourceVersion whenever its stream ends.
    let watch = {
        let (stop, seen, restarts, target) = (
            stop.clone(),
            seen.clone(),
            watch_restarts.clone(),
            targets[1].clone(),
        );
        runtime.spawn(async move {
            let (_, list) = target
                .get("/api/v1/namespaces/default/configmaps")
                .await
                .expect("list");
            let list: serde_json::Value = serde_json::from_str(&list).expect("list JSON");
            let mut version = list["metadata"]["resourceVersion"]
                .as_str()
                .expect("resourceVersion")
                .to_owned();
            while !stop.load(Ordering::Relaxed) {
                let path = format!(
                    "/api/v1/namespaces/default/configmaps?watch=1&allowWatchBookmarks=true&resourceVersion={version}"
                );
                let ended = target
                    .watch(&path, |line| {
                        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                            return;
                        };
                        if let Some(v) = event["object"]["metadata"]["resourceVersion"].as_str() {
                            version = v.to_owned();
                        }
                        if event["type"] == "ADDED" {
                            let name = event["object"]["metadata"]["name"].as_str().unwrap_or_default();
                            seen.lock().expect("lock").push(name.to_owned());
                        }
                    })
                    .await;
                if !stop.load(Ordering::Relaxed) {
                    restarts.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = ended {
                        eprintln!("watch ended: {e}; resuming from {version}");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
    };

    let rolled = Instant::now();
    for i in 0..3 {
        let create = format!("{marker}-before-{i}");
        cluster.kubectl_ok(&["create", "configmap", &create, "-n", "default"]);
        let took = fleet.terminate(i, Duration::from_secs(30));
        fleet.start_replica(i);
        wait(
            "every agent connected again",
            Duration::from_secs(60),
            || all_connected(&fleet, &AGENTS),
        );
        eprintln!("replica {i} restarted (drained in {took:?}); every agent connected");
        // As a rollout waits between pods: the load goes on meanwhile.
        std::thread::sleep(Duration::from_secs(3));
    }
    let created = format!("{marker}-after");
    cluster.kubectl_ok(&["create", "configmap", &created, "-n", "default"]);
    wait(
        "the watch to see every ConfigMap",
        Duration::from_secs(30),
        || {
            let seen = seen.lock().expect("lock");
            (0..3).all(|i| seen.contains(&format!("{marker}-before-{i}")))
                && seen.contains(&created)
        },
    );
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(load).expect("load");
    watch.abort();
    let sent = sent.load(Ordering::Relaxed);
    let failures = failures.lock().expect("lock").clone();
    eprintln!(
        "rolling restart of 3 replicas in {:?}: {sent} requests, {} failed, watch resumed {} times",
        rolled.elapsed(),
        failures.len(),
        watch_restarts.load(Ordering::Relaxed)
    );
    assert!(sent > 100, "only {sent} requests were sent");
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    for name in (0..3)
        .map(|i| format!("{marker}-before-{i}"))
        .chain([created])
    {
        cluster.kubectl_ok(&["delete", "configmap", &name, "-n", "default"]);
    }
}

/// What `agent show`, `agent gitops` and `agent history` say of `agent`,
/// through replica `i`, without what changes by itself (connections).
fn shown(fleet: &Fleet, i: usize, agent: &str) -> (serde_json::Value, serde_json::Value) {
    let json = |args: &[&str]| -> serde_json::Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&fleet.cli(i, &args).expect("command succeeds")).expect("JSON")
    };
    let config = json(&["agent", "show", agent])["config"].clone();
    let history = json(&["agent", "history", agent]);
    (config, history)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_replica_shows_the_same_history_after_all_restart() {
    let ns = tether_testenv::shared()
        .namespace("replicas-history")
        .await
        .expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut fleet = Fleet::start(3, &[]);
        let repo = fleet.dir.path().join("config-repo");
        new_repo(&repo);
        let config = format!(
            "gitops:\n  manifest_projects:\n  - default_namespace: {ns}\n    paths:\n    - glob: '/manifests/*.yaml'\n"
        );
        let cm = |value: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{mode: {value}}}\n")
        };
        let first = commit(
            &repo,
            &[
                (".gitlab/agents/west/config.yaml", Some(&config)),
                ("manifests/cm.yaml", Some(&cm("one"))),
            ],
        );
        let url = repo.to_str().expect("utf-8");
        fleet
            .cli(0, &["project", "add", "team/config", "--url", url])
            .expect("project");
        fleet
            .cli(1, &["agent", "create", "west", "--project", "team/config"])
            .expect("agent");
        let token = last_line(fleet.cli(2, &["token", "create", "west", "--name", "a"]));
        let agentk = fleet.agentk(&token, "west-0", &ns);
        let synced = |commit: &str| {
            (0..3).all(|i| {
                let (_, history) = shown(&fleet, i, "west");
                history
                    .as_array()
                    .and_then(|h| h.first())
                    .is_some_and(|s| s["commit"] == commit && s["state"] == "synced")
            })
        };
        wait("the first sync, on every replica", Duration::from_secs(60), || {
            synced(&first)
        });
        let second = commit(&repo, &[("manifests/cm.yaml", Some(&cm("two")))]);
        fleet
            .cli(2, &["project", "refresh", "team/config"])
            .expect("refresh");
        wait("the second sync, on every replica", Duration::from_secs(60), || {
            synced(&second)
        });
        // A plan asked of any replica reaches the one holding the agent's
        // session (the other two forward it) and says the same: going back
        // to the first commit would change the mode back.
        for i in 0..3 {
            let text = fleet
                .cli(i, &["agent", "plan", "west", "--commit", &first, "-o", "json"])
                .unwrap_or_else(|| panic!("a plan through replica {i}"));
            let plan: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(plan["counts"]["update"], 1, "replica {i}: {plan:#}");
            assert_eq!(plan["objects"][0]["fields"][0]["after"], "\"one\"", "{plan:#}");
        }
        drop(agentk);
        let before = shown(&fleet, 0, "west");
        let commits: Vec<&str> = before
            .1
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|s| s["commit"].as_str())
            .collect();
        assert_eq!(commits, [second.as_str(), first.as_str()], "newest first");
        assert!(before.0["commit"].is_string(), "{}", before.0);

        // Everything restarts: no replica remembers anything but the database.
        for i in 0..3 {
            fleet.kill(i);
        }
        for i in 0..3 {
            fleet.start_replica(i);
        }
        for i in 0..3 {
            assert_eq!(shown(&fleet, i, "west"), before, "replica {i}");
        }
    })
    .await
    .expect("test body");
}

/// The web UI of a replica that does not hold an agent's session: the
/// agent is shown connected (its tunnels are elsewhere), and a page open
/// there is told when the agent's session ends on the other replica.
#[test]
fn the_web_ui_of_any_replica_sees_the_whole_service() {
    let fleet = Fleet::start(2, &[]);
    let (tokens, _) = fleet.register_ci_agents(&["web-a"]);
    let via_first = format!("grpcs://{}", fleet.replicas[0].agent);
    let mut agentk = fleet.agentk_via(&tokens[0], "web-a-0", "default", &via_first);
    wait("the agent on replica 0", Duration::from_secs(60), || {
        fleet.tunnels("web-a").first().is_some_and(|(_, n)| *n > 0)
    });
    let admin = std::fs::read_to_string(fleet.admin_token_file()).expect("admin token");
    let second = fleet.replicas[1].api;
    let cookie = support::ui_client::sign_in(second, admin.trim()).expect("sign in");
    wait(
        "replica 1's UI shows the agent connected elsewhere",
        Duration::from_secs(30),
        || {
            let (status, page) = support::ui_client::get(second, "/ui/", &cookie).expect("page");
            assert_eq!(status, 200, "{page}");
            page.split("data-agent=\"web-a\"")
                .nth(1)
                .is_some_and(|row| row.contains("elsewhere") && !row.contains("offline"))
        },
    );
    let told =
        support::ui_client::changed_event_after(second, &cookie, Duration::from_secs(20), || {
            agentk.child.kill().expect("kill agentk");
        })
        .expect("event stream");
    assert!(
        told,
        "replica 1's page was not told of the session ending on replica 0"
    );
}

/// The admin's web UI sessions on two replicas: a plan asked through the
/// replica that lacks the agent's session is authorized on the one that
/// has it by the admin's own session (not by being routed); signing out
/// on one replica ends that session on the other; `kas admin rotate-token`
/// ends the old token and every admin session on every replica.
#[test]
fn sessions_end_and_plans_work_on_every_replica() {
    use support::ui_client::{get, request, sign_in};
    let fleet = Fleet::start(2, &[]);
    let (tokens, _) = fleet.register_ci_agents(&["web-b"]);
    let via_first = format!("grpcs://{}", fleet.replicas[0].agent);
    let _agentk = fleet.agentk_via(&tokens[0], "web-b-0", "default", &via_first);
    wait(
        "the agent's session on replica 0",
        Duration::from_secs(60),
        || {
            fleet.agent(0, "web-b")["connections"]
                .as_array()
                .is_some_and(|c| !c.is_empty())
        },
    );
    // Ready means: the database answers, every listener accepts, and the
    // changes of the other replicas are heard.
    let (status, checks) =
        support::http_get(fleet.replicas[1].admin, "/readyz?verbose").expect("readyz");
    assert_eq!(status, 200, "{checks}");
    for check in [
        "[+]database answers",
        "[+]listeners api, agent, k8s-proxy, private",
        "[+]change-feed following",
    ] {
        assert!(checks.contains(check), "{check}: {checks}");
    }
    let admin = std::fs::read_to_string(fleet.admin_token_file()).expect("admin token");
    let (first, second) = (fleet.replicas[0].api, fleet.replicas[1].api);
    let csrf_of = |page: &str| {
        page.split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a CSRF token")
            .to_owned()
    };
    let signed_in = |api, cookie: &str| get(api, "/ui/", cookie).expect("page").0 == 200;

    // A plan through replica 1's UI is answered by replica 0, which holds
    // the session (only a replica with the agent's session can say which
    // manifest projects its config names); it is not refused for lack of
    // the admin's authority.
    let on_second = sign_in(second, admin.trim()).expect("sign in on replica 1");
    let (_, form) = get(second, "/ui/agents/web-b/plan", &on_second).expect("the plan form");
    let (status, page, _) = request(
        second,
        "POST",
        "/ui/agents/web-b/plan",
        &on_second,
        &format!("csrf={}&project=team%2Fconfig&commit=main", csrf_of(&form)),
    )
    .expect("a plan");
    eprintln!("plan through replica 1: {status}");
    assert!(
        !page.contains("admin token is required") && !page.contains("Unauthorized"),
        "the forwarded plan was refused as unauthorized: {page}"
    );
    assert!(
        page.contains("is not a manifest project of agent web-b"),
        "answered by the replica with the session: {page}"
    );

    // Signing out on replica 0 ends that session on replica 1 too.
    let on_first = sign_in(first, admin.trim()).expect("sign in on replica 0");
    assert!(signed_in(second, &on_first), "one session, every replica");
    let (_, home) = get(first, "/ui/", &on_first).expect("page");
    let (status, _, _) = request(
        first,
        "POST",
        "/ui/logout",
        &on_first,
        &format!("csrf={}", csrf_of(&home)),
    )
    .expect("sign out");
    assert!((300..400).contains(&status), "{status}");
    assert!(!signed_in(second, &on_first), "signed out on replica 1 too");
    assert!(signed_in(second, &on_second), "another session goes on");

    // A new admin token: the old one and every admin session end on
    // every replica within a second or so.
    let rotated = fleet
        .cli(0, &["admin", "rotate-token", "-o", "json"])
        .expect("rotated");
    let rotated: serde_json::Value = serde_json::from_str(&rotated).expect("JSON");
    let new_token = rotated["token"].as_str().expect("a token").to_owned();
    assert_ne!(new_token, admin.trim());
    wait(
        "the old session over on replica 1",
        Duration::from_secs(5),
        || !signed_in(second, &on_second),
    );
    let with = |token: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg(format!("http://{second}/api/v1/agents"))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait(
        "the old token refused on replica 1",
        Duration::from_secs(5),
        || with(admin.trim()) == "401",
    );
    assert_eq!(with(&new_token), "200", "the new token works on replica 1");
    assert!(
        std::fs::read_to_string(fleet.admin_token_file())
            .expect("the file")
            .contains(&new_token),
        "written to the file of the replica that rotated it"
    );
    let fresh = sign_in(second, &new_token).expect("sign in with the new token");
    assert!(signed_in(second, &fresh));
}
