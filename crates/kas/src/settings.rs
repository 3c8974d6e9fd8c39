//! `kas serve`'s settings: flags and environment variables override a YAML
//! config file (`--config`), which overrides the defaults.
//!
//! The file's keys are the flags' names with `_` for `-`:
//!
//! ```yaml
//! data_dir: /var/lib/kas
//! database: postgres://kas@db.example.com/kas   # default: SQLite in data_dir
//! api_listen: 0.0.0.0:8150
//! admin_listen: 0.0.0.0:8151
//! agent_listen: 0.0.0.0:8152
//! tls_cert: /etc/kas/tls.crt
//! tls_key: /etc/kas/tls.key
//! agent_external_address: grpcs://kas.example.com:443
//! hostnames: [kas.example.com]
//! poll_interval: 10s
//! helm: /usr/local/bin/helm            # charts and kustomizations are
//! kustomize: /usr/local/bin/kustomize  # rendered with these
//! render_timeout: 30s
//! k8s_proxy_listen: 0.0.0.0:8154
//! k8s_proxy_external_url: https://kas.example.com:8154/k8s-proxy
//! tls_ca: /etc/kas/ca.crt      # put in kubeconfigs; omit for a public CA
//! oidc_issuers:                # CI systems whose ID tokens kas trusts
//!   - issuer: https://gitlab.example.com
//!     audience: https://kas.example.com
//!     jwks_url: https://gitlab.example.com/oauth/discovery/keys
//! notifications:               # every agent's events, besides its own config's
//!   - provider: slack
//!     url_secret: platform-alerts
//!     events: [sync_failed, agent_disconnected, token_expiring]
//! notify_disconnected_after: 5m
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// `kas serve`'s settings as given: each is a flag (and an environment
/// variable) and a key of the settings file (`--config`), the flag's name
/// with `_`. A flag wins over the file; unknown keys are an error, so a
/// typo does not silently fall back to a default.
#[derive(Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    /// Folder for kas's database (kas.db), admin token file (admin-token)
    /// and git mirrors. Default: kas-data.
    #[arg(long, env = "KAS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where kas's records are: `postgres://…` (shared by replicas) or
    /// `sqlite://PATH`. Default: SQLite's kas.db in the data folder.
    #[arg(long, env = "KAS_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// Address of the REST API listener. Default: 127.0.0.1:8150.
    #[arg(long, env = "KAS_API_LISTEN")]
    pub api_listen: Option<SocketAddr>,
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`).
    /// Default: 127.0.0.1:8151.
    #[arg(long, env = "KAS_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Address of the agent endpoint (gRPC over TLS, and over WebSocket)
    /// that agentk dials. Default: 127.0.0.1:8152.
    #[arg(long, env = "KAS_AGENT_LISTEN")]
    pub agent_listen: Option<SocketAddr>,
    /// Certificate chain (PEM) of kas's TLS listeners. Without it and
    /// --tls-key, kas generates a development certificate.
    #[arg(long, env = "KAS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of kas's TLS listeners.
    #[arg(long, env = "KAS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The agent endpoint as clusters reach it, for install commands.
    /// Default: grpcs://<agent-listen>.
    #[arg(long, env = "KAS_AGENT_EXTERNAL_ADDRESS")]
    pub agent_external_address: Option<String>,
    /// Extra names for the generated development certificate.
    #[arg(long = "hostname", env = "KAS_HOSTNAMES", value_delimiter = ',')]
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Time between two polls of a git project (Go duration: 10s, 1m).
    /// Default: 10s.
    #[arg(long, env = "KAS_POLL_INTERVAL")]
    pub poll_interval: Option<String>,
    /// Address of the Kubernetes API proxy (HTTPS, same certificate as the
    /// agent endpoint). Default: 127.0.0.1:8154.
    #[arg(long, env = "KAS_K8S_PROXY_LISTEN")]
    pub k8s_proxy_listen: Option<SocketAddr>,
    /// The proxy's URL as kubectl reaches it, written into kubeconfigs.
    /// Default: https://<k8s-proxy-listen>/k8s-proxy.
    #[arg(long, env = "KAS_K8S_PROXY_EXTERNAL_URL")]
    pub k8s_proxy_external_url: Option<String>,
    /// CA certificate (PEM) that signed --tls-cert, written into
    /// kubeconfigs and trusted between replicas. Without --tls-cert, the
    /// development CA is used.
    #[arg(long, env = "KAS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The admin token's file. Replicas share one (mount the same secret).
    /// Default: admin-token in the data folder, created on first start.
    #[arg(long, env = "KAS_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The key file kas seals stored secrets with (webhook secrets, commit
    /// status tokens, notification URLs): at least 32 characters, shared
    /// by all replicas. Default: derived from the replicas' shared secret,
    /// or secrets-key in the data folder, created on first start.
    #[arg(long, env = "KAS_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// Address of the private kas-to-kas listener (HTTPS). Without it, kas
    /// runs single-replica: it serves only the tunnels it holds.
    #[arg(long, env = "KAS_PRIVATE_LISTEN")]
    pub private_listen: Option<SocketAddr>,
    /// The private listener's URL as the other replicas reach it
    /// (https://pod-ip:8155). Required with --private-listen.
    #[arg(long, env = "KAS_PRIVATE_URL")]
    pub private_url: Option<String>,
    /// File with the secret all replicas share (at least 32 characters).
    /// Required with --private-listen.
    #[arg(long, env = "KAS_PRIVATE_SECRET_FILE")]
    pub private_secret_file: Option<PathBuf>,
    /// How long a proxy request for an agent with no tunnel on any replica
    /// waits for one before 503 (with --private-listen). Default: 10s.
    #[arg(long, env = "KAS_TUNNEL_WAIT")]
    pub tunnel_wait: Option<String>,
    /// The helm program kas renders charts with: a path, or a name looked
    /// up on kas's PATH. Default: helm on PATH. Resolved once at start to
    /// an absolute path, logged with its version and shown by
    /// `/readyz?verbose`.
    #[arg(long, env = "KAS_HELM")]
    pub helm: Option<PathBuf>,
    /// The kustomize program kas renders kustomizations with, found as
    /// --helm is. Default: kustomize on PATH.
    #[arg(long, env = "KAS_KUSTOMIZE")]
    pub kustomize: Option<PathBuf>,
    /// How long one chart or kustomization may render before it is stopped
    /// (Go duration). Default: 30s.
    #[arg(long, env = "KAS_RENDER_TIMEOUT")]
    pub render_timeout: Option<String>,
    /// Renders running at once. Default: 2.
    #[arg(long, env = "KAS_RENDER_CONCURRENCY")]
    pub render_concurrency: Option<usize>,
    /// `on`: helm and kustomize run confined by the kernel (Landlock and
    /// seccomp: their folder and binary only, no network), and kas checks
    /// at start that the confinement holds, refusing to render if not.
    /// `off`: unconfined, warned of at every start and by the
    /// render_sandbox_off metric. Default: on.
    #[arg(long, env = "KAS_RENDER_SANDBOX")]
    pub render_sandbox: Option<String>,
    /// What a fetch made for a tenant (chart repositories, OCI registries,
    /// their redirects and token realms) may reach beyond public https://
    /// addresses: a CIDR range, an address or a host name; repeatable (or
    /// comma-separated). Loopback, link-local, private, CGNAT and
    /// unique-local addresses, and plain http://, are refused otherwise.
    #[arg(long = "egress-allow", env = "KAS_EGRESS_ALLOW", value_delimiter = ',')]
    #[serde(default)]
    pub egress_allow: Vec<String>,
    /// In the file only: a list does not fit a flag.
    #[arg(skip)]
    #[serde(default)]
    pub oidc_issuers: Vec<tether_proxy::oidc::IssuerSettings>,
    /// In the file only: destinations told of every agent's events.
    #[arg(skip)]
    #[serde(default)]
    pub notifications: Vec<tether_agent_config::Notification>,
    /// How long an agent must have no session before "agent disconnected"
    /// is told (Go duration). Default: 5m.
    #[arg(long, env = "KAS_NOTIFY_DISCONNECTED_AFTER")]
    pub notify_disconnected_after: Option<String>,
    /// Time between two scans of an image repository that a project's
    /// .tether/image-updates.yaml names (Go duration). Default: 5m.
    #[arg(long, env = "KAS_IMAGE_SCAN_INTERVAL")]
    pub image_scan_interval: Option<String>,
    /// File holding the secret image registries authenticate their push
    /// notifications with (POST /api/v1/registry/hooks/{provider}).
    /// Without it, registry notifications are refused.
    #[arg(long, env = "KAS_REGISTRY_HOOK_SECRET_FILE")]
    pub registry_hook_secret_file: Option<PathBuf>,
    /// OTLP endpoint traces are exported to, as OTEL_EXPORTER_OTLP_ENDPOINT
    /// means it (a base URL; `/v1/traces` is appended for HTTP; the
    /// protocol from OTEL_EXPORTER_OTLP_PROTOCOL, grpc or http/protobuf).
    /// Default: that variable; without either, no traces.
    #[arg(long, env = "KAS_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Metrics per agent and project (tether_sync_info and the like).
    /// `false` on very large fleets keeps only the fleet-wide counts.
    /// Default: true.
    #[arg(long, env = "KAS_METRICS_PER_AGENT")]
    pub metrics_per_agent: Option<bool>,
    /// Link to a trace in the web UI and CLI: a URL with `{trace_id}` in
    /// it, e.g. https://jaeger.example.com/trace/{trace_id}. Default: the
    /// trace id is shown, unlinked.
    #[arg(long, env = "KAS_TRACE_URL")]
    pub trace_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Derived {
    proxy_url: bool,
    agent_address: bool,
}

fn derived_proxy_url(listen: SocketAddr) -> String {
    format!("https://{listen}{}", tether_proxy::PATH_PREFIX)
}

fn derived_agent_address(listen: SocketAddr) -> String {
    format!("grpcs://{listen}")
}

/// Settings as `kas serve` runs with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// Where kas's records are.
    pub database: Database,
    pub api_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub agent_listen: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub agent_external_address: String,
    pub hostnames: Vec<String>,
    pub poll_interval: Duration,
    pub k8s_proxy_listen: SocketAddr,
    /// The proxy as clients reach it, for kubeconfigs.
    pub k8s_proxy_external_url: String,
    /// Which of the addresses above were made from a listen address, not
    /// given: [`Settings::bound_to`] makes them again from the bound one.
    derived: Derived,
    /// The CA that signed the TLS certificate, for kubeconfigs.
    pub tls_ca: Option<PathBuf>,
    pub oidc_issuers: Vec<tether_proxy::oidc::IssuerSettings>,
    /// The admin token's file.
    pub admin_token_file: PathBuf,
    /// The key stored secrets are sealed with, when given.
    pub secrets_key_file: Option<PathBuf>,
    /// With replicas: the private listener and the shared secret.
    pub replication: Option<tether_replicas::Replication>,
    /// How charts and kustomizations are rendered.
    pub render: tether_render::Settings,
    /// kas's own notification destinations, for every agent.
    pub notifications: Vec<tether_agent_config::Notification>,
    /// How long an agent is gone before it is told.
    pub notify_disconnected_after: Duration,
    pub image_scan_interval: Duration,
    pub registry_hook_secret_file: Option<PathBuf>,
    /// Where traces go (see `tether_runtime::telemetry`).
    pub otlp_endpoint: Option<String>,
    pub metrics_per_agent: bool,
    /// A trace's link, `{trace_id}` replaced.
    pub trace_url: Option<String>,
}

/// Where kas's records are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file: one kas on one machine.
    Sqlite(PathBuf),
    /// A PostgreSQL URL: shared by kas replicas. Never logged whole: it may
    /// hold a password.
    Postgres(String),
}

impl Database {
    /// `postgres://…` (or `postgresql://…`), `sqlite://PATH`, or by
    /// default SQLite's `kas.db` in the data folder.
    pub fn parse(url: Option<&str>, data_dir: &Path) -> anyhow::Result<Self> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(Database::Sqlite(data_dir.join("kas.db")));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Database::Postgres(url.to_owned()));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                bail!("database {url:?} names no file: sqlite:///var/lib/kas/kas.db");
            }
            return Ok(Database::Sqlite(PathBuf::from(path)));
        }
        bail!(
            "database {:?} is neither postgres://… nor sqlite://PATH",
            tether_git::redact(url)
        )
    }

    /// For logs: the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(path) => format!("sqlite://{}", path.display()),
            Database::Postgres(url) => tether_git::redact(url),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Database::Postgres(_))
    }
}

/// Shortest accepted poll interval: faster polling only loads git servers;
/// use the refresh endpoint for instant updates.
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

impl SettingsFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read settings file {}", path.display()))?;
        serde_saphyr::from_str::<Option<SettingsFile>>(&text)
            .map(Option::unwrap_or_default)
            .with_context(|| format!("invalid settings file {}", path.display()))
    }
}

/// Values given as flags or environment variables, `None` where not given:
/// the same shape as the file, so that each setting merges the same way.
pub type Overrides = SettingsFile;

impl Settings {
    /// These settings with each listen address the one bound (`bound`
    /// names them as `Bound::addresses` does), and the addresses made from
    /// one made again: port 0 becomes the port the kernel gave.
    pub fn bound_to(mut self, bound: &[(&str, SocketAddr)]) -> Self {
        for (name, addr) in bound.iter().copied() {
            match name {
                "api" => self.api_listen = addr,
                "admin" => self.admin_listen = addr,
                "agent" => self.agent_listen = addr,
                "k8s-proxy" => self.k8s_proxy_listen = addr,
                "private" => {
                    if let Some(replication) = &mut self.replication {
                        replication.listen = addr;
                    }
                }
                _ => {}
            }
        }
        if self.derived.proxy_url {
            self.k8s_proxy_external_url = derived_proxy_url(self.k8s_proxy_listen);
        }
        if self.derived.agent_address {
            self.agent_external_address = derived_agent_address(self.agent_listen);
        }
        self
    }

    /// Merges flags over the file over the defaults, and checks the result.
    /// Every problem is reported at once, not the first one only.
    pub fn resolve(flags: Overrides, file: SettingsFile) -> anyhow::Result<Self> {
        let mut problems: Vec<String> = Vec::new();
        let addr = |s: &str| -> SocketAddr { s.parse().expect("a valid default address") };
        let agent_listen = flags
            .agent_listen
            .or(file.agent_listen)
            .unwrap_or_else(|| addr("127.0.0.1:8152"));
        let tls = match (
            flags.tls_cert.or(file.tls_cert),
            flags.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                problems.push("tls_cert and tls_key go together: give both or neither".into());
                None
            }
        };
        let mut duration = |name: &str, value: Option<String>, default: Duration| match value {
            None => default,
            Some(text) => match tether_agent_config::parse_duration(&text) {
                Ok(d) => d,
                Err(e) => {
                    problems.push(format!("{name} {text:?}: {e}"));
                    default
                }
            },
        };
        let poll_interval = duration(
            "poll_interval",
            flags.poll_interval.or(file.poll_interval),
            tether_channel::repos::DEFAULT_POLL_INTERVAL,
        );
        let tunnel_wait = duration(
            "tunnel_wait",
            flags.tunnel_wait.or(file.tunnel_wait),
            DEFAULT_TUNNEL_WAIT,
        );
        let render_timeout = duration(
            "render_timeout",
            flags.render_timeout.or(file.render_timeout),
            tether_render::Limits::default().timeout,
        );
        let notify_disconnected_after = duration(
            "notify_disconnected_after",
            flags
                .notify_disconnected_after
                .or(file.notify_disconnected_after),
            Duration::from_secs(300),
        );
        let image_scan_interval = duration(
            "image_scan_interval",
            flags.image_scan_interval.or(file.image_scan_interval),
            tether_images::service::DEFAULT_SCAN_INTERVAL,
        );
        if poll_interval < MIN_POLL_INTERVAL {
            problems.push(format!(
                "poll_interval must be at least {MIN_POLL_INTERVAL:?}; use the refresh endpoint for instant updates"
            ));
        }
        if render_timeout.is_zero() || render_timeout > MAX_RENDER_TIMEOUT {
            problems.push(format!(
                "render_timeout must be more than 0 and at most {MAX_RENDER_TIMEOUT:?}"
            ));
        }
        if image_scan_interval < Duration::from_secs(10) {
            problems.push(
                "image_scan_interval must be at least 10s; registry notifications scan at once"
                    .into(),
            );
        }
        if notify_disconnected_after < Duration::from_secs(1) {
            problems.push("notify_disconnected_after must be at least 1s".into());
        }
        let render_concurrency = flags
            .render_concurrency
            .or(file.render_concurrency)
            .unwrap_or(2);
        if !(1..=64).contains(&render_concurrency) {
            problems.push("render_concurrency must be from 1 to 64".into());
        }
        // Only as given: `kas serve` resolves them once it starts (a bare
        // name on its PATH), since renders run with no PATH at all.
        let mut render = tether_render::Settings::new(
            flags.helm.or(file.helm),
            flags.kustomize.or(file.kustomize),
        );
        render.limits.timeout = render_timeout;
        match flags
            .render_sandbox
            .or(file.render_sandbox)
            .as_deref()
            .unwrap_or("on")
        {
            "on" => render.limits.sandbox = tether_render::SandboxMode::Kernel,
            "off" => render.limits.sandbox = tether_render::SandboxMode::Off,
            other => problems.push(format!("render_sandbox must be on or off, not {other:?}")),
        }
        let trace_url = flags.trace_url.clone().or(file.trace_url.clone());
        if let Some(url) = &trace_url
            && (!url.contains("{trace_id}")
                || !(url.starts_with("https://") || url.starts_with("http://")))
        {
            problems.push(format!(
                "trace_url {url:?} must be an http(s) URL with {{trace_id}} in it"
            ));
        }
        let egress_allow = if flags.egress_allow.is_empty() {
            file.egress_allow
        } else {
            flags.egress_allow
        };
        match tether_render::egress::Egress::parse(&egress_allow) {
            Ok(egress) => render.egress = egress,
            Err(e) => problems.push(e.to_string()),
        }
        render.concurrency = render_concurrency;
        if tunnel_wait > MAX_TUNNEL_WAIT {
            problems.push(format!("tunnel_wait must be at most {MAX_TUNNEL_WAIT:?}"));
        }
        let k8s_proxy_listen = flags
            .k8s_proxy_listen
            .or(file.k8s_proxy_listen)
            .unwrap_or_else(|| addr("127.0.0.1:8154"));
        let given_proxy_url = flags.k8s_proxy_external_url.or(file.k8s_proxy_external_url);
        let given_agent_address = flags.agent_external_address.or(file.agent_external_address);
        let derived = Derived {
            proxy_url: given_proxy_url.is_none(),
            agent_address: given_agent_address.is_none(),
        };
        let k8s_proxy_external_url =
            given_proxy_url.unwrap_or_else(|| derived_proxy_url(k8s_proxy_listen));
        if !k8s_proxy_external_url.starts_with("https://") {
            problems.push(format!(
                "k8s_proxy_external_url {k8s_proxy_external_url:?} must be an https:// URL"
            ));
        }
        let data_dir = flags
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("kas-data"));
        let database = match Database::parse(flags.database.or(file.database).as_deref(), &data_dir)
        {
            Ok(database) => database,
            Err(e) => {
                problems.push(format!("{e:#}"));
                Database::Sqlite(data_dir.join("kas.db"))
            }
        };
        let replication = replication(
            flags.private_listen.or(file.private_listen),
            flags.private_url.or(file.private_url),
            flags.private_secret_file.or(file.private_secret_file),
            tunnel_wait,
            &database,
            &mut problems,
        );
        if !problems.is_empty() {
            bail!("invalid settings:\n  - {}", problems.join("\n  - "));
        }
        Ok(Settings {
            render,
            admin_token_file: flags
                .admin_token_file
                .or(file.admin_token_file)
                .unwrap_or_else(|| data_dir.join("admin-token")),
            secrets_key_file: flags.secrets_key_file.or(file.secrets_key_file),
            replication,
            database,
            k8s_proxy_listen,
            k8s_proxy_external_url,
            tls_ca: flags.tls_ca.or(file.tls_ca),
            oidc_issuers: file.oidc_issuers,
            notifications: file.notifications,
            notify_disconnected_after,
            image_scan_interval,
            registry_hook_secret_file: flags
                .registry_hook_secret_file
                .or(file.registry_hook_secret_file),
            otlp_endpoint: flags.otlp_endpoint.or(file.otlp_endpoint),
            metrics_per_agent: flags
                .metrics_per_agent
                .or(file.metrics_per_agent)
                .unwrap_or(true),
            trace_url,
            data_dir,
            api_listen: flags
                .api_listen
                .or(file.api_listen)
                .unwrap_or_else(|| addr("127.0.0.1:8150")),
            admin_listen: flags
                .admin_listen
                .or(file.admin_listen)
                .unwrap_or_else(|| addr("127.0.0.1:8151")),
            agent_external_address: given_agent_address
                .unwrap_or_else(|| derived_agent_address(agent_listen)),
            derived,
            agent_listen,
            tls,
            hostnames: if flags.hostnames.is_empty() {
                file.hostnames
            } else {
                flags.hostnames
            },
            poll_interval,
        })
    }
}

/// Default of `tunnel_wait`: long enough for an agent to reconnect after
/// its replica went away.
pub const DEFAULT_TUNNEL_WAIT: Duration = Duration::from_secs(10);
/// Longest `render_timeout`: a render holds a slot for that long.
const MAX_RENDER_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest `tunnel_wait`: a request should not hang for minutes.
const MAX_TUNNEL_WAIT: Duration = Duration::from_secs(120);

/// The replication settings, when the private listener is asked for.
fn replication(
    listen: Option<SocketAddr>,
    url: Option<String>,
    secret_file: Option<PathBuf>,
    tunnel_wait: Duration,
    database: &Database,
    problems: &mut Vec<String>,
) -> Option<tether_replicas::Replication> {
    let Some(listen) = listen else {
        if url.is_some() || secret_file.is_some() {
            problems.push("private_url and private_secret_file need private_listen".into());
        }
        return None;
    };
    if !database.is_shared() {
        problems
            .push("private_listen needs a database shared by the replicas (postgres://…)".into());
    }
    let url = match url {
        Some(url) if url.starts_with("https://") => Some(url),
        Some(url) => {
            problems.push(format!("private_url {url:?} must be an https:// URL"));
            None
        }
        None => {
            problems.push(
                "private_listen needs private_url: the address other replicas reach it at".into(),
            );
            None
        }
    };
    let secret = match secret_file {
        Some(path) => match tether_replicas::Secret::load(&path) {
            Ok(secret) => Some(secret),
            Err(e) => {
                problems.push(format!("{e:#}"));
                None
            }
        },
        None => {
            problems.push(
                "private_listen needs private_secret_file: the replicas' shared secret".into(),
            );
            None
        }
    };
    Some(tether_replicas::Replication {
        listen,
        url: url?,
        secret: secret?,
        tunnel_wait,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> SettingsFile {
        serde_saphyr::from_str(text).expect("parses")
    }

    #[test]
    fn port_zero_becomes_the_bound_port_in_what_is_derived_and_nothing_given_changes() {
        let f = file("agent_listen: 127.0.0.1:0\nk8s_proxy_listen: 127.0.0.1:0\n");
        let s = Settings::resolve(Overrides::default(), f).expect("valid");
        let bound = [
            ("agent", "127.0.0.1:41001".parse().expect("addr")),
            ("k8s-proxy", "127.0.0.1:41002".parse().expect("addr")),
        ];
        let s = s.bound_to(&bound);
        assert_eq!(s.agent_external_address, "grpcs://127.0.0.1:41001");
        assert_eq!(
            s.k8s_proxy_external_url,
            "https://127.0.0.1:41002/k8s-proxy"
        );

        let f = file(
            "k8s_proxy_listen: 127.0.0.1:0\nk8s_proxy_external_url: https://kas.example.com/k8s-proxy\n",
        );
        let s = Settings::resolve(Overrides::default(), f).expect("valid");
        let s = s.bound_to(&bound);
        assert_eq!(s.k8s_proxy_listen.port(), 41002);
        assert_eq!(
            s.k8s_proxy_external_url,
            "https://kas.example.com/k8s-proxy"
        );
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let f = file("api_listen: 0.0.0.0:9000\nagent_listen: 0.0.0.0:9002\npoll_interval: 30s\n");
        let s = Settings::resolve(
            Overrides {
                api_listen: Some("127.0.0.1:7000".parse().expect("addr")),
                ..Overrides::default()
            },
            f,
        )
        .expect("valid");
        assert_eq!(s.api_listen.to_string(), "127.0.0.1:7000");
        assert_eq!(s.agent_listen.to_string(), "0.0.0.0:9002");
        assert_eq!(s.admin_listen.to_string(), "127.0.0.1:8151");
        assert_eq!(s.poll_interval, Duration::from_secs(30));
        assert_eq!(s.agent_external_address, "grpcs://0.0.0.0:9002");
    }

    #[test]
    fn the_sandbox_is_on_unless_turned_off_and_egress_entries_are_checked() {
        let s = Settings::resolve(Overrides::default(), SettingsFile::default()).expect("valid");
        assert_eq!(s.render.limits.sandbox, tether_render::SandboxMode::Kernel);
        assert_eq!(s.render.egress.to_string(), "public https:// only");
        let s = Settings::resolve(
            Overrides::default(),
            file("render_sandbox: \"off\"\negress_allow: [10.20.0.0/16, charts.internal]\n"),
        )
        .expect("valid");
        assert_eq!(s.render.limits.sandbox, tether_render::SandboxMode::Off);
        assert_eq!(
            s.render.egress.to_string(),
            "public https:// and 10.20.0.0/16, charts.internal"
        );
        let error = Settings::resolve(
            Overrides::default(),
            file("render_sandbox: maybe\negress_allow: [10.0.0.0/40]\n"),
        )
        .expect_err("invalid");
        let text = format!("{error:#}");
        assert!(text.contains("render_sandbox must be on or off"), "{text}");
        assert!(text.contains("10.0.0.0/40"), "{text}");
    }

    #[test]
    fn render_tools_are_kept_as_given_for_serve_to_resolve() {
        let s = Settings::resolve(Overrides::default(), SettingsFile::default()).expect("valid");
        assert_eq!((s.render.helm, s.render.kustomize), (None, None));
        let s = Settings::resolve(
            Overrides {
                helm: Some("helm3".into()),
                ..Overrides::default()
            },
            file("helm: /opt/helm\nkustomize: bin/kustomize\n"),
        )
        .expect("valid");
        assert_eq!(s.render.helm, Some(PathBuf::from("helm3")));
        assert_eq!(s.render.kustomize, Some(PathBuf::from("bin/kustomize")));
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        assert!(serde_saphyr::from_str::<SettingsFile>("api_listn: x\n").is_err());
        let half_tls =
            Settings::resolve(Overrides::default(), file("tls_cert: /etc/kas/tls.crt\n"));
        assert!(format!("{:#}", half_tls.expect_err("refused")).contains("tls_key"));
        let fast = Settings::resolve(Overrides::default(), file("poll_interval: 10ms\n"));
        assert!(format!("{:#}", fast.expect_err("refused")).contains("at least"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Settings::resolve(
            Overrides::default(),
            file(
                "tls_cert: /c\npoll_interval: 10ms\nprivate_listen: 0.0.0.0:8155\nprivate_url: http://kas-0:8155\nk8s_proxy_external_url: http://x\n",
            ),
        )
        .expect_err("refused");
        let text = format!("{err:#}");
        for part in [
            "tls_key",
            "at least",
            "shared by the replicas",
            "must be an https:// URL",
            "private_secret_file",
            "k8s_proxy_external_url",
        ] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
    }

    #[test]
    fn replication_needs_its_three_settings_and_a_long_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "x".repeat(40)).expect("write");
        let text = format!(
            "database: postgres://kas@db/kas\nprivate_listen: 0.0.0.0:8155\nprivate_url: https://kas-0:8155\nprivate_secret_file: {}\n",
            secret.display()
        );
        let s = Settings::resolve(Overrides::default(), file(&text)).expect("valid");
        let replication = s.replication.expect("replicated");
        assert_eq!(replication.url, "https://kas-0:8155");
        assert_eq!(replication.tunnel_wait, DEFAULT_TUNNEL_WAIT);
        assert!(!format!("{replication:?}").contains("xxxx"));
        std::fs::write(&secret, "short").expect("write");
        let err = Settings::resolve(Overrides::default(), file(&text)).expect_err("short");
        assert!(format!("{err:#}").contains("at least 32"), "{err:#}");
    }

    #[test]
    fn the_database_is_sqlite_in_the_data_dir_unless_named() {
        let dir = Path::new("/var/lib/kas");
        assert_eq!(
            Database::parse(None, dir).expect("default"),
            Database::Sqlite(dir.join("kas.db"))
        );
        assert_eq!(
            Database::parse(Some("sqlite:///srv/kas.db"), dir).expect("sqlite"),
            Database::Sqlite("/srv/kas.db".into())
        );
        let pg = Database::parse(Some("postgres://kas:s3cret@db:5432/kas"), dir).expect("pg");
        assert!(pg.is_shared());
        assert!(!pg.describe().contains("s3cret"), "{}", pg.describe());
        let bad = Database::parse(Some("mysql://u:s3cret@db/kas"), dir).expect_err("refused");
        assert!(!format!("{bad:#}").contains("s3cret"), "{bad:#}");
    }
}
