//! `tether-cluster`: the test cluster for a person (`make cluster`).
//!
//! Runs in the foreground, writes its kubeconfig once `/readyz` answers, and
//! stops every process it started on Ctrl-C or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tether_runtime::{Shutdown, logging};
use tether_testenv::{Cluster, ClusterOptions};

#[derive(Debug, Parser)]
#[command(
    name = "tether-cluster",
    about = "Run a local Kubernetes cluster for Tether development"
)]
struct Cli {
    /// Folder for the cluster's data, logs and kubeconfig; emptied at start.
    #[arg(long, default_value = "target/cluster")]
    dir: PathBuf,
    /// Number of simulated (kwok) nodes.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // kube-rs logs every non-2xx answer at ERROR; while the API server starts,
    // `/readyz` answers 500 on purpose until it is ready, which is not an error.
    logging::init(
        "info,kube_client::client::builder=off",
        logging::LogFormat::Text,
    );
    let mut shutdown = Shutdown::on_signal();
    let dir = std::path::absolute(&cli.dir).context("cannot resolve --dir")?;
    let options = ClusterOptions {
        dir: Some(dir),
        nodes: cli.nodes,
        ..ClusterOptions::default()
    };
    let started = tokio::select! {
        started = Cluster::start(options) => started.context("cluster failed to start")?,
        _ = shutdown.signalled() => return Ok(()),
    };
    let version = started.client()?.apiserver_version().await?.git_version;
    let timings = started.start_timings();
    println!(
        "cluster {version} ready at {} (API server {:.1}s, nodes {:.1}s)",
        started.server(),
        timings.apiserver_ready.as_secs_f64(),
        timings.nodes_ready.as_secs_f64()
    );
    println!("  kubeconfig: {}", started.kubeconfig_path().display());
    println!("  logs:       {}", started.dir().join("logs").display());
    println!("  nodes:      {}", started.node_names().join(", "));
    for p in started.processes() {
        println!("  {:<24} pid {}", p.name, p.pid);
    }
    println!("press Ctrl-C to stop");
    tokio::select! {
        _ = shutdown.signalled() => {}
        failed = started.process_failure() => return Err(failed).context("cluster process died"),
    }
    drop(started);
    println!("cluster stopped");
    Ok(())
}
