//! kas as replicas, measured on real processes (release builds), a real
//! PostgreSQL and a real HAProxy:
//!
//! 1. **Routed vs local.** One agentk on replica A; the same client sends
//!    `GET` of one ConfigMap through A's proxy (served locally) and through
//!    B's (routed to A over the private listener), at concurrency 1 and 32:
//!    p50/p99, requests per second, and the p50 the hop adds.
//! 2. **Steady state and failover.** N simulated agents (each a session and
//!    a tunnel answering for a fake cluster, reconnecting with jitter as
//!    agentk does; held by worker processes, a few thousand each, under the
//!    open-files limit) connect to three replicas: through HAProxy up to
//!    4,000 agents, and past that straight to the replicas, agent `i`
//!    dialing replica `i mod 3` first and the next after a failure (HAProxy
//!    in one process would need two files per connection, 40,000 for
//!    10,000 agents, over the limit). Reported: connect time, the replicas'
//!    RSS per agent and CPU at rest, PostgreSQL transactions per second at
//!    rest (heartbeats, not per-request or per-agent queries), then kill -9
//!    of the replica holding the most: time until its agents are
//!    reconnected elsewhere, and until every one of them is proxied again
//!    through a survivor.
//!
//! Run: `cargo build --release --bins && cargo bench -p tether-e2e --bench
//! replicas -- 1000` (sizes as arguments, default 1000; `--fleet-only`
//! skips part 1). Prints figures; asserts nothing about them.

use tether_e2e as support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::Empty;
use support::bench::load::{Get, h2_client, load, tls_trusting};
use support::bench::sim::{Event, WORKER_FLAG, WorkerPlan, Workers};
use support::bench::{cpu_time, memory_kib, ms, percentile, register_agents};
use support::fleet::Fleet;
use tokio::sync::mpsc;

/// Agents through HAProxy at most; more dial the replicas directly.
const BALANCED_AT_MOST: usize = 4000;
/// Simulated agents per worker process (two files each, with the tunnel).
const AGENTS_PER_WORKER: usize = 4000;

/// Part 1: the hop's cost.
fn routed_vs_local(runtime: &tokio::runtime::Runtime) {
    let cluster = tether_testenv::shared();
    let ns = runtime
        .block_on(cluster.namespace("bench-replicas"))
        .expect("namespace");
    cluster.kubectl_ok(&[
        "create",
        "configmap",
        "probe",
        "-n",
        ns.name(),
        "--from-literal=a=b",
    ]);
    let fleet = Fleet::start(2, &[]);
    let (tokens, ci) = fleet.register_ci_agents(&["prod"]);
    let token = &tokens[0];
    let address = format!("grpcs://{}", fleet.replicas[0].agent);
    let _agentk = fleet.agentk_via(token, "prod-0", "default", &address);
    support::wait("agentk on replica A", Duration::from_secs(60), || {
        fleet.agent(0, "prod")["tunnels"] == 2
    });
    let client = {
        let _entered = runtime.enter();
        h2_client(tls_trusting(&fleet.ca()))
    };
    let auth = format!("Bearer ci:prod:{ci}");
    let path = format!(
        "/k8s-proxy/api/v1/namespaces/{}/configmaps/probe",
        ns.name()
    );
    println!("| path | concurrency | p50 ms | p99 ms | req/s |");
    println!("|---|---|---|---|---|");
    for concurrency in [1, 32] {
        let mut p50 = Vec::new();
        for (name, replica) in [("local (A)", 0), ("routed (B → A)", 1)] {
            let uri = format!("https://{}{path}", fleet.replicas[replica].proxy);
            let get = Get {
                uri,
                authorization: Some(auth.clone()),
                gzip: false,
            };
            runtime.block_on(load(&client, &get, concurrency, Duration::from_secs(1)));
            let run = runtime.block_on(load(&client, &get, concurrency, Duration::from_secs(8)));
            println!(
                "| {name} | {concurrency} | {:.2} | {:.2} | {:.0} |",
                ms(percentile(&run.latencies, 0.5)),
                ms(percentile(&run.latencies, 0.99)),
                run.per_second()
            );
            p50.push(percentile(&run.latencies, 0.5));
        }
        println!(
            "| hop adds (p50) | {concurrency} | {:+.2} | | |",
            ms(p50[1]) - ms(p50[0])
        );
    }
}

/// PostgreSQL transactions committed so far in `database`.
fn transactions(database: &str) -> u64 {
    tether_testenv::shared_postgres()
        .psql(
            "postgres",
            &format!(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{database}'"
            ),
        )
        .expect("pg_stat_database")
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Resident memory of every running replica, in KiB.
fn replicas_rss_kib(fleet: &Fleet) -> f64 {
    pids(fleet)
        .iter()
        .map(|&pid| memory_kib(pid, "VmRSS"))
        .sum()
}

fn pids(fleet: &Fleet) -> Vec<u32> {
    fleet
        .replicas
        .iter()
        .filter_map(|r| r.kas.as_ref().map(|p| p.child.id()))
        .collect()
}

/// Part 2 for `n` agents.
fn fleet_of(runtime: &tokio::runtime::Runtime, n: usize) {
    let mut fleet = Fleet::start(3, &["--tunnel-wait", "30s"]);
    let database = fleet
        .database
        .rsplit('/')
        .next()
        .expect("database name")
        .to_owned();
    let names: Vec<String> = (0..n).map(|i| format!("sim-{i:05}")).collect();
    let repo = fleet.dir.path().join("config-repo");
    tether_testenv::git::new_repo(&repo);
    let files: Vec<(String, Option<&str>)> = names
        .iter()
        .map(|a| {
            (
                format!(".gitlab/agents/{a}/config.yaml"),
                Some("ci_access:\n  projects: [{ id: team/admin }]\n"),
            )
        })
        .collect();
    let files: Vec<(&str, Option<&str>)> = files.iter().map(|(p, c)| (p.as_str(), *c)).collect();
    tether_testenv::git::commit(&repo, &files);
    let admin = tether_credentials::Token::parse(
        std::fs::read_to_string(fleet.dir.path().join("admin-token"))
            .expect("admin token")
            .trim(),
    )
    .expect("admin token");
    let api =
        tether_cli::client::ApiClient::new(&format!("http://{}", fleet.replicas[0].api), &admin)
            .expect("client");
    let tokens: Vec<String> = runtime
        .block_on(async {
            use serde_json::json;
            let repo = repo.to_str().expect("utf-8");
            api.post(
                "/api/v1/projects",
                json!({"id": "team/config", "url": repo}),
            )
            .await?;
            api.post(
                "/api/v1/projects",
                json!({"id": "team/admin", "url": "/srv/git/none"}),
            )
            .await?;
            register_agents(&api, &names, "team/config").await
        })
        .expect("agents registered");
    let ci = support::last_line(fleet.cli(
        0,
        &["project", "token", "create", "team/admin", "--name", "ci"],
    ));
    let balanced = n <= BALANCED_AT_MOST;
    let addrs: Vec<_> = match balanced {
        true => vec![fleet.balancer.frontends[0]],
        false => fleet.replicas.iter().map(|r| r.agent).collect(),
    };
    let rss_before = replicas_rss_kib(&fleet);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let started = Instant::now();
    let indexed: Vec<(usize, String)> = tokens.into_iter().enumerate().collect();
    let workers = Workers::start(
        &WorkerPlan {
            dir: fleet.dir.path(),
            addrs: &addrs,
            ca: &fleet.ca(),
            server_name: "127.0.0.1",
            tunnels: true,
            per_worker: AGENTS_PER_WORKER,
        },
        &indexed,
        events_tx,
    )
    .expect("workers");
    let mut up = HashSet::new();
    while up.len() < n {
        match runtime.block_on(events.recv()).expect("events") {
            Event::Up { agent, .. } => {
                up.insert(agent);
            }
            Event::Down { agent, .. } => {
                up.remove(&agent);
            }
            Event::Configured(_) => {}
        }
    }
    let connected = started.elapsed();
    // Steady state: what the replicas and the database do while nothing
    // happens. Idle backends flush their statistics up to 10 s late, so
    // the connect storm's transactions are let settle first.
    std::thread::sleep(Duration::from_secs(15));
    let rss_per_agent = (replicas_rss_kib(&fleet) - rss_before) / n as f64;
    let window = Duration::from_secs(30);
    let cpu_before: Duration = pids(&fleet).into_iter().map(cpu_time).sum();
    let before = transactions(&database);
    std::thread::sleep(window);
    let qps = (transactions(&database) - before) as f64 / window.as_secs_f64();
    let cpu_after: Duration = pids(&fleet).into_iter().map(cpu_time).sum();
    let idle_cpu = (cpu_after - cpu_before).as_secs_f64() / window.as_secs_f64() * 100.0;
    // Which replica holds the most tunnels?
    let held: Vec<(usize, Vec<String>)> = (0..3)
        .map(|i| {
            let listed = fleet
                .cli(i, &["agent", "list", "-o", "json"])
                .expect("agents");
            let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
            let here = listed
                .as_array()
                .expect("array")
                .iter()
                .filter(|a| a["tunnels"].as_u64().unwrap_or(0) > 0)
                .filter_map(|a| a["name"].as_str().map(str::to_owned))
                .collect();
            (i, here)
        })
        .collect();
    let on_replicas: Vec<usize> = held.iter().map(|(_, agents)| agents.len()).collect();
    let (victim, victims) = held
        .into_iter()
        .max_by_key(|(_, agents)| agents.len())
        .expect("a replica");
    let victim_set: HashSet<usize> = victims
        .iter()
        .filter_map(|name| name.strip_prefix("sim-")?.parse().ok())
        .collect();
    // Drain events so that only what follows the kill counts.
    while events.try_recv().is_ok() {}
    let survivor = (0..3).find(|i| *i != victim).expect("a survivor");
    fleet.kill(victim);
    let killed = Instant::now();
    let mut waiting: HashSet<usize> = victim_set.clone();
    let mut went_down = HashSet::new();
    while !waiting.is_empty() {
        match runtime.block_on(events.recv()).expect("events") {
            Event::Down { agent, .. } => {
                went_down.insert(agent);
            }
            Event::Up { agent, .. } if went_down.contains(&agent) => {
                waiting.remove(&agent);
            }
            Event::Up { .. } | Event::Configured(_) => {}
        }
    }
    let reconnected = killed.elapsed();
    // Every agent of the killed replica, proxied through a survivor.
    let client = {
        let _entered = runtime.enter();
        h2_client(tls_trusting(&fleet.ca()))
    };
    let remaining = Arc::new(Mutex::new(victims.clone()));
    runtime.block_on(async {
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let (client, remaining, ci) = (client.clone(), remaining.clone(), ci.clone());
            let base = format!("https://{}/k8s-proxy", fleet.replicas[survivor].proxy);
            workers.spawn(async move {
                loop {
                    let Some(agent) = remaining.lock().expect("lock").pop() else {
                        return;
                    };
                    loop {
                        let request = Request::get(format!("{base}/api/v1/namespaces/default"))
                            .header("authorization", format!("Bearer ci:{agent}:{ci}"))
                            .body(Empty::new())
                            .expect("request");
                        match client.request(request).await {
                            Ok(r) if r.status().is_success() => break,
                            _ => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                }
            });
        }
        while workers.join_next().await.is_some() {}
    });
    let proxied = killed.elapsed();
    println!(
        "| {n} | {} | {:.1} s | {on_replicas:?} | {rss_per_agent:.1} KiB | {idle_cpu:.1} % | {qps:.1} | {} | {:.1} s | {:.1} s |",
        if balanced { "HAProxy" } else { "direct" },
        connected.as_secs_f64(),
        victims.len(),
        reconnected.as_secs_f64(),
        proxied.as_secs_f64()
    );
    drop(workers);
    drop(fleet);
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(WORKER_FLAG) {
        let spec = args
            .get(2)
            .ok_or_else(|| anyhow::anyhow!("{WORKER_FLAG} FILE"))?;
        return support::bench::sim::worker_main(std::path::Path::new(spec));
    }
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![1000] } else { sizes };
    tether_runtime::limits::raise_open_files()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if !args.iter().any(|a| a == "--fleet-only") {
        println!("## Routed through another replica vs served locally (GET 1 ConfigMap)\n");
        routed_vs_local(&runtime);
    }
    println!("\n## N simulated agents on 3 replicas; kill -9 of the busiest\n");
    println!(
        "| agents | dialing | all connected | with tunnels per replica | replicas' RSS per agent | replicas' CPU at rest | PostgreSQL tx/s at rest | agents on the killed replica | reconnected | proxied again |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        fleet_of(&runtime, n);
    }
    Ok(())
}
