//! `kas`, the Kubernetes Agent Server: registers agents, reads their git
//! repositories and keeps their tunnels (see ARCHITECTURE.md).
//!
//! This binary only parses the command line: `kas serve` hands its settings
//! to [`kas::server::Server`], the other commands are the CLI.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use kas::settings::{Settings, SettingsFile};
use tether_cli as cli;
use tether_runtime::{Shutdown, logging};

#[derive(Debug, Parser)]
#[command(name = "kas", version, about = "Tether's Kubernetes Agent Server")]
struct Cli {
    /// Log level when RUST_LOG is unset.
    #[arg(long, env = "KAS_LOG_LEVEL", default_value = "info", global = true)]
    log_level: String,
    /// Log lines as text, or as one JSON object each (for log
    /// collectors).
    #[arg(long, env = "KAS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    log_format: String,
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
    /// Where notifications go: the secrets agents' configs name.
    #[command(subcommand)]
    Notifications(cli::NotificationsCommand),
    /// The administrator's own credentials.
    #[command(subcommand)]
    Admin(cli::AdminCommand),
    /// Image automation: what each policy found, scans on demand.
    #[command(subcommand)]
    Image(cli::ImageCommand),
    /// Credentials kas scans image registries with.
    #[command(subcommand)]
    Registry(cli::RegistryCommand),
    /// Fleet rollouts: each project's waves, their control, and waiting
    /// for a commit from CI.
    #[command(subcommand)]
    Rollout(cli::RolloutCommand),
    /// Work with agent config files locally (no server needed).
    #[command(subcommand)]
    Config(cli::ConfigCommand),
    /// The book's generated reference pages, as Markdown (scripts/docs.sh).
    #[command(hide = true)]
    Docs { page: DocsPage },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DocsPage {
    /// Every command and flag of this program.
    Cli,
    /// Every operation and schema of the REST API (openapi.yaml).
    Api,
}

/// `kas serve`'s flags: the settings (each also a key of the --config file).
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// YAML settings file; its keys are these flags' names with `_`.
    #[arg(long, env = "KAS_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingsFile,
    /// The client commands' options (global, for `kas --server … project
    /// list`), kept out of `kas serve --help`: serve ignores them, and an
    /// environment that sets `KAS_SERVER` for the CLI must not stop it.
    #[arg(long, hide = true)]
    server: Option<String>,
    #[arg(long, hide = true)]
    ca_cert: Option<PathBuf>,
    #[arg(long, short, hide = true)]
    output: Option<cli::Output>,
}

impl ServeArgs {
    fn settings(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => SettingsFile::load(path)?,
            None => SettingsFile::default(),
        };
        Settings::resolve(self.settings, file)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let format = logging::LogFormat::named(&cli.log_format);
    if !matches!(cli.command, Command::Serve(_)) {
        logging::init(&cli.log_level, format);
    }
    match cli.command {
        Command::Serve(args) => match serve(*args, &cli.log_level, format).await {
            Ok(()) => Ok(()),
            // A listener's address taken is its own exit status, so that a
            // supervisor (or a test picking free ports) can tell it apart.
            Err(e) if address_in_use(&e) => {
                eprintln!("Error: {e:?}");
                std::process::exit(EXIT_ADDRESS_IN_USE);
            }
            Err(e) => Err(e),
        },
        Command::Project(c) => cli::run(&cli.connection, cli::Command::Project(c)).await,
        Command::Agent(c) => waited(cli::run(&cli.connection, cli::Command::Agent(c)).await),
        Command::Token(c) => cli::run(&cli.connection, cli::Command::Token(c)).await,
        Command::Image(c) => cli::run(&cli.connection, cli::Command::Image(c)).await,
        Command::Registry(c) => cli::run(&cli.connection, cli::Command::Registry(c)).await,
        Command::Rollout(c) => waited(cli::run(&cli.connection, cli::Command::Rollout(c)).await),
        Command::User(c) => cli::run(&cli.connection, cli::Command::User(c)).await,
        Command::Kubeconfig(a) => cli::run(&cli.connection, cli::Command::Kubeconfig(a)).await,
        Command::Notifications(c) => {
            cli::run(&cli.connection, cli::Command::Notifications(c)).await
        }
        Command::Admin(c) => cli::run(&cli.connection, cli::Command::Admin(c)).await,
        Command::Docs { page } => {
            let text = match page {
                DocsPage::Cli => cli::docs::cli_reference(&Cli::command()),
                DocsPage::Api => cli::docs::api_reference(include_str!("../openapi.yaml"))?,
            };
            print!("{text}");
            Ok(())
        }
        Command::Config(cli::ConfigCommand::Check { files }) => {
            let output = cli.connection.output();
            let ok = cli::check::run(&files, output, &mut std::io::stdout().lock())?;
            std::process::exit(if ok { 0 } else { 1 });
        }
    }
}

/// A wait that ended otherwise than done exits with its own code, for CI.
fn waited(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e) if e.downcast_ref::<cli::WaitEnded>().is_some() => {
            let code = e.downcast_ref::<cli::WaitEnded>().map_or(1, |w| w.code);
            eprintln!("{e}");
            std::process::exit(code);
        }
        other => other,
    }
}

/// `kas serve`'s exit status when an address it must listen on is taken
/// (EADDRINUSE's number on Linux).
const EXIT_ADDRESS_IN_USE: i32 = 98;

fn address_in_use(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}

async fn serve(args: ServeArgs, level: &str, format: logging::LogFormat) -> anyhow::Result<()> {
    // Before the settings, so that their errors are logged as the rest.
    let settings = args.settings();
    let otlp = match &settings {
        Ok(s) => {
            tether_runtime::telemetry::Settings::from_env(s.otlp_endpoint.as_deref(), "kas", |k| {
                std::env::var(k).ok()
            })?
        }
        Err(_) => None,
    };
    let (_, traces) = logging::init_traced(level, format, otlp.as_ref())?;
    if let Some(otlp) = &otlp {
        tracing::info!(url = %otlp.shown_url(), protocol = ?otlp.protocol, "exporting traces over OTLP");
    }
    let settings = settings?;
    let shutdown = Shutdown::on_signal();
    match tether_runtime::limits::raise_open_files() {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let ran = kas::server::Server::run(settings, shutdown).await;
    traces.shutdown().await;
    ran
}
