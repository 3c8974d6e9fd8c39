//! The driver: one replica (by lease) moves every project's rollout. On
//! each tick it takes the operators' requests, starts a rollout when a
//! project's head moves to a commit with a rollout file, reads what the
//! agents of each running rollout reported (one query per rollout) and
//! advances it; what changed is written to the store, taken by this
//! replica's [`Fleet`] at once and told to the others.
//!
//! Everything it needs is in the store, so a replica that takes the lease
//! after another died goes on where that one stopped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tether_agent_config::rollout::{MAX_ROLLOUT_BYTES, ROLLOUT_PATH};
use tether_git::{CommitId, SelectLimits, Source};
use tether_store::{FleetRecord, ReplicaId, Replicas, Store, StoreError};
use tokio::sync::mpsc;

use crate::advance::{self, Candidate, Event, Observed};
use crate::gate::Fleet;
use crate::state::*;

/// How often the driver looks: at the projects' heads, the requests and
/// the reports of every running rollout.
pub const TICK: Duration = Duration::from_millis(250);
/// How often it looks for agents that joined or left a running rollout.
const SURVEY: Duration = Duration::from_secs(1);
/// The lease one replica holds to drive rollouts.
const LEASE: &str = ":rollouts";
/// Requests taken per tick at most.
const MAX_REQUESTS: usize = 100;
/// Why a new head was not looked at: tried again at the next tick.
#[derive(Debug, thiserror::Error)]
enum ConsiderError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Retry(String),
}

/// Distinct (commit, paths) pairs compared at most before a commit is
/// taken to change what agents receive.
const MAX_DIFF_GROUPS: usize = 16;
/// Superseded commits a rollout remembers at most.
const MAX_SUPERSEDED: usize = 20;
/// Events waiting to be told at most; past it the newest are dropped.
pub const EVENTS: usize = 1024;

/// What the driver needs of kas's projects.
#[async_trait]
pub trait Heads: Send + Sync + 'static {
    async fn projects(&self) -> Result<Vec<tether_store::Project>, StoreError>;
    /// The commit the project's ref points to as its poller last read it,
    /// and where to read it (the project is followed from now on).
    async fn head(&self, project: &str) -> Option<(CommitId, Source)>;
}

/// What a rollout told, for notifications and the commit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Told {
    pub project: String,
    pub commit: String,
    pub event: Event,
    /// The agents of the rollout (whose destinations hear of it).
    pub agents: Vec<String>,
    /// The rollout's state in a line, for a commit status.
    pub summary: String,
    /// What failed a wave, when one did: told in full only to whom may
    /// see that agent.
    pub failure: Option<Failure>,
}

/// One replica's driver.
pub struct Driver {
    store: Arc<dyn Store>,
    fleet: Arc<Fleet>,
    heads: Arc<dyn Heads>,
    peers: Option<(Arc<dyn Replicas>, ReplicaId)>,
    told: Option<mpsc::Sender<Told>>,
    /// Tells the other replicas that a project's rollout changed.
    publish: Option<Arc<dyn Fn(String) + Send + Sync>>,
    /// The head each project was last looked at for.
    seen: HashMap<String, String>,
    led: bool,
    last_survey: Option<tokio::time::Instant>,
    metrics: crate::metrics::RolloutMetrics,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl Driver {
    pub fn new(store: Arc<dyn Store>, fleet: Arc<Fleet>, heads: Arc<dyn Heads>) -> Self {
        Driver {
            store,
            fleet,
            heads,
            peers: None,
            told: None,
            publish: None,
            seen: HashMap::new(),
            led: false,
            last_survey: None,
            metrics: crate::metrics::RolloutMetrics::default(),
        }
    }

    /// With replicas: only the replica holding the lease drives.
    pub fn with_peers(mut self, replicas: Arc<dyn Replicas>, me: ReplicaId) -> Self {
        self.peers = Some((replicas, me));
        self
    }

    /// Counts into `metrics` (kas's registry shows them).
    pub fn with_metrics(mut self, metrics: crate::metrics::RolloutMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Tells what rollouts do on the returned channel.
    pub fn telling(&mut self) -> mpsc::Receiver<Told> {
        let (tx, rx) = mpsc::channel(EVENTS);
        self.told = Some(tx);
        rx
    }

    /// Calls `publish(project)` after each change, for the other replicas.
    pub fn with_publish(mut self, publish: Arc<dyn Fn(String) + Send + Sync>) -> Self {
        self.publish = Some(publish);
        self
    }

    /// Drives until `stop`.
    pub async fn run(mut self, mut stop: tether_runtime::Shutdown) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.signalled() => return,
            }
            self.tick().await;
        }
    }

    /// One look.
    pub async fn tick(&mut self) {
        if !self.leads().await {
            self.led = false;
            return;
        }
        if !self.led {
            // Another replica may have moved rollouts until now.
            if let Err(e) = self.fleet.reload().await {
                tracing::warn!(error = %e, "cannot read the rollouts");
                return;
            }
            self.led = true;
            self.seen.clear();
        }
        let started = tokio::time::Instant::now();
        let now = now_ms();
        let mut changed: BTreeMap<String, (Rollout, Vec<Event>)> = BTreeMap::new();
        self.take_requests(&mut changed, now).await;
        // New heads at every tick (the heads are in memory: one query
        // for the project list); newcomers to running rollouts less often.
        self.survey(&mut changed, now).await;
        let survey = self.last_survey.is_none_or(|at| at.elapsed() >= SURVEY);
        if survey {
            self.last_survey = Some(tokio::time::Instant::now());
        }
        for rollout in self.fleet.rollouts() {
            if rollout.phase != Phase::Running {
                continue;
            }
            // What was read, not what a request changed this tick: the
            // request's change is written too.
            let before = (*rollout).clone();
            let (mut rollout, mut events) = changed
                .remove(&rollout.project)
                .unwrap_or_else(|| ((*rollout).clone(), Vec::new()));
            if survey {
                self.join_newcomers(&mut rollout).await;
            }
            let observed = match self.observe(&rollout.project).await {
                Ok(observed) => observed,
                Err(e) => {
                    tracing::warn!(project = %rollout.project, error = %e, "cannot read the agents' reports");
                    continue;
                }
            };
            events.extend(advance::advance(&mut rollout, &observed, now));
            if rollout_moved(&before, &rollout) || !events.is_empty() {
                changed.insert(rollout.project.clone(), (rollout, events));
            }
        }
        // A long tick (reading big repositories) may have outlived the
        // lease: write only while still holding it.
        if started.elapsed() > Duration::from_secs(2) && !self.leads().await {
            tracing::warn!("the rollouts' lease was lost during a look: nothing written");
            self.led = false;
            return;
        }
        for (_, (rollout, events)) in changed {
            self.write(rollout, events).await;
        }
    }

    async fn leads(&self) -> bool {
        let Some((replicas, me)) = &self.peers else {
            return true;
        };
        replicas
            .lead_poll(LEASE, me, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot take the rollouts' lease");
                false
            })
    }

    /// Applies the operators' requests.
    async fn take_requests(
        &self,
        changed: &mut BTreeMap<String, (Rollout, Vec<Event>)>,
        now: Millis,
    ) {
        let requests = match self
            .store
            .take_fleet_records(keys::REQUEST, MAX_REQUESTS)
            .await
        {
            Ok(requests) => requests,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read rollout requests");
                return;
            }
        };
        for request in requests {
            let Some((project, _)) = keys::split(keys::REQUEST, &request.key) else {
                continue;
            };
            let Ok(action) = serde_json::from_str::<Action>(&request.value) else {
                continue;
            };
            let Some(current) = self.fleet.rollout(project) else {
                continue;
            };
            let (mut rollout, mut events) = changed
                .remove(project)
                .unwrap_or_else(|| ((*current).clone(), Vec::new()));
            if rollout.phase == Phase::Running {
                match action {
                    Action::Pause => rollout.paused = true,
                    Action::Resume => rollout.paused = false,
                    Action::Promote => rollout.promote = true,
                    Action::Abort => events.push(advance::roll_back(
                        &mut rollout,
                        "aborted by an operator".to_owned(),
                        now,
                    )),
                }
                rollout.updated_at = now;
                self.metrics.requests.inc();
                tracing::info!(project, action = action.as_str(), "rollout request applied");
            }
            changed.insert(project.to_owned(), (rollout, events));
        }
    }

    /// Looks at every project's head; a new one with a rollout file
    /// starts a rollout (superseding the running one).
    async fn survey(&mut self, changed: &mut BTreeMap<String, (Rollout, Vec<Event>)>, now: Millis) {
        let projects = match self.heads.projects().await {
            Ok(projects) => projects,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list projects");
                return;
            }
        };
        let ids: BTreeSet<String> = projects.iter().map(|p| p.id.clone()).collect();
        self.seen.retain(|p, _| ids.contains(p));
        for project in projects {
            let Some((head, source)) = self.heads.head(&project.id).await else {
                continue;
            };
            let head_text = head.to_string();
            if self.seen.get(&project.id) == Some(&head_text) {
                continue;
            }
            let current = changed
                .get(&project.id)
                .map(|(r, _)| Arc::new(r.clone()))
                .or_else(|| self.fleet.rollout(&project.id));
            if current.as_ref().is_some_and(|r| r.commit == head_text) {
                self.seen.insert(project.id.clone(), head_text);
                continue;
            }
            match self
                .consider(&project.id, &head, &source, current.as_deref(), now)
                .await
            {
                Ok(Some((mut rollout, events))) => {
                    if let Some(old) = current.as_ref().filter(|r| r.commit != rollout.commit) {
                        rollout.supersedes = old.supersedes.clone();
                        if old.phase == Phase::Running {
                            rollout.supersedes.push(old.commit.clone());
                        }
                        let excess = rollout.supersedes.len().saturating_sub(MAX_SUPERSEDED);
                        rollout.supersedes.drain(..excess);
                    }
                    changed.insert(project.id.clone(), (rollout, events));
                }
                Ok(None) => {}
                // Tried again at the next tick.
                Err(e) => {
                    tracing::warn!(project = %project.id, error = %e, "cannot look at the new head yet");
                    continue;
                }
            }
            self.seen.insert(project.id.clone(), head_text);
        }
    }

    /// What a new head of `project` starts.
    async fn consider(
        &self,
        project: &str,
        head: &CommitId,
        source: &Source,
        current: Option<&Rollout>,
        now: Millis,
    ) -> Result<Option<(Rollout, Vec<Event>)>, ConsiderError> {
        let head_text = head.to_string();
        let file = read_rollout_file(source, head).await;
        let text = match file {
            Ok(Some(text)) => text,
            Ok(None) => {
                // Every agent gets the head at once (the gate says so);
                // a running rollout is over.
                return Ok(current.filter(|r| r.phase == Phase::Running).map(|r| {
                    let mut r = r.clone();
                    r.phase = Phase::Superseded;
                    r.message = format!(
                        "superseded by {}, which has no rollout file",
                        advance::short(&head_text)
                    );
                    r.ended_at = Some(now);
                    r.updated_at = now;
                    (r, Vec::new())
                }));
            }
            Err(FileProblem::Unreadable(why)) => return Err(ConsiderError::Retry(why)),
            Err(FileProblem::Invalid(why)) => {
                return Ok(Some(invalid(project, &head_text, why, current, now)));
            }
        };
        let spec = match tether_agent_config::rollout::parse(&text) {
            Ok((spec, _warnings)) => spec,
            Err(e) => {
                let why = format!("{ROLLOUT_PATH} is invalid: {e}");
                return Ok(Some(invalid(project, &head_text, why, current, now)));
            }
        };
        let candidates = self.candidates(project).await?;
        // Unneeded only when no agent would receive anything other than
        // what it has: each compared from its own commit, so a halted
        // rollout's commit is never let through by a later one that
        // changes nothing more.
        if !candidates.1.is_empty() && !changes_received_files(source, head, &candidates.1).await {
            let mut rollout = advance::settled(
                project,
                &head_text,
                Phase::Unneeded,
                "changes no file any agent receives: given to every agent".to_owned(),
                now,
            );
            rollout.started_at = now;
            if let Some(r) = current.filter(|r| r.phase == Phase::Running) {
                tracing::info!(project, superseded = %r.commit, "rollout superseded");
            }
            return Ok(Some((rollout, Vec::new())));
        }
        if let Some(r) = current.filter(|r| r.phase == Phase::Running) {
            tracing::info!(project, superseded = %r.commit, commit = %head_text, "rollout superseded by a newer commit");
        }
        let (mut rollout, events) = advance::start(project, &head_text, spec, candidates.0, now);
        rollout.base = base_of(current).or_else(|| most_given(&candidates.1));
        tracing::info!(project, commit = %head_text, waves = rollout.waves.len(), agents = rollout.agents.len(), "rollout started");
        Ok(Some((rollout, events)))
    }

    /// The agents that follow `project` (they were given, or hold, a
    /// commit of it): with their labels, last commit and pin; and what
    /// each receives.
    async fn candidates(&self, project: &str) -> Result<(Vec<Candidate>, Vec<Given>), StoreError> {
        let given = self.store.fleet_records(&keys::given_of(project)).await?;
        let agents: HashMap<String, tether_store::Agent> = self
            .store
            .list_agents()
            .await?
            .into_iter()
            .map(|a| (a.name.clone(), a))
            .collect();
        let mut candidates = Vec::new();
        let mut receives = Vec::new();
        for record in given {
            let Some((_, name)) = keys::split(keys::GIVEN, &record.key) else {
                continue;
            };
            let Some(agent) = agents.get(name) else {
                continue;
            };
            let given: Given = serde_json::from_str(&record.value).unwrap_or_default();
            candidates.push(Candidate {
                name: name.to_owned(),
                labels: agent.labels.clone(),
                given: Some(given.commit.clone()).filter(|c| !c.is_empty()),
                pinned: self.fleet.pin(project, name).map(|p| p.commit),
            });
            receives.push(given);
        }
        Ok((candidates, receives))
    }

    /// Agents that started following the project, or were pinned or
    /// unpinned, since the rollout started.
    async fn join_newcomers(&self, rollout: &mut Rollout) {
        let Ok((candidates, _)) = self.candidates(&rollout.project).await else {
            return;
        };
        // Agents deleted, or whose config no longer names the project,
        // are not waited for.
        let following: BTreeSet<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
        let gone: Vec<String> = rollout
            .agents
            .iter()
            .filter(|(name, a)| {
                !following.contains(name.as_str())
                    && matches!(a.phase, AgentPhase::Waiting | AgentPhase::Updating)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            tracing::info!(project = %rollout.project, agent = %name, "no longer follows the project: left out of the rollout");
            rollout.agents.remove(&name);
            for wave in &mut rollout.waves {
                wave.agents.retain(|a| a != &name);
            }
        }
        for candidate in candidates {
            let known = rollout.agents.get(&candidate.name).cloned();
            match (known, &candidate.pinned) {
                (None, _) => advance::join(rollout, candidate),
                (Some(state), Some(pin)) if state.phase != AgentPhase::Pinned => {
                    if let Some(wave) = state.wave.and_then(|w| rollout.waves.get_mut(w)) {
                        wave.agents.retain(|a| a != &candidate.name);
                    }
                    if let Some(state) = rollout.agents.get_mut(&candidate.name) {
                        state.wave = None;
                        state.phase = AgentPhase::Pinned;
                        state.gets = Some(pin.clone());
                        state.message = format!("pinned to {}: skipped", advance::short(pin));
                    }
                }
                (Some(state), None) if state.phase == AgentPhase::Pinned => {
                    rollout.agents.remove(&candidate.name);
                    advance::join(rollout, candidate);
                }
                _ => {}
            }
        }
    }

    /// What each agent last reported of the project.
    async fn observe(&self, project: &str) -> Result<BTreeMap<String, Observed>, StoreError> {
        let syncs = self.store.project_syncs(project).await?;
        Ok(syncs
            .into_iter()
            .filter_map(|(agent, record)| {
                let view: tether_api::SyncView = serde_json::from_str(&record.report).ok()?;
                Some((agent, Observed::of(&view)))
            })
            .collect())
    }

    async fn write(&self, mut rollout: Rollout, events: Vec<Event>) {
        // One count per project across its rollouts: a new rollout's
        // record must read as newer than the one it replaces.
        let known = self.fleet.rollout(&rollout.project).map_or(0, |r| r.rev);
        rollout.rev = rollout.rev.max(known) + 1;
        let value = match serde_json::to_string(&rollout) {
            Ok(value) => value,
            Err(e) => {
                tracing::error!(error = %e, "cannot write the rollout");
                return;
            }
        };
        let record = FleetRecord {
            key: keys::rollout(&rollout.project),
            value,
            updated_at: rollout.updated_at / 1000,
        };
        if let Err(e) = self.store.put_fleet_record(record).await {
            // Not taken here either: the next tick tries again from what
            // the store holds.
            tracing::warn!(project = %rollout.project, error = %e, "cannot record the rollout");
            return;
        }
        self.count(&rollout, &events);
        let project = rollout.project.clone();
        let summary = summary(&rollout);
        let agents: Vec<String> = rollout.agents.keys().cloned().collect();
        let commit = rollout.commit.clone();
        let failure = rollout.failure.clone();
        self.fleet.put(rollout);
        if let Some(publish) = &self.publish {
            publish(project.clone());
        }
        for event in events {
            tracing::info!(project = %project, commit = %commit, event = ?event, "rollout");
            if let Some(told) = &self.told
                && told
                    .try_send(Told {
                        project: project.clone(),
                        commit: commit.clone(),
                        event,
                        agents: agents.clone(),
                        summary: summary.clone(),
                        failure: failure.clone(),
                    })
                    .is_err()
            {
                tracing::warn!("rollout events are not taken: one dropped");
            }
        }
    }
}

impl Driver {
    /// Counts what `rollout`, about to be written, did since the record it
    /// replaces.
    fn count(&self, rollout: &Rollout, events: &[Event]) {
        let previous = self.fleet.rollout(&rollout.project);
        let replaces = previous.as_ref().filter(|p| p.commit != rollout.commit);
        if replaces.is_some_and(|p| p.phase == Phase::Running) {
            self.metrics
                .ended
                .get_or_create(&crate::metrics::Ended {
                    phase: Phase::Superseded.as_str(),
                })
                .inc();
        }
        let was_running = previous
            .as_ref()
            .is_none_or(|p| p.commit != rollout.commit || p.phase == Phase::Running);
        if rollout.phase.ended() && was_running {
            self.metrics
                .ended
                .get_or_create(&crate::metrics::Ended {
                    phase: rollout.phase.as_str(),
                })
                .inc();
        }
        for event in events {
            match event {
                Event::Started => {
                    self.metrics.started.inc();
                }
                Event::WavePassed { wave } => {
                    self.metrics.waves_passed.inc();
                    if let Some(w) = rollout.waves.iter().find(|w| &w.name == wave)
                        && let (Some(start), Some(end)) = (w.started_at, w.ended_at)
                    {
                        self.metrics
                            .wave_seconds
                            .observe(end.saturating_sub(start) as f64 / 1000.0);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Whether anything a reader sees moved (the times of a look do not).
fn rollout_moved(before: &Rollout, after: &Rollout) -> bool {
    let mut a = before.clone();
    a.updated_at = after.updated_at;
    a != *after
}

/// The rollout in a line: `wave eu (2/3): 4/10 agents on abc123`.
pub fn summary(rollout: &Rollout) -> String {
    let on = rollout
        .agents
        .values()
        .filter(|a| a.gets.as_deref() == Some(&rollout.commit))
        .count();
    match rollout.phase {
        Phase::Running => {
            let wave = rollout
                .waves
                .get(rollout.current)
                .map_or("", |w| w.name.as_str());
            format!(
                "wave {wave} ({}/{}): {on}/{} agents given it{}",
                rollout.current + 1,
                rollout.waves.len(),
                rollout.agents.len(),
                if rollout.paused { ", paused" } else { "" }
            )
        }
        Phase::Completed => format!("completed: {on} agents"),
        _ if !rollout.message.is_empty() => rollout.message.clone(),
        phase => phase.as_str().to_owned(),
    }
}

/// The most common commit among what agents were given.
fn most_given(given: &[Given]) -> Option<String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for g in given.iter().filter(|g| !g.commit.is_empty()) {
        *counts.entry(g.commit.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(c, _)| c.to_owned())
}

/// Whether any agent would receive a file at `to` that differs from what
/// it has (its given commit, by its paths; the rollout file itself does
/// not count). When in doubt (a read fails, an agent has no commit or no
/// paths known), it would.
async fn changes_received_files(source: &Source, to: &CommitId, given: &[Given]) -> bool {
    let mut groups: BTreeSet<(String, Vec<String>)> = BTreeSet::new();
    for g in given {
        if g.paths.is_empty() || g.commit.is_empty() {
            return true;
        }
        let mut paths = g.paths.clone();
        paths.sort();
        paths.dedup();
        groups.insert((g.commit.clone(), paths));
    }
    if groups.len() > MAX_DIFF_GROUPS {
        return true;
    }
    for (from, globs) in groups {
        let Some(from) = CommitId::parse(&from) else {
            return true;
        };
        if from == *to {
            continue;
        }
        let (source, to) = (source.clone(), to.clone());
        let differs = tokio::task::spawn_blocking(move || {
            let limits = SelectLimits {
                max_file_bytes: 5 << 20,
                max_total_bytes: 100 << 20,
                max_files: 20_000,
            };
            let read = |at: &CommitId| -> Option<Vec<(String, Vec<u8>)>> {
                let files = source.select_files(at, &globs, &limits).ok()?;
                Some(
                    files
                        .into_iter()
                        .filter(|m| m.path != ROLLOUT_PATH)
                        .map(|m| (m.path, m.bytes))
                        .collect(),
                )
            };
            match (read(&from), read(&to)) {
                (Some(a), Some(b)) => a != b,
                _ => true,
            }
        })
        .await
        .unwrap_or(true);
        if differs {
            return true;
        }
    }
    false
}

/// The rollout file at `commit`: `Ok(None)` when there is none.
async fn read_rollout_file(
    source: &Source,
    commit: &CommitId,
) -> Result<Option<String>, FileProblem> {
    let (source, at) = (source.clone(), commit.clone());
    let read = tokio::task::spawn_blocking(move || {
        source.read_file(&at, ROLLOUT_PATH, MAX_ROLLOUT_BYTES as u64)
    })
    .await
    .map_err(|e| FileProblem::Unreadable(format!("reading {ROLLOUT_PATH} was interrupted: {e}")))?;
    match read {
        Ok(None) => Ok(None),
        Ok(Some(file)) => String::from_utf8(file.bytes)
            .map(Some)
            .map_err(|_| FileProblem::Invalid(format!("{ROLLOUT_PATH} is not UTF-8"))),
        Err(e @ tether_git::GitError::TooLarge { .. }) => {
            Err(FileProblem::Invalid(format!("{ROLLOUT_PATH}: {e}")))
        }
        Err(e) => Err(FileProblem::Unreadable(format!(
            "cannot read {ROLLOUT_PATH}: {e}"
        ))),
    }
}

/// Why a rollout file could not be used.
#[derive(Debug)]
enum FileProblem {
    /// The commit's file is wrong: the commit goes to no agent.
    Invalid(String),
    /// It could not be read now (the repository is being fetched): tried
    /// again at the next look.
    Unreadable(String),
}

/// A commit whose rollout file cannot be used: it goes to no agent, and
/// that is told as a halt.
fn invalid(
    project: &str,
    commit: &str,
    why: String,
    current: Option<&Rollout>,
    now: Millis,
) -> (Rollout, Vec<Event>) {
    let mut rollout = advance::settled(project, commit, Phase::Invalid, why.clone(), now);
    rollout.base = base_of(current);
    let failure = Failure {
        wave: String::new(),
        agent: String::new(),
        object: None,
        message: why,
    };
    (rollout, vec![Event::Halted { failure }])
}

/// The commit agents with nothing to keep are given while a rollout has
/// not reached them: what the last completed rollout gave.
fn base_of(current: Option<&Rollout>) -> Option<String> {
    let current = current?;
    match current.phase {
        Phase::Completed | Phase::Unneeded => Some(current.commit.clone()),
        _ => current.base.clone(),
    }
}
