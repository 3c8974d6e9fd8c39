//! Simulated agents: thousands in one process, each with its own token, a
//! session (TCP+TLS, gRPC) and, when asked, a tunnel answering for a fake
//! cluster; reconnecting with jitter whenever either ends, as agentk does.
//! kas cannot tell them from agentk on the wire. Started with
//! [`syncing_agent`], they also answer each set of manifests with a sync
//! report, as agentk does once it applied them (see [`Syncs`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tether_proto::v1::{
    AgentMessage, Manifests, Ping, SyncReport, SyncState, agent_message, server_message,
};
use tether_tunnel::agent::{Upstream, UpstreamFuture};
use tokio::sync::{Semaphore, mpsc};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::raw;

/// Where the agents dial, and how they trust it.
#[derive(Debug)]
pub struct Endpoints {
    /// Agent endpoints; agent `i` dials `addrs[i % len]` first and the next
    /// one after each failure (as a DNS name with several addresses).
    pub addrs: Vec<SocketAddr>,
    /// The name kas's certificate is checked against.
    pub server_name: String,
    grpc: ClientTlsConfig,
    tunnel: Arc<rustls::ClientConfig>,
}

impl Endpoints {
    pub fn new(addrs: Vec<SocketAddr>, ca_pem: &[u8], server_name: &str) -> anyhow::Result<Self> {
        let grpc = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name(server_name);
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert?)?;
        }
        let tunnel = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Endpoints {
            addrs,
            server_name: server_name.to_owned(),
            grpc,
            tunnel: Arc::new(tunnel),
        })
    }
}

/// What a simulated agent does besides its session.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Opens a tunnel serving this cluster, too.
    pub tunnel: Option<Arc<FakeCluster>>,
    /// Connection attempts in flight at once, held until kas welcomed the
    /// agent (a fleet reconnecting after a kas restart spreads its
    /// handshakes the same way).
    pub handshakes: Option<Arc<Semaphore>>,
}

/// Simulated agents that act on the manifests kas sends, as an agentk
/// whose cluster applies everything at once would: the last message of
/// each set is answered at once with a report that the commit synced
/// (phase `done`, no objects, so every object is Current vacuously), which
/// is what a rollout's health gate waits for; a set kas could not read is
/// reported failed, as agentk reports it. A separate value rather than a
/// field of [`Options`], which other benches build field by field: a new
/// field would break them, and a report they never asked for would change
/// what they measure.
///
/// In-process agents only: [`Workers`] do not carry it (a bench that needs
/// workers for its fleet would add it to their spec file).
#[derive(Clone, Debug)]
pub struct Syncs {
    /// Told of each report, after it was queued to kas.
    pub reported: mpsc::UnboundedSender<Synced>,
}

/// A sync report a simulated agent sent.
#[derive(Debug)]
pub struct Synced {
    pub agent: usize,
    pub project: String,
    pub commit: String,
    /// Whether it reported the commit synced (not failed).
    pub synced: bool,
    /// When the set's last message arrived; the report left right after.
    pub at: Instant,
}

/// What simulated agents report.
#[derive(Debug)]
pub enum Event {
    /// Welcomed, with its tunnel up when it has one; `took` from the start
    /// of the attempt (after waiting for a handshake slot).
    Up { agent: usize, took: Duration },
    /// kas sent its configuration.
    Configured(usize),
    /// The session or tunnel ended, or an attempt failed.
    Down { agent: usize, why: String },
}

/// Runs agent `i` for ever: connect, report, reconnect with a jittered,
/// growing wait when anything ends.
pub async fn agent(
    i: usize,
    token: String,
    endpoints: Arc<Endpoints>,
    options: Options,
    events: mpsc::UnboundedSender<Event>,
) {
    run(i, token, endpoints, options, None, events).await;
}

/// Runs agent `i` as [`agent`] does, answering each set of manifests with
/// a sync report (see [`Syncs`]).
pub async fn syncing_agent(
    i: usize,
    token: String,
    endpoints: Arc<Endpoints>,
    options: Options,
    syncs: Syncs,
    events: mpsc::UnboundedSender<Event>,
) {
    run(i, token, endpoints, options, Some(syncs), events).await;
}

async fn run(
    i: usize,
    token: String,
    endpoints: Arc<Endpoints>,
    options: Options,
    syncs: Option<Syncs>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut attempt = 0usize;
    loop {
        let addr = endpoints.addrs[(i + attempt) % endpoints.addrs.len()];
        let ended = connect_once(
            i,
            &token,
            addr,
            &endpoints,
            &options,
            syncs.as_ref(),
            &events,
        )
        .await;
        let why = match ended {
            Ok(()) => "ended".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if events.send(Event::Down { agent: i, why }).is_err() {
            return;
        }
        attempt = attempt.saturating_add(1);
        // agentk's reconnect: a jittered wait, growing with failures.
        let cap = 250u64 * attempt.min(8) as u64;
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
    endpoints: &Endpoints,
    options: &Options,
    syncs: Option<&Syncs>,
    events: &mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let permit = match &options.handshakes {
        Some(slots) => Some(slots.clone().acquire_owned().await?),
        None => None,
    };
    let started = Instant::now();
    // agentk's HTTP/2 settings, so that its keepalive PINGs are in the
    // idle cost measured.
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(endpoints.grpc.clone())?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(tether_tunnel::KEEPALIVE_INTERVAL)
        .keep_alive_timeout(tether_tunnel::KEEPALIVE_TIMEOUT)
        .http2_adaptive_window(true)
        .connect()
        .await?;
    let raw::Session { tx, mut inbound } =
        raw::session(channel, token, Some(raw::hello(&format!("agent-{i}")))).await?;
    loop {
        match inbound.message().await?.and_then(|m| m.message) {
            Some(server_message::Message::Welcome(_)) => break,
            Some(_) => {}
            None => anyhow::bail!("kas ended the session before its Welcome"),
        }
    }
    let tunnel = match &options.tunnel {
        Some(cluster) => Some(open_tunnel(token, addr, endpoints, cluster.clone()).await?),
        None => None,
    };
    drop(permit);
    let _ = events.send(Event::Up {
        agent: i,
        took: started.elapsed(),
    });
    let tunnel = async move {
        match tunnel {
            Some(serving) => serving.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(tunnel);
    let mut ping = tokio::time::interval(Duration::from_secs(10));
    ping.tick().await;
    let mut sequence = 0;
    loop {
        tokio::select! {
            _ = ping.tick() => {
                sequence += 1;
                tx.send(AgentMessage { message: Some(agent_message::Message::Ping(Ping { sequence })) }).await?;
            }
            message = inbound.message() => match message?.and_then(|m| m.message) {
                Some(server_message::Message::Configuration(_)) => {
                    let _ = events.send(Event::Configured(i));
                }
                // A set is complete with its last message (kas never mixes
                // two sends' chunks on one session).
                Some(server_message::Message::Manifests(set)) if set.last => {
                    if let Some(syncs) = syncs {
                        let at = Instant::now();
                        let (report, synced) = sync_report(set);
                        let (project, commit) = (report.project_id.clone(), report.commit_id.clone());
                        tx.send(AgentMessage { message: Some(agent_message::Message::SyncReport(report)) }).await?;
                        let _ = syncs.reported.send(Synced { agent: i, project, commit, synced, at });
                    }
                }
                Some(_) => {}
                None => anyhow::bail!("kas ended the session"),
            },
            ended = &mut tunnel => { ended?; anyhow::bail!("tunnel ended") },
        }
    }
}

/// The report an agent whose cluster applied `set` at once sends, and
/// whether it says synced: a set kas could not read changes nothing and
/// fails the sync, as in agentk.
fn sync_report(set: Manifests) -> (SyncReport, bool) {
    let (state, error) = match set.error.is_empty() {
        true => (SyncState::Synced, String::new()),
        false => (SyncState::Failed, set.error),
    };
    let report = SyncReport {
        project_id: set.project_id,
        commit_id: set.commit_id,
        state: state as i32,
        error,
        phase: "done".into(),
        ..Default::default()
    };
    (report, state == SyncState::Synced)
}

/// Upgrades a new connection to a tunnel; the future serves it until it
/// ends.
async fn open_tunnel(
    token: &str,
    addr: SocketAddr,
    endpoints: &Endpoints,
    cluster: Arc<FakeCluster>,
) -> anyhow::Result<impl Future<Output = anyhow::Result<()>> + use<>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(endpoints.tunnel.clone())
        .connect(ServerName::try_from(endpoints.server_name.clone())?, tcp)
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
    Ok(async move {
        tether_tunnel::agent::serve(io, cluster, std::future::pending())
            .await
            .map_err(anyhow::Error::from)
    })
}

/// The cluster behind simulated agents' tunnels: one small HTTP server in
/// this process answering every request with a Namespace.
#[derive(Debug)]
pub struct FakeCluster {
    base: String,
    client: Client<HttpConnector, tether_tunnel::Body>,
}

impl FakeCluster {
    pub async fn start() -> anyhow::Result<Arc<Self>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        |_request: Request<hyper::body::Incoming>| async {
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(
                                    br#"{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"default"}}"#,
                                ),
                            )))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(Arc::new(FakeCluster {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }))
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
        let uri = format!("{}{path}", self.base).parse();
        parts.version = http::Version::HTTP_11;
        let client = self.client.clone();
        Box::pin(async move {
            parts.uri = uri?;
            Ok(client.request(Request::from_parts(parts, body)).await?)
        })
    }

    fn upgrade(&self, request: Request<tether_tunnel::Body>) -> UpstreamFuture {
        self.send(request)
    }
}

/// The argument that makes a bench binary a worker holding simulated
/// agents for its parent (see [`Workers`]).
pub const WORKER_FLAG: &str = "--sim-worker";

/// Simulated agents in worker processes: each agent holds one or two
/// connections, and one process may hold only so many files (the hard
/// limit here is 20,000), so a fleet of 10,000 with tunnels is spread over
/// processes. A worker is the bench binary itself run with
/// [`WORKER_FLAG`]; its agents' events come back on its standard output
/// and are forwarded to the parent's channel.
#[derive(Debug)]
pub struct Workers {
    _processes: Vec<crate::Proc>,
}

/// How workers run their agents.
#[derive(Debug)]
pub struct WorkerPlan<'a> {
    /// Where spec files and workers' logs go.
    pub dir: &'a std::path::Path,
    /// Where agents dial (see [`Endpoints::addrs`]).
    pub addrs: &'a [SocketAddr],
    /// kas's CA, PEM.
    pub ca: &'a std::path::Path,
    pub server_name: &'a str,
    /// Agents open a tunnel too.
    pub tunnels: bool,
    /// Agents per worker process at most.
    pub per_worker: usize,
}

impl Workers {
    /// Starts agents `tokens` (index and token) in workers as `plan` says.
    pub fn start(
        plan: &WorkerPlan<'_>,
        tokens: &[(usize, String)],
        events: mpsc::UnboundedSender<Event>,
    ) -> anyhow::Result<Self> {
        let WorkerPlan {
            dir,
            addrs,
            ca,
            server_name,
            tunnels,
            per_worker,
        } = *plan;
        let exe = std::env::current_exe()?;
        let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        let mut processes = Vec::new();
        for (w, chunk) in tokens.chunks(per_worker.max(1)).enumerate() {
            let mut spec = format!(
                "{server_name}\n{}\n{}\n{}\n",
                ca.display(),
                addrs.join(","),
                u8::from(tunnels)
            );
            for (i, token) in chunk {
                spec.push_str(&format!("{i} {token}\n"));
            }
            let spec_path = dir.join(format!("sim-worker-{w}.spec"));
            std::fs::write(&spec_path, spec)?;
            let mut command = std::process::Command::new(&exe);
            command.arg(WORKER_FLAG).arg(&spec_path);
            let mut process = crate::Proc::spawn_with_stdout(
                command,
                dir.join(format!("sim-worker-{w}.log")),
                std::process::Stdio::piped(),
            );
            let stdout = process
                .child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("worker without stdout"))?;
            let events = events.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    if let Some(event) = parse_event(&line)
                        && events.send(event).is_err()
                    {
                        return;
                    }
                }
            });
            processes.push(process);
        }
        Ok(Workers {
            _processes: processes,
        })
    }
}

fn parse_event(line: &str) -> Option<Event> {
    let mut words = line.splitn(3, ' ');
    let kind = words.next()?;
    let agent = words.next()?.parse().ok()?;
    let rest = words.next().unwrap_or_default();
    Some(match kind {
        "up" => Event::Up {
            agent,
            took: Duration::from_micros(rest.parse().ok()?),
        },
        "configured" => Event::Configured(agent),
        "down" => Event::Down {
            agent,
            why: rest.to_owned(),
        },
        _ => return None,
    })
}

/// A worker's life: run the agents its spec file lists, print their events
/// until the parent goes (the kernel ends a worker whose parent died).
pub fn worker_main(spec_path: &std::path::Path) -> anyhow::Result<()> {
    tether_runtime::limits::raise_open_files()?;
    let spec = std::fs::read_to_string(spec_path)?;
    let mut lines = spec.lines();
    let mut next = || {
        lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("short spec file"))
    };
    let server_name = next()?.to_owned();
    let ca = std::fs::read(next()?)?;
    let addrs = next()?
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<SocketAddr>, _>>()?;
    let tunnels = next()? == "1";
    let agents: Vec<(usize, String)> = lines
        .filter_map(|l| {
            let (i, token) = l.split_once(' ')?;
            Some((i.parse().ok()?, token.to_owned()))
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let endpoints = Arc::new(Endpoints::new(addrs, &ca, &server_name)?);
        let options = Options {
            tunnel: match tunnels {
                true => Some(FakeCluster::start().await?),
                false => None,
            },
            handshakes: None,
        };
        let (events, mut received) = mpsc::unbounded_channel();
        for (i, token) in agents {
            tokio::spawn(agent(
                i,
                token,
                endpoints.clone(),
                options.clone(),
                events.clone(),
            ));
        }
        drop(events);
        use std::io::Write;
        let mut out = std::io::LineWriter::new(std::io::stdout().lock());
        while let Some(event) = received.recv().await {
            let line = match event {
                Event::Up { agent, took } => format!("up {agent} {}", took.as_micros()),
                Event::Configured(agent) => format!("configured {agent}"),
                Event::Down { agent, why } => {
                    format!("down {agent} {}", why.replace('\n', " "))
                }
            };
            if writeln!(out, "{line}").is_err() {
                break;
            }
        }
        anyhow::Ok(())
    })
}
