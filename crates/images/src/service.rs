//! Image automation as kas runs it: one loop for the whole service (one
//! replica, by lease) that reads each project's `.tether/image-updates.yaml`
//! at every new commit, scans the repositories the policies name, and
//! writes back where git holds an older image.
//!
//! The loop ticks every [`TICK`]: a tick reads new commits, handles scan
//! requests (`kas image scan`, registry deliveries: records under
//! [`REQUEST`], so any replica can take one) and pushes what a batch window
//! let ripen. Every repository is scanned every `interval` (jittered), and
//! once as soon as a policy names it. Tags are kept in the store, one
//! record per repository, and the record goes when no policy names the
//! repository any more: the store holds what the policies need, not every
//! tag ever seen.
//!
//! A failed write (push refused, a file that would break) is not tried
//! again at every tick: the next full scan or a scan request tries again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt as _;
use tether_agent_config::ImageRepository;
use tether_agent_config::image_updates::IMAGE_UPDATES_PATH;
use tether_agent_config::image_updates::{self, ImagePolicy, ImageUpdates, TagPolicy};
use tether_api::{ImagePolicyStatus, ImageProjectStatus, ImageUpdateRecord};
use tether_git::push::PushAuth;
use tether_git::{CommitId, SelectLimits, Source};
use tether_store::{ImageRecord, PushSecretKind, ReplicaId, Replicas, Store};
use tokio::sync::{Mutex, Notify};

use crate::markers::{self, Field, Latest};
use crate::registry::{Credentials, Registries};
use crate::write::{self, Job, WriteError};

/// Records of the tags of each repository: `tags/<host>/<path>`.
pub const TAGS: &str = "tags/";
/// Records of each project's status: `status/<project>`.
pub const STATUS: &str = "status/";
/// Scan requests: `request/<repository>` (`request/*`: every one).
pub const REQUEST: &str = "request/";
/// How often the loop looks for new commits, requests and ripe batches.
pub const TICK: Duration = Duration::from_secs(1);
/// The default time between two scans of a repository.
pub const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(300);
/// Registry hosts scanned at once.
const SCAN_CONCURRENCY: usize = 16;
/// Repositories of one host scanned at once: a slow or hostile registry
/// named by one tenant holds at most this many of the slots.
const PER_HOST: usize = 2;
/// Digests remembered (by repository and tag) at most.
const MAX_DIGESTS: usize = 10_000;
/// The lease one replica holds to run the automation.
const LEASE: &str = ":image-updates";
/// Requests handled per tick at most; the rest wait for the next one.
const MAX_REQUESTS: usize = 1_000;

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
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    projects: HashMap<String, ProjectState>,
    digests: HashMap<(String, String), String>,
    next_full: Option<Instant>,
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
            let named: Vec<String> = pushed
                .iter()
                .map(|(host, path)| match host {
                    Some(host) => format!("{host}/{path}"),
                    None => "*".to_owned(),
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
        wanted(&state)
    }

    /// Runs until the drain signal.
    pub async fn run(self: Arc<Self>, drain: tether_runtime::Drain) {
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

    /// One pass: new commits, requests, scans, writes.
    pub async fn tick(&self) {
        if !self.leads().await {
            return;
        }
        let full = {
            let mut state = self.state.lock().await;
            let due = state.next_full.is_none_or(|at| Instant::now() >= at);
            if due {
                state.next_full = Some(Instant::now() + jittered(self.settings.interval));
            }
            due
        };
        let requested = self.take_requests().await;
        self.read_projects().await;
        let scanned = self.scan(full, &requested).await;
        self.decide(full || !requested.is_empty(), &scanned).await;
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
            let read = tokio::task::spawn_blocking(move || {
                read_project(&source, &commit, project.git_ref.as_deref())
            })
            .await;
            let Ok(read) = read else { continue };
            let mut state = self.state.lock().await;
            let entry = state.projects.entry(project.id.clone()).or_default();
            if entry.file.is_none() && read.file.is_some() {
                tracing::info!(project = %project.id, "image automation: found {IMAGE_UPDATES_PATH}");
            }
            entry.commit = Some(read.commit);
            entry.file = read.file;
            entry.in_git = read.in_git;
            entry.marker_problem = read.marker_problem;
            entry.branch = read.branch;
        }
    }

    /// Scans what is due: everything on a full pass, else what was
    /// requested and what no record holds yet. Returns the tags of every
    /// repository a policy names.
    async fn scan(
        &self,
        full: bool,
        requested: &BTreeSet<String>,
    ) -> HashMap<ImageRepository, TagsRecord> {
        let wanted = wanted(&*self.state.lock().await);
        let mut records: HashMap<ImageRepository, TagsRecord> = HashMap::new();
        let stored = self.store.image_records(TAGS).await.unwrap_or_default();
        for record in stored {
            let name = &record.key[TAGS.len()..];
            match ImageRepository::parse(name) {
                Ok(repository) if wanted.contains(&repository) => {
                    if let Ok(tags) = serde_json::from_str(&record.value) {
                        records.insert(repository, tags);
                    }
                }
                // No policy names it any more: the store forgets it.
                _ => {
                    let _ = self.store.delete_image_record(&record.key).await;
                }
            }
        }
        let due: Vec<ImageRepository> = wanted
            .iter()
            .filter(|r| {
                full || requested.contains("*")
                    || requested.contains(&r.full_name())
                    || !records.contains_key(*r)
            })
            .cloned()
            .collect();
        // By host, each host's repositories PER_HOST at a time.
        let mut by_host: BTreeMap<String, Vec<ImageRepository>> = BTreeMap::new();
        for repository in due {
            by_host
                .entry(repository.host.clone())
                .or_default()
                .push(repository);
        }
        let scans: Vec<_> = futures_util::stream::iter(by_host.into_values())
            .map(|repositories| async move {
                let credentials = self.credentials(&repositories[0].host).await;
                let credentials = &credentials;
                futures_util::stream::iter(repositories)
                    .map(|repository| async move {
                        let started = Instant::now();
                        let listed = self
                            .registries
                            .tags(&repository, credentials.as_ref())
                            .await;
                        self.metrics
                            .scan_seconds
                            .observe(started.elapsed().as_secs_f64());
                        let result = if listed.is_ok() { "ok" } else { "error" };
                        self.metrics
                            .scans
                            .get_or_create(&crate::metrics::Result { result })
                            .inc();
                        if let Ok(tags) = &listed {
                            self.metrics
                                .registry_requests
                                .inc_by(u64::from(tags.requests));
                        }
                        (repository, listed)
                    })
                    .buffer_unordered(PER_HOST)
                    .collect::<Vec<_>>()
                    .await
            })
            .buffer_unordered(SCAN_CONCURRENCY)
            .collect::<Vec<Vec<_>>>()
            .await
            .into_iter()
            .flatten()
            .collect();
        for (repository, listed) in scans {
            let record = match listed {
                Ok(tags) => {
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
                    let mut kept = records.get(&repository).cloned().unwrap_or_default();
                    kept.error = Some(e.to_string());
                    kept.scanned_at = now();
                    kept
                }
            };
            let _ = self
                .store
                .put_image_record(ImageRecord {
                    key: format!("{TAGS}{}", repository.full_name()),
                    value: serde_json::to_string(&record).unwrap_or_default(),
                    updated_at: now(),
                })
                .await;
            records.insert(repository, record);
        }
        self.metrics
            .tags_kept
            .set(records.values().map(|r| r.tags.len() as i64).sum());
        records
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

    /// For each project: the latest image of each policy against what git
    /// holds; a write when they differ and the batch window is over.
    async fn decide(&self, retry: bool, scanned: &HashMap<ImageRepository, TagsRecord>) {
        let ids: Vec<String> = self.state.lock().await.projects.keys().cloned().collect();
        for id in ids {
            let (statuses, latest, due) = {
                let mut guard = self.state.lock().await;
                let state = &mut *guard;
                let Some(project) = state.projects.get_mut(&id) else {
                    continue;
                };
                let Some(Ok(file)) = &project.file else {
                    continue;
                };
                let file = file.clone();
                let mut latest = BTreeMap::new();
                let mut statuses = Vec::new();
                for policy in &file.images {
                    let (status, picked) = self
                        .evaluate(policy, &project.in_git, scanned, &mut state.digests)
                        .await;
                    if let Some(picked) = picked {
                        latest.insert(policy.name.clone(), picked);
                    }
                    statuses.push(status);
                }
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
                let due = behind
                    && ripe
                    && project.failed.is_none()
                    && project.marker_problem.is_none()
                    && project.branch.is_some();
                (statuses, latest, due.then_some(file))
            };
            if let Some(file) = due {
                self.write(&id, &file, &latest).await;
            }
            self.publish(&id, statuses).await;
        }
    }

    /// One policy's status, and the image it picks.
    async fn evaluate(
        &self,
        policy: &ImagePolicy,
        in_git: &BTreeMap<String, Vec<(Field, String)>>,
        scanned: &HashMap<ImageRepository, TagsRecord>,
        digests: &mut HashMap<(String, String), String>,
    ) -> (ImagePolicyStatus, Option<Latest>) {
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
        let Ok(repository) = ImageRepository::parse(&policy.repository) else {
            status.state = "error".into();
            return (status, None);
        };
        let Some(record) = scanned.get(&repository) else {
            return (status, None);
        };
        status.tags = record.tags.len();
        status.cut = record.cut;
        status.scanned_at = Some(rfc3339(record.scanned_at));
        if record.tags.is_empty()
            && let Some(error) = &record.error
        {
            status.state = "error".into();
            status.message = Some(error.clone());
            return (status, None);
        }
        let Some(tag) = policy.latest(record.tags.iter().map(String::as_str)) else {
            status.state = "no_match".into();
            status.message = Some(format!(
                "no tag of {} satisfies {}",
                policy.repository, status.policy
            ));
            return (status, None);
        };
        status.latest = Some(tag.to_owned());
        let wants_digest = policy.digest || marked.iter().any(|(f, _)| *f == Field::Digest);
        let mut digest = None;
        if wants_digest {
            let key = (repository.full_name(), tag.to_owned());
            digest = digests.get(&key).cloned();
            if digest.is_none() {
                let credentials = self.credentials(&repository.host).await;
                match self
                    .registries
                    .digest(&repository, tag, credentials.as_ref())
                    .await
                {
                    Ok(found) => {
                        if digests.len() >= MAX_DIGESTS {
                            digests.clear();
                        }
                        digests.insert(key, found.clone());
                        digest = Some(found);
                    }
                    Err(e) => {
                        status.state = "error".into();
                        status.message = Some(format!("cannot read the digest of {tag}: {e}"));
                        return (status, None);
                    }
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
        (status, Some(latest))
    }

    async fn write(&self, project: &str, file: &ImageUpdates, latest: &BTreeMap<String, Latest>) {
        let base = {
            let state = self.state.lock().await;
            state.projects.get(project).and_then(|p| p.branch.clone())
        };
        let Some(base) = base else { return };
        let base_branch = base.clone();
        let record = match self.projects.list().await {
            Ok(list) => list.into_iter().find(|p| p.id == project),
            Err(_) => None,
        };
        let Some(record) = record else { return };
        let work = self.settings.work.join(folder_name(project));
        let auth = match self.store.push_credential(project).await {
            Ok(Some(credential)) => match credential.kind {
                PushSecretKind::Token => PushAuth::Token(credential.secret),
                PushSecretKind::SshKey => {
                    let key = self
                        .settings
                        .work
                        .join(format!("{}.key", folder_name(project)));
                    if let Err(e) = tether_runtime::files::write_private(&key, &credential.secret) {
                        self.failed(project, format!("cannot write the SSH key: {e}"))
                            .await;
                        return;
                    }
                    PushAuth::SshKey(key)
                }
            },
            Ok(None) => PushAuth::None,
            Err(e) => {
                self.failed(project, format!("cannot read the push credentials: {e}"))
                    .await;
                return;
            }
        };
        let settings = file.update.clone();
        let latest = latest.clone();
        let timeout = self.settings.git_timeout;
        let url = record.url.clone();
        let written = tokio::task::spawn_blocking(move || {
            let job = Job {
                url: &url,
                auth,
                base: &base,
                settings: &settings,
                latest: &latest,
                work: &work,
                timeout,
            };
            let written = write::write(&job);
            let _ = std::fs::remove_dir_all(&work);
            written
        })
        .await;
        match written {
            Ok(Ok(written)) => {
                let wants = file.update.pull_request && written.branch != base_branch;
                let pull_request = match wants && !written.files.is_empty() {
                    false => None,
                    true => match self
                        .open_pull_request(project, &written, file, &base_branch)
                        .await
                    {
                        Ok(url) => Some(url),
                        Err(e) => {
                            self.failed(project, e).await;
                            return;
                        }
                    },
                };
                let mut state = self.state.lock().await;
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
                if let Some(commit) = &written.commit {
                    tracing::info!(project, commit, branch = %written.branch, "image update pushed");
                    p.last_update = Some(ImageUpdateRecord {
                        at: rfc3339(now()),
                        commit: commit.clone(),
                        branch: written.branch.clone(),
                        changes: written
                            .files
                            .iter()
                            .flat_map(|f| {
                                f.changes
                                    .iter()
                                    .map(|c| format!("{}: {} -> {}", c.policy, c.old, c.new))
                            })
                            .collect(),
                        pull_request,
                    });
                    drop(state);
                    self.projects.refresh(project).await;
                }
            }
            Ok(Err(e)) => self.failed(project, describe_write_error(&e)).await,
            Err(e) => {
                self.failed(project, format!("the write-back panicked: {e}"))
                    .await
            }
        }
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
        if let Some(p) = self.state.lock().await.projects.get_mut(project) {
            p.failed = Some(error);
        }
    }

    /// Writes the project's status to the store when it changed.
    async fn publish(&self, project: &str, policies: Vec<ImagePolicyStatus>) {
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
                policies,
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

/// What a project holds at a commit.
struct ProjectRead {
    commit: String,
    file: Option<Result<ImageUpdates, String>>,
    in_git: BTreeMap<String, Vec<(Field, String)>>,
    marker_problem: Option<String>,
    branch: Option<String>,
}

/// Reads the file, then the markers under its paths (blocking).
fn read_project(source: &Source, commit: &CommitId, git_ref: Option<&str>) -> ProjectRead {
    let mut read = ProjectRead {
        commit: commit.to_string(),
        file: None,
        in_git: BTreeMap::new(),
        marker_problem: None,
        branch: match git_ref {
            Some(reference)
                if !looks_like_commit(reference) && !reference.starts_with("refs/tags/") =>
            {
                Some(reference.trim_start_matches("refs/heads/").to_owned())
            }
            Some(_) => None,
            None => source.default_branch(),
        },
    };
    let text = match source.read_file(
        commit,
        IMAGE_UPDATES_PATH,
        image_updates::MAX_IMAGE_UPDATES_BYTES as u64,
    ) {
        Ok(Some(file)) => String::from_utf8_lossy(&file.bytes).into_owned(),
        Ok(None) => return read,
        Err(e) => {
            read.file = Some(Err(format!("{IMAGE_UPDATES_PATH}: {e}")));
            return read;
        }
    };
    let file = match image_updates::parse(&text) {
        Ok((file, _warnings)) => file,
        Err(e) => {
            read.file = Some(Err(format!("{IMAGE_UPDATES_PATH}: {e}")));
            return read;
        }
    };
    let globs: Vec<String> = match file.update.paths.is_empty() {
        true => vec!["**/*.yaml".into(), "**/*.yml".into()],
        false => file
            .update
            .paths
            .iter()
            .flat_map(|p| {
                let p = p.trim_end_matches('/');
                [
                    p.to_owned(),
                    format!("{p}/**/*.yaml"),
                    format!("{p}/**/*.yml"),
                ]
            })
            .collect(),
    };
    let limits = SelectLimits {
        max_file_bytes: write::MAX_FILE_BYTES,
        max_total_bytes: 64 << 20,
        max_files: write::MAX_FILES,
    };
    let names: BTreeSet<&str> = file.images.iter().map(|i| i.name.as_str()).collect();
    match source.select_files(commit, &globs, &limits) {
        Ok(files) => {
            for matched in files {
                if !(matched.path.ends_with(".yaml") || matched.path.ends_with(".yml")) {
                    continue;
                }
                let text = String::from_utf8_lossy(&matched.bytes);
                if !text.contains("$imagepolicy") {
                    continue;
                }
                for (line, marker, value) in markers::values(&text) {
                    if !names.contains(marker.policy.as_str()) {
                        read.marker_problem.get_or_insert_with(|| {
                            format!(
                                "{}:{line}: the marker names policy {:?}, which {IMAGE_UPDATES_PATH} does not have",
                                matched.path, marker.policy
                            )
                        });
                        continue;
                    }
                    let Some(value) = value else {
                        read.marker_problem.get_or_insert_with(|| {
                            format!(
                                "{}:{line}: the marker's value cannot be found on its line",
                                matched.path
                            )
                        });
                        continue;
                    };
                    read.in_git
                        .entry(marker.policy)
                        .or_default()
                        .push((marker.field, value));
                }
            }
        }
        Err(e) => {
            read.marker_problem = Some(format!("cannot read the files the markers are in: {e}"))
        }
    }
    read.file = Some(Ok(file));
    read
}

fn wanted(state: &State) -> BTreeSet<ImageRepository> {
    state
        .projects
        .values()
        .filter_map(|p| match &p.file {
            Some(Ok(file)) => Some(file),
            _ => None,
        })
        .flat_map(|file| file.images.iter())
        .filter_map(|policy| ImageRepository::parse(&policy.repository).ok())
        .collect()
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

fn describe_write_error(e: &WriteError) -> String {
    e.to_string()
}

fn looks_like_commit(reference: &str) -> bool {
    reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit())
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

use tether_store::time::{now, to_rfc3339 as rfc3339};
