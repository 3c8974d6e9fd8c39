//! `agentk`, Tether's agent: runs beside a cluster and dials out to kas (see
//! ARCHITECTURE.md).
//!
//! For now it proves the cluster side of its job: it builds a client the way it
//! will in production (in-cluster config in a pod, a kubeconfig otherwise),
//! reports the API server's version, and runs until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tether_runtime::{Shutdown, logging};

#[derive(Debug, Parser)]
#[command(name = "agentk", version, about = "Tether's in-cluster agent")]
struct Cli {
    /// Kubeconfig to use outside a pod; in a pod the in-cluster config wins.
    /// Defaults to $KUBECONFIG, then ~/.kube/config.
    #[arg(long, env = "AGENTK_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Log level when RUST_LOG is unset.
    #[arg(long, env = "AGENTK_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(&cli.log_level, logging::LogFormat::Text);
    let mut shutdown = Shutdown::on_signal();

    let client = cluster_client(cli.kubeconfig.as_deref()).await?;
    let version = client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server")?;
    tracing::info!(
        server_version = %version.git_version,
        agent_version = env!("CARGO_PKG_VERSION"),
        "agentk connected to its cluster"
    );

    shutdown.signalled().await;
    tracing::info!("agentk stopped");
    Ok(())
}

async fn cluster_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("invalid kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no in-cluster config and no usable kubeconfig")?,
    };
    kube::Client::try_from(config).context("cannot build a Kubernetes client")
}
