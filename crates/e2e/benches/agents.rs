//! How many agents one kas holds, and at what cost: N simulated agents in
//! this process, each with its own token, TCP+TLS connection and session,
//! connect to a release-built kas started for each N. Reports the time until
//! all are connected (and configured), kas's RSS per connected agent, and
//! kas's CPU while the agents sit idle (pinging every 10 s and keeping
//! HTTP/2 keepalive, as agentk does).
//!
//! Run: `cargo build --release --bins && cargo bench -p tether-e2e --bench
//! agents` (`-- 100 1000` for other sizes, `--idle=60` for a longer idle
//! window than 20 s, `--tunnel` for a tunnel per agent too, as agentk
//! holds). Not a test: it prints figures and asserts nothing about them.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tether_cli::client::ApiClient;
use tether_credentials::Token;
use tether_e2e::bench::sim::{self, Endpoints, Event, Options};
use tether_e2e::bench::{cpu_time, memory_kib, register_agents};
use tether_e2e::{Proc, free_port, kas_binary};
use tokio::sync::{Semaphore, mpsc};

/// Handshakes in flight at once, as a fleet reconnecting after a kas restart
/// would be spread out by its backoff jitter.
const CONCURRENT_HANDSHAKES: usize = 64;
/// How long kas's CPU is measured with every agent idle, unless `--idle=`.
const IDLE_WINDOW: Duration = Duration::from_secs(20);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let idle = match args.iter().find_map(|a| a.strip_prefix("--idle=")) {
        Some(seconds) => Duration::from_secs(seconds.parse()?),
        None => IDLE_WINDOW,
    };
    let tunnel = args.iter().any(|a| a == "--tunnel");
    let sizes = if sizes.is_empty() {
        vec![100, 1000, 5000]
    } else {
        sizes
    };
    tether_runtime::limits::raise_open_files()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "{:>6} | {:>10} | {:>11} | {:>9} | {:>9} | {:>12} | {:>13}",
        "agents", "connect", "configured", "p50 conn", "p99 conn", "RSS/agent", "idle CPU"
    );
    for n in sizes {
        let r = runtime.block_on(run(n, idle, tunnel))?;
        println!(
            "{:>6} | {:>8.2} s | {:>9.2} s | {:>6.1} ms | {:>6.1} ms | {:>8.1} KiB | {:>11.2} %",
            n,
            r.connect.as_secs_f64(),
            r.configured.as_secs_f64(),
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.rss_per_agent_kib,
            r.idle_cpu_percent,
        );
        println!(
            "         kas RSS {:.1} MiB before the agents, {:.1} MiB with them",
            r.rss_before_kib / 1024.0,
            r.rss_after_kib / 1024.0
        );
    }
    Ok(())
}

struct Figures {
    connect: Duration,
    configured: Duration,
    p50: Duration,
    p99: Duration,
    rss_before_kib: f64,
    rss_after_kib: f64,
    rss_per_agent_kib: f64,
    idle_cpu_percent: f64,
}

async fn run(n: usize, idle: Duration, tunnel: bool) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let repo = dir.path().join("config");
    tether_testenv::git::new_repo(&repo);
    tether_testenv::git::commit(&repo, &[]);

    let (api, admin, agent) = (free_port(), free_port(), free_port());
    let data = dir.path().join("kas");
    let mut serve = Command::new(kas_binary());
    serve
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .arg(format!("--api-listen={api}"))
        .arg(format!("--admin-listen={admin}"))
        .arg(format!("--agent-listen={agent}"))
        .arg(format!("--k8s-proxy-listen={}", free_port()))
        .env("KAS_LOG_LEVEL", "warn");
    let kas = Proc::spawn(serve, dir.path().join("kas.log"));
    let pid = kas.child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !data.join("agent-ca.crt").exists() || std::net::TcpStream::connect(agent).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "kas did not start: {}",
            kas.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin_token = Token::parse(&std::fs::read_to_string(data.join("admin-token"))?)?;
    let client = ApiClient::new(&format!("http://{api}"), &admin_token)?;
    client
        .post(
            "/api/v1/projects",
            json!({ "id": "bench/config", "url": repo.to_str().unwrap_or_default() }),
        )
        .await?;

    // Register the agents and their tokens, a few requests at a time.
    let registering = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("bench-{i}")).collect();
    let tokens = register_agents(&client, &names, "bench/config").await?;
    eprintln!(
        "n={n}: registered in {:.1} s",
        registering.elapsed().as_secs_f64()
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = memory_kib(pid, "VmRSS");
    let ca = std::fs::read(data.join("agent-ca.crt"))?;
    let endpoints = Arc::new(Endpoints::new(vec![agent], &ca, "localhost")?);
    let options = Options {
        tunnel: match tunnel {
            true => Some(sim::FakeCluster::start().await?),
            false => None,
        },
        handshakes: Some(Arc::new(Semaphore::new(CONCURRENT_HANDSHAKES))),
    };
    let (events, mut event_rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let agents: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            tokio::spawn(sim::agent(
                i,
                token,
                endpoints.clone(),
                options.clone(),
                events.clone(),
            ))
        })
        .collect();
    drop(events);

    let (mut connected, mut configured) = (Vec::with_capacity(n), 0usize);
    let mut all_connected = Duration::ZERO;
    let mut all_configured = Duration::ZERO;
    while connected.len() < n || configured < n {
        match tokio::time::timeout(Duration::from_secs(120), event_rx.recv()).await {
            Ok(Some(Event::Up { took, .. })) => {
                connected.push(took);
                if connected.len() == n {
                    all_connected = start.elapsed();
                }
            }
            Ok(Some(Event::Configured(_))) => {
                configured += 1;
                if configured == n {
                    all_configured = start.elapsed();
                }
            }
            // Every agent connects once: a failure is the figure's end.
            Ok(Some(Event::Down { agent, why })) => anyhow::bail!("agent {agent} failed: {why}"),
            Ok(None) | Err(_) => anyhow::bail!(
                "stalled: {} connected, {configured} configured of {n}",
                connected.len()
            ),
        }
    }
    connected.sort();
    let pct = |p: f64| connected[((connected.len() as f64 * p) as usize).min(n - 1)];

    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = memory_kib(pid, "VmRSS");
    let cpu_before = cpu_time(pid);
    tokio::time::sleep(idle).await;
    let cpu_after = cpu_time(pid);
    let idle_cpu_percent = (cpu_after - cpu_before).as_secs_f64() / idle.as_secs_f64() * 100.0;

    for a in &agents {
        a.abort();
    }
    drop(kas);
    Ok(Figures {
        connect: all_connected,
        configured: all_configured,
        p50: pct(0.50),
        p99: pct(0.99),
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        rss_per_agent_kib: (rss_after - rss_before) / n as f64,
        idle_cpu_percent,
    })
}
