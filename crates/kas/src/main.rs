//! `kas`, the Kubernetes Agent Server: registers agents, reads their git
//! repositories and keeps their tunnels (see ARCHITECTURE.md).
//!
//! This binary only wires configuration into libraries; for now it serves the
//! health endpoints that a deployment and the demo probe.

mod admin;

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tether_runtime::{Shutdown, logging};

#[derive(Debug, Parser)]
#[command(name = "kas", version, about = "Tether's Kubernetes Agent Server")]
struct Cli {
    /// Log level when RUST_LOG is unset.
    #[arg(long, env = "KAS_LOG_LEVEL", default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server until SIGINT or SIGTERM.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address of the admin listener (`/healthz`, `/readyz`).
    #[arg(long, env = "KAS_ADMIN_LISTEN", default_value = "127.0.0.1:8151")]
    admin_listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(&cli.log_level, logging::LogFormat::Text);
    match cli.command {
        Command::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signal();
    let listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on admin address {}", args.admin_listen))?;
    let local = listener
        .local_addr()
        .context("admin listener has no local address")?;
    tracing::info!(admin = %local, version = env!("CARGO_PKG_VERSION"), "kas started");
    let mut drain = shutdown.clone();
    axum::serve(listener, admin::router())
        .with_graceful_shutdown(async move { drain.signalled().await })
        .await
        .context("admin listener failed")?;
    tracing::info!("kas stopped");
    Ok(())
}
