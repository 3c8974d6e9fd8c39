//! What tracing costs a push, end to end: kas (release) and a real agentk
//! (release) on the test cluster, for each tracing mode in one run:
//! `off` (no OTLP endpoint), `default` (both programs export to a Jaeger
//! v2 built by `scripts/observability-tools.sh`, with Tether's default
//! sampler: one trace in ten) and `all` (every trace sampled). Each mode
//! starts a fresh kas and agentk, syncs an empty set, then times 20
//! commits, each changing one ConfigMap, from the commit and refresh to
//! the changed ConfigMap read back from the API server (every 5 ms), and
//! counts kas's and agentk's CPU time over those pushes.
//!
//! Run: `cargo build --release --bins && cargo bench -p tether-e2e --bench
//! tracing` (`-- all,off` for other modes or another order). Prints
//! figures; asserts nothing about them.

use tether_e2e as support;

use std::time::{Duration, Instant};

use support::bench::{cpu_time, percentile};
use support::{Setup, commit, new_repo, wait};

const COMMITS: usize = 20;

fn main() -> anyhow::Result<()> {
    let modes = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "off,default,all".to_owned());
    let cluster = tether_testenv::shared();
    let (runtime, client) = support::bench::runtime_and_client()?;
    let dir = tempfile::tempdir()?;
    let jaeger = runtime.block_on(tether_testenv::jaeger::Jaeger::start(dir.path()))?;
    let endpoint = format!("http://{}", jaeger.otlp_http);
    println!(
        "| tracing | push → applied p50 | p95 | max | kas CPU per push | agentk CPU per push | commit traces in Jaeger |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut p50s = Vec::new();
    for mode in modes.split(',') {
        // SAFETY: set while no thread of this process reads the
        // environment: kas and agentk, started next, inherit it.
        unsafe {
            match mode {
                "off" => {
                    std::env::remove_var("KAS_OTLP_ENDPOINT");
                    std::env::remove_var("AGENTK_OTLP_ENDPOINT");
                    std::env::remove_var("OTEL_TRACES_SAMPLER");
                }
                "default" | "all" => {
                    std::env::set_var("KAS_OTLP_ENDPOINT", &endpoint);
                    std::env::set_var("AGENTK_OTLP_ENDPOINT", &endpoint);
                    if mode == "all" {
                        std::env::set_var("OTEL_TRACES_SAMPLER", "always_on");
                    } else {
                        std::env::remove_var("OTEL_TRACES_SAMPLER");
                    }
                }
                other => anyhow::bail!("tracing mode {other:?}: off, default or all"),
            }
        }
        // The first sync's trace and the pushes': 21 when every trace is
        // sampled.
        let traces_before_mode = commit_traces(&jaeger);
        let ns = runtime.block_on(cluster.namespace("bench-tracing"))?;
        let ns = ns.name().to_owned();
        let mut setup = Setup::start_with(&["--poll-interval", "60s"]);
        setup.pod_namespace = ns.clone();
        let repo = setup.dir.path().join("repo");
        new_repo(&repo);
        let config = format!(
            "gitops:\n  manifest_projects:\n    - id: team/config\n      default_namespace: {ns}\n      paths: [{{glob: 'manifests/*.yaml'}}]\n"
        );
        let empty = commit(&repo, &[(".gitlab/agents/prod/config.yaml", Some(&config))]);
        let token = setup.register_agent_in("prod", repo.to_str().unwrap_or_default());
        let agentk = setup.agentk(&token);
        wait("the empty sync", Duration::from_secs(120), || {
            setup
                .sync_of(&empty)
                .is_some_and(|s| s["state"] == "synced")
        });
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client.clone(), &ns);
        let (kas_cpu, agentk_cpu) = (cpu_time(setup.kas.child.id()), cpu_time(agentk.child.id()));
        let mut latencies = Vec::with_capacity(COMMITS);
        for i in 1..=COMMITS {
            let text = format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: pushed}}\ndata: {{rev: \"{i}\"}}\n"
            );
            commit(&repo, &[("manifests/pushed.yaml", Some(&text))]);
            let started = Instant::now();
            setup
                .cli(&["project", "refresh", "team/config"])
                .expect("refresh");
            let want = i.to_string();
            runtime.block_on(support::bench::pushed_rev(&api, &want));
            latencies.push(started.elapsed());
        }
        let kas_cpu = cpu_time(setup.kas.child.id()).saturating_sub(kas_cpu);
        let agentk_cpu = cpu_time(agentk.child.id()).saturating_sub(agentk_cpu);
        latencies.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        p50s.push((mode.to_owned(), percentile(&latencies, 0.50)));
        // The batch processors send every 5 s (OTEL_BSP_SCHEDULE_DELAY's
        // default): the count is read until it holds for 8 s.
        let traces = commit_traces(&jaeger);
        let traces = traces.saturating_sub(traces_before_mode);
        println!(
            "| {mode} | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} ms | {:.1} ms | {traces} |",
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.95)),
            ms(*latencies.last().unwrap_or(&Duration::ZERO)),
            ms(kas_cpu) / COMMITS as f64,
            ms(agentk_cpu) / COMMITS as f64,
        );
        drop(agentk);
        drop(setup);
    }
    if let Some((_, off)) = p50s.iter().find(|(m, _)| m == "off") {
        for (mode, p50) in p50s.iter().filter(|(m, _)| m != "off") {
            println!(
                "\n{mode} against off: push → applied p50 ×{:.2}",
                p50.as_secs_f64() / off.as_secs_f64().max(1e-9)
            );
        }
    }
    Ok(())
}

/// How many commit traces (their roots, `commit to agent`) Jaeger holds
/// once the count holds.
fn commit_traces(jaeger: &tether_testenv::jaeger::Jaeger) -> usize {
    support::traces::settled_count(
        jaeger,
        "service=kas&operation=commit%20to%20agent&limit=50000",
    )
}
