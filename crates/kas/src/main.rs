//! `kas`, the Kubernetes Agent Server: registers agents, reads their git
//! repositories and keeps their tunnels (see ARCHITECTURE.md).
//!
//! This binary only wires configuration into the `kas` library: the store in
//! the data folder, the admin token, and the listeners: REST API, health,
//! agent endpoint and Kubernetes API proxy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kas::metrics::Metrics;
use kas::repos::Repos;
use kas::settings::{Database, Overrides, Settings, SettingsFile};
use kas::{admin, admin_token, api, channel, cli};
use tether_runtime::{Shutdown, logging};
use tether_store::{PgStore, SqliteStore};

#[derive(Debug, Parser)]
#[command(name = "kas", version, about = "Tether's Kubernetes Agent Server")]
struct Cli {
    /// Log level when RUST_LOG is unset.
    #[arg(long, env = "KAS_LOG_LEVEL", default_value = "info", global = true)]
    log_level: String,
    /// Where the client commands find kas (ignored by `serve`).
    #[command(flatten)]
    connection: cli::Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server until SIGINT or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Register, list, show and delete git projects.
    #[command(subcommand)]
    Project(cli::ProjectCommand),
    /// Create, list, show and delete agents.
    #[command(subcommand)]
    Agent(cli::AgentCommand),
    /// Create, list and revoke agent tokens.
    #[command(subcommand)]
    Token(cli::TokenCommand),
    /// Users of the Kubernetes API proxy, their memberships and tokens.
    #[command(subcommand)]
    User(cli::UserCommand),
    /// Write a kubeconfig that reaches an agent's cluster through kas.
    Kubeconfig(cli::KubeconfigArgs),
    /// Work with agent config files locally (no server needed).
    #[command(subcommand)]
    Config(cli::ConfigCommand),
}

/// `kas serve`'s flags. Each may also come from the settings file given
/// with --config (key: the flag's name with `_`); a flag wins over the file.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// YAML settings file; its keys are these flags' names with `_`.
    #[arg(long, env = "KAS_CONFIG")]
    config: Option<PathBuf>,
    /// Folder for kas's database (kas.db), admin token file (admin-token)
    /// and git mirrors. Default: kas-data.
    #[arg(long, env = "KAS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where kas's records are: `postgres://…` (shared by replicas) or
    /// `sqlite://PATH`. Default: SQLite's kas.db in the data folder.
    #[arg(long, env = "KAS_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// Address of the REST API listener. Default: 127.0.0.1:8150.
    #[arg(long, env = "KAS_API_LISTEN")]
    api_listen: Option<SocketAddr>,
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`).
    /// Default: 127.0.0.1:8151.
    #[arg(long, env = "KAS_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Address of the agent endpoint (gRPC over TLS, and over WebSocket)
    /// that agentk dials. Default: 127.0.0.1:8152.
    #[arg(long, env = "KAS_AGENT_LISTEN")]
    agent_listen: Option<SocketAddr>,
    /// Certificate chain (PEM) of the agent endpoint. Without it and
    /// --tls-key, kas generates a development certificate.
    #[arg(long, env = "KAS_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the agent endpoint.
    #[arg(long, env = "KAS_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// The agent endpoint as clusters reach it, for install commands.
    /// Default: grpcs://<agent-listen>.
    #[arg(long, env = "KAS_AGENT_EXTERNAL_ADDRESS")]
    agent_external_address: Option<String>,
    /// Extra names for the generated development certificate.
    #[arg(long = "hostname", env = "KAS_HOSTNAMES", value_delimiter = ',')]
    hostnames: Vec<String>,
    /// Time between two polls of a git project (Go duration: 10s, 1m).
    /// Default: 10s.
    #[arg(long, env = "KAS_POLL_INTERVAL")]
    poll_interval: Option<String>,
    /// Address of the Kubernetes API proxy (HTTPS, same certificate as the
    /// agent endpoint). Default: 127.0.0.1:8154.
    #[arg(long, env = "KAS_K8S_PROXY_LISTEN")]
    k8s_proxy_listen: Option<SocketAddr>,
    /// The proxy's URL as kubectl reaches it, written into kubeconfigs.
    /// Default: https://<k8s-proxy-listen>/k8s-proxy.
    #[arg(long, env = "KAS_K8S_PROXY_EXTERNAL_URL")]
    k8s_proxy_external_url: Option<String>,
    /// CA certificate (PEM) that signed --tls-cert, written into
    /// kubeconfigs. Without --tls-cert, the development CA is used.
    #[arg(long, env = "KAS_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

impl ServeArgs {
    fn settings(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => SettingsFile::load(path)?,
            None => SettingsFile::default(),
        };
        Settings::resolve(
            Overrides {
                data_dir: self.data_dir,
                database: self.database,
                api_listen: self.api_listen,
                admin_listen: self.admin_listen,
                agent_listen: self.agent_listen,
                tls_cert: self.tls_cert,
                tls_key: self.tls_key,
                agent_external_address: self.agent_external_address,
                hostnames: self.hostnames,
                poll_interval: self.poll_interval,
                k8s_proxy_listen: self.k8s_proxy_listen,
                k8s_proxy_external_url: self.k8s_proxy_external_url,
                tls_ca: self.tls_ca,
                oidc_issuers: Vec::new(),
            },
            file,
        )
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(&cli.log_level, logging::LogFormat::Text);
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Project(c) => cli::run(&cli.connection, cli::Command::Project(c)).await,
        Command::Agent(c) => cli::run(&cli.connection, cli::Command::Agent(c)).await,
        Command::Token(c) => cli::run(&cli.connection, cli::Command::Token(c)).await,
        Command::User(c) => cli::run(&cli.connection, cli::Command::User(c)).await,
        Command::Kubeconfig(a) => cli::run(&cli.connection, cli::Command::Kubeconfig(a)).await,
        Command::Config(cli::ConfigCommand::Check { files }) => {
            let output = cli.connection.output();
            let ok = cli::check::run(&files, output, &mut std::io::stdout().lock())?;
            std::process::exit(if ok { 0 } else { 1 });
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let args = args.settings()?;
    let shutdown = Shutdown::on_signal();
    match tether_runtime::limits::raise_open_files() {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data folder {}", args.data_dir.display()))?;
    // The folder holds token hashes and the admin token: kas's user only.
    std::fs::set_permissions(
        &args.data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .with_context(|| format!("cannot restrict data folder {}", args.data_dir.display()))?;
    // With a shared database, changes are announced to the other kas
    // processes through it.
    let (store, feed): (
        Arc<dyn tether_store::Store>,
        Option<Arc<dyn tether_store::ChangeFeed>>,
    ) = match &args.database {
        Database::Sqlite(path) => (
            Arc::new(
                SqliteStore::open(path)
                    .with_context(|| format!("cannot open database {}", path.display()))?,
            ),
            None,
        ),
        Database::Postgres(url) => {
            let pg =
                Arc::new(PgStore::connect(url).await.with_context(|| {
                    format!("cannot open database {}", args.database.describe())
                })?);
            (pg.clone(), Some(pg))
        }
    };
    if args.database.is_shared() && args.tls.is_none() {
        tracing::warn!(
            "the database is shared with other kas replicas, but no --tls-cert/--tls-key is given: \
             this kas generates a development CA of its own, which agents and clients of the other \
             replicas do not trust; give every replica the same certificate"
        );
    }
    let admin_token = admin_token::load_or_create(&args.data_dir.join("admin-token"))?;
    let metrics = Metrics::default();
    let connections = Arc::new(channel::ConnectionRegistry::with_metrics(metrics.clone()));
    let repos = Repos::new(
        store.clone(),
        args.data_dir.join("git-mirrors"),
        args.poll_interval,
        metrics.clone(),
    );
    let identity = channel::tls::load_or_generate(
        args.tls.as_ref().map(|(cert, _)| cert.as_path()),
        args.tls.as_ref().map(|(_, key)| key.as_path()),
        &args.hostnames,
        &args.data_dir,
    )?;
    let ca_path = match (&args.tls, &args.tls_ca) {
        (_, Some(ca)) => Some(ca.clone()),
        (None, None) => Some(args.data_dir.join("agent-ca.crt")),
        (Some(_), None) => None,
    };
    let ca_pem = ca_path
        .map(|p| {
            std::fs::read_to_string(&p).with_context(|| format!("cannot read CA {}", p.display()))
        })
        .transpose()?;
    let proxy = Arc::new(kas::proxy::ProxyState {
        store: store.clone(),
        registry: connections.clone(),
        oidc: kas::proxy::oidc::Oidc::new(args.oidc_issuers.clone())?,
        external_url: args.k8s_proxy_external_url.clone(),
        ca_pem,
        admissions: Default::default(),
        streams: Default::default(),
    });
    let mut changes = kas::changes::Changes::new(connections.clone(), proxy.clone(), store.clone());
    if let Some(feed) = feed {
        changes = changes.with_feed(feed);
        tokio::spawn(changes.clone().follow(shutdown.clone()));
    }
    let state = api::ApiState {
        store: store.clone(),
        admin_token: admin_token.hash(),
        connections: connections.clone(),
        agent_external_address: args.agent_external_address.clone(),
        repos: repos.clone(),
        changes: changes.clone(),
        proxy: proxy.clone(),
    };
    drop(admin_token);
    let k8s_proxy = kas::proxy::serve(
        args.k8s_proxy_listen,
        channel::listener::acceptor(&identity)?,
        proxy,
        shutdown.clone(),
    );

    // The REST API carries the admin token: beyond loopback it is served
    // over TLS only, with the agent endpoint's certificate.
    let api_tls = match args.api_listen.ip().is_loopback() {
        true => None,
        false => Some(channel::listener::acceptor(&identity)?),
    };
    let api = kas::serve::serve(
        "api",
        args.api_listen,
        api_tls,
        shutdown.clone(),
        kas::serve::router_service(api::router(state)),
    );
    let health = kas::serve::serve(
        "admin",
        args.admin_listen,
        None,
        shutdown.clone(),
        kas::serve::router_service(admin::router(metrics)),
    );
    let agents = serve_agents(
        args.agent_listen,
        identity,
        channel::AgentChannelService::new(store, connections, repos).with_drain(shutdown.clone()),
        shutdown.clone(),
    );
    tracing::info!(version = env!("CARGO_PKG_VERSION"), data = %args.data_dir.display(), database = %args.database.describe(), "kas started");
    tokio::try_join!(api, health, agents, k8s_proxy)?;
    tracing::info!("kas stopped");
    Ok(())
}

/// Serves the agent endpoint, gRPC over TLS and over WebSocket on the same
/// port, until the drain signal.
async fn serve_agents(
    addr: SocketAddr,
    identity: channel::tls::ServingIdentity,
    service: channel::AgentChannelService,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    use std::time::Duration;
    use tonic::transport::Server;
    let acceptor = channel::listener::acceptor(&identity)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on agent address {addr}"))?;
    let local = listener
        .local_addr()
        .context("listener has no local address")?;
    tracing::info!(listener = "agent", addr = %local, "listening (gRPC over TLS, and over WebSocket)");
    let mut accept_stop = shutdown.clone();
    let incoming =
        channel::listener::incoming(listener, acceptor, service.tunnel_gate(), async move {
            accept_stop.signalled().await
        });
    let mut drain = shutdown;
    Server::builder()
        // Find dead peers behind NATs and proxies that drop idle flows.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // agentk opens one session per connection; more is a client
        // pinning kas's memory.
        .max_concurrent_streams(Some(channel::service::MAX_STREAMS_PER_CONNECTION))
        .add_service(tether_proto::v1::agent_channel_server::AgentChannelServer::new(service))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(incoming),
            async move { drain.signalled().await },
        )
        .await
        .context("agent listener failed")
}
