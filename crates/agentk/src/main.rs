//! `agentk`, Tether's agent: runs beside a cluster and dials out to kas (see
//! ARCHITECTURE.md).
//!
//! Without a subcommand it runs: it builds a cluster client the way it does
//! in production (in-cluster config in a pod, a kubeconfig otherwise), reads
//! the API server's version, serves its probes, then keeps a session with kas
//! open (see `connection`) until SIGINT or SIGTERM. `agentk generate` prints
//! the objects that install it.

mod apiserver;
mod backoff;
mod cluster_info;
mod config;
mod connection;
mod decrypt;
mod events;
mod gitops;
mod install;
mod leader;
mod observability;
mod render;
mod transport;
mod tunnel;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use connection::{ConnectOptions, TokenSource};
use tether_proto::v1::PodIdentity;
use tether_runtime::{Shutdown, logging};
use transport::KasAddress;

#[derive(Debug, Parser)]
#[command(
    name = "agentk",
    version,
    about = "Tether's in-cluster agent",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Kubeconfig to use outside a pod; in a pod the in-cluster config wins.
    /// Defaults to $KUBECONFIG, then ~/.kube/config.
    #[arg(long, env = "AGENTK_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Log level when RUST_LOG is unset.
    #[arg(long, env = "AGENTK_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log lines as text, or as one JSON object each (for log
    /// collectors).
    #[arg(long, env = "AGENTK_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// OTLP endpoint traces are exported to, as OTEL_EXPORTER_OTLP_ENDPOINT
    /// means it (a base URL; `/v1/traces` is appended for HTTP; the
    /// protocol from OTEL_EXPORTER_OTLP_PROTOCOL, grpc or http/protobuf).
    /// Default: that variable; without either, no traces. A sync continues
    /// the trace kas started for its commit.
    #[arg(long, env = "AGENTK_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Record Kubernetes Events on the objects agentk applies, prunes and
    /// corrects, and on failures.
    #[arg(long, env = "AGENTK_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    events: bool,
    /// kas's agent endpoint: grpcs://host:port, or wss://host[:port]/path
    /// where only HTTP/1.1 passes proxies (grpc:// and ws:// without TLS,
    /// for development only). Without it agentk only checks its cluster.
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
    /// Address of the probes: /liveness, and /readiness (200 while connected
    /// to kas).
    #[arg(
        long,
        env = "AGENTK_OBSERVABILITY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    observability_listen: SocketAddr,
    /// Tunnels to keep open to kas, on which kas sends Kubernetes API
    /// requests of CI jobs and users (`ci_access`, `user_access`); 0 turns
    /// cluster access through kas off.
    #[arg(long, env = "AGENTK_TUNNELS", default_value_t = 2)]
    tunnels: usize,
    /// The helm binary for charts a project renders on the agent
    /// (`render_on: agent`, for values from the cluster's Secrets): a path,
    /// or a name looked up on PATH. Default: helm on PATH, if there is one.
    /// Resolved once at start and logged with its version. Charts render
    /// on kas otherwise, and agentk needs none.
    #[arg(long, env = "AGENTK_HELM")]
    helm: Option<PathBuf>,
    /// `on`: helm runs confined by the kernel (Landlock and seccomp: its
    /// folder and binary only, no network), checked at start. `off`:
    /// unconfined, warned of at start.
    #[arg(long, env = "AGENTK_RENDER_SANDBOX", default_value = "on", value_parser = ["on", "off"])]
    render_sandbox: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the objects that install agentk, for `kubectl apply -f -`.
    Generate(GenerateArgs),
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// The agent token (kas token create); it goes into a Secret. Prefer
    /// --agent-token-file: a command line is visible to every user of the
    /// machine.
    #[arg(
        long,
        env = "AGENTK_TOKEN",
        hide_env_values = true,
        required_unless_present = "agent_token_file",
        conflicts_with = "agent_token_file"
    )]
    agent_token: Option<String>,
    /// File holding the agent token (`-`: standard input).
    #[arg(long)]
    agent_token_file: Option<PathBuf>,
    /// kas's agent endpoint as the cluster reaches it, grpcs://host:port.
    #[arg(long)]
    kas_address: String,
    /// Image tag to run.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    agent_version: String,
    /// Namespace to install into.
    #[arg(long, default_value = "tether-agent")]
    namespace: String,
    /// Name of the Deployment, ServiceAccount and RBAC objects.
    #[arg(long, default_value = "agentk")]
    name: String,
    /// Image repository.
    #[arg(long, default_value = "tether/agentk")]
    image: String,
    /// cluster-admin (the GitLab agent's default) or namespaced.
    #[arg(long, value_enum, default_value_t = RbacMode::ClusterAdmin)]
    rbac: RbacMode,
    /// With --rbac namespaced: the namespaces the agent may manage.
    #[arg(long, value_delimiter = ',', required_if_eq("rbac", "namespaced"))]
    namespaces: Vec<String>,
    /// PEM of a private CA that signed kas's certificate.
    #[arg(long)]
    ca_cert_file: Option<PathBuf>,
    /// Pods to run: all keep a session and tunnels to kas; the holder of
    /// the agent's GitOps Lease alone applies manifests.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    replicas: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RbacMode {
    ClusterAdmin,
    Namespaced,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Generate(args)) => generate(args),
        None => run(cli.run).await,
    }
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    KasAddress::parse(&args.kas_address)?;
    let text = match (&args.agent_token, &args.agent_token_file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(
                &mut std::io::Read::take(std::io::stdin(), 4096),
                &mut text,
            )
            .context("cannot read the agent token from standard input")?;
            text
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the agent token file {}", path.display()))?,
        (None, None) => anyhow::bail!("give --agent-token-file (or --agent-token)"),
    };
    let token =
        tether_credentials::Token::parse_kind(text.trim(), tether_credentials::TokenKind::Agent)
            .context("no agent token given")?;
    let ca_cert = args
        .ca_cert_file
        .as_deref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()?;
    let options = install::InstallOptions {
        name: args.name,
        namespace: args.namespace,
        kas_address: args.kas_address,
        token: token.expose_secret().to_owned(),
        image: args.image,
        version: args.agent_version,
        rbac: match args.rbac {
            RbacMode::ClusterAdmin => install::Rbac::ClusterAdmin,
            RbacMode::Namespaced => install::Rbac::Namespaced(args.namespaces),
        },
        ca_cert,
        replicas: args.replicas,
    };
    print!("{}", install::render_yaml(&install::manifests(&options))?);
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let otlp = tether_runtime::telemetry::Settings::from_env(
        args.otlp_endpoint.as_deref(),
        "agentk",
        |k| std::env::var(k).ok(),
    )?;
    let (log_level, traces) = logging::init_traced(
        &args.log_level,
        logging::LogFormat::named(&args.log_format),
        otlp.as_ref(),
    )?;
    if let Some(otlp) = &otlp {
        tracing::info!(url = %otlp.shown_url(), protocol = ?otlp.protocol, "exporting traces over OTLP");
    }
    let ran = run_traced(args, log_level).await;
    traces.shutdown().await;
    ran
}

async fn run_traced(args: RunArgs, log_level: logging::LogLevel) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::on_signal();
    // Check the connection settings before anything else: a typo should fail
    // at start, not on the first reconnect.
    let kas_address = args
        .kas_address
        .as_deref()
        .map(KasAddress::parse)
        .transpose()?;

    let cluster = cluster_config(args.kubeconfig.as_deref()).await?;
    let connected = observability::Connected::default();
    let client = kube::client::ClientBuilder::try_from(cluster.clone())
        .context("cannot build a Kubernetes client")?
        .with_layer(&observability::CountRequests(connected.clone()))
        .build();
    let version = client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server")?;
    tracing::info!(
        server_version = %version.git_version,
        agent_version = env!("CARGO_PKG_VERSION"),
        "agentk connected to its cluster"
    );

    let listener = tokio::net::TcpListener::bind(args.observability_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.observability_listen))?;
    let mut drain = shutdown.clone();
    let probes = axum::serve(listener, observability::router(connected.clone()))
        .with_graceful_shutdown(async move { drain.signalled().await });
    let probes = tokio::spawn(async move { probes.await });

    match kas_address {
        Some(kas_address) => {
            let api_versions = cluster_info::follow(client.clone(), shutdown.clone()).await;
            let renderer = render::AgentRenderer {
                helm: render::find_helm(args.helm.clone()).await,
                sandbox: render::sandbox(&args.render_sandbox),
                client: client.clone(),
                kube_version: version.git_version.clone(),
                api_versions: api_versions.clone(),
            };
            let config = config::ConfigState::new(log_level);
            let (reports_tx, reports) = tokio::sync::mpsc::unbounded_channel();
            let gitops = gitops::GitOps::new(
                client.clone(),
                config.clone(),
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|ns| !ns.is_empty())
                    .unwrap_or_else(|| "default".into()),
                reports_tx,
                Some(gitops::Election {
                    identity: pod_identity().name,
                    shutdown: shutdown.clone(),
                }),
            )
            .with_renderer(renderer)
            .with_observed(connected.clone())
            .with_events(if args.events {
                events::Recorder::start(
                    client.clone(),
                    pod_identity().name,
                    Some(connected.clone()),
                )
            } else {
                events::Recorder::disabled()
            });
            let token = match args.token_file {
                Some(path) => TokenSource::File(path),
                None => TokenSource::Env("AGENTK_TOKEN".into()),
            };
            let tunnels = tunnel::TunnelOptions {
                kas_address: kas_address.clone(),
                token: token.clone(),
                ca_cert: args.ca_cert.clone(),
                count: args.tunnels,
                upstream: apiserver::ApiServer::new(&cluster)?,
            };
            let tunnels = tokio::spawn(tunnel::run(tunnels, shutdown.clone()));
            let options = ConnectOptions {
                kas_address,
                token,
                ca_cert: args.ca_cert,
                cluster_version: version.git_version,
                api_versions,
                pod: pod_identity(),
                connected,
                config,
                gitops,
                reports: std::sync::Arc::new(tokio::sync::Mutex::new(reports)),
            };
            connection::run(options, shutdown).await;
            let _ = tunnels.await;
        }
        None => {
            tracing::warn!("no --kas-address: not connecting to kas");
            shutdown.signalled().await;
        }
    }
    let _ = probes.await;
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

async fn cluster_config(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    Ok(match kubeconfig {
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
    })
}
