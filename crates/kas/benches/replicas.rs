//! kas as replicas, measured on real processes (release builds), a real
//! PostgreSQL and a real HAProxy:
//!
//! 1. **Routed vs local.** One agentk on replica A; the same client sends
//!    `GET` of one ConfigMap through A's proxy (served locally) and through
//!    B's (routed to A over the private listener), at concurrency 1 and 32:
//!    p50/p99, requests per second, and the p50 the hop adds.
//! 2. **Steady state and failover.** N simulated agents (each a session and
//!    a tunnel answering for a fake cluster, reconnecting with jitter as
//!    agentk does) connect through HAProxy to three replicas. Reported:
//!    connect time, PostgreSQL transactions per second while they sit idle
//!    (heartbeats, not per-request or per-agent queries), then kill -9 of
//!    the replica holding the most: time until its agents are reconnected
//!    elsewhere, and until every one of them is proxied again through a
//!    survivor.
//!
//! Run: `cargo build --release --bins && cargo bench -p kas --bench
//! replicas -- 1000` (sizes as arguments; default 1000). Prints figures;
//! asserts nothing about them.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::fleet::Fleet;
use tether_proto::PROTOCOL_VERSION;
use tether_proto::v1::agent_channel_client::AgentChannelClient;
use tether_proto::v1::{AgentMessage, Hello, Ping, PodIdentity, agent_message};
use tether_tunnel::agent::{Upstream, UpstreamFuture};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

type Https = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn tls_config(ca: &std::path::Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA") {
        roots.add(cert.expect("cert")).expect("root");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn h2_client(ca: &std::path::Path) -> Https {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(ca))
        .https_only()
        .enable_http2()
        .build();
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector)
}

/// Latencies of GETs of `uri` from `concurrency` workers for `duration`.
async fn load(
    client: &Https,
    uri: &str,
    auth: &str,
    concurrency: usize,
    duration: Duration,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, uri, auth) = (client.clone(), uri.to_owned(), auth.to_owned());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let request = Request::get(&uri)
                    .header("authorization", &auth)
                    .body(Empty::new())
                    .expect("request");
                let sent = Instant::now();
                let response = client.request(request).await.expect("response");
                assert!(
                    response.status().is_success(),
                    "{uri}: {}",
                    response.status()
                );
                response.into_body().collect().await.expect("body");
                latencies.push(sent.elapsed());
            }
            latencies
        });
    }
    let mut all = Vec::new();
    while let Some(done) = workers.join_next().await {
        all.extend(done.expect("worker"));
    }
    all.sort();
    (all, started.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

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
    let repo = fleet.dir.path().join("config-repo");
    tether_testenv::git::new_repo(&repo);
    tether_testenv::git::commit(
        &repo,
        &[(
            ".gitlab/agents/prod/config.yaml",
            Some("ci_access:\n  projects: [{ id: team/admin }]\n"),
        )],
    );
    fleet
        .cli(
            0,
            &[
                "project",
                "add",
                "team/config",
                "--url",
                repo.to_str().expect("utf-8"),
            ],
        )
        .expect("project");
    fleet
        .cli(
            0,
            &["project", "add", "team/admin", "--url", "/srv/git/none"],
        )
        .expect("project");
    fleet
        .cli(0, &["agent", "create", "prod", "--project", "team/config"])
        .expect("agent");
    let token = support::last_line(fleet.cli(0, &["token", "create", "prod", "--name", "a"]));
    let ci = support::last_line(fleet.cli(
        0,
        &["project", "token", "create", "team/admin", "--name", "ci"],
    ));
    let address = format!("grpcs://{}", fleet.replicas[0].agent);
    let _agentk = fleet.agentk_via(&token, "prod-0", "default", &address);
    support::wait("agentk on replica A", Duration::from_secs(60), || {
        fleet.agent(0, "prod")["tunnels"] == 2
    });
    let client = {
        let _entered = runtime.enter();
        h2_client(&fleet.ca())
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
            runtime.block_on(load(
                &client,
                &uri,
                &auth,
                concurrency,
                Duration::from_secs(1),
            ));
            let (latencies, elapsed) = runtime.block_on(load(
                &client,
                &uri,
                &auth,
                concurrency,
                Duration::from_secs(8),
            ));
            println!(
                "| {name} | {concurrency} | {:.2} | {:.2} | {:.0} |",
                ms(percentile(&latencies, 0.5)),
                ms(percentile(&latencies, 0.99)),
                latencies.len() as f64 / elapsed.as_secs_f64()
            );
            p50.push(percentile(&latencies, 0.5));
        }
        println!(
            "| hop adds (p50) | {concurrency} | {:+.2} | | |",
            ms(p50[1]) - ms(p50[0])
        );
    }
}

/// The fake cluster behind each simulated agent's tunnel: one small HTTP
/// server in this process answering every request with a Namespace.
struct FakeCluster {
    base: String,
    client: Client<HttpConnector, tether_tunnel::Body>,
}

impl FakeCluster {
    async fn start() -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        |_request: Request<hyper::body::Incoming>| async {
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                            br#"{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"default"}}"#,
                        ))))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Arc::new(FakeCluster {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }
}

impl Upstream for FakeCluster {
    fn send(&self, request: Request<tether_tunnel::Body>) -> UpstreamFuture {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        parts.uri = format!("{}{path}", self.base).parse().expect("uri");
        parts.version = http::Version::HTTP_11;
        let sent = self.client.request(Request::from_parts(parts, body));
        Box::pin(async move { sent.await.map_err(Into::into) })
    }

    fn upgrade(&self, request: Request<tether_tunnel::Body>) -> UpstreamFuture {
        self.send(request)
    }
}

/// What simulated agents report.
enum Event {
    Up(usize),
    Down(usize),
}

/// One simulated agent: a session and a tunnel through `addr`, made again
/// with jitter whenever either ends.
async fn simulate(
    i: usize,
    token: String,
    addr: SocketAddr,
    ca: Arc<Vec<u8>>,
    cluster: Arc<FakeCluster>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut attempt = 0u32;
    loop {
        // Why a connection ended matters less than when: the events say.
        let _ = connect_once(i, &token, addr, &ca, cluster.clone(), &events).await;
        let _ = events.send(Event::Down(i));
        attempt = attempt.saturating_add(1);
        // agentk's reconnect: a jittered wait, growing with failures.
        let cap = 250u64 * u64::from(attempt.min(8));
        tokio::time::sleep(Duration::from_millis(
            rand::random::<u64>() % cap.max(1) + 50,
        ))
        .await;
    }
}

async fn connect_once(
    i: usize,
    token: &str,
    addr: SocketAddr,
    ca: &[u8],
    cluster: Arc<FakeCluster>,
    events: &mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    // The session.
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name("127.0.0.1"),
        )?
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
    // The tunnel.
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots.add(cert?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection.with_upgrades());
    let upgrade = Request::get(tether_tunnel::TUNNEL_PATH)
        .header("host", addr.to_string())
        .header("connection", "Upgrade")
        .header("upgrade", tether_tunnel::UPGRADE_PROTOCOL)
        .header("authorization", format!("Bearer {token}"))
        .header(tether_tunnel::SERVES_HEADER, tether_tunnel::KUBERNETES_API)
        .body(Empty::<Bytes>::new())?;
    let mut response = sender.send_request(upgrade).await?;
    anyhow::ensure!(
        response.status() == 101,
        "tunnel refused: {}",
        response.status()
    );
    let io = TokioIo::new(hyper::upgrade::on(&mut response).await?);
    let _ = events.send(Event::Up(i));
    let mut ping = tokio::time::interval(Duration::from_secs(10));
    ping.tick().await;
    let tunnel = tether_tunnel::agent::serve(io, cluster, std::future::pending());
    tokio::pin!(tunnel);
    let mut sequence = 0;
    loop {
        tokio::select! {
            _ = ping.tick() => {
                sequence += 1;
                tx.send(AgentMessage { message: Some(agent_message::Message::Ping(Ping { sequence })) }).await?;
            }
            message = inbound.message() => if message?.is_none() { anyhow::bail!("session ended") },
            ended = &mut tunnel => { ended?; anyhow::bail!("tunnel ended") },
        }
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
    let api = kas::client::ApiClient::new(&format!("http://{}", fleet.replicas[0].api), &admin)
        .expect("client");
    let tokens: Vec<String> = runtime.block_on(async {
        use serde_json::json;
        let repo = repo.to_str().expect("utf-8");
        api.post(
            "/api/v1/projects",
            json!({"id": "team/config", "url": repo}),
        )
        .await
        .expect("project");
        api.post(
            "/api/v1/projects",
            json!({"id": "team/admin", "url": "/srv/git/none"}),
        )
        .await
        .expect("project");
        let mut tokens = Vec::new();
        for name in &names {
            api.post(
                "/api/v1/agents",
                json!({"name": name, "config_project": "team/config"}),
            )
            .await
            .expect("agent");
            let token = api
                .post(
                    &format!("/api/v1/agents/{name}/tokens"),
                    json!({"name": "bench"}),
                )
                .await
                .expect("token");
            tokens.push(token["token"].as_str().expect("token").to_owned());
        }
        tokens
    });
    let ci = support::last_line(fleet.cli(
        0,
        &["project", "token", "create", "team/admin", "--name", "ci"],
    ));
    let ca = Arc::new(std::fs::read(fleet.ca()).expect("CA"));
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let balancer = fleet.balancer.frontends[0];
    let started = Instant::now();
    let _guard = runtime.enter();
    let cluster = runtime.block_on(FakeCluster::start());
    let agents: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            runtime.spawn(simulate(
                i,
                token,
                balancer,
                ca.clone(),
                cluster.clone(),
                events_tx.clone(),
            ))
        })
        .collect();
    let mut up = HashSet::new();
    while up.len() < n {
        match runtime.block_on(events.recv()).expect("events") {
            Event::Up(i) => {
                up.insert(i);
            }
            Event::Down(i) => {
                up.remove(&i);
            }
        }
    }
    let connected = started.elapsed();
    // Steady state: what the database sees while nothing happens. Idle
    // backends flush their statistics up to 10 s late, so the connect
    // storm's transactions are let settle first.
    std::thread::sleep(Duration::from_secs(15));
    let window = Duration::from_secs(30);
    let before = transactions(&database);
    std::thread::sleep(window);
    let qps = (transactions(&database) - before) as f64 / window.as_secs_f64();

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
            Event::Down(i) => {
                went_down.insert(i);
            }
            Event::Up(i) if went_down.contains(&i) => {
                waiting.remove(&i);
            }
            Event::Up(_) => {}
        }
    }
    let reconnected = killed.elapsed();
    // Every agent of the killed replica, proxied through a survivor.
    let client = h2_client(&fleet.ca());
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
        "| {n} | {:.1} s | {qps:.1} | {} | {:.1} s | {:.1} s |",
        connected.as_secs_f64(),
        victims.len(),
        reconnected.as_secs_f64(),
        proxied.as_secs_f64()
    );
    for agent in agents {
        agent.abort();
    }
    drop(fleet);
}

fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![1000] } else { sizes };
    tether_runtime::limits::raise_open_files()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("## Routed through another replica vs served locally (GET 1 ConfigMap)\n");
    routed_vs_local(&runtime);
    println!("\n## N simulated agents on 3 replicas behind HAProxy; kill -9 of the busiest\n");
    println!(
        "| agents | all connected | PostgreSQL tx/s at rest | agents on the killed replica | reconnected | proxied again |"
    );
    println!("|---|---|---|---|---|---|");
    for n in sizes {
        fleet_of(&runtime, n);
    }
    Ok(())
}
