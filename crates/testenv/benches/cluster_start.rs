//! How long the test cluster takes to start and to stop, over several runs.
//!
//! `cargo bench -p tether-testenv --bench cluster_start [-- RUNS]`
//! Prints min / median / max of: API server ready, nodes Ready (the cluster is
//! usable), and stop (every process gone).

use std::time::{Duration, Instant};

use tether_testenv::{Cluster, ClusterOptions};

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (mut apiserver, mut nodes, mut stop) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let cluster = rt.block_on(Cluster::start(ClusterOptions::default()))?;
        let t = cluster.start_timings();
        let stopping = Instant::now();
        drop(cluster);
        let stopped = stopping.elapsed();
        println!(
            "run {run}: apiserver ready {:.2}s, nodes ready {:.2}s, stop {:.2}s",
            t.apiserver_ready.as_secs_f64(),
            t.nodes_ready.as_secs_f64(),
            stopped.as_secs_f64()
        );
        apiserver.push(t.apiserver_ready);
        nodes.push(t.nodes_ready);
        stop.push(stopped);
    }
    println!("\n| phase ({runs} runs) | min | median | max |\n|---|---|---|---|");
    for (name, samples) in [
        ("API server ready", apiserver),
        ("nodes Ready (usable)", nodes),
        ("stop", stop),
    ] {
        let (min, med, max) = summary(samples);
        println!("| {name} | {min:.2} s | {med:.2} s | {max:.2} s |");
    }
    Ok(())
}

fn summary(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let secs = |d: Duration| d.as_secs_f64();
    (
        secs(samples[0]),
        secs(samples[samples.len() / 2]),
        secs(samples[samples.len() - 1]),
    )
}
