//! The one door of the agent endpoint: sessions and tunnels both come in
//! here with an agent token.
//!
//! A valid token is always let in, whatever else comes from its address: the
//! token is checked first (one hash lookup), and only failures are counted,
//! per source address and per token prefix. Past the limit a failure is
//! delayed before its answer, never a success; delayed failures are bounded
//! too, so a flood cannot park unbounded tasks here.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_credentials::{Token, TokenHash, TokenKind};
use tether_store::{Agent, Store, TokenStatus};
use tokio::sync::Semaphore;

use crate::metrics::ChannelMetrics;
use crate::ratelimit::FailedAuthLimiter;
use tether_store::time::{now, to_rfc3339};

/// How long a failure past the limit waits before its answer.
pub const FAILURE_DELAY: Duration = Duration::from_secs(1);
/// Failures waiting out their delay at once; past it they are answered at
/// once, still refused.
const MAX_DELAYED: usize = 256;
/// Characters of a token's secret part counted as its prefix.
const PREFIX_CHARS: usize = 8;

/// An authenticated agent token.
#[derive(Clone, Debug)]
pub struct Admitted {
    pub agent: Agent,
    pub token_id: i64,
    /// When the token stops being valid (Unix seconds), if it does.
    pub expires_at: Option<i64>,
    hash: TokenHash,
}

impl Admitted {
    /// Time left before the token expires, if it expires.
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_at
            .map(|at| Duration::from_secs(u64::try_from(at - now()).unwrap_or(0)))
    }
}

/// Why an agent token was not accepted.
#[derive(Debug)]
pub enum Refusal {
    /// Say so to the agent: missing, malformed, unknown, revoked, expired.
    Unauthenticated(String),
    /// Refused, and slowed down: too many failures from this address or
    /// with this token prefix.
    Throttled(String),
    /// kas cannot check tokens right now.
    Unavailable(String),
}

/// Checks agent tokens for sessions and tunnels.
pub struct AgentAuth {
    store: Arc<dyn Store>,
    failures: FailedAuthLimiter,
    delayed: Semaphore,
    metrics: ChannelMetrics,
}

impl std::fmt::Debug for AgentAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentAuth").finish_non_exhaustive()
    }
}

impl AgentAuth {
    pub fn new(store: Arc<dyn Store>, metrics: ChannelMetrics) -> Self {
        AgentAuth {
            store,
            failures: FailedAuthLimiter::default(),
            delayed: Semaphore::new(MAX_DELAYED),
            metrics,
        }
    }

    /// The agent of an `Authorization: Bearer <agent token>` header sent
    /// from `peer`, or why not.
    pub async fn admit(
        &self,
        header: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Admitted, Refusal> {
        let token = header
            .and_then(|h| Token::from_bearer(h).ok())
            .filter(|t| t.kind() == TokenKind::Agent);
        let outcome = match (&token, header) {
            (_, None) => Err(Refusal::Unauthenticated(
                "no agent token: send authorization: Bearer <agent token>".into(),
            )),
            (None, Some(_)) => Err(Refusal::Unauthenticated("malformed agent token".into())),
            (Some(token), Some(_)) => self.check(token.hash()).await,
        };
        let Err(Refusal::Unauthenticated(reason)) = outcome else {
            return outcome;
        };
        self.metrics.auth_failures.inc();
        let prefix = token.as_ref().map(|t| {
            let secret = t.expose_secret();
            let end = secret
                .char_indices()
                .nth(TokenKind::Agent.prefix().len() + PREFIX_CHARS)
                .map_or(secret.len(), |(i, _)| i);
            secret[..end].to_owned()
        });
        if !self
            .failures
            .record_failure(peer, prefix.as_deref(), Instant::now())
        {
            return Err(Refusal::Unauthenticated(reason));
        }
        if let Ok(_permit) = self.delayed.try_acquire() {
            tokio::time::sleep(FAILURE_DELAY).await;
        }
        let from = peer.map(|ip| format!(" from {ip}")).unwrap_or_default();
        Err(Refusal::Throttled(format!(
            "{reason}; too many failed authentications{from}, so this answer was delayed"
        )))
    }

    /// Whether the token of `admitted` is still the valid token of its agent:
    /// called once a session or tunnel is registered, so that a revocation
    /// between the first check and the registration is not missed.
    pub async fn still_valid(&self, admitted: &Admitted) -> Result<(), Refusal> {
        match self.check(admitted.hash).await? {
            again if again.token_id == admitted.token_id => Ok(()),
            _ => Err(Refusal::Unauthenticated("agent token changed".into())),
        }
    }

    async fn check(&self, hash: TokenHash) -> Result<Admitted, Refusal> {
        let status = self.store.authenticate(&hash, now()).await.map_err(|e| {
            tracing::error!(error = ?e, "cannot check an agent token");
            Refusal::Unavailable("kas cannot check tokens right now".into())
        })?;
        match status {
            TokenStatus::Active { agent, token } => Ok(Admitted {
                agent,
                token_id: token.id,
                expires_at: token.expires_at,
                hash,
            }),
            TokenStatus::Revoked { revoked_at } => Err(Refusal::Unauthenticated(format!(
                "agent token was revoked at {}",
                to_rfc3339(revoked_at)
            ))),
            TokenStatus::Expired { expired_at } => Err(Refusal::Unauthenticated(format!(
                "agent token expired at {}",
                to_rfc3339(expired_at)
            ))),
            TokenStatus::Unknown => Err(Refusal::Unauthenticated("unknown agent token".into())),
        }
    }
}
