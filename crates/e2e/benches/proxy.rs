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
//! Run: `cargo build --release -p agentk && cargo bench -p tether-e2e --bench
//! proxy` (scripts/bench.sh does both). Prints figures; asserts nothing.

use std::time::{Duration, Instant};

use kube::client::ConfigExt;
use tether_e2e::Setup;
use tether_e2e::bench::load::{Get, Https, Run, h2_client, load, tls_trusting};
use tether_e2e::bench::{cpu_time, ms, percentile};

const CONFIGMAPS: usize = 5000;

/// Where requests go, and how they authenticate.
struct Target {
    name: &'static str,
    base: String,
    client: Https,
    authorization: Option<String>,
}

impl Target {
    async fn load(&self, path: &str, gzip: bool, concurrency: usize, duration: Duration) -> Run {
        let get = Get {
            uri: format!("{}{path}", self.base),
            authorization: self.authorization.clone(),
            gzip,
        };
        load(&self.client, &get, concurrency, duration).await
    }
}

fn p(run: &Run, q: f64) -> String {
    format!("{:.2}", ms(percentile(&run.latencies, q)))
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
        let tls = tls_trusting(&setup.dir.path().join("kas/agent-ca.crt"));
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
                runtime.block_on(target.load(path, gzip, concurrency, Duration::from_secs(1)));
            }
            let d = runtime.block_on(direct.load(path, gzip, concurrency, duration));
            let (kas0, agentk0) = (cpu_time(kas_pid), cpu_time(agentk_pid));
            let run = runtime.block_on(proxied.load(path, gzip, concurrency, duration));
            let (kas_cpu, agentk_cpu) = (cpu_time(kas_pid) - kas0, cpu_time(agentk_pid) - agentk0);
            let n = run.latencies.len() as f64;
            for (target, r) in [(&direct, &d), (&proxied, &run)] {
                let extra = if target.name == "direct" {
                    "| | | |".to_owned()
                } else {
                    format!(
                        "| {:.2} | {:.0} | {:.0} |",
                        run.per_second() / d.per_second(),
                        kas_cpu.as_secs_f64() * 1e6 / n,
                        agentk_cpu.as_secs_f64() * 1e6 / n
                    )
                };
                println!(
                    "| {what} | {concurrency} | {} | {} | {} | {:.0} {extra}",
                    target.name,
                    p(r, 0.50),
                    p(r, 0.99),
                    r.per_second(),
                );
            }
            eprintln!(
                "{what} c={concurrency}: p50 added {:+.3} ms; {} / {} requests; {:.1} / {:.1} MB",
                ms(percentile(&run.latencies, 0.5)) - ms(percentile(&d.latencies, 0.5)),
                d.latencies.len(),
                run.latencies.len(),
                d.bytes as f64 / 1e6,
                run.bytes as f64 / 1e6,
            );
        }
    }
    Ok(())
}
