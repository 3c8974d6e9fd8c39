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
//! k8s_proxy_listen: 0.0.0.0:8154
//! k8s_proxy_external_url: https://kas.example.com:8154/k8s-proxy
//! tls_ca: /etc/kas/ca.crt      # put in kubeconfigs; omit for a public CA
//! oidc_issuers:                # CI systems whose ID tokens kas trusts
//!   - issuer: https://gitlab.example.com
//!     audience: https://kas.example.com
//!     jwks_url: https://gitlab.example.com/oauth/discovery/keys
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The settings file. Every key is optional; unknown keys are an error, so a
/// typo does not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    pub data_dir: Option<PathBuf>,
    pub database: Option<String>,
    pub api_listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub agent_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub agent_external_address: Option<String>,
    #[serde(default)]
    pub hostnames: Vec<String>,
    pub poll_interval: Option<String>,
    pub k8s_proxy_listen: Option<SocketAddr>,
    pub k8s_proxy_external_url: Option<String>,
    pub tls_ca: Option<PathBuf>,
    /// In the file only: a list does not fit a flag.
    #[serde(default)]
    pub oidc_issuers: Vec<crate::proxy::oidc::IssuerSettings>,
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
    /// The CA that signed the TLS certificate, for kubeconfigs.
    pub tls_ca: Option<PathBuf>,
    pub oidc_issuers: Vec<crate::proxy::oidc::IssuerSettings>,
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
    pub fn resolve(flags: Overrides, file: SettingsFile) -> anyhow::Result<Self> {
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
            _ => bail!("tls_cert and tls_key go together: give both or neither"),
        };
        let poll_interval = match flags.poll_interval.or(file.poll_interval) {
            None => crate::repos::DEFAULT_POLL_INTERVAL,
            Some(text) => tether_agent_config::parse_duration(&text)
                .map_err(|e| anyhow::anyhow!("poll_interval {text:?}: {e}"))?,
        };
        if poll_interval < MIN_POLL_INTERVAL {
            bail!(
                "poll_interval must be at least {MIN_POLL_INTERVAL:?}; use the refresh endpoint for instant updates"
            );
        }
        let k8s_proxy_listen = flags
            .k8s_proxy_listen
            .or(file.k8s_proxy_listen)
            .unwrap_or_else(|| addr("127.0.0.1:8154"));
        let k8s_proxy_external_url = flags
            .k8s_proxy_external_url
            .or(file.k8s_proxy_external_url)
            .unwrap_or_else(|| format!("https://{k8s_proxy_listen}{}", crate::proxy::PATH_PREFIX));
        if !k8s_proxy_external_url.starts_with("https://") {
            bail!("k8s_proxy_external_url {k8s_proxy_external_url:?} must be an https:// URL");
        }
        let data_dir = flags
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("kas-data"));
        let database = Database::parse(flags.database.or(file.database).as_deref(), &data_dir)?;
        Ok(Settings {
            database,
            k8s_proxy_listen,
            k8s_proxy_external_url,
            tls_ca: flags.tls_ca.or(file.tls_ca),
            oidc_issuers: file.oidc_issuers,
            data_dir,
            api_listen: flags
                .api_listen
                .or(file.api_listen)
                .unwrap_or_else(|| addr("127.0.0.1:8150")),
            admin_listen: flags
                .admin_listen
                .or(file.admin_listen)
                .unwrap_or_else(|| addr("127.0.0.1:8151")),
            agent_external_address: flags
                .agent_external_address
                .or(file.agent_external_address)
                .unwrap_or_else(|| format!("grpcs://{agent_listen}")),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> SettingsFile {
        serde_saphyr::from_str(text).expect("parses")
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
    fn bad_settings_are_refused_with_the_reason() {
        assert!(serde_saphyr::from_str::<SettingsFile>("api_listn: x\n").is_err());
        let half_tls =
            Settings::resolve(Overrides::default(), file("tls_cert: /etc/kas/tls.crt\n"));
        assert!(format!("{:#}", half_tls.expect_err("refused")).contains("tls_key"));
        let fast = Settings::resolve(Overrides::default(), file("poll_interval: 10ms\n"));
        assert!(format!("{:#}", fast.expect_err("refused")).contains("at least"));
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
