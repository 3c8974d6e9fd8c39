//! `agentk`, Tether's agent: runs beside a cluster and dials out to kas (see
//! ARCHITECTURE.md).
//!
//! It builds a cluster client the way it does in production (in-cluster
//! config in a pod, a kubeconfig otherwise), reads the API server's version,
//! then keeps a session with kas open (see `connection`) until SIGINT or
//! SIGTERM.

mod backoff;
mod connection;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use connection::{ConnectOptions, KasAddress, TokenSource};
use tether_proto::v1::PodIdentity;
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
    /// kas's agent endpoint: grpcs://host:port (grpc:// without TLS, for
    /// development only). Without it agentk only checks its cluster.
    #[arg(long, env = "AGENTK_KAS_ADDRESS")]
    kas_address: Option<String>,
    /// File holding the agent token; without it the token is read from the
    /// AGENTK_TOKEN environment variable. Never pass a token as a flag.
    #[arg(long, env = "AGENTK_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) to trust for kas, e.g. the development CA kas
    /// writes to <data-dir>/agent-ca.crt. Default: the public web roots.
    #[arg(long, env = "AGENTK_CA_CERT")]
    ca_cert: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(&cli.log_level, logging::LogFormat::Text);
    let mut shutdown = Shutdown::on_signal();
    // Check the connection settings before anything else: a typo should fail
    // at start, not on the first reconnect.
    let kas_address = cli
        .kas_address
        .as_deref()
        .map(KasAddress::parse)
        .transpose()?;

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

    match kas_address {
        Some(kas_address) => {
            let options = ConnectOptions {
                kas_address,
                token: match cli.token_file {
                    Some(path) => TokenSource::File(path),
                    None => TokenSource::Env("AGENTK_TOKEN".into()),
                },
                ca_cert: cli.ca_cert,
                cluster_version: version.git_version,
                pod: pod_identity(),
            };
            connection::run(options, shutdown).await;
        }
        None => {
            tracing::warn!("no --kas-address: not connecting to kas");
            shutdown.signalled().await;
        }
    }
    tracing::info!("agentk stopped");
    Ok(())
}

/// The pod agentk runs in, from the downward API; outside a pod, the host.
fn pod_identity() -> PodIdentity {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    PodIdentity {
        namespace: env("POD_NAMESPACE").unwrap_or_default(),
        name: env("POD_NAME")
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into()),
    }
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
