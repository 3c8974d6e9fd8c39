//! Push-to-applied through a real git host's webhook: the repository on
//! Gitea, kas polling once an hour, Gitea's signed push webhook to kas; 20
//! pushes that each change a ConfigMap, timed from the start of `git push`
//! to the changed ConfigMap in the cluster (read every 5 ms). The time
//! includes git's push over HTTP, Gitea's delivery, kas's fetch over HTTP,
//! the manifests' way to agentk and its apply.
//!
//! Run: `cargo build --release --bins && cargo bench -p tether-e2e --bench
//! webhooks`. Prints figures; asserts nothing.

use std::time::{Duration, Instant};

use tether_e2e::bench::{ms, percentile};
use tether_e2e::gitea::Pipeline;
use tether_e2e::wait;

const PUSHES: u64 = 20;

fn main() -> anyhow::Result<()> {
    let cluster = tether_testenv::shared();
    let (runtime, client) = tether_e2e::bench::runtime_and_client()?;
    let (ns, host) = runtime.block_on(async {
        let ns = cluster.namespace("bench-webhooks").await?;
        let host = tether_testenv::gitea::GitHost::start().await?;
        anyhow::Ok((ns.name().to_owned(), host))
    })?;
    let pipeline = Pipeline::start(&host, &ns);
    pipeline.add_hook(&host, &pipeline.secret);
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, &ns);
    let value = |want: u64| {
        let api = api.clone();
        async move {
            loop {
                if let Ok(Some(cm)) = api.get_opt("pushed").await
                    && cm.data.and_then(|d| d.get("value").cloned()) == Some(want.to_string())
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait("the first sync", Duration::from_secs(120), || {
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_millis(100), value(0)).await })
            .is_ok()
    });
    let mut latencies = Vec::new();
    for i in 1..=PUSHES {
        let started = Instant::now();
        pipeline.push_value(i);
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), value(i))
                .await
                .map_err(|_| anyhow::anyhow!("push {i} did not reach the cluster in 60 s"))
        })?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "push-to-applied through Gitea's webhook (git push → ConfigMap changed, no polling), {PUSHES} pushes: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.95)),
        latencies.last().map(|d| ms(*d)).unwrap_or_default()
    );
    Ok(())
}
