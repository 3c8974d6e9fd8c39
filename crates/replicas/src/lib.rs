//! kas as one of several replicas that share a PostgreSQL database.
//!
//! An agent's session and tunnels may land on any replica (a load balancer
//! picks), and so may a `kubectl` request for that agent. Each replica
//! records which agents' tunnels it holds ([`tracker`]); a proxy request at
//! a replica without a tunnel of its agent is forwarded over the private
//! kas-to-kas listener (kas's `proxy::private`) to one that has one ([`router`]),
//! and the receiving replica serves it from its own tunnels or answers 503:
//! it never routes again, so a request makes one hop at most and never
//! loops. This crate knows the store and the tunnels, nothing of the proxy
//! or of kas's changes: what it has to announce leaves on a channel.
//!
//! Without `--private-listen` none of this runs and kas serves only its own
//! tunnels, as a single kas does.

pub mod auth;
pub mod router;
pub mod tracker;

use std::net::SocketAddr;
use std::time::Duration;

/// How often a replica says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A replica silent for this long holds no tunnels as far as the others
/// are concerned (GitLab's agent server keeps registrations for 5 minutes;
/// a killed replica should stop attracting requests in seconds).
pub const FRESH: Duration = Duration::from_secs(20);
/// Rows of replicas silent this long are deleted by whoever notices.
pub const STALE: Duration = Duration::from_secs(600);

/// `kas serve`'s private-listener settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Replication {
    /// Where the private listener listens.
    pub listen: SocketAddr,
    /// Its URL as the other replicas reach it (`https://…`).
    pub url: String,
    /// The secret every replica shares: the root of the keys that sign
    /// forwarded requests, UI sessions and (without --secrets-key-file)
    /// sealed secrets, each derived with its own label. Never sent.
    pub secret: Secret,
    /// How long a proxy request waits for a tunnel of a disconnected agent
    /// to come up on some replica before it is answered 503.
    pub tunnel_wait: Duration,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("listen", &self.listen)
            .field("url", &self.url)
            .field("tunnel_wait", &self.tunnel_wait)
            .finish_non_exhaustive()
    }
}

/// The replicas' shared secret. Never printed; compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Shortest secret accepted: shorter ones are guessable.
pub const MIN_SECRET_LEN: usize = 32;

impl Secret {
    /// Reads the secret from `path` (surrounding whitespace is ignored).
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read private secret file {}", path.display()))?;
        Self::new(text.trim()).with_context(|| format!("private secret file {}", path.display()))
    }

    pub fn new(text: &str) -> anyhow::Result<Self> {
        if text.len() < MIN_SECRET_LEN {
            anyhow::bail!(
                "the secret has {} characters; at least {MIN_SECRET_LEN} are needed",
                text.len()
            );
        }
        Ok(Secret(text.to_owned()))
    }

    /// The secret's text, for deriving keys from it: kas's UI session and
    /// sealing keys, this crate's route key. Never for a log line.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_enough() {
        assert!(Secret::new("short").is_err());
        assert!(Secret::new(&"s".repeat(40)).is_ok());
    }
}
