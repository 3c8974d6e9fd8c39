//! The proxy's live exchanges (watches, `logs -f`, exec and port-forward
//! sessions), by who opened them, so that revoking a credential ends what
//! it already opened and not only what it would open next.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tether_agent_config::AgentName;
use tether_tunnel::stop::Stop;
use tokio::sync::watch;

use super::principal::Principal;

/// Who opened an exchange, as far as revocations are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opener {
    /// A user, with a personal access token.
    User(String),
    /// A CI job with a project access token.
    ProjectToken { project: String, token_id: i64 },
    /// A CI job with an ID token of a trusted issuer.
    IdToken { project: String },
}

impl Opener {
    pub fn of(principal: &Principal) -> Self {
        match principal {
            Principal::User(user) => Opener::User(user.name.clone()),
            Principal::CiJob(job) => match job
                .via
                .strip_prefix("project_token:")
                .and_then(|id| id.parse().ok())
            {
                Some(token_id) => Opener::ProjectToken {
                    project: job.project.clone(),
                    token_id,
                },
                None => Opener::IdToken {
                    project: job.project.clone(),
                },
            },
        }
    }
}

struct Entry {
    agent: AgentName,
    opener: Opener,
    stop: watch::Sender<bool>,
}

/// Every exchange the proxy is carrying.
#[derive(Default)]
pub struct LiveStreams {
    next: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
}

impl std::fmt::Debug for LiveStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveStreams")
            .field("open", &self.len())
            .finish()
    }
}

/// Removes its exchange from the registry when the exchange ends.
struct Registered {
    streams: Arc<LiveStreams>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.streams.entries).remove(&self.id);
    }
}

impl LiveStreams {
    /// Registers an exchange; the returned [`Stop`] ends it when stopped,
    /// and unregisters it when the exchange ends.
    pub fn open(self: &Arc<Self>, agent: &AgentName, opener: Opener) -> Stop {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (stop, signal) = watch::channel(false);
        lock(&self.entries).insert(
            id,
            Entry {
                agent: agent.clone(),
                opener,
                stop,
            },
        );
        Stop::new(
            signal,
            Registered {
                streams: self.clone(),
                id,
            },
        )
    }

    /// Ends every exchange whose agent and opener match; returns how many.
    pub fn stop_where(&self, matches: impl Fn(&AgentName, &Opener) -> bool) -> usize {
        let entries = lock(&self.entries);
        let mut n = 0;
        for entry in entries.values().filter(|e| matches(&e.agent, &e.opener)) {
            let _ = entry.stop.send(true);
            n += 1;
        }
        n
    }

    /// Exchanges open now.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stopping_ends_only_the_matching_exchanges_and_ended_ones_leave() {
        let streams = Arc::new(LiveStreams::default());
        let prod = AgentName::new("prod").expect("valid");
        let mut alice = streams.open(&prod, Opener::User("alice".into()));
        let bob = streams.open(&prod, Opener::User("bob".into()));
        assert_eq!(streams.len(), 2);
        let stopped = streams.stop_where(|_, o| *o == Opener::User("alice".into()));
        assert_eq!(stopped, 1);
        tokio::time::timeout(std::time::Duration::from_secs(1), alice.stopped())
            .await
            .expect("alice's exchange stops");
        drop(alice);
        drop(bob);
        assert!(streams.is_empty());
    }
}
