//! Image automation as kas runs it: one loop for the whole service (one
//! replica, by lease) that reads each project's `.tether/image-updates.yaml`
//! at every new commit, scans the repositories the policies name, and
//! writes back where git holds an older image.
//!
//! The loop ticks every [`TICK`] and never waits on the network: a tick
//! takes what finished since the last one (listings, digests, write-backs,
//! each a task of its own with a deadline), reads new commits, handles scan
//! requests (`kas image scan`, registry deliveries: records under
//! [`REQUEST`], so any replica can take one), starts what is due, and
//! decides again only when something changed. So a slow or hostile
//! registry named by one team holds its own listings, never the loop, and
//! the lease is renewed every tick. Every repository is scanned every
//! `interval` (jittered), and once as soon as a policy names it; at most
//! [`MAX_SCANS`] listings run at once, [`PER_HOST`] per registry host.
//!
//! Tags are kept in memory and in the store (one record per repository,
//! for the next replica to take the lease); the record goes when no policy
//! names the repository any more, so the store holds what the policies
//! need, not every tag ever seen.
//!
//! A failed write (push refused, a file that would break) is not tried
//! again at every tick: the next full scan or a scan request tries again.

mod read;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tether_agent_config::ImageRepository;
use tether_agent_config::image_updates::{self, ImagePolicy, ImageUpdates, TagPolicy};
use tether_api::{ImagePolicyStatus, ImageProjectStatus, ImageUpdateRecord};
use tether_git::push::PushAuth;
use tether_git::{CommitId, Source};
use tether_store::time::{now, to_rfc3339 as rfc3339};
use tether_store::{ImageRecord, PushSecretKind, ReplicaId, Replicas, Store};
use tokio::sync::{Mutex, Notify, mpsc};

use crate::markers::{Field, Latest};
use crate::registry::{Credentials, Registries, RegistryError, Tags};
use crate::write::{self, Job, WriteError, Written};

/// Records of the tags of each repository: `tags/<host>/<path>`.
pub const TAGS: &str = "tags/";
/// Records of each project's status: `status/<project>`.
pub const STATUS: &str = "status/";
/// Scan requests: `request/<repository>` (`request/*`: every one).
pub const REQUEST: &str = "request/";
/// The commit kas last pushed to a project's own push branch:
/// `branch/<project>`; kas replaces only a branch still at it.
pub const BRANCH: &str = "branch/";
/// How often the loop looks for new commits, requests and ripe batches.
pub const TICK: Duration = Duration::from_secs(1);
/// The default time between two scans of a repository.
pub const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(300);
/// Listings running at once, all registries.
pub const MAX_SCANS: usize = 32;
/// Listings of one registry host running at once.
pub const PER_HOST: usize = 2;
/// Digest lookups running at once.
const MAX_DIGESTS_RUNNING: usize = 8;
/// Write-backs running at once.
const MAX_WRITES: usize = 4;
/// A digest lookup's deadline, all requests.
const DIGEST_TIMEOUT: Duration = Duration::from_secs(45);
/// A write-back's deadline: every run of git, the pull request.
const WRITE_TIMEOUT: Duration = Duration::from_secs(300);
/// Digests remembered (by repository and tag) at most.
const MAX_DIGESTS: usize = 10_000;
/// The lease one replica holds to run the automation.
const LEASE: &str = ":image-updates";
/// Requests handled per tick at most; the rest wait for the next one.
const MAX_REQUESTS: usize = 1_000;

/// What the automation tells (kas turns them into notifications to the
/// project's agents' destinations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageEvent {
    Updated {
        project: String,
        commit: String,
        branch: String,
        /// `policy: old -> new`.
        changes: Vec<String>,
        pull_request: Option<String>,
    },
    Failed {
        project: String,
        error: String,
    },
}

/// Events waiting to be told at most; past it the newest are dropped.
pub const EVENTS: usize = 256;

/// What the automation needs of kas's projects.
#[async_trait]
pub trait Projects: Send + Sync + 'static {
    /// Every registered project: its id, URL and ref.
    async fn list(&self) -> Result<Vec<tether_store::Project>, tether_store::StoreError>;
    /// The commit the project's ref points to as its poller last read it,
    /// and where to read it (the project is followed from now on).
    async fn head(&self, project: &str) -> Option<(CommitId, Source)>;
    /// Polls the project now: kas pushed to it, and its agents should see
    /// the commit at once.
    async fn refresh(&self, project: &str);
}

/// How the automation runs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub interval: Duration,
    /// Scratch working copies, one folder per project.
    pub work: PathBuf,
    /// Each run of git's deadline.
    pub git_timeout: Duration,
}

/// The automation of one kas.
pub struct Service {
    store: Arc<dyn Store>,
    peers: Option<(Arc<dyn Replicas>, ReplicaId)>,
    projects: Arc<dyn Projects>,
    registries: Registries,
    settings: Settings,
    state: Mutex<State>,
    wake: Notify,
    metrics: crate::metrics::ImageMetrics,
    pull_requests: crate::pull_request::PullRequests,
    events: Option<mpsc::Sender<ImageEvent>>,
    /// What tasks finished; at most as many as may run at once wait here.
    done: mpsc::Sender<Done>,
    finished: Mutex<mpsc::Receiver<Done>>,
    /// Where tasks run: kas's drain, once `run` starts.
    drain: OnceLock<tether_runtime::Drain>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// One listing kas keeps: a repository, read with the host's login or
/// without. A login serves only the projects of its groups, so a project
/// outside them is decided on the anonymous listing of the same
/// repository, never on what the login saw.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Scan {
    repository: ImageRepository,
    login: bool,
}

impl Scan {
    /// Its name in records and digests: `host/path`, `@login` after it
    /// when read with the login.
    fn key(&self) -> String {
        match self.login {
            true => format!("{}@login", self.repository.full_name()),
            false => self.repository.full_name(),
        }
    }

    fn parse(key: &str) -> Option<Self> {
        let (name, login) = match key.strip_suffix("@login") {
            Some(name) => (name, true),
            None => (key, false),
        };
        Some(Scan {
            repository: ImageRepository::parse(name).ok()?,
            login,
        })
    }
}

/// A task's result.
enum Done {
    Scanned {
        scan: Scan,
        listed: Result<Tags, RegistryError>,
        took: Duration,
    },
    Digest {
        key: (String, String),
        found: Result<String, String>,
    },
    Written {
        project: String,
        base: String,
        file: ImageUpdates,
        written: Result<Written, String>,
    },
}

/// Digests by repository and tag: found, or why not, and when.
type Digests = HashMap<(String, String), (Result<String, String>, Instant)>;

#[derive(Default)]
struct State {
    projects: HashMap<String, ProjectState>,
    /// Each repository's last listing (the store holds the same).
    tags: HashMap<Scan, TagsRecord>,
    tags_loaded: bool,
    scanning: HashSet<Scan>,
    /// Registry hosts with a login, and the groups it serves (read each
    /// tick).
    logins: HashMap<String, tether_store::RegistryLoginInfo>,
    /// The digest of a repository's tag, or why it could not be read, and
    /// when: a failure is tried again at the next full scan.
    digests: Digests,
    digesting: HashSet<(String, String)>,
    writing: HashSet<String>,
    next_full: Option<Instant>,
    /// Every project must be decided again (tags loaded).
    dirty: bool,
    /// Projects whose commit, write-back or failure changed since the last
    /// decision; repositories whose tags or digests did. Only the projects
    /// they concern are decided again: a fleet's worth of policies is not
    /// evaluated at every listing that comes in.
    dirty_projects: HashSet<String>,
    dirty_repos: HashSet<Scan>,
}

#[derive(Default)]
struct ProjectState {
    commit: Option<String>,
    /// `None`: the project has no file.
    file: Option<Result<ImageUpdates, String>>,
    /// Marked values at `commit`: policy → (field, value) of each marker.
    in_git: BTreeMap<String, Vec<(Field, String)>>,
    /// Markers naming no policy, or whose value cannot be placed.
    marker_problem: Option<String>,
    branch: Option<String>,
    pending_since: Option<Instant>,
    /// The last write's failure: not tried again before a full scan or a
    /// request.
    failed: Option<String>,
    last_update: Option<ImageUpdateRecord>,
    /// The policies' statuses at the last decision, and the images they
    /// picked.
    policies: Vec<ImagePolicyStatus>,
    latest: BTreeMap<String, Latest>,
    /// The status last written to the store.
    written: Option<ImageProjectStatus>,
}

/// A repository's tags, as kept in the store.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct TagsRecord {
    tags: Vec<String>,
    cut: bool,
    scanned_at: i64,
    error: Option<String>,
}

impl Service {
    pub fn new(
        store: Arc<dyn Store>,
        projects: Arc<dyn Projects>,
        registries: Registries,
        settings: Settings,
    ) -> Self {
        let (done, finished) = mpsc::channel(MAX_SCANS + MAX_DIGESTS_RUNNING + MAX_WRITES);
        Service {
            store,
            peers: None,
            projects,
            registries,
            settings,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            metrics: Default::default(),
            pull_requests: Default::default(),
            events: None,
            done,
            finished: Mutex::new(finished),
            drain: OnceLock::new(),
        }
    }

    /// Tells every update and failure on `events` (at most [`EVENTS`]
    /// waiting).
    pub fn with_events(mut self, events: mpsc::Sender<ImageEvent>) -> Self {
        self.events = Some(events);
        self
    }

    fn tell(&self, event: ImageEvent) {
        if let Some(events) = &self.events
            && events.try_send(event).is_err()
        {
            tracing::warn!("image automation events are not taken: one dropped");
        }
    }

    /// Counts into `metrics` (kas's registry shows them).
    pub fn with_metrics(mut self, metrics: crate::metrics::ImageMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// With replicas: only the replica holding the lease runs it.
    pub fn with_peers(mut self, replicas: Arc<dyn Replicas>, me: ReplicaId) -> Self {
        self.peers = Some((replicas, me));
        self
    }

    /// Asks for a scan of `repositories` (every one when empty): written
    /// to the store, so the replica that runs the automation takes it.
    pub async fn request_scan(
        &self,
        repositories: &[String],
    ) -> Result<(), tether_store::StoreError> {
        let keys: Vec<String> = match repositories.is_empty() {
            true => vec![format!("{REQUEST}*")],
            false => repositories
                .iter()
                .map(|r| format!("{REQUEST}{r}"))
                .collect(),
        };
        for key in keys {
            self.store
                .put_image_record(ImageRecord {
                    key,
                    value: String::new(),
                    updated_at: now(),
                })
                .await?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Asks for a scan of the repositories a registry delivery names
    /// (`(host, path)`; no host: any host), among those a policy names;
    /// returns their names. A delivery naming none asks for nothing.
    pub async fn request_pushed(
        &self,
        pushed: &[(Option<String>, String)],
    ) -> Result<Vec<String>, tether_store::StoreError> {
        let wanted = self.repositories().await;
        if wanted.is_empty() {
            // Another replica runs the automation (this one knows no
            // policy): it takes the request and keeps what a policy names.
            // Only repositories named in full are asked for.
            let named: Vec<String> = pushed
                .iter()
                .filter_map(|(host, path)| {
                    let name = format!("{}/{path}", host.as_deref()?);
                    ImageRepository::parse(&name).ok().map(|r| r.full_name())
                })
                .collect();
            if !named.is_empty() {
                self.request_scan(&named).await?;
            }
            return Ok(named);
        }
        let matched: Vec<String> = wanted
            .iter()
            .filter(|r| {
                pushed.iter().any(|(host, path)| {
                    *path == r.path
                        && host.as_deref().is_none_or(|h| {
                            h == r.host || (r.host == "docker.io" && h.ends_with("docker.io"))
                        })
                })
            })
            .map(ImageRepository::full_name)
            .collect();
        if !matched.is_empty() {
            self.request_scan(&matched).await?;
        }
        Ok(matched)
    }

    /// Every project's status, as the replica running the automation last
    /// wrote it.
    pub async fn statuses(&self) -> Result<Vec<ImageProjectStatus>, tether_store::StoreError> {
        let records = self.store.image_records(STATUS).await?;
        Ok(records
            .iter()
            .filter_map(|r| serde_json::from_str(&r.value).ok())
            .collect())
    }

    /// The repositories the policies of every project name (for a
    /// registry delivery to be matched against).
    pub async fn repositories(&self) -> BTreeSet<ImageRepository> {
        let state = self.state.lock().await;
        wanted(&state).into_iter().map(|s| s.repository).collect()
    }

    /// Runs until the drain signal; its tasks run on the drain too.
    pub async fn run(self: Arc<Self>, drain: tether_runtime::Drain) {
        let _ = self.drain.set(drain.clone());
        let mut signal = drain.signal();
        loop {
            self.tick().await;
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.wake.notified() => {}
                _ = signal.signalled() => return,
            }
        }
    }

    /// Whether listings, digest lookups or write-backs are still running.
    pub async fn busy(&self) -> bool {
        let state = self.state.lock().await;
        !(state.scanning.is_empty() && state.digesting.is_empty() && state.writing.is_empty())
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        match self.drain.get() {
            Some(drain) => {
                drain.spawn(task);
            }
            // Not run by `run` (a bench drives the ticks itself).
            None => {
                tokio::spawn(task);
            }
        }
    }

    /// One pass: what finished, new commits, requests, what is due, and a
    /// decision where something changed.
    pub async fn tick(self: &Arc<Self>) {
        if !self.leads().await {
            self.state.lock().await.tags_loaded = false;
            return;
        }
        let full = {
            let mut state = self.state.lock().await;
            let due = state.next_full.is_none_or(|at| Instant::now() >= at);
            if due {
                state.next_full = Some(Instant::now() + jittered(self.settings.interval));
                // Failed digest lookups are tried again.
                state.digests.retain(|_, (found, _)| found.is_ok());
            }
            due
        };
        let requested = self.take_requests().await;
        if let Ok(logins) = self.store.list_registry_logins().await {
            let logins: HashMap<String, tether_store::RegistryLoginInfo> =
                logins.into_iter().map(|l| (l.host.clone(), l)).collect();
            let mut state = self.state.lock().await;
            if state.logins != logins {
                state.logins = logins;
                state.dirty = true;
            }
        }
        self.collect().await;
        self.read_projects().await;
        self.load_tags(full).await;
        self.start_scans(full, &requested).await;
        let retry = full || !requested.is_empty();
        self.decide(retry).await;
    }

    async fn leads(&self) -> bool {
        let Some((replicas, me)) = &self.peers else {
            return true;
        };
        let ttl = (TICK * 10).max(Duration::from_secs(15));
        replicas
            .lead_poll(LEASE, me, ttl)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot take the image automation's lease");
                false
            })
    }

    /// The repositories requested (`*` for all), the requests removed.
    async fn take_requests(&self) -> BTreeSet<String> {
        let Ok(records) = self.store.image_records(REQUEST).await else {
            return BTreeSet::new();
        };
        let mut requested = BTreeSet::new();
        for record in records.into_iter().take(MAX_REQUESTS) {
            let _ = self.store.delete_image_record(&record.key).await;
            requested.insert(record.key[REQUEST.len()..].to_owned());
        }
        requested
    }

    /// Takes what the tasks finished.
    async fn collect(self: &Arc<Self>) {
        let mut finished = Vec::new();
        {
            let mut receiver = self.finished.lock().await;
            while let Ok(done) = receiver.try_recv() {
                finished.push(done);
            }
        }
        for done in finished {
            match done {
                Done::Scanned { scan, listed, took } => self.scanned(scan, listed, took).await,
                Done::Digest { key, found } => {
                    let mut state = self.state.lock().await;
                    state.digesting.remove(&key);
                    if state.digests.len() >= MAX_DIGESTS {
                        state.digests.clear();
                    }
                    if let Some(scan) = Scan::parse(&key.0) {
                        state.dirty_repos.insert(scan);
                    }
                    state.digests.insert(key, (found, Instant::now()));
                }
                Done::Written {
                    project,
                    base,
                    file,
                    written,
                } => {
                    self.state.lock().await.writing.remove(&project);
                    self.written(&project, &base, &file, written).await;
                }
            }
        }
    }

    /// Reads the file and the markers of every project whose commit moved.
    async fn read_projects(&self) {
        let projects = match self.projects.list().await {
            Ok(projects) => projects,
            Err(e) => {
                tracing::warn!(error = %e, "image automation cannot list the projects");
                return;
            }
        };
        let ids: BTreeSet<String> = projects.iter().map(|p| p.id.clone()).collect();
        self.state
            .lock()
            .await
            .projects
            .retain(|id, _| ids.contains(id));
        for project in projects {
            let Some((commit, source)) = self.projects.head(&project.id).await else {
                continue;
            };
            let known = self
                .state
                .lock()
                .await
                .projects
                .get(&project.id)
                .and_then(|p| p.commit.clone());
            if known.as_deref() == Some(&commit.to_string()) {
                continue;
            }
            let git_ref = project.git_ref.clone();
            let read = tokio::task::spawn_blocking(move || {
                read::read_project(&source, &commit, git_ref.as_deref())
            })
            .await;
            let Ok(read) = read else { continue };
            let mut state = self.state.lock().await;
            let entry = state.projects.entry(project.id.clone()).or_default();
            entry.commit = Some(read.commit);
            entry.file = read.file;
            entry.in_git = read.in_git;
            entry.marker_problem = read.marker_problem;
            entry.branch = read.branch;
            state.dirty_projects.insert(project.id.clone());
        }
    }

    /// The tags the store holds, once per lease; on a full pass, the
    /// records of repositories no policy names go.
    async fn load_tags(&self, full: bool) {
        let loaded = self.state.lock().await.tags_loaded;
        if loaded && !full {
            return;
        }
        let wanted = wanted(&*self.state.lock().await);
        let stored = self.store.image_records(TAGS).await.unwrap_or_default();
        let mut state = self.state.lock().await;
        for record in stored {
            let name = &record.key[TAGS.len()..];
            match Scan::parse(name) {
                Some(scan) if wanted.contains(&scan) => {
                    if !state.tags_loaded
                        && let Ok(tags) = serde_json::from_str(&record.value)
                    {
                        state.tags.insert(scan, tags);
                    }
                }
                _ => {
                    let _ = self.store.delete_image_record(&record.key).await;
                }
            }
        }
        state.tags.retain(|r, _| wanted.contains(r));
        state.tags_loaded = true;
        state.dirty = true;
        self.metrics
            .tags_kept
            .set(state.tags.values().map(|r| r.tags.len() as i64).sum());
    }

    /// Starts the listings that are due: every one on a full pass, else
    /// what was requested and what no listing holds yet; within the caps.
    async fn start_scans(self: &Arc<Self>, full: bool, requested: &BTreeSet<String>) {
        let mut state = self.state.lock().await;
        let wanted = wanted(&state);
        let due: Vec<Scan> = wanted
            .into_iter()
            .filter(|s| {
                !state.scanning.contains(s)
                    && (full
                        || requested.contains("*")
                        || requested.contains(&s.repository.full_name())
                        || !state.tags.contains_key(s))
            })
            .collect();
        let mut per_host: HashMap<String, usize> = HashMap::new();
        for s in &state.scanning {
            *per_host
                .entry(s.repository.host.to_ascii_lowercase())
                .or_default() += 1;
        }
        for scan in due {
            if state.scanning.len() >= MAX_SCANS {
                break;
            }
            let host = per_host
                .entry(scan.repository.host.to_ascii_lowercase())
                .or_default();
            if *host >= PER_HOST {
                continue;
            }
            *host += 1;
            state.scanning.insert(scan.clone());
            let service = self.clone();
            self.spawn(async move {
                let credentials = match scan.login {
                    true => service.credentials(&scan.repository.host).await,
                    false => None,
                };
                let started = Instant::now();
                let listed = service
                    .registries
                    .tags(&scan.repository, credentials.as_ref())
                    .await;
                let took = started.elapsed();
                let _ = service
                    .done
                    .send(Done::Scanned { scan, listed, took })
                    .await;
                service.wake.notify_one();
            });
        }
    }

    /// A listing done: kept in memory and in the store.
    async fn scanned(&self, scan: Scan, listed: Result<Tags, RegistryError>, took: Duration) {
        let repository = scan.repository.clone();
        self.metrics.scan_seconds.observe(took.as_secs_f64());
        let result = if listed.is_ok() { "ok" } else { "error" };
        self.metrics
            .scans
            .get_or_create(&crate::metrics::Result { result })
            .inc();
        let mut state = self.state.lock().await;
        state.scanning.remove(&scan);
        let record = match listed {
            Ok(tags) => {
                self.metrics
                    .registry_requests
                    .inc_by(u64::from(tags.requests));
                if tags.cut {
                    tracing::warn!(repository = %repository, "more than 10,000 tags: the rest were not read");
                }
                TagsRecord {
                    tags: tags.tags,
                    cut: tags.cut,
                    scanned_at: now(),
                    error: None,
                }
            }
            // The tags of the last good scan stay; the error is shown.
            Err(e) => {
                tracing::warn!(repository = %repository, error = %e, "image scan failed");
                let mut kept = state.tags.get(&scan).cloned().unwrap_or_default();
                kept.error = Some(e.to_string());
                kept.scanned_at = now();
                kept
            }
        };
        let value = serde_json::to_string(&record).unwrap_or_default();
        state.tags.insert(scan.clone(), record);
        state.dirty_repos.insert(scan.clone());
        self.metrics
            .tags_kept
            .set(state.tags.values().map(|r| r.tags.len() as i64).sum());
        drop(state);
        let _ = self
            .store
            .put_image_record(ImageRecord {
                key: format!("{TAGS}{}", scan.key()),
                value,
                updated_at: now(),
            })
            .await;
    }

    async fn credentials(&self, host: &str) -> Option<Credentials> {
        match self.store.registry_login(host).await {
            Ok(Some(login)) => Some(Credentials {
                username: login.username,
                password: login.password,
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(host, error = %e, "cannot read the registry's credentials");
                None
            }
        }
    }

    /// Where something changed (or a batch window may have closed): the
    /// latest image of each policy against what git holds, and a write
    /// when they differ and the window is over.
    async fn decide(self: &Arc<Self>, retry: bool) {
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        let all = std::mem::take(&mut state.dirty) || retry;
        let dirty_projects = std::mem::take(&mut state.dirty_projects);
        let dirty_repos = std::mem::take(&mut state.dirty_repos);
        let ids: Vec<String> = state
            .projects
            .iter()
            .filter(|(id, p)| {
                all || p.pending_since.is_some()
                    || dirty_projects.contains(*id)
                    || matches!(&p.file, Some(Ok(file)) if file.images.iter().any(|i| {
                        scan_of(&state.logins, id, &i.repository).is_some_and(|s| dirty_repos.contains(&s))
                    }))
            })
            .map(|(id, _)| id.clone())
            .collect();
        if ids.is_empty() {
            return;
        }
        let mut lookups = Vec::new();
        let mut writes = Vec::new();
        for id in &ids {
            let Some(project) = state.projects.get(id) else {
                continue;
            };
            let Some(Ok(file)) = &project.file else {
                continue;
            };
            let file = file.clone();
            // A policy whose repository, digests and project did not change
            // keeps what it was decided last time.
            let whole =
                all || dirty_projects.contains(id) || project.policies.len() != file.images.len();
            let mut latest = BTreeMap::new();
            let mut statuses = Vec::new();
            for (i, policy) in file.images.iter().enumerate() {
                let scan = scan_of(&state.logins, id, &policy.repository);
                let unchanged = !whole
                    && project.policies[i].name == policy.name
                    && scan.as_ref().is_some_and(|s| !dirty_repos.contains(s));
                if unchanged {
                    if let Some(picked) = project.latest.get(&policy.name) {
                        latest.insert(policy.name.clone(), picked.clone());
                    }
                    statuses.push(project.policies[i].clone());
                    continue;
                }
                let (status, picked, lookup) = evaluate(
                    policy,
                    scan.as_ref(),
                    &project.in_git,
                    &state.tags,
                    &state.digests,
                );
                if let Some(picked) = picked {
                    latest.insert(policy.name.clone(), picked);
                }
                lookups.extend(lookup);
                statuses.push(status);
            }
            let Some(project) = state.projects.get_mut(id) else {
                continue;
            };
            let behind = statuses.iter().any(|s| s.state == "pending");
            if !behind {
                project.pending_since = None;
            } else if project.pending_since.is_none() {
                project.pending_since = Some(Instant::now());
            }
            if retry {
                project.failed = None;
            }
            let ripe = project
                .pending_since
                .is_some_and(|since| since.elapsed() >= file.update.batch);
            project.policies = statuses;
            project.latest = latest.clone();
            if behind
                && ripe
                && project.failed.is_none()
                && project.marker_problem.is_none()
                && !state.writing.contains(id)
                && let Some(base) = project.branch.clone()
            {
                writes.push((id.clone(), base, file, latest));
            }
        }
        for key in lookups {
            if state.digesting.len() >= MAX_DIGESTS_RUNNING || !state.digesting.insert(key.clone())
            {
                continue;
            }
            let service = self.clone();
            self.spawn(async move {
                let found = service.digest(&key).await;
                let _ = service.done.send(Done::Digest { key, found }).await;
                service.wake.notify_one();
            });
        }
        for (id, base, file, latest) in writes {
            if state.writing.len() >= MAX_WRITES {
                break;
            }
            state.writing.insert(id.clone());
            let service = self.clone();
            self.spawn(async move {
                let written =
                    tokio::time::timeout(WRITE_TIMEOUT, service.write(&id, &base, &file, &latest))
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!(
                                "the write-back did not finish within {WRITE_TIMEOUT:?}"
                            ))
                        });
                let _ = service
                    .done
                    .send(Done::Written {
                        project: id,
                        base,
                        file,
                        written,
                    })
                    .await;
                service.wake.notify_one();
            });
        }
        drop(guard);
        for id in ids {
            self.publish(&id).await;
        }
    }

    /// The digest of `(repository, tag)`, within [`DIGEST_TIMEOUT`].
    async fn digest(&self, (key, tag): &(String, String)) -> Result<String, String> {
        let scan = Scan::parse(key).ok_or_else(|| format!("{key:?} is not a repository"))?;
        let repository = scan.repository;
        let credentials = match scan.login {
            true => self.credentials(&repository.host).await,
            false => None,
        };
        match tokio::time::timeout(
            DIGEST_TIMEOUT,
            self.registries
                .digest(&repository, tag, credentials.as_ref()),
        )
        .await
        {
            Ok(Ok(digest)) => Ok(digest),
            Ok(Err(e)) => Err(format!("cannot read the digest of {tag}: {e}")),
            Err(_) => Err(format!(
                "the digest of {tag} was not read within {DIGEST_TIMEOUT:?}"
            )),
        }
    }

    /// One write-back: the credentials, the change pushed, the pull
    /// request. The SSH key written for it goes with it.
    async fn write(
        &self,
        project: &str,
        base: &str,
        file: &ImageUpdates,
        latest: &BTreeMap<String, Latest>,
    ) -> Result<Written, String> {
        let record = self
            .projects
            .list()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|p| p.id == project)
            .ok_or_else(|| format!("project {project} is gone"))?;
        let work = self.settings.work.join(folder_name(project));
        let key_file = self
            .settings
            .work
            .join(format!("{}.key", folder_name(project)));
        let auth = match self.store.push_credential(project).await {
            Ok(Some(credential)) => match credential.kind {
                PushSecretKind::Token => PushAuth::Token(credential.secret),
                PushSecretKind::SshKey => {
                    tether_runtime::files::write_private(&key_file, &credential.secret)
                        .map_err(|e| format!("cannot write the SSH key: {e}"))?;
                    PushAuth::SshKey(key_file.clone())
                }
            },
            Ok(None) => PushAuth::None,
            Err(e) => return Err(format!("cannot read the push credentials: {e}")),
        };
        let owned = self.owned_tip(project).await;
        let settings = file.update.clone();
        let latest = latest.clone();
        let timeout = self.settings.git_timeout;
        let base_owned = base.to_owned();
        let written = tokio::task::spawn_blocking(move || {
            let job = Job {
                url: &record.url,
                auth,
                base: &base_owned,
                settings: &settings,
                latest: &latest,
                work: &work,
                timeout,
                owned: owned.as_deref(),
            };
            let written = write::write(&job);
            let _ = std::fs::remove_dir_all(&work);
            let _ = std::fs::remove_file(&key_file);
            written
        })
        .await
        .map_err(|e| format!("the write-back panicked: {e}"))?
        .map_err(|e: WriteError| e.to_string())?;
        if written.branch != base
            && let Some(commit) = &written.commit
        {
            let _ = self
                .store
                .put_image_record(ImageRecord {
                    key: format!("{BRANCH}{project}"),
                    value: serde_json::json!({"branch": written.branch, "commit": commit})
                        .to_string(),
                    updated_at: now(),
                })
                .await;
        }
        Ok(written)
    }

    /// The commit kas last pushed to the project's own push branch.
    async fn owned_tip(&self, project: &str) -> Option<String> {
        let records = self
            .store
            .image_records(&format!("{BRANCH}{project}"))
            .await
            .ok()?;
        let record = records
            .into_iter()
            .find(|r| r.key == format!("{BRANCH}{project}"))?;
        let value: serde_json::Value = serde_json::from_str(&record.value).ok()?;
        value["commit"].as_str().map(str::to_owned)
    }

    /// A write-back done: the pull request, the project's state, the tell.
    async fn written(
        &self,
        project: &str,
        base: &str,
        file: &ImageUpdates,
        written: Result<Written, String>,
    ) {
        let written = match written {
            Ok(written) => written,
            Err(e) => return self.failed(project, e).await,
        };
        let wants = file.update.pull_request && written.branch != base;
        let pull_request = match wants && !written.files.is_empty() {
            false => None,
            true => match tokio::time::timeout(
                Duration::from_secs(90),
                self.open_pull_request(project, &written, file, base),
            )
            .await
            {
                Ok(Ok(url)) => Some(url),
                Ok(Err(e)) => return self.failed(project, e).await,
                Err(_) => {
                    return self
                        .failed(project, "the pull request was not opened within 90s".into())
                        .await;
                }
            },
        };
        let mut state = self.state.lock().await;
        state.dirty_projects.insert(project.to_owned());
        let Some(p) = state.projects.get_mut(project) else {
            return;
        };
        p.pending_since = None;
        p.failed = None;
        let result = if written.commit.is_some() {
            "pushed"
        } else {
            "up_to_date"
        };
        self.metrics
            .updates
            .get_or_create(&crate::metrics::Result { result })
            .inc();
        if written.commit.is_none()
            && let (Some(url), Some(last)) = (&pull_request, &mut p.last_update)
        {
            last.pull_request = Some(url.clone());
        }
        let Some(commit) = &written.commit else {
            return;
        };
        tracing::info!(project, commit, branch = %written.branch, "image update pushed");
        let record = ImageUpdateRecord {
            at: rfc3339(now()),
            commit: commit.clone(),
            branch: written.branch.clone(),
            changes: write::summary(&written.files),
            pull_request,
        };
        p.last_update = Some(record.clone());
        drop(state);
        self.tell(ImageEvent::Updated {
            project: project.to_owned(),
            commit: record.commit,
            branch: record.branch,
            changes: record.changes,
            pull_request: record.pull_request,
        });
        // The pollers read the new commit now, so agents get it at once.
        let projects = self.projects.clone();
        let project = project.to_owned();
        self.spawn(async move { projects.refresh(&project).await });
    }

    /// Opens (or finds) the request from the update's branch into the
    /// project's, on the host its commit statuses go to.
    async fn open_pull_request(
        &self,
        project: &str,
        written: &write::Written,
        file: &ImageUpdates,
        base: &str,
    ) -> Result<String, String> {
        let target = match self.store.status_target(project).await {
            Ok(Some(target)) => target,
            Ok(None) => {
                return Err("pull_request: true needs the project's git host settings \
                     (kas project statuses set)"
                    .to_owned());
            }
            Err(e) => return Err(format!("cannot read the project's git host settings: {e}")),
        };
        let message = write::message(&file.update.message, &written.files);
        let title = message.lines().next().unwrap_or("Update images").to_owned();
        let opened = self
            .pull_requests
            .ensure(&target, &written.branch, base, &title, &message)
            .await
            .map_err(|e| format!("cannot open the pull request: {e}"))?;
        if opened.created {
            tracing::info!(project, url = %opened.url, "pull request opened");
        }
        Ok(opened.url)
    }

    async fn failed(&self, project: &str, error: String) {
        tracing::warn!(project, error = %error, "image update not pushed");
        self.metrics
            .updates
            .get_or_create(&crate::metrics::Result { result: "failed" })
            .inc();
        let mut state = self.state.lock().await;
        state.dirty_projects.insert(project.to_owned());
        if let Some(p) = state.projects.get_mut(project) {
            p.failed = Some(error.clone());
        }
        drop(state);
        self.tell(ImageEvent::Failed {
            project: project.to_owned(),
            error,
        });
    }

    /// Writes the project's status to the store when it changed.
    async fn publish(&self, project: &str) {
        let status = {
            let state = self.state.lock().await;
            let Some(p) = state.projects.get(project) else {
                return;
            };
            let error = match &p.file {
                Some(Err(e)) => Some(e.clone()),
                _ => p
                    .marker_problem
                    .clone()
                    .or_else(|| p.failed.clone())
                    .or_else(|| {
                        p.branch
                            .is_none()
                            .then(|| "the project's ref is not a branch kas can push to".to_owned())
                    }),
            };
            ImageProjectStatus {
                project: project.to_owned(),
                commit: p.commit.clone(),
                error,
                branch: p.branch.clone(),
                policies: p.policies.clone(),
                last_update: p.last_update.clone(),
            }
        };
        let mut state = self.state.lock().await;
        let Some(p) = state.projects.get_mut(project) else {
            return;
        };
        if p.written.as_ref() == Some(&status) {
            return;
        }
        let stored = self
            .store
            .put_image_record(ImageRecord {
                key: format!("{STATUS}{project}"),
                value: serde_json::to_string(&status).unwrap_or_default(),
                updated_at: now(),
            })
            .await;
        if stored.is_ok() {
            p.written = Some(status);
        }
    }
}

/// One policy's status, the image it picks, and the digest to look up
/// first (when it pins digests and the digest is not known yet).
fn evaluate(
    policy: &ImagePolicy,
    scan: Option<&Scan>,
    in_git: &BTreeMap<String, Vec<(Field, String)>>,
    tags: &HashMap<Scan, TagsRecord>,
    digests: &Digests,
) -> (ImagePolicyStatus, Option<Latest>, Option<(String, String)>) {
    let marked = in_git.get(&policy.name).cloned().unwrap_or_default();
    let mut status = ImagePolicyStatus {
        name: policy.name.clone(),
        repository: policy.repository.clone(),
        policy: describe(&policy.policy),
        in_git: marked
            .iter()
            .filter(|(f, _)| matches!(f, Field::Reference | Field::Tag))
            .map(|(_, v)| v.clone())
            .collect(),
        state: "not_scanned".into(),
        ..Default::default()
    };
    let Some(scan) = scan else {
        status.state = "error".into();
        return (status, None, None);
    };
    let Some(record) = tags.get(scan) else {
        return (status, None, None);
    };
    status.tags = record.tags.len();
    status.cut = record.cut;
    status.scanned_at = Some(rfc3339(record.scanned_at));
    if record.tags.is_empty()
        && let Some(error) = &record.error
    {
        status.state = "error".into();
        status.message = Some(error.clone());
        return (status, None, None);
    }
    let Some(tag) = policy.latest(record.tags.iter().map(String::as_str)) else {
        status.state = "no_match".into();
        status.message = Some(format!(
            "no tag of {} satisfies {}",
            policy.repository, status.policy
        ));
        return (status, None, None);
    };
    status.latest = Some(tag.to_owned());
    let wants_digest = policy.digest || marked.iter().any(|(f, _)| *f == Field::Digest);
    let mut digest = None;
    if wants_digest {
        let key = (scan.key(), tag.to_owned());
        match digests.get(&key) {
            Some((Ok(found), _)) => digest = Some(found.clone()),
            Some((Err(e), _)) => {
                status.state = "error".into();
                status.message = Some(e.clone());
                return (status, None, None);
            }
            None => {
                status.message = Some(format!("reading the digest of {tag}"));
                return (status, None, Some(key));
            }
        }
    }
    status.digest = digest.clone();
    let latest = Latest {
        repository: policy.repository.clone(),
        tag: tag.to_owned(),
        digest,
        pin: policy.digest,
    };
    let behind = marked
        .iter()
        .any(|(field, value)| latest.value(*field).is_some_and(|want| &want != value));
    status.state = if behind { "pending" } else { "up_to_date" }.into();
    if let Some(error) = &record.error {
        status.message = Some(format!("last scan failed, tags of the one before: {error}"));
    }
    (status, Some(latest), None)
}

/// Every listing the projects' policies need.
fn wanted(state: &State) -> BTreeSet<Scan> {
    state
        .projects
        .iter()
        .filter_map(|(id, p)| match &p.file {
            Some(Ok(file)) => Some((id, file)),
            _ => None,
        })
        .flat_map(|(id, file)| {
            file.images
                .iter()
                .filter_map(|policy| scan_of(&state.logins, id, &policy.repository))
        })
        .collect()
}

/// The listing project `project`'s policy on `repository` is decided on:
/// with the host's login when the login serves the project's group.
fn scan_of(
    logins: &HashMap<String, tether_store::RegistryLoginInfo>,
    project: &str,
    repository: &str,
) -> Option<Scan> {
    let repository = ImageRepository::parse(repository).ok()?;
    let login = logins
        .get(&repository.host)
        .is_some_and(|l| l.serves(project));
    Some(Scan { repository, login })
}

fn describe(policy: &TagPolicy) -> String {
    match policy {
        TagPolicy::Semver(range) => format!("semver {}", range.as_str()),
        TagPolicy::Alphabetical(order) => format!("alphabetical {}", order_name(*order)),
        TagPolicy::Numerical(order) => format!("numerical {}", order_name(*order)),
    }
}

fn order_name(order: image_updates::Order) -> &'static str {
    match order {
        image_updates::Order::Asc => "asc",
        image_updates::Order::Desc => "desc",
    }
}

/// A folder name for `project` (`team/app` → `team_app-<hash>`).
fn folder_name(project: &str) -> String {
    let readable: String = project
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    let hash = project.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{readable}-{hash:016x}")
}

/// `interval` ± 10 %, so replicas' and registries' load spreads.
fn jittered(interval: Duration) -> Duration {
    let tenth = interval.as_millis() as u64 / 10;
    if tenth == 0 {
        return interval;
    }
    let offset = rand::random::<u64>() % (2 * tenth);
    interval - Duration::from_millis(tenth) + Duration::from_millis(offset)
}
