//! Git projects as kas watches them: one poller per project that has
//! connected agents, shared by all of them, so a thousand agents of one
//! repository cost one fetch per interval, not a thousand.
//!
//! A poller fetches (for remotes), resolves the project's ref and publishes
//! the [`Head`] on a watch channel that every session of the project
//! follows. `POST /api/v1/projects/{id}/refresh` wakes the poller at once and
//! waits for that poll to finish. A poller stops when its last subscriber is
//! gone.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_git::{CommitId, Source};
use tether_store::{ReplicaId, Replicas, Store};
use tokio::sync::{Notify, mpsc, watch};
use tracing::Instrument;

use crate::metrics::{ChannelMetrics, PollResult};

/// Default time between two polls of one project.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// Longest a refresh waits for its poll.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(60);

/// What the last poll of a project found.
#[derive(Clone, Debug, Default)]
pub struct Head {
    /// Number of the last poll that started; polls are numbered from 1.
    started: u64,
    /// Number of the last poll that finished.
    finished: u64,
    /// The commit the project's ref points to, once known. Kept when a later
    /// poll fails.
    pub commit: Option<CommitId>,
    /// Why the last poll failed, if it did.
    pub error: Option<String>,
    /// Where the project's objects are read from.
    pub source: Option<Source>,
    /// Other refs resolved since this poll, shared by every follower of the
    /// project: one resolve per ref and poll, however many agents follow it.
    pub resolved: Arc<Mutex<HashMap<String, Result<CommitId, ResolveError>>>>,
    /// How `commit` was found, for the traces of its deliveries.
    pub found: Option<crate::traces::Found>,
    /// The project's signature policy, when it has one: `commit` is then
    /// the last commit that verified, and every other commit an agent is
    /// given passes it too.
    pub gate: Option<crate::signatures::Gate>,
    /// Why the project's newest head was refused (it did not verify), while
    /// agents keep `commit`.
    pub refused: Option<String>,
}

/// A head that verified or was refused: what kas tells the outside (the
/// commit status `tether/verify`, the `commit_unverified` notification).
/// Sent once per change of a project's status, by whichever replica
/// recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub project: String,
    pub commit: String,
    /// `Ok(signer)`, or why it was refused.
    pub outcome: Result<String, String>,
}

/// Verdicts waiting to be told at most; past it the newest are dropped
/// (the project's status in the store keeps them).
pub const VERDICT_BUFFER: usize = 256;

/// Why a ref could not be resolved at a poll.
///
/// `Clone`, because one result per ref and poll is cached in [`Head`] and
/// handed to every follower of the project; the sources that are not
/// `Clone` are shared behind an `Arc`.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ResolveError {
    /// No poll of the project has read its repository yet.
    #[error("the repository has not been read yet")]
    NotRead,
    #[error(transparent)]
    Git(Arc<tether_git::GitError>),
    #[error("resolving panicked: {0}")]
    Panicked(#[source] Arc<tokio::task::JoinError>),
    /// The commit does not verify under the project's signature policy.
    #[error("{0}")]
    Unverified(String),
}

impl Head {
    /// The commit `reference` points to at this poll (`None`: the default
    /// branch), resolved once per poll.
    pub async fn resolve(&self, reference: Option<&str>) -> Result<CommitId, ResolveError> {
        let Some(gate) = &self.gate else {
            return self.resolve_unverified(reference).await;
        };
        let Some(reference) = reference else {
            // The head the poller verified (or kept when a newer one was
            // refused), never what the ref points to now.
            return self.commit.clone().ok_or_else(|| {
                ResolveError::Unverified(
                    self.refused
                        .clone()
                        .unwrap_or_else(|| "no commit of the project has verified yet".to_owned()),
                )
            });
        };
        let commit = self.resolve_unverified(Some(reference)).await?;
        if self.commit.as_ref() == Some(&commit) {
            return Ok(commit);
        }
        let Some(source) = &self.source else {
            return Err(ResolveError::NotRead);
        };
        gate.check(source, &commit)
            .await
            .map(|()| commit)
            .map_err(ResolveError::Unverified)
    }

    /// The commit `reference` points to, whether or not it verifies: for
    /// a plan, which says so, never for what agents are given.
    pub async fn resolve_unverified(
        &self,
        reference: Option<&str>,
    ) -> Result<CommitId, ResolveError> {
        let key = reference.unwrap_or("HEAD").to_owned();
        let cached = lock(&self.resolved).get(&key).cloned();
        if let Some(result) = cached {
            return result;
        }
        let Some(source) = self.source.clone() else {
            return Err(ResolveError::NotRead);
        };
        let reference = reference.map(str::to_owned);
        let result = tokio::task::spawn_blocking(move || {
            source
                .resolve(reference.as_deref())
                .map_err(|e| ResolveError::Git(Arc::new(e)))
        })
        .await
        .unwrap_or_else(|e| Err(ResolveError::Panicked(Arc::new(e))));
        lock(&self.resolved).insert(key, result.clone());
        result
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a refresh could not say where the project is.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("project {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Git(String),
    #[error("no answer from the git poller within {0:?}")]
    Timeout(Duration),
    #[error("cannot load the project: {0}")]
    Store(#[from] tether_store::StoreError),
    /// The head does not verify; agents keep the last verified commit.
    #[error("{0}")]
    Unverified(String),
}

/// Why a poll could not read a project's repository. Only its message
/// outlives the poll: it is kept as [`Head::error`] for the API, the agent's
/// config status and [`RefreshError::Git`], and nothing branches on it.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("cannot load project {project}: {source}")]
    Load {
        project: String,
        #[source]
        source: tether_store::StoreError,
    },
    #[error("git poll panicked: {0}")]
    Panicked(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Git(#[from] tether_git::GitError),
}

/// What a poll gives agents: the commit (`None`: nothing verified yet) and
/// the policy every other commit passes.
struct Verified {
    source: Source,
    commit: Option<CommitId>,
    gate: Option<crate::signatures::Gate>,
    refused: Option<String>,
}

/// All pollers of this kas.
pub struct Repos {
    store: Arc<dyn Store>,
    mirrors: PathBuf,
    poll_interval: Duration,
    pollers: Mutex<HashMap<String, Arc<Poller>>>,
    metrics: ChannelMetrics,
    peers: std::sync::OnceLock<Peers>,
    /// Pollers run on it, and stop when it starts (after a fetch in
    /// flight).
    drain: tether_runtime::Drain,
    /// Keyrings of projects under a signature policy.
    signatures: Arc<crate::signatures::Signatures>,
    /// Where verdicts on heads go (kas's statuses and notifications).
    verdicts: std::sync::OnceLock<mpsc::Sender<Verdict>>,
}

/// With replicas: who polls which project, and how new heads are told.
struct Peers {
    replicas: Arc<dyn Replicas>,
    me: ReplicaId,
    /// New heads this replica found, for the other replicas.
    announce: mpsc::Sender<NewHead>,
}

/// A project's ref moved: what one replica tells the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewHead {
    pub project: String,
    pub commit: String,
}

/// Heads waiting to be announced at most; past it the newest are dropped
/// (the other replicas' own lease takeover or refresh catch up).
pub const ANNOUNCE_BUFFER: usize = 1024;

struct Poller {
    wake: Notify,
    /// Poll at the next turn even when another replica leads the project:
    /// a refresh here, or a head announced by the leader.
    force: AtomicBool,
    /// Why the next poll runs early, and since when: the webhook (or
    /// call) that asked for it.
    cause: Mutex<Option<Cause>>,
    head: watch::Sender<Head>,
}

/// What asked for a poll.
#[derive(Clone, Debug)]
pub struct Cause {
    /// `webhook`, `refresh` or `peer`.
    pub via: &'static str,
    pub at: std::time::SystemTime,
    /// The span of the request that asked, linked from the traces.
    pub link: Option<opentelemetry::trace::SpanContext>,
}

impl Cause {
    /// A cause arriving now, within the current span.
    pub fn now(via: &'static str) -> Self {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let cx = tracing::Span::current().context();
        let span = cx.span();
        let link = span.span_context();
        Cause {
            via,
            at: std::time::SystemTime::now(),
            link: link.is_valid().then(|| link.clone()),
        }
    }
}

impl std::fmt::Debug for Repos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repos")
            .field("mirrors", &self.mirrors)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

impl Repos {
    /// Mirrors of remote projects live under `mirrors`.
    pub fn new(
        store: Arc<dyn Store>,
        mirrors: PathBuf,
        poll_interval: Duration,
        metrics: ChannelMetrics,
        drain: tether_runtime::Drain,
    ) -> Arc<Self> {
        Arc::new(Repos {
            store,
            // Keyrings beside the mirrors (a mirror's folder name always
            // has a hash suffix, so none is called this).
            signatures: crate::signatures::Signatures::new(mirrors.join(".keyrings")),
            mirrors,
            poll_interval,
            pollers: Mutex::default(),
            metrics,
            peers: std::sync::OnceLock::new(),
            drain,
            verdicts: std::sync::OnceLock::new(),
        })
    }

    /// Verdicts on heads of projects under a signature policy, once each
    /// is recorded: for the commit status `tether/verify` and the
    /// `commit_unverified` notification.
    pub fn verdicts(&self) -> mpsc::Receiver<Verdict> {
        let (tx, rx) = mpsc::channel(VERDICT_BUFFER);
        let _ = self.verdicts.set(tx);
        rx
    }

    /// Whether signature verifications run in the kernel sandbox (kas's
    /// render sandbox mode).
    pub fn set_verification_sandbox(&self, mode: tether_render::SandboxMode) {
        self.signatures.set_sandbox(mode);
    }

    /// Polls `project` soon if this kas follows it (a new signature
    /// policy takes effect without waiting for the interval).
    pub fn wake(&self, project: &str) {
        if let Some(poller) = self.lock().get(project) {
            poller.force.store(true, Ordering::Relaxed);
            poller.wake.notify_one();
        }
    }

    /// Shares polling with the other replicas: each project is polled by
    /// the replica holding its lease, which announces new heads on the
    /// returned channel; the others fetch only when told of a new head (or
    /// refreshed, or when the lease falls to them).
    pub fn share_with(
        &self,
        replicas: Arc<dyn Replicas>,
        me: ReplicaId,
    ) -> mpsc::Receiver<NewHead> {
        let (announce, heads) = mpsc::channel(ANNOUNCE_BUFFER);
        let _ = self.peers.set(Peers {
            replicas,
            me,
            announce,
        });
        heads
    }

    /// Another replica found `head`: poll its project here if this replica
    /// follows it and has another commit.
    pub fn announced(&self, head: &NewHead) {
        let Some(poller) = self.lock().get(&head.project).cloned() else {
            return;
        };
        let known = poller
            .head
            .borrow()
            .commit
            .as_ref()
            .map(ToString::to_string);
        if known.as_deref() != Some(head.commit.as_str()) {
            poller.force.store(true, Ordering::Relaxed);
            lock(&poller.cause).get_or_insert_with(|| Cause::now("peer"));
            poller.wake.notify_one();
        }
    }

    /// Whether this replica polls `project` now: always alone; with
    /// replicas, while it holds the project's lease (renewed at each poll,
    /// lasting three intervals, so a dead leader's lease falls to another
    /// replica within them). If the database cannot say, poll: a duplicate
    /// fetch is harmless, a missed one is not.
    async fn leads(&self, project: &str) -> bool {
        let Some(peers) = self.peers.get() else {
            return true;
        };
        match peers
            .replicas
            .lead_poll(project, &peers.me, self.poll_interval * 3)
            .await
        {
            Ok(lead) => lead,
            Err(e) => {
                tracing::warn!(error = ?e, "cannot take the poll lease; polling anyway");
                true
            }
        }
    }

    /// Follows `project`'s head, starting its poller if none runs. The first
    /// value may still be empty; the receiver is marked changed so that the
    /// caller looks at it at once.
    /// Whether an administrator allowed remote bases in `project`'s
    /// kustomizations, read from the store each time (a change takes
    /// effect at the next render); false when it cannot be read.
    pub async fn remote_bases_allowed(&self, project: &str) -> bool {
        match self.store.get_project(project).await {
            Ok(Some(project)) => project.allow_remote_bases,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(project, error = %e, "cannot read the project: remote bases refused");
                false
            }
        }
    }

    /// The drain pollers run on, and what follows their heads.
    pub fn drain(&self) -> &tether_runtime::Drain {
        &self.drain
    }

    pub fn subscribe(self: &Arc<Self>, project: &str) -> watch::Receiver<Head> {
        let mut pollers = self.lock();
        let poller = pollers.entry(project.to_owned()).or_insert_with(|| {
            let poller = Arc::new(Poller {
                wake: Notify::new(),
                force: AtomicBool::new(false),
                cause: Mutex::new(None),
                head: watch::Sender::new(Head::default()),
            });
            let span = tracing::info_span!("git_poller", project = %project);
            self.drain.spawn(
                self.clone()
                    .poll_loop(project.to_owned(), poller.clone())
                    .instrument(span),
            );
            poller
        });
        let mut receiver = poller.head.subscribe();
        receiver.mark_changed();
        receiver
    }

    /// The head of `project` as this kas last read it, if it follows the
    /// project now (no poller is started).
    pub fn peek(&self, project: &str) -> Option<(Option<CommitId>, Option<String>)> {
        let poller = self.lock().get(project).cloned()?;
        let head = poller.head.borrow();
        Some((head.commit.clone(), head.error.clone()))
    }

    /// Polls `project` now and returns the commit its ref points to. Every
    /// connected agent of the project is sent its configuration from that
    /// commit as soon as the poll publishes it.
    pub async fn refresh(self: &Arc<Self>, project: &str) -> Result<CommitId, RefreshError> {
        self.refresh_for(project, Cause::now("refresh")).await
    }

    /// [`Repos::refresh`], for `cause` (a push webhook's delivery), which
    /// the traces of what it finds start from.
    pub async fn refresh_for(
        self: &Arc<Self>,
        project: &str,
        cause: Cause,
    ) -> Result<CommitId, RefreshError> {
        if self.store.get_project(project).await?.is_none() {
            return Err(RefreshError::NotFound(project.to_owned()));
        }
        let mut head = self.subscribe(project);
        let after = head.borrow().started;
        if let Some(poller) = self.lock().get(project) {
            *lock(&poller.cause) = Some(cause);
            poller.force.store(true, Ordering::Relaxed);
            poller.wake.notify_one();
        }
        let head = tokio::time::timeout(REFRESH_TIMEOUT, head.wait_for(|h| h.finished > after))
            .await
            .map_err(|_| RefreshError::Timeout(REFRESH_TIMEOUT))?
            .map_err(|_| RefreshError::Git("the git poller stopped".to_owned()))?
            .clone();
        match (head.error, head.commit) {
            (Some(error), _) => Err(RefreshError::Git(error)),
            (None, _) if head.refused.is_some() => {
                Err(RefreshError::Unverified(head.refused.unwrap_or_default()))
            }
            (None, Some(commit)) => Ok(commit),
            (None, None) => Err(RefreshError::Git("no commit".to_owned())),
        }
    }

    async fn poll_loop(self: Arc<Self>, project: String, poller: Arc<Poller>) {
        loop {
            poller.head.send_if_modified(|h| {
                h.started += 1;
                false
            });
            let forced = poller.force.swap(false, Ordering::Relaxed);
            let known = poller.head.borrow().commit.clone();
            if !forced
                && known.is_some()
                && !self.policy_changed(&project, &poller).await
                && !self.leads(&project).await
            {
                // Another replica polls it and announces what it finds.
                poller.head.send_if_modified(|h| {
                    h.finished = h.started;
                    false
                });
                if self.wait_or_stop(&project, &poller).await {
                    return;
                }
                continue;
            }
            let started = std::time::Instant::now();
            let fetch_start = std::time::SystemTime::now();
            let cause = lock(&poller.cause).take();
            // (No span of its own: a poll that finds a commit is the `git
            // fetch` span of each trace that commit starts.)
            let polled = self.poll(&project).await;
            let took = started.elapsed().as_secs_f64();
            self.metrics.git_poll_seconds.observe(took);
            let result = if polled.is_ok() { "ok" } else { "error" };
            self.metrics
                .git_polls
                .get_or_create(&PollResult { result })
                .inc();
            let polled = match polled {
                Ok(Some((source, commit, record))) => {
                    Ok(Some(self.verify(record, source, commit).await))
                }
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            match polled {
                Ok(Some(Verified {
                    source,
                    commit: None,
                    gate,
                    refused,
                })) => poller.head.send_modify(|h| {
                    // Nothing of the project has verified: agents get nothing.
                    h.finished = h.started;
                    h.commit = None;
                    h.error = None;
                    h.source = Some(source);
                    h.resolved = Arc::default();
                    h.gate = gate;
                    h.refused = refused;
                }),
                Ok(Some(Verified {
                    source,
                    commit: Some(commit),
                    gate,
                    refused,
                })) => poller.head.send_modify(|h| {
                    if h.commit.as_ref() != Some(&commit) {
                        tracing::info!(commit = %commit, "new commit");
                        self.metrics.git_fetch_seconds.observe(took);
                        let cause = cause.clone().unwrap_or(Cause {
                            via: "poll",
                            at: fetch_start,
                            link: None,
                        });
                        h.found = Some(crate::traces::Found {
                            via: cause.via,
                            at: cause.at.min(fetch_start),
                            fetch: (fetch_start, std::time::SystemTime::now()),
                            link: cause.link,
                        });
                        if let Some(peers) = self.peers.get() {
                            let _ = peers.announce.try_send(NewHead {
                                project: project.clone(),
                                commit: commit.to_string(),
                            });
                        }
                    }
                    h.finished = h.started;
                    h.commit = Some(commit);
                    h.error = None;
                    h.source = Some(source);
                    h.resolved = Arc::default();
                    h.gate = gate;
                    h.refused = refused;
                }),
                Ok(None) => {
                    tracing::info!("project deleted; poller stops");
                    self.lock().remove(&project);
                    return;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "cannot read the project's repository");
                    poller.head.send_modify(|h| {
                        h.finished = h.started;
                        h.error = Some(error.to_string());
                    });
                }
            }
            if self.wait_or_stop(&project, &poller).await {
                return;
            }
        }
    }

    /// Whether the project's signature policy in the store is not the one
    /// its head was published under (set through another replica, or
    /// rotated): such a head is read and verified again here.
    async fn policy_changed(&self, project: &str, poller: &Poller) -> bool {
        let Ok(Some(record)) = self.store.get_project(project).await else {
            return false;
        };
        let head = poller.head.borrow();
        match &head.gate {
            Some(gate) => !gate.is_for(record.verify.as_ref()),
            None => record.verify.is_some(),
        }
    }

    /// Waits for the next poll; true when the poller is to stop (nobody
    /// follows the project any more).
    async fn wait_or_stop(&self, project: &str, poller: &Poller) -> bool {
        let mut signal = self.drain.signal();
        tokio::select! {
            _ = tokio::time::sleep(self.poll_interval) => {}
            _ = poller.wake.notified() => {}
            _ = signal.signalled() => {}
        }
        // Under the lock, so that a new subscriber either finds this
        // poller still listed and running, or starts a new one.
        let mut pollers = self.lock();
        if self.drain.is_draining() {
            pollers.remove(project);
            tracing::debug!("kas drains; poller stops");
            return true;
        }
        if poller.head.receiver_count() == 0 {
            pollers.remove(project);
            tracing::debug!("no agent follows the project; poller stops");
            return true;
        }
        false
    }

    /// What of `head` (the commit the project's ref points to) agents may
    /// be given: all of it without a policy; under one, `head` if it
    /// verifies, else the last commit that did (or nothing). A new verdict
    /// is recorded in the store and told once.
    async fn verify(
        &self,
        record: tether_store::Project,
        source: Source,
        head: CommitId,
    ) -> Verified {
        let Some(policy) = record.verify.clone() else {
            return Verified {
                source,
                commit: Some(head),
                gate: None,
                refused: None,
            };
        };
        let gate = self.signatures.gate(policy, record.git_ref.clone());
        let status = record.verification;
        let head_text = head.to_string();
        // A head verified under this policy (a new policy clears the
        // status) is not checked again at every poll. A refused one is:
        // its refusal may have been a tool that failed, not a signature.
        let checked = if status.verified.as_deref() == Some(head_text.as_str()) {
            crate::signatures::Checked::Verified {
                signer: status.signer.clone().unwrap_or_default(),
            }
        } else {
            gate.check_head(&source, &head, status.verified.as_deref())
                .await
        };
        let (recorded, commit, refused, outcome) = match checked {
            crate::signatures::Checked::Verified { signer } => (
                tether_store::VerifyStatus {
                    verified: Some(head_text.clone()),
                    signer: Some(signer.clone()),
                    refused: None,
                },
                Some(head),
                None,
                Ok(signer),
            ),
            crate::signatures::Checked::Refused { reason } => {
                let kept = status.verified.as_deref().and_then(CommitId::parse);
                // The same refusal again keeps its first time, and is
                // logged once.
                let at = match &status.refused {
                    Some(r) if r.commit == head_text && r.reason == reason => r.at,
                    _ => {
                        tracing::warn!(commit = %head_text, reason = %reason, "commit refused: it does not verify; agents keep the last verified commit");
                        tether_store::time::now()
                    }
                };
                (
                    tether_store::VerifyStatus {
                        verified: status.verified.clone(),
                        signer: status.signer.clone(),
                        refused: Some(tether_store::Refusal {
                            commit: head_text.clone(),
                            reason: reason.clone(),
                            at,
                        }),
                    },
                    kept,
                    Some(format!("commit {head_text} is refused: {reason}")),
                    Err(reason),
                )
            }
        };
        if recorded != status {
            match self.store.record_verification(&record.id, &recorded).await {
                Ok(true) => {
                    if let Some(verdicts) = self.verdicts.get() {
                        let _ = verdicts.try_send(Verdict {
                            project: record.id.clone(),
                            commit: head_text,
                            outcome,
                        });
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot record the verification"),
            }
        }
        Verified {
            source,
            commit,
            gate: Some(gate),
            refused,
        }
    }

    /// One fetch and resolve; `Ok(None)` when the project no longer exists.
    async fn poll(
        &self,
        project: &str,
    ) -> Result<Option<(Source, CommitId, tether_store::Project)>, PollError> {
        let Some(record) =
            self.store
                .get_project(project)
                .await
                .map_err(|source| PollError::Load {
                    project: project.to_owned(),
                    source,
                })?
        else {
            return Ok(None);
        };
        let source = Source::for_project(&record.id, &record.url, &self.mirrors);
        let polled = tokio::task::spawn_blocking(move || {
            source.update()?;
            let commit = source.resolve(record.git_ref.as_deref())?;
            Ok::<_, tether_git::GitError>((source, commit, record))
        })
        .await
        .map_err(PollError::Panicked)??;
        Ok(Some(polled))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Poller>>> {
        self.pollers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Said to the agent as its manifests' error: pinned byte for byte.
    #[tokio::test]
    async fn failures_to_resolve_keep_their_exact_wording_and_are_cached() {
        let unread = Head::default();
        let said = vec![unread.resolve(None).await.expect_err("unread").to_string()];
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = tmp.path().join("config");
        tether_testenv::git::new_repo(&repo);
        tether_testenv::git::commit(&repo, &[("README", Some("hello\n"))]);
        let head = Head {
            source: Some(Source::new(
                repo.to_str().expect("utf-8"),
                &tmp.path().join("mirrors"),
            )),
            ..Head::default()
        };
        let first = head
            .resolve(Some("nope"))
            .await
            .expect_err("no such ref")
            .to_string();
        let again = head
            .resolve(Some("nope"))
            .await
            .expect_err("cached")
            .to_string();
        assert_eq!(first, again);
        assert!(
            lock(&head.resolved).contains_key("nope"),
            "kept for the poll"
        );
        let said: Vec<String> = said
            .into_iter()
            .chain([first.replace(repo.to_str().unwrap_or_default(), "<repo>")])
            .collect();
        assert_eq!(
            said,
            [
                "the repository has not been read yet",
                "ref \"nope\" not found in <repo>"
            ]
        );
    }
}
