//! Manifests to an agent: one follower per manifest project of a connected
//! agent. It rides on the project's shared poller (one fetch serves every
//! agent), resolves the manifest project's own ref after each poll, and when
//! the commit differs from what the agent has, selects the files with the
//! globs (straight from the git tree) and streams them in bounded messages.
//!
//! Which commit: the fleet's ([`tether_rollouts::Fleet::decide`]). With a
//! rollout the agent may be given an older commit than the head, or keep
//! the one it has until its wave comes; the follower decides again
//! whenever the head or a rollout moves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tether_agent_config::{HelmChart, RenderOn};
use tether_git::{CommitId, SelectLimits};
use tether_proto::v1::{self, ServerMessage, server_message};
use tokio::task::JoinHandle;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::outbound::Outbound;
use crate::repos::Repos;

/// Files go out in messages of about this size (a single larger file, up to
/// the 5 MiB file limit, travels alone).
const CHUNK_BYTES: usize = 1 << 20;

/// Ids of sends: unique within this kas process, and starting from the
/// clock so that a restarted kas does not reuse its predecessor's.
static NEXT_TRANSFER: std::sync::LazyLock<AtomicU64> = std::sync::LazyLock::new(|| {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos());
    AtomicU64::new(u64::try_from(nanos % u128::from(u64::MAX / 2)).unwrap_or(1))
});

fn next_transfer_id() -> u64 {
    NEXT_TRANSFER.fetch_add(1, Ordering::Relaxed)
}

/// What an agent's config asks of one manifest project.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestSpec {
    pub project: String,
    pub git_ref: Option<String>,
    pub globs: Vec<String>,
    /// Namespace of rendered objects that name none (a chart's release
    /// namespace when it gives none).
    pub default_namespace: String,
    /// Rendered on kas (Tether's extension).
    pub kustomizations: Vec<tether_agent_config::Kustomization>,
    pub helm_charts: Vec<tether_agent_config::HelmChart>,
}

impl ManifestSpec {
    /// The manifest projects of a configuration; no id means the agent's
    /// own configuration project.
    pub fn from_config(
        config: &tether_agent_config::AgentConfig,
        config_project: &str,
    ) -> Vec<Self> {
        config
            .gitops
            .manifest_projects
            .iter()
            .map(|p| ManifestSpec {
                project: p.id.clone().unwrap_or_else(|| config_project.to_owned()),
                git_ref: p
                    .git_ref
                    .as_ref()
                    .and_then(|r| r.branch.clone().or(r.tag.clone()).or(r.commit.clone())),
                globs: p.paths.iter().map(|g| g.glob.clone()).collect(),
                default_namespace: p.default_namespace.clone(),
                kustomizations: p.kustomizations.clone(),
                helm_charts: p.helm_charts.clone(),
            })
            .collect()
    }

    pub fn renders(&self) -> bool {
        !self.kustomizations.is_empty() || !self.helm_charts.is_empty()
    }

    /// Globs of every path whose change changes what the agent receives:
    /// its globs, its charts' and kustomizations' folders, its values
    /// files. A rollout starts only for a commit that changes one.
    pub fn received_paths(&self) -> Vec<String> {
        let folder = |path: &str| match path.trim_matches('/') {
            "" | "." => "**".to_owned(),
            path => format!("{}/**", glob_escape(path)),
        };
        let mut paths = self.globs.clone();
        for chart in &self.helm_charts {
            if let Some(path) = &chart.path {
                paths.push(folder(path));
            }
            paths.extend(chart.values_files.iter().map(|v| glob_escape(v)));
        }
        paths.extend(self.kustomizations.iter().map(|k| folder(&k.path)));
        paths.sort();
        paths.dedup();
        paths
    }
}

/// How a session's followers render charts and kustomizations.
#[derive(Clone, Debug)]
pub struct Rendering {
    /// kas's renderer, or why it has none (a tool is missing).
    pub renderer: Result<Arc<tether_render::Renderer>, NoRenderer>,
    /// The agent's cluster version, for `.Capabilities.KubeVersion`.
    pub kube_version: String,
    /// What the agent's cluster serves, for `.Capabilities.APIVersions`.
    pub api_versions: ApiVersions,
}

/// Why kas cannot render charts and kustomizations.
///
/// `Clone`, because every session and plan holds a copy of kas's renderer
/// or of this reason. kas decides it once at start from a
/// `tether_render::RendererError`, which is not `Clone`, and keeps only its
/// message (as the readiness page does): nothing branches on the cause.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoRenderer {
    /// The service was built without
    /// [`AgentChannelService::with_renderer`](crate::AgentChannelService::with_renderer).
    #[error("no renderer was set up")]
    NotSetUp,
    /// kas could not start its renderer (a tool is missing, the sandbox
    /// does not hold): the reason kas gave at start.
    #[error("{0}")]
    Unavailable(String),
}

/// kas keeps the reason it gave at start as text (its readiness page and
/// API state show it), and hands it over as such.
impl From<String> for NoRenderer {
    fn from(reason: String) -> Self {
        NoRenderer::Unavailable(reason)
    }
}

/// Why files could not be read from a manifest project at a commit.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// The blocking read did not finish (it panicked, or kas stops).
    #[error("reading the repository was interrupted")]
    Interrupted(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Git(#[from] tether_git::GitError),
}

/// Why the files of a manifest project at a commit were not sent. The
/// message goes to the agent as the manifests' error, and its first line
/// to the commit status, so each names the chart or values file to fix.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The project's globs could not select its files.
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error("this manifest project has charts or kustomizations, and kas cannot render: {0}")]
    CannotRender(#[source] NoRenderer),
    /// A chart or kustomization rendered on kas failed, or a chart for the
    /// agent could not be fetched.
    #[error(transparent)]
    Render(#[from] tether_render::RenderError),
    /// `chart` is a chart as `tether_render::helm::describe` names it.
    #[error("{chart}: {source}")]
    ChartFolder {
        chart: String,
        #[source]
        source: SelectError,
    },
    #[error("{chart}: no such folder at this commit")]
    NoChartFolder { chart: String, path: String },
    #[error("{chart}: kas cannot fetch charts: {source}")]
    CannotFetchCharts {
        chart: String,
        #[source]
        source: NoRenderer,
    },
    #[error("{chart}: {values}: {source}")]
    ValuesFile {
        chart: String,
        values: String,
        #[source]
        source: SelectError,
    },
    #[error("{chart} ({values}): the values file is not in the repository at this commit")]
    NoValuesFile { chart: String, values: String },
}

/// `group/version` and `group/version/Kind` entries an agent reported.
pub type ApiVersions = Arc<Vec<String>>;

/// Entries kept of an agent's report, and the longest entry.
const MAX_API_VERSIONS: usize = 8192;
const MAX_API_VERSION_BYTES: usize = 253;

/// What an agent reported its cluster serves, kept only as far as it is
/// shaped like API versions: they reach helm's command line, and an agent
/// token must not be able to pass anything else there.
pub fn api_versions(reported: Vec<String>) -> ApiVersions {
    let mut kept: Vec<String> = reported
        .into_iter()
        .filter(|v| {
            !v.is_empty()
                && v.len() <= MAX_API_VERSION_BYTES
                && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-'))
        })
        .take(MAX_API_VERSIONS)
        .collect();
    kept.sort();
    kept.dedup();
    intern(kept)
}

/// One copy of each distinct list: a fleet's agents mostly run the same
/// clusters, and each list is some tens of KiB.
fn intern(list: Vec<String>) -> ApiVersions {
    use std::hash::{Hash, Hasher};
    static INTERNED: std::sync::Mutex<Vec<(u64, std::sync::Weak<Vec<String>>)>> =
        std::sync::Mutex::new(Vec::new());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    list.hash(&mut hasher);
    let hash = hasher.finish();
    let mut interned = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
    interned.retain(|(_, weak)| weak.strong_count() > 0);
    if let Some(shared) = interned
        .iter()
        .filter(|(h, _)| *h == hash)
        .find_map(|(_, weak)| weak.upgrade().filter(|shared| **shared == list))
    {
        return shared;
    }
    let shared = Arc::new(list);
    interned.push((hash, Arc::downgrade(&shared)));
    shared
}

/// The bounds of a repository exported for rendering: a chart repository
/// holds more files than a folder of manifests.
const EXPORT_LIMITS: SelectLimits = SelectLimits {
    max_file_bytes: 5 << 20,
    max_total_bytes: 100 << 20,
    max_files: 20_000,
};

/// A running follower; dropping it stops it.
#[derive(Debug)]
pub struct Follower {
    pub spec: ManifestSpec,
    task: JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whom a follower sends to: the session's queue, and the agent's name
/// for the commit status that says the commit is on its way.
#[derive(Clone, Debug)]
pub struct Recipient {
    pub tx: Outbound,
    pub agent: String,
    pub statuses: tether_notify::statuses::Statuses,
    /// The commits given to the session, which its reports may speak of.
    pub sent: crate::sent::SentCommits,
    /// The traces of the commits given (see [`crate::traces`]).
    pub traces: crate::traces::SyncTraces,
    /// Which commit of the project the agent is given (fleet rollouts).
    pub fleet: Arc<tether_rollouts::Fleet>,
}

/// Starts following `spec` for an agent that has `synced` applied.
pub fn follow(
    repos: &Arc<Repos>,
    spec: ManifestSpec,
    synced: Option<String>,
    rendering: Rendering,
    to: Recipient,
) -> Follower {
    let span = tracing::info_span!("manifests", project = %spec.project);
    // On the drain, like the session that owns it (and aborts it on drop).
    let task = repos
        .drain()
        .spawn(run(repos.clone(), spec.clone(), synced, rendering, to).instrument(span));
    Follower { spec, task }
}

async fn run(
    repos: Arc<Repos>,
    spec: ManifestSpec,
    mut sent: Option<String>,
    rendering: Rendering,
    to: Recipient,
) {
    let tx = to.tx.clone();
    let mut heads = repos.subscribe(&spec.project);
    let mut fleet = to.fleet.watch();
    let mut last_error: Option<String> = None;
    let paths = spec.received_paths();
    // What the agent was last given: kas remembers it across reconnects
    // and replicas; what the agent says it synced comes second. A store
    // that cannot answer is asked again: guessing would lose the commit
    // a rollback gives back.
    let remembered = loop {
        match to.fleet.last_given(&spec.project, &to.agent).await {
            Ok(remembered) => break remembered,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the commit the agent was given; asking again");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    };
    let mut given = remembered.clone().or(sent.clone());
    // Followers of the project's own ref are counted among its agents
    // (rollouts wait for them) from their first look on.
    let mut counted = remembered.is_some();
    let mut held: Option<String> = None;
    loop {
        tokio::select! {
            changed = heads.changed() => if changed.is_err() { return },
            changed = fleet.changed() => if changed.is_err() { return },
        }
        let head = heads.borrow_and_update().clone();
        let Some(source) = head.source.clone() else {
            continue;
        };
        let resolved: CommitId = match head.resolve(spec.git_ref.as_deref()).await {
            Ok(commit) => commit,
            Err(error) => {
                let error = error.to_string();
                if last_error.as_ref() != Some(&error) {
                    tracing::warn!(error = %error, "cannot resolve the manifest ref");
                    to.sent.record(&spec.project, "");
                    if !send(&tx, failure(&spec, "", &error)).await {
                        return;
                    }
                    last_error = Some(error);
                }
                continue;
            }
        };
        last_error = None;
        let at_head = head.commit.as_ref() == Some(&resolved);
        if at_head && !counted {
            to.fleet
                .record_given(
                    &spec.project,
                    &to.agent,
                    given.as_deref().unwrap_or_default(),
                    &paths,
                )
                .await;
            counted = true;
        }
        let decision = to
            .fleet
            .decide(
                &to.agent,
                &spec.project,
                &resolved,
                at_head,
                &source,
                given.as_deref(),
            )
            .await;
        let commit = match decision {
            tether_rollouts::Decision::Give { commit, why } => match CommitId::parse(&commit) {
                Some(commit) => {
                    if commit != resolved && held.as_deref() != Some(why.as_str()) {
                        tracing::info!(head = %resolved, given = %commit, why = %why, "the agent keeps another commit than the head");
                        held = Some(why);
                    }
                    commit
                }
                None => {
                    tracing::warn!(commit = %commit, "not a commit id: nothing sent");
                    continue;
                }
            },
            tether_rollouts::Decision::Hold { why } => {
                if held.as_deref() != Some(why.as_str()) {
                    tracing::info!(head = %resolved, why = %why, "nothing sent yet");
                    held = Some(why);
                }
                continue;
            }
        };
        // Under a signature policy nothing unverified is sent: the head
        // verified at its poll, and any other commit (a pin, a rollback,
        // another ref) is checked here, the one place commits are sent.
        if let Some(gate) = &head.gate
            && head.commit.as_ref() != Some(&commit)
            && let Err(reason) = gate.check(&source, &commit).await
        {
            if held.as_deref() != Some(reason.as_str()) {
                tracing::warn!(commit = %commit, reason = %reason, "not sent: the commit does not verify");
                held = Some(reason);
            }
            continue;
        }
        let commit_text = commit.to_string();
        // Before the send, so that the agent's answer finds it; also when
        // the agent has this commit already and nothing is sent.
        to.sent.record(&spec.project, &commit_text);
        // A pin is not what the rollout gave: unpinned, the agent goes
        // back to that.
        // Only a follower of the project's own ref is one of its
        // rollout's agents.
        let pinned = !at_head || to.fleet.pin(&spec.project, &to.agent).is_some();
        if sent.as_deref() == Some(commit_text.as_str()) {
            if !pinned && given.as_deref() != Some(commit_text.as_str()) {
                to.fleet
                    .record_given(&spec.project, &to.agent, &commit_text, &paths)
                    .await;
                given = Some(commit_text);
            }
            continue;
        }
        // The trace of this commit and agent, from how the commit was
        // found (when it is the head just found) to the agent's report.
        let found = head
            .found
            .as_ref()
            .filter(|_| head.commit.as_ref() == Some(&commit));
        let trace = to
            .traces
            .begin(&spec.project, &commit_text, &to.agent, found);
        let delivery = tracing::info_span!("deliver", commit = %commit_text);
        let _ = delivery.set_parent(trace.clone());
        let traceparent = tether_runtime::telemetry::inject_context(&trace);
        let remote_bases = repos.remote_bases_allowed(&spec.project).await;
        let collected = collect(&spec, &source, &commit, &rendering, remote_bases)
            .instrument(tracing::info_span!(parent: &delivery, "collect"))
            .await;
        // A commit whose files could not be sent is not what the agent
        // runs: a rollback must not give it back.
        let delivered = collected.is_ok();
        let (messages, status) = match collected {
            Ok(files) => (
                chunks(&spec.project, &commit_text, files),
                (
                    tether_notify::statuses::State::Pending,
                    "sent to the agent".to_owned(),
                ),
            ),
            Err(e) => {
                tracing::warn!(commit = %commit_text, error = %e, "manifests not sent");
                let e = e.to_string();
                let first = e.lines().next().unwrap_or_default().to_owned();
                (
                    vec![failure(&spec, &commit_text, &e)],
                    (tether_notify::statuses::State::Failure, first),
                )
            }
        };
        let count = messages.len();
        let sending = tracing::info_span!(parent: &delivery, "send", messages = count);
        for mut message in messages {
            message.traceparent.clone_from(&traceparent);
            if !send(&tx, message).instrument(sending.clone()).await {
                return;
            }
        }
        drop(sending);
        // In the delivery's span: the line carries the trace's id.
        delivery
            .in_scope(|| tracing::info!(commit = %commit_text, messages = count, "manifests sent"));
        drop(delivery);
        if delivered && !pinned && given.as_deref() != Some(commit_text.as_str()) {
            to.fleet
                .record_given(&spec.project, &to.agent, &commit_text, &paths)
                .await;
            given = Some(commit_text.clone());
        }
        let (state, description) = status;
        to.statuses.report(tether_notify::statuses::StatusEvent {
            project: spec.project.clone(),
            commit: commit_text.clone(),
            agent: to.agent.clone(),
            state,
            description,
        });
        sent = Some(commit_text);
    }
}

/// The files of `spec` at `commit`: those its globs select, what its
/// charts and kustomizations render, and the charts the agent renders
/// itself (see [`release_files`]). All or nothing: an error sends no file.
pub async fn collect(
    spec: &ManifestSpec,
    source: &tether_git::Source,
    commit: &CommitId,
    rendering: &Rendering,
    remote_bases: bool,
) -> Result<Vec<v1::ManifestFile>, CollectError> {
    let mut files = Vec::new();
    if !spec.globs.is_empty() {
        files = select(source, commit, spec.globs.clone(), SelectLimits::default())
            .await?
            .into_iter()
            .map(|m| manifest(m.path, m.bytes))
            .collect();
    }
    if !spec.renders() {
        return Ok(files);
    }
    let (on_agent, on_kas): (Vec<HelmChart>, Vec<HelmChart>) = spec
        .helm_charts
        .iter()
        .cloned()
        .partition(|chart| chart.render_on == RenderOn::Agent);
    if !spec.kustomizations.is_empty() || !on_kas.is_empty() {
        let renderer = rendering
            .renderer
            .as_ref()
            .map_err(|why| CollectError::CannotRender(why.clone()))?;
        let commit_text = commit.to_string();
        let job = tether_render::Job {
            project: &spec.project,
            commit: &commit_text,
            default_namespace: &spec.default_namespace,
            kustomizations: &spec.kustomizations,
            helm_charts: &on_kas,
            kube_version: Some(rendering.kube_version.as_str()).filter(|v| !v.is_empty()),
            api_versions: &rendering.api_versions,
            remote_bases,
        };
        // A message: `tether_render` takes the files' error as text.
        let export = || async {
            select(source, commit, vec!["**".to_owned()], EXPORT_LIMITS)
                .await
                .map(|matched| matched.into_iter().map(|m| (m.path, m.bytes)).collect())
                .map_err(|e| format!("exporting the repository: {e}"))
        };
        let rendered = renderer.render(&job, export).await?;
        files.extend(
            rendered
                .files
                .iter()
                .map(|f| manifest(f.path.clone(), f.content.clone())),
        );
    }
    for chart in &on_agent {
        files.extend(release_files(spec, chart, source, commit, rendering).await?);
    }
    Ok(files)
}

/// What an agent needs to render `chart` itself (`render_on: agent`):
/// `release.json` (the chart's settings, its namespace resolved), the
/// chart (its folder's files, or as `chart.tgz` the archive kas fetched:
/// only with the digest its index gave, and only if it is that chart, see
/// `tether_render::chart_archive`) and its values files, each marked with
/// the release name.
/// The agent adds the values it reads from its cluster's Secrets.
async fn release_files(
    spec: &ManifestSpec,
    chart: &HelmChart,
    source: &tether_git::Source,
    commit: &CommitId,
    rendering: &Rendering,
) -> Result<Vec<v1::ManifestFile>, CollectError> {
    let what = tether_render::helm::describe(chart);
    let namespace = chart
        .namespace
        .clone()
        .unwrap_or_else(|| spec.default_namespace.clone());
    let settings = serde_json::json!({ "chart": chart, "namespace": namespace });
    let mut files = vec![(RELEASE_FILE.to_owned(), settings.to_string().into_bytes())];
    match &chart.path {
        Some(path) => {
            let glob = match path.as_str() {
                "." => "**".to_owned(),
                path => format!("{path}/**"),
            };
            let chart_files = select(source, commit, vec![glob], EXPORT_LIMITS)
                .await
                .map_err(|source| CollectError::ChartFolder {
                    chart: what.clone(),
                    source,
                })?;
            if chart_files.is_empty() {
                return Err(CollectError::NoChartFolder {
                    chart: what,
                    path: path.clone(),
                });
            }
            files.extend(chart_files.into_iter().map(|m| (m.path, m.bytes)));
        }
        None => {
            let renderer =
                rendering
                    .renderer
                    .as_ref()
                    .map_err(|why| CollectError::CannotFetchCharts {
                        chart: what.clone(),
                        source: why.clone(),
                    })?;
            // Digest-checked, checked to be the chart, under a render slot.
            let archive = renderer.fetch_chart_for_agent(chart).await?;
            files.push((CHART_ARCHIVE.to_owned(), archive.to_vec()));
        }
    }
    for values in &chart.values_files {
        let found = select(
            source,
            commit,
            vec![glob_escape(values)],
            SelectLimits::default(),
        )
        .await
        .map_err(|source| CollectError::ValuesFile {
            chart: what.clone(),
            values: values.clone(),
            source,
        })?;
        if found.is_empty() {
            return Err(CollectError::NoValuesFile {
                chart: what,
                values: values.clone(),
            });
        }
        files.extend(found.into_iter().map(|m| (m.path, m.bytes)));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files.dedup_by(|a, b| a.0 == b.0);
    Ok(files
        .into_iter()
        .map(|(path, content)| v1::ManifestFile {
            path,
            content,
            render: chart.release_name.clone(),
        })
        .collect())
}

/// The settings file of a chart the agent renders.
pub const RELEASE_FILE: &str = "release.json";
/// A chart from a chart repository, as the agent receives it.
pub const CHART_ARCHIVE: &str = "chart.tgz";

/// A path as a glob that matches only itself.
fn glob_escape(path: &str) -> String {
    let mut glob = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            glob.push('\\');
        }
        glob.push(c);
    }
    glob
}

async fn select(
    source: &tether_git::Source,
    commit: &CommitId,
    globs: Vec<String>,
    limits: SelectLimits,
) -> Result<Vec<tether_git::Matched>, SelectError> {
    let (source, at) = (source.clone(), commit.clone());
    let matched = tokio::task::spawn_blocking(move || source.select_files(&at, &globs, &limits))
        .await
        .map_err(SelectError::Interrupted)??;
    Ok(matched)
}

fn manifest(path: String, content: Vec<u8>) -> v1::ManifestFile {
    v1::ManifestFile {
        path,
        content,
        render: String::new(),
    }
}

fn failure(spec: &ManifestSpec, commit: &str, error: &str) -> v1::Manifests {
    v1::Manifests {
        project_id: spec.project.clone(),
        commit_id: commit.to_owned(),
        files: Vec::new(),
        last: true,
        error: error.to_owned(),
        transfer_id: next_transfer_id(),
        chunk: 0,
        traceparent: String::new(),
    }
}

/// Splits the files into messages of about CHUNK_BYTES; the last is marked.
fn chunks(project: &str, commit: &str, files: Vec<v1::ManifestFile>) -> Vec<v1::Manifests> {
    let groups = by_size(files);
    let last = groups.len() - 1;
    let transfer_id = next_transfer_id();
    groups
        .into_iter()
        .enumerate()
        .map(|(i, files)| v1::Manifests {
            project_id: project.to_owned(),
            commit_id: commit.to_owned(),
            files,
            last: i == last,
            error: String::new(),
            transfer_id,
            chunk: u32::try_from(i).unwrap_or(u32::MAX),
            traceparent: String::new(),
        })
        .collect()
}

/// Files in groups of about CHUNK_BYTES (a larger file alone); at least
/// one group, perhaps empty.
pub fn by_size(files: Vec<v1::ManifestFile>) -> Vec<Vec<v1::ManifestFile>> {
    let mut groups = vec![Vec::new()];
    let mut size = 0;
    for file in files {
        if size > 0 && size + file.content.len() > CHUNK_BYTES {
            groups.push(Vec::new());
            size = 0;
        }
        size += file.content.len();
        if let Some(group) = groups.last_mut() {
            group.push(file);
        }
    }
    groups
}

/// Queues one message for the agent; false when the session is gone or
/// the agent has read nothing for the session's send timeout (the follower
/// then stops rather than pin its files in memory).
async fn send(tx: &Outbound, manifests: v1::Manifests) -> bool {
    let message = ServerMessage {
        message: Some(server_message::Message::Manifests(manifests)),
    };
    crate::outbound::send(tx, message).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: usize) -> v1::ManifestFile {
        manifest(path.into(), vec![b'x'; size])
    }

    /// A repository with one chart folder, and its head commit.
    fn repository(tmp: &tempfile::TempDir) -> (tether_git::Source, CommitId) {
        let repo = tmp.path().join("manifests");
        tether_testenv::git::new_repo(&repo);
        tether_testenv::git::commit(&repo, &[("charts/web/Chart.yaml", Some("name: web\n"))]);
        let source =
            tether_git::Source::new(repo.to_str().expect("utf-8"), &tmp.path().join("mirrors"));
        let commit = source.resolve(None).expect("HEAD resolves");
        (source, commit)
    }

    fn agent_chart(path: Option<&str>, values_files: &[&str]) -> HelmChart {
        HelmChart {
            path: path.map(str::to_owned),
            repository: path
                .is_none()
                .then(|| "https://charts.example.com".to_owned()),
            chart: Some("web".into()),
            version: Some("1.0.0".into()),
            release_name: "web".into(),
            values_files: values_files.iter().map(|v| (*v).to_owned()).collect(),
            render_on: RenderOn::Agent,
            ..HelmChart::default()
        }
    }

    /// What the agent is told (and the commit status's first line): pinned
    /// byte for byte.
    #[tokio::test]
    async fn failures_to_collect_keep_their_exact_wording() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (source, commit) = repository(&tmp);
        let rendering = Rendering {
            renderer: Err(NoRenderer::NotSetUp),
            kube_version: String::new(),
            api_versions: Arc::default(),
        };
        let spec =
            |globs: &[&str], kustomizations: usize, helm_charts: Vec<HelmChart>| ManifestSpec {
                project: "team/manifests".into(),
                git_ref: None,
                globs: globs.iter().map(|g| (*g).to_owned()).collect(),
                default_namespace: "default".into(),
                kustomizations: vec![tether_agent_config::Kustomization::default(); kustomizations],
                helm_charts,
            };
        let refusal = |spec: ManifestSpec| {
            let (source, commit, rendering) = (&source, &commit, &rendering);
            async move {
                collect(&spec, source, commit, rendering, false)
                    .await
                    .expect_err("refused")
                    .to_string()
            }
        };
        let said = vec![
            refusal(spec(&["["], 0, vec![])).await,
            refusal(spec(&[], 1, vec![])).await,
            refusal(spec(&[], 0, vec![agent_chart(Some("charts/gone"), &[])])).await,
            refusal(spec(&[], 0, vec![agent_chart(Some("charts/["), &[])])).await,
            refusal(spec(
                &[],
                0,
                vec![agent_chart(Some("charts/web"), &["values/prod.yaml"])],
            ))
            .await,
            refusal(spec(&[], 0, vec![agent_chart(None, &[])])).await,
        ];
        assert_eq!(
            said,
            [
                "glob \"[\" is invalid: unclosed character class; missing ']'",
                "this manifest project has charts or kustomizations, and kas cannot render: no renderer was set up",
                "helm chart web (charts/gone): no such folder at this commit",
                "helm chart web (charts/[): glob \"charts/[/**\" is invalid: unclosed character class; missing ']'",
                "helm chart web (charts/web) (values/prod.yaml): the values file is not in the repository at this commit",
                "helm chart web (https://charts.example.com/web@1.0.0): kas cannot fetch charts: no renderer was set up",
            ]
        );
    }

    #[test]
    fn reported_api_versions_keep_only_what_is_shaped_like_one_and_are_shared() {
        let reported = |list: &[&str]| api_versions(list.iter().map(|s| s.to_string()).collect());
        let kept = reported(&[
            "apps/v1/Deployment",
            "v1",
            "--post-renderer=/bin/sh",
            "-a",
            "apps/v1 --x",
            "tether.test/v1/Gadget",
            "",
            "apps/v1/Deployment",
        ]);
        assert_eq!(
            *kept,
            ["apps/v1/Deployment", "tether.test/v1/Gadget", "v1"],
            "sorted, deduplicated, flags and spaces dropped"
        );
        let again = reported(&["v1", "tether.test/v1/Gadget", "apps/v1/Deployment"]);
        assert!(Arc::ptr_eq(&kept, &again), "one copy per distinct list");
    }

    #[test]
    fn files_are_chunked_and_only_the_last_message_is_marked() {
        let messages = chunks(
            "p",
            "c",
            vec![
                file("a", 600 << 10),
                file("b", 600 << 10),
                file("c", 3 << 20),
                file("d", 1),
            ],
        );
        let paths: Vec<Vec<&str>> = messages
            .iter()
            .map(|m| m.files.iter().map(|f| f.path.as_str()).collect())
            .collect();
        assert_eq!(paths, [vec!["a"], vec!["b"], vec!["c"], vec!["d"]]);
        assert_eq!(
            messages.iter().map(|m| m.last).collect::<Vec<_>>(),
            [false, false, false, true]
        );
        assert_eq!(
            messages.iter().map(|m| m.chunk).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert!(
            messages
                .iter()
                .all(|m| m.transfer_id == messages[0].transfer_id)
        );
        let again = chunks("p", "c", Vec::new());
        assert_ne!(
            again[0].transfer_id, messages[0].transfer_id,
            "each send its own id"
        );
        let empty = chunks("p", "c", Vec::new());
        assert_eq!(empty.len(), 1);
        assert!(empty[0].last && empty[0].files.is_empty());
    }
}
