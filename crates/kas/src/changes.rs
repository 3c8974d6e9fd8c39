//! One place that turns a change of kas's records into all its
//! consequences: which sessions, tunnels and proxied exchanges end, what is
//! forgotten, what sessions decide again. Handlers record the change in the
//! store, then hand it here; none of them closes or forgets anything itself,
//! so a new consequence is added once, for every way the change can happen.
//!
//! With a shared database every change is also published on the store's
//! [`ChangeFeed`], and every other kas applies it too: a token revoked
//! through one replica cuts the agent connected to another. When the feed
//! may have lost changes (its listener reconnected), kas re-checks the
//! tokens of the sessions it holds.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tether_store::{ChangeFeed, FeedEvent, Store, TokenOwner};

use tether_channel::{LiveAgents, SessionControl};
use tether_proxy::Proxy;
use tether_proxy::streams::Opener;

use tether_channel::repos::{NewHead, Repos};
use tether_replicas::router::Router;

/// Something that happened to kas's records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// An agent token was revoked; `reason` is what the agent is told.
    AgentTokenRevoked {
        token_id: i64,
        reason: String,
    },
    AgentDeleted {
        name: String,
    },
    /// A project or personal access token was revoked.
    AccessTokenRevoked {
        #[serde(with = "owner")]
        owner: TokenOwner,
        token_id: i64,
    },
    /// A user was deleted or their memberships changed.
    UserChanged {
        name: String,
    },
    /// A project was deleted, with its access tokens.
    ProjectDeleted {
        id: String,
    },
    /// A manifest project was granted to an agent, or the grant revoked.
    ManifestGrantsChanged,
    /// The first tunnel of an agent came up on a replica: requests waiting
    /// for it elsewhere go there.
    TunnelsUp {
        agent: String,
    },
    /// A replica polled a project and found a new commit.
    NewHead {
        project: String,
        commit: String,
    },
    /// Something the web UI shows (a session, a sync report) changed on
    /// a replica: pages open on the others fetch themselves again.
    UiChanged,
    /// A project's rollout, an agent's pin or labels changed: every
    /// replica reads the rollouts again, and its followers decide again.
    FleetChanged {
        project: String,
    },
}

/// A change as it travels between kas processes.
#[derive(Debug, Serialize, Deserialize)]
struct Published {
    /// The kas that applied it first (which ignores its own echo).
    origin: u64,
    /// When it was announced (Unix milliseconds), for the feed's lag.
    #[serde(default)]
    at_ms: u64,
    #[serde(flatten)]
    change: Change,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Applies changes to the live state, here and on every other kas.
#[derive(Clone)]
pub struct Changes {
    live: Arc<dyn LiveAgents>,
    sessions: Arc<dyn SessionControl>,
    /// Bumped when another replica says something the web UI shows
    /// changed there.
    elsewhere: Arc<tokio::sync::watch::Sender<u64>>,
    proxy: Arc<Proxy>,
    store: Arc<dyn Store>,
    router: Option<Arc<Router>>,
    feed: Option<Arc<dyn ChangeFeed>>,
    repos: Option<Arc<Repos>>,
    /// Wakes this replica's view of the rollouts.
    fleet: Option<tokio::sync::mpsc::Sender<()>>,
    origin: u64,
    /// Whether [`Self::follow`] is subscribed to the feed now, for
    /// readiness: a replica that does not hear revocations must not serve.
    following: Arc<std::sync::atomic::AtomicBool>,
    /// The feed's lag and gaps.
    metrics: Option<crate::metrics::FeedMetrics>,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes")
            .field("shared", &self.feed.is_some())
            .finish_non_exhaustive()
    }
}

impl Changes {
    pub fn new(
        live: Arc<dyn LiveAgents>,
        sessions: Arc<dyn SessionControl>,
        proxy: Arc<Proxy>,
        store: Arc<dyn Store>,
    ) -> Self {
        Changes {
            live,
            sessions,
            elsewhere: Arc::new(tokio::sync::watch::channel(0).0),
            proxy,
            store,
            router: None,
            feed: None,
            repos: None,
            fleet: None,
            origin: rand::random(),
            following: Arc::default(),
            metrics: None,
        }
    }

    /// Follows what other replicas say changed there that the web UI
    /// shows.
    pub fn watch_elsewhere(&self) -> tokio::sync::watch::Receiver<u64> {
        self.elsewhere.subscribe()
    }

    /// Whether this kas follows the other kas processes' changes now.
    pub fn following(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.following.clone()
    }

    /// Tells `repos` of the heads other replicas find.
    pub fn with_repos(mut self, repos: Arc<Repos>) -> Self {
        self.repos = Some(repos);
        self
    }

    /// Wakes this replica's view of the rollouts on a fleet change.
    pub fn with_fleet(mut self, fleet: tokio::sync::mpsc::Sender<()>) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// Tells `router` of the tunnels other replicas announce.
    pub fn with_router(mut self, router: Arc<Router>) -> Self {
        self.router = Some(router);
        self
    }

    /// Publishes every change on `feed`, for the other kas processes of a
    /// shared database; [`Self::follow`] applies theirs.
    /// Whether changes are shared with other kas processes (a feed).
    pub fn is_shared(&self) -> bool {
        self.feed.is_some()
    }

    /// Counts the feed's lag and gaps into `metrics`.
    pub fn with_feed_metrics(mut self, metrics: crate::metrics::FeedMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn with_feed(mut self, feed: Arc<dyn ChangeFeed>) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Carries out every consequence of `change` here, and announces it to
    /// the other kas processes.
    pub async fn apply(&self, change: Change) {
        self.apply_here(&change);
        self.tell_others(change).await;
    }

    /// Announces `change` to the other kas processes only: news of this
    /// replica that means nothing here.
    pub async fn tell_others(&self, change: Change) {
        let Some(feed) = &self.feed else {
            return;
        };
        let published = Published {
            origin: self.origin,
            at_ms: unix_ms(),
            change,
        };
        let payload = serde_json::to_string(&published).unwrap_or_default();
        if let Err(e) = feed.publish(&payload).await {
            // The other replicas learn it at their next re-check at worst.
            tracing::error!(error = ?e, change = ?published.change, "cannot announce a change");
        }
    }

    /// Applies the changes other kas processes announce, until `stop`.
    pub async fn follow(self, mut stop: tether_runtime::Shutdown) {
        let Some(feed) = self.feed.clone() else {
            return;
        };
        let mut events = loop {
            match feed.subscribe().await {
                Ok(events) => break events,
                Err(e) => {
                    tracing::warn!(error = ?e, "cannot follow the change feed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                        _ = stop.signalled() => return,
                    }
                }
            }
        };
        tracing::info!("following the changes of the other kas processes");
        self.following
            .store(true, std::sync::atomic::Ordering::SeqCst);
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = stop.signalled() => return,
            };
            match event {
                None => {
                    self.following
                        .store(false, std::sync::atomic::Ordering::SeqCst);
                    tracing::error!("the change feed ended: this kas no longer hears the others");
                    return;
                }
                Some(FeedEvent::Message(payload)) => {
                    match serde_json::from_str::<Published>(&payload) {
                        Ok(p) if p.origin == self.origin => {}
                        Ok(p) => {
                            if let Some(m) = &self.metrics
                                && p.at_ms > 0
                            {
                                let lag = unix_ms().saturating_sub(p.at_ms);
                                m.lag_seconds.observe(lag as f64 / 1000.0);
                            }
                            self.apply_here(&p.change)
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable change on the feed"),
                    }
                }
                Some(FeedEvent::Gap) => {
                    if let Some(m) = &self.metrics {
                        m.gaps.inc();
                    }
                    self.recheck().await
                }
            }
        }
    }

    /// After changes may have been lost: forget admissions, and close every
    /// session and tunnel whose token is no longer valid.
    async fn recheck(&self) {
        self.proxy.forget_admissions();
        let now = tether_store::time::now();
        let mut closed = 0;
        for agent in self.live.connected_agents() {
            let tokens = match self.store.list_tokens(&agent).await {
                Ok(tokens) => tokens,
                Err(tether_store::StoreError::NotFound(_)) => {
                    self.apply_here(&Change::AgentDeleted {
                        name: agent.to_string(),
                    });
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = ?e, agent = %agent, "cannot re-check tokens");
                    continue;
                }
            };
            for token in tokens.iter().filter(|t| !t.is_active(now)) {
                closed += self
                    .sessions
                    .close_token(token.id, "agent token is no longer valid");
            }
        }
        tracing::info!(
            closed_sessions = closed,
            "re-checked sessions after a gap in the change feed"
        );
    }

    fn apply_here(&self, change: &Change) {
        // News, not narrowing: nothing to close or forget.
        match change {
            Change::UiChanged => {
                self.elsewhere.send_modify(|n| *n = n.wrapping_add(1));
                return;
            }
            Change::FleetChanged { .. } => {
                if let Some(fleet) = &self.fleet {
                    // One wake-up is as good as many.
                    let _ = fleet.try_send(());
                }
                self.elsewhere.send_modify(|n| *n = n.wrapping_add(1));
                return;
            }
            Change::TunnelsUp { agent } => {
                if let Some(router) = &self.router {
                    router.tunnel_up(agent);
                }
                return;
            }
            Change::NewHead { project, commit } => {
                if let Some(repos) = &self.repos {
                    repos.announced(&NewHead {
                        project: project.clone(),
                        commit: commit.clone(),
                    });
                }
                return;
            }
            _ => {}
        }
        let (sessions, exchanges) = match change {
            Change::AgentTokenRevoked { token_id, reason } => {
                (self.sessions.close_token(*token_id, reason), 0)
            }
            Change::AgentDeleted { name } => {
                let closed = self
                    .sessions
                    .close_agent(name, &format!("agent {name} was deleted"));
                let ended = self
                    .proxy
                    .streams
                    .stop_where(|agent, _| agent.as_str() == name);
                (closed, ended)
            }
            Change::AccessTokenRevoked { owner, token_id } => {
                let ended = self
                    .proxy
                    .streams
                    .stop_where(|_, opener| match (owner, opener) {
                        (TokenOwner::User(user), Opener::User(name)) => user == name,
                        (TokenOwner::Project(_), Opener::ProjectToken { token_id: id, .. }) => {
                            id == token_id
                        }
                        _ => false,
                    });
                (0, ended)
            }
            Change::UserChanged { name } => {
                let ended = self
                    .proxy
                    .streams
                    .stop_where(|_, opener| *opener == Opener::User(name.clone()));
                (0, ended)
            }
            Change::ProjectDeleted { id } => {
                let ended = self.proxy.streams.stop_where(|_, opener| {
                    matches!(opener, Opener::ProjectToken { project, .. } if project == id)
                });
                (0, ended)
            }
            Change::ManifestGrantsChanged => {
                self.sessions.grants_changed();
                (0, 0)
            }
            Change::TunnelsUp { .. }
            | Change::NewHead { .. }
            | Change::UiChanged
            | Change::FleetChanged { .. } => (0, 0),
        };
        // Every change can narrow what a remembered credential may do.
        self.proxy.forget_admissions();
        tracing::info!(
            change = ?change,
            closed_sessions = sessions,
            ended_exchanges = exchanges,
            "change applied"
        );
    }
}

/// `TokenOwner` on the wire: `{"project": id}` or `{"user": name}`.
mod owner {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use tether_store::TokenOwner;

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Wire {
        Project(String),
        User(String),
    }

    pub fn serialize<S: Serializer>(owner: &TokenOwner, s: S) -> Result<S::Ok, S::Error> {
        match owner {
            TokenOwner::Project(p) => Wire::Project(p.clone()),
            TokenOwner::User(u) => Wire::User(u.clone()),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TokenOwner, D::Error> {
        Ok(match Wire::deserialize(d)? {
            Wire::Project(p) => TokenOwner::Project(p),
            Wire::User(u) => TokenOwner::User(u),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_cross_the_wire_unchanged() {
        for change in [
            Change::AgentTokenRevoked {
                token_id: 7,
                reason: "agent token was revoked at 2026-11-29T08:00:00Z".into(),
            },
            Change::AgentDeleted {
                name: "prod".into(),
            },
            Change::AccessTokenRevoked {
                owner: TokenOwner::Project("team/app".into()),
                token_id: 3,
            },
            Change::AccessTokenRevoked {
                owner: TokenOwner::User("alice".into()),
                token_id: 4,
            },
            Change::UserChanged {
                name: "alice".into(),
            },
            Change::ProjectDeleted {
                id: "team/app".into(),
            },
            Change::ManifestGrantsChanged,
            Change::TunnelsUp {
                agent: "prod".into(),
            },
            Change::NewHead {
                project: "team/app".into(),
                commit: "0123456789abcdef0123456789abcdef01234567".into(),
            },
        ] {
            let wire = serde_json::to_string(&Published {
                origin: 1,
                at_ms: 1,
                change: change.clone(),
            })
            .expect("serializes");
            let back: Published = serde_json::from_str(&wire).expect("parses");
            assert_eq!(back.change, change, "{wire}");
        }
    }
}
