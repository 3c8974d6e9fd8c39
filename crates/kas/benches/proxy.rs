//! The Kubernetes API proxy against its peer, the API server itself, on the
//! same real cluster in the same run: the same client (HTTP/2 over TLS, like
//! client-go) sends the same requests straight to the API server and through
//! kas + agentk (release builds), at concurrency 1 and 32:
//!
//! - `GET` of one ConfigMap;
//! - `LIST` of 5,000 ConfigMaps in one namespace (3.4 MB of JSON), as is and
//!   gzip-compressed by the API server (what client-go and kubectl ask for).
//!
//! For each: p50/p99 latency, requests per second, and kas's and agentk's
//! CPU time per proxied request (from /proc). The proxied requests run as
//! the agent (`access_as: agent`), like the direct ones as cluster admin, so
//! the comparison is of the path, not of RBAC.
//!
//! Run: `cargo build --release -p agentk && cargo bench -p kas --bench
//! proxy` (scripts/bench.sh does both). Prints figures; asserts nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use support::Setup;

const CONFIGMAPS: usize = 5000;

type Https = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Where requests go, and how they authenticate.
struct Target {
    name: &'static str,
    base: String,
    client: Https,
    authorization: Option<String>,
}

struct Run {
    latencies: Vec<Duration>,
    elapsed: Duration,
    bytes: u64,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i]
    }

    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

fn h2_client(mut tls: rustls::ClientConfig) -> Https {
    // The builder sets ALPN (h2) itself.
    tls.alpn_protocols.clear();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .build();
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector)
}

/// Sends GET `path` from `concurrency` workers for `duration`, asking for
/// a gzip-compressed response when `gzip` (as client-go does by default).
async fn load(
    target: &Target,
    path: &str,
    gzip: bool,
    concurrency: usize,
    duration: Duration,
) -> Run {
    let uri = format!("{}{path}", target.base);
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, uri, auth) = (
            target.client.clone(),
            uri.clone(),
            target.authorization.clone(),
        );
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut bytes = 0u64;
            while Instant::now() < deadline {
                let mut request = http::Request::get(&uri).header("accept", "application/json");
                if gzip {
                    request = request.header("accept-encoding", "gzip");
                }
                if let Some(auth) = &auth {
                    request = request.header("authorization", auth);
                }
                let request = request.body(Empty::new()).expect("request");
                let sent = Instant::now();
                let response = client.request(request).await.expect("response");
                assert!(
                    response.status().is_success(),
                    "{uri}: {}",
                    response.status()
                );
                let body = response.into_body().collect().await.expect("body");
                bytes += body.to_bytes().len() as u64;
                latencies.push(sent.elapsed());
            }
            (latencies, bytes)
        });
    }
    let mut run = Run {
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
        bytes: 0,
    };
    while let Some(done) = workers.join_next().await {
        let (latencies, bytes) = done.expect("worker");
        run.latencies.extend(latencies);
        run.bytes += bytes;
    }
    run.elapsed = started.elapsed();
    run
}

/// CPU time (user + system) a process has used.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / hz)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let cluster = tether_testenv::shared();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ns = runtime.block_on(async {
        let ns = cluster.namespace("bench-proxy").await?;
        anyhow::Ok(ns.name().to_owned())
    })?;

    // 5,000 ConfigMaps, created 64 at a time.
    let created = Instant::now();
    runtime.block_on(async {
        let client = cluster.client()?;
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client, &ns);
        let mut pending = tokio::task::JoinSet::new();
        for i in 0..CONFIGMAPS {
            let api = api.clone();
            pending.spawn(async move {
                let cm: k8s_openapi::api::core::v1::ConfigMap =
                    serde_json::from_value(serde_json::json!({
                        "metadata": {"name": format!("cm-{i:05}"), "labels": {"app": "bench"}},
                        "data": {"index": i.to_string(), "payload": "x".repeat(200)},
                    }))
                    .expect("ConfigMap");
                api.create(&Default::default(), &cm).await.map(|_| ())
            });
            if pending.len() >= 64 {
                pending.join_next().await.expect("task")??;
            }
        }
        while let Some(done) = pending.join_next().await {
            done??;
        }
        anyhow::Ok(())
    })?;
    println!(
        "created {CONFIGMAPS} ConfigMaps in {:.1} s",
        created.elapsed().as_secs_f64()
    );

    // kas + agentk (release), the agent running as itself.
    let setup = Setup::start();
    let (agent_token, token) = setup.register_admin_access();
    let agentk = setup.agentk(&agent_token);
    setup.wait_for_tunnels();

    let (direct, proxied) = {
        let _entered = runtime.enter();
        let config = cluster.client_config();
        let direct = Target {
            name: "direct",
            base: config
                .cluster_url
                .to_string()
                .trim_end_matches('/')
                .to_owned(),
            client: h2_client(config.rustls_client_config()?),
            authorization: None,
        };
        let ca = std::fs::read(setup.dir.path().join("kas/agent-ca.crt"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&ca) {
            let cert: rustls::pki_types::CertificateDer<'static> = cert?;
            roots.add(cert)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let proxied = Target {
            name: "kas+agentk",
            base: format!("https://{}/k8s-proxy", setup.proxy),
            client: h2_client(tls),
            authorization: Some(format!("Bearer ci:prod:{token}")),
        };
        (direct, proxied)
    };

    let (kas_pid, agentk_pid) = (setup.kas.child.id(), agentk.child.id());
    let get = format!("/api/v1/namespaces/{ns}/configmaps/cm-00042");
    let list = format!("/api/v1/namespaces/{ns}/configmaps");
    println!();
    println!(
        "| request | concurrency | path | p50 ms | p99 ms | req/s | proxied/direct req/s | kas CPU µs/req | agentk CPU µs/req |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let workloads = [
        ("GET 1 ConfigMap", &get, false, 5),
        ("LIST 5,000 ConfigMaps", &list, false, 10),
        ("LIST 5,000 ConfigMaps, gzip", &list, true, 10),
    ];
    for (what, path, gzip, seconds) in workloads {
        for concurrency in [1, 32] {
            let duration = Duration::from_secs(seconds);
            // Warm both paths: connections, pools, caches.
            for target in [&direct, &proxied] {
                runtime.block_on(load(
                    target,
                    path,
                    gzip,
                    concurrency,
                    Duration::from_secs(1),
                ));
            }
            let d = runtime.block_on(load(&direct, path, gzip, concurrency, duration));
            let (kas0, agentk0) = (cpu(kas_pid), cpu(agentk_pid));
            let p = runtime.block_on(load(&proxied, path, gzip, concurrency, duration));
            let (kas_cpu, agentk_cpu) = (cpu(kas_pid) - kas0, cpu(agentk_pid) - agentk0);
            let n = p.latencies.len() as f64;
            for (target, run) in [(&direct, &d), (&proxied, &p)] {
                let extra = if target.name == "direct" {
                    "| | | |".to_owned()
                } else {
                    format!(
                        "| {:.2} | {:.0} | {:.0} |",
                        p.rps() / d.rps(),
                        kas_cpu.as_secs_f64() * 1e6 / n,
                        agentk_cpu.as_secs_f64() * 1e6 / n
                    )
                };
                println!(
                    "| {what} | {concurrency} | {} | {} | {} | {:.0} {extra}",
                    target.name,
                    ms(run.percentile(0.50)),
                    ms(run.percentile(0.99)),
                    run.rps(),
                );
            }
            eprintln!(
                "{what} c={concurrency}: p50 added {:+.3} ms; {} / {} requests; {:.1} / {:.1} MB",
                (p.percentile(0.5).as_secs_f64() - d.percentile(0.5).as_secs_f64()) * 1000.0,
                d.latencies.len(),
                p.latencies.len(),
                d.bytes as f64 / 1e6,
                p.bytes as f64 / 1e6,
            );
        }
    }
    Ok(())
}
