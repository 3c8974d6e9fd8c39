//! How many agents one kas holds, and at what cost: N simulated agents in
//! this process, each with its own token, TCP+TLS connection and session,
//! connect to a release-built kas started for each N. Reports the time until
//! all are connected (and configured), kas's RSS per connected agent, and
//! kas's CPU while the agents sit idle (pinging every 10 s, as agentk does).
//!
//! Run: `cargo bench -p kas --bench agents` (`-- 100 1000` for other sizes).
//! Not a test: it prints figures and asserts nothing about them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kas::client::ApiClient;
use serde_json::json;
use tether_credentials::Token;
use tether_proto::PROTOCOL_VERSION;
use tether_proto::v1::agent_channel_client::AgentChannelClient;
use tether_proto::v1::{AgentMessage, Hello, Ping, PodIdentity, agent_message, server_message};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Handshakes in flight at once, as a fleet reconnecting after a kas restart
/// would be spread out by its backoff jitter.
const CONCURRENT_HANDSHAKES: usize = 64;
const IDLE_WINDOW: Duration = Duration::from_secs(20);

fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
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
        let r = runtime.block_on(run(n))?;
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

struct Kas(Child);

impl Drop for Kas {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "git {args:?} failed");
    Ok(())
}

async fn run(n: usize) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let repo = dir.path().join("config");
    std::fs::create_dir_all(repo.join(".gitlab/agents"))?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "empty"])?;

    let (api, admin, agent) = (free_port(), free_port(), free_port());
    let data = dir.path().join("kas");
    let kas = Kas(Command::new(env!("CARGO_BIN_EXE_kas"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .arg(format!("--api-listen={api}"))
        .arg(format!("--admin-listen={admin}"))
        .arg(format!("--agent-listen={agent}"))
        .arg(format!("--k8s-proxy-listen={}", free_port()))
        .env("KAS_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?);
    let pid = kas.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !data.join("agent-ca.crt").exists() || std::net::TcpStream::connect(agent).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "kas did not start");
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
    let tokens = register(&client, n).await?;
    eprintln!(
        "n={n}: registered in {:.1} s",
        registering.elapsed().as_secs_f64()
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_kib(pid)?;
    let ca = std::fs::read(data.join("agent-ca.crt"))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");

    let handshakes = Arc::new(Semaphore::new(CONCURRENT_HANDSHAKES));
    let (events, mut event_rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let mut agents = Vec::with_capacity(n);
    for (i, token) in tokens.into_iter().enumerate() {
        let (tls, handshakes, events) = (tls.clone(), handshakes.clone(), events.clone());
        agents.push(tokio::spawn(async move {
            let result = simulate_agent(i, token, agent, tls, handshakes, events.clone()).await;
            if let Err(e) = result {
                let _ = events.send(Event::Failed(format!("{e:#}")));
            }
        }));
    }
    drop(events);

    let (mut connected, mut configured) = (Vec::with_capacity(n), 0usize);
    let mut all_connected = Duration::ZERO;
    let mut all_configured = Duration::ZERO;
    while connected.len() < n || configured < n {
        match tokio::time::timeout(Duration::from_secs(120), event_rx.recv()).await {
            Ok(Some(Event::Connected(latency))) => {
                connected.push(latency);
                if connected.len() == n {
                    all_connected = start.elapsed();
                }
            }
            Ok(Some(Event::Configured)) => {
                configured += 1;
                if configured == n {
                    all_configured = start.elapsed();
                }
            }
            Ok(Some(Event::Failed(e))) => anyhow::bail!("an agent failed: {e}"),
            Ok(None) | Err(_) => anyhow::bail!(
                "stalled: {} connected, {configured} configured of {n}",
                connected.len()
            ),
        }
    }
    connected.sort();
    let pct = |p: f64| connected[((connected.len() as f64 * p) as usize).min(n - 1)];

    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = rss_kib(pid)?;
    let cpu_before = cpu_ticks(pid)?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let cpu_after = cpu_ticks(pid)?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let idle_cpu_percent =
        (cpu_after - cpu_before) as f64 / ticks_per_second / IDLE_WINDOW.as_secs_f64() * 100.0;

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

async fn register(client: &ApiClient, n: usize) -> anyhow::Result<Vec<String>> {
    let mut tokens = vec![String::new(); n];
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let mut batch = tokio::task::JoinSet::new();
        for &i in chunk {
            let client = client.clone();
            batch.spawn(async move {
                let name = format!("bench-{i}");
                client
                    .post(
                        "/api/v1/agents",
                        json!({ "name": name, "config_project": "bench/config" }),
                    )
                    .await?;
                let created = client
                    .post(
                        &format!("/api/v1/agents/{name}/tokens"),
                        json!({ "name": "bench" }),
                    )
                    .await?;
                let token = created["token"].as_str().unwrap_or_default().to_owned();
                anyhow::Ok((i, token))
            });
        }
        while let Some(done) = batch.join_next().await {
            let (i, token) = done??;
            tokens[i] = token;
        }
    }
    Ok(tokens)
}

enum Event {
    Connected(Duration),
    Configured,
    Failed(String),
}

/// One agent: its own connection, a session, a ping every 10 s.
async fn simulate_agent(
    i: usize,
    token: String,
    addr: std::net::SocketAddr,
    tls: ClientTlsConfig,
    handshakes: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let permit = handshakes.acquire_owned().await?;
    let started = Instant::now();
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect()
        .await?;
    let mut client = AgentChannelClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    tx.send(AgentMessage {
        message: Some(agent_message::Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "bench".into(),
            pod: Some(PodIdentity {
                namespace: "bench".into(),
                name: format!("agent-{i}"),
            }),
            cluster_version: "v1.35.4".into(),
            config_commit: String::new(),
            synced: Vec::new(),
        })),
    })
    .await?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let mut inbound = client.session(request).await?.into_inner();
    let mut ping = tokio::time::interval(Duration::from_secs(10));
    ping.tick().await;
    let mut sequence = 0;
    let mut permit = Some(permit);
    loop {
        tokio::select! {
            _ = ping.tick() => {
                sequence += 1;
                tx.send(AgentMessage { message: Some(agent_message::Message::Ping(Ping { sequence })) }).await?;
            }
            message = inbound.message() => match message?.and_then(|m| m.message) {
                Some(server_message::Message::Welcome(_)) => {
                    drop(permit.take());
                    let _ = events.send(Event::Connected(started.elapsed()));
                }
                Some(server_message::Message::Configuration(_)) => {
                    let _ = events.send(Event::Configured);
                }
                Some(server_message::Message::Pong(_) | server_message::Message::Manifests(_)) => {}
                None => anyhow::bail!("kas ended the session"),
            },
        }
    }
}

fn rss_kib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse::<f64>()?)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}
