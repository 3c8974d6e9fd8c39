//! agentk's side of GitOps: manifests arrive from kas in chunks; once a
//! commit's set is complete, the manifest project's worker syncs it with
//! `tether-gitops` and reports the result up the channel, twice: after
//! apply and prune, and again once the objects are healthy (or the
//! reconcile timeout passes).
//!
//! One worker per manifest project, each holding only the newest set: a
//! commit that arrives while a sync runs replaces any older one waiting.
//!
//! With several agentk replicas, only the holder of the agent's GitOps
//! Lease (`leader.rs`) applies, follows health and corrects drift; the
//! others keep the newest set and apply it the moment they take over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_agent_config as cfg;
use tether_gitops::drift;
use tether_gitops::health::Health;
use tether_gitops::inventory::ObjRef;
use tether_gitops::manifest::{Limits, ManifestFile};
use tether_gitops::progress::{Phase, Progress};
use tether_gitops::sync::{
    self, Action, AppliedState, InventoryPolicy, ObjectOutcome, SyncOptions, SyncOutcome,
};
use tether_proto::v1;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::config::ConfigState;
use crate::leader::Leadership;
use crate::render::{AgentRenderer, Expanded};

/// A complete set to sync.
#[derive(Clone, Debug)]
struct Job {
    agent: String,
    commit: String,
    /// kas could not read the files; nothing is applied.
    error: Option<String>,
    /// As kas sent them: manifests, and releases to render here.
    files: Vec<v1::ManifestFile>,
    spec: cfg::ManifestProject,
    /// The trace kas started for this commit and agent, continued here.
    traceparent: String,
}

/// Plan requests assembled at once at most (kas sends one at a time per
/// request; more is a misbehaving server).
const MAX_PENDING_PLANS: usize = 8;

fn planned_message(p: tether_gitops::plan::PlannedObject) -> v1::PlannedObject {
    v1::PlannedObject {
        group: p.object.group,
        kind: p.object.kind,
        namespace: p.object.namespace,
        name: p.object.name,
        change: p.change.as_str().to_owned(),
        message: p.message,
        fields: p
            .fields
            .into_iter()
            .map(|f| v1::FieldChange {
                path: f.path,
                before: f.before,
                after: f.after,
            })
            .collect(),
    }
}

/// Keeps which fields of an object rendered with values from Secrets
/// would change, but not their values: a plan's answer leaves the cluster.
fn hide_values(planned: &mut v1::PlannedObject, hidden: &str) {
    for field in &mut planned.fields {
        for value in [&mut field.before, &mut field.after] {
            if value.is_some() {
                *value = Some(hidden.to_owned());
            }
        }
    }
}

/// A sync's error as a report carries it: one that names an object
/// holding decrypted values may quote them (an apply error), so it says
/// which object failed and no more.
fn hide_in_error(error: &str, hidden: &crate::decrypt::Sensitive) -> String {
    // The sync names a failed object `Kind[.group] [namespace/]name: …`;
    // other errors (a file that does not decrypt, a missing key Secret)
    // name files and Secrets, and never hold a value.
    let named = |part: &str| -> Option<(String, String)> {
        let (head, _) = part.split_once(": ")?;
        let (kind, object) = head.split_once(' ')?;
        let kind = kind.split_once('.').map_or(kind, |(kind, _)| kind);
        let name = object.rsplit_once('/').map_or(object, |(_, name)| name);
        Some((kind.to_owned(), name.to_owned()))
    };
    match error
        .split("; ")
        .filter_map(named)
        .find(|(kind, name)| crate::decrypt::is_sensitive(hidden, kind, name))
    {
        Some((kind, name)) => format!("{kind} {name}: {ENCRYPTED_REFUSED}"),
        None => error.to_owned(),
    }
}

/// What a plan shows of a value from a Secret (`values_from`).
const HIDDEN_FROM_SECRET: &str = "\"(from a Secret: not shown)\"";
/// What a report and an Event say of an object holding decrypted values
/// that the API server refused: its message may quote them.
const ENCRYPTED_REFUSED: &str =
    "the API server refused it (its message is not shown: the object holds decrypted values)";

/// Chunks of a set being received: one send of kas, by its transfer id.
#[derive(Debug, Default)]
struct Pending {
    transfer_id: u64,
    /// The chunk expected next.
    next_chunk: u32,
    files: Vec<v1::ManifestFile>,
}

/// GitOps for all manifest projects of this agent.
#[derive(Clone)]
pub struct GitOps {
    client: kube::Client,
    config: ConfigState,
    /// Where inventories live: the agent's namespace.
    inventory_namespace: String,
    workers: Arc<Mutex<HashMap<String, watch::Sender<Option<Job>>>>>,
    pending: Arc<Mutex<HashMap<String, Pending>>>,
    /// Plan requests being received, by plan id.
    plans: Arc<Mutex<HashMap<u64, Pending>>>,
    /// What each project's last sync applied, for plans to skip the dry
    /// run of objects that would not change.
    applied: Arc<Mutex<HashMap<String, AppliedState>>>,
    /// The last commit synced without error, by project, for Hello.
    synced: Arc<Mutex<HashMap<String, String>>>,
    /// The last report of each project, sent again to a new session so
    /// that a restarted kas shows the state at once.
    last_reports: Arc<Mutex<HashMap<String, v1::SyncReport>>>,
    reports: mpsc::UnboundedSender<v1::SyncReport>,
    /// Who competes for the GitOps lease, and until when.
    election: Option<Election>,
    /// Renders the charts kas leaves to the agent (`render_on: agent`).
    renderer: Option<Arc<AgentRenderer>>,
    /// Started with the first set, once the agent's name is known.
    leadership: Arc<std::sync::OnceLock<Leadership>>,
    /// Where sets received and applied, and leadership, are counted.
    observed: Option<crate::observability::Connected>,
    /// Kubernetes Events on what the syncs change.
    events: crate::events::Recorder,
    /// By project: the objects of its last set that hold decrypted values,
    /// whose messages reports and Events never show.
    encrypted: Arc<Mutex<HashMap<String, crate::decrypt::Sensitive>>>,
}

/// This replica's part in the GitOps election.
#[derive(Clone, Debug)]
pub struct Election {
    /// The pod's name: the lease's holder identity.
    pub identity: String,
    pub shutdown: tether_runtime::Shutdown,
}

impl std::fmt::Debug for GitOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitOps")
            .field("inventory_namespace", &self.inventory_namespace)
            .finish_non_exhaustive()
    }
}

impl GitOps {
    /// Reports go to `reports`, for the session to send up. With an
    /// `election`, this replica applies only while it holds the lease;
    /// without one it always applies.
    pub fn new(
        client: kube::Client,
        config: ConfigState,
        inventory_namespace: String,
        reports: mpsc::UnboundedSender<v1::SyncReport>,
        election: Option<Election>,
    ) -> Self {
        GitOps {
            client,
            config,
            inventory_namespace,
            workers: Arc::default(),
            pending: Arc::default(),
            plans: Arc::default(),
            applied: Arc::default(),
            synced: Arc::default(),
            last_reports: Arc::default(),
            reports,
            election,
            renderer: None,
            leadership: Arc::default(),
            observed: None,
            events: crate::events::Recorder::disabled(),
            encrypted: Arc::default(),
        }
    }

    /// Records Kubernetes Events on what syncs apply, prune and correct.
    pub fn with_events(mut self, events: crate::events::Recorder) -> Self {
        self.events = events;
        self
    }

    /// Counts sets and leadership into `observed` (agentk's `/metrics`).
    pub fn with_observed(mut self, observed: crate::observability::Connected) -> Self {
        self.observed = Some(observed);
        self
    }

    /// Renders charts that a project asks to render on the agent.
    pub fn with_renderer(mut self, renderer: AgentRenderer) -> Self {
        self.renderer = Some(Arc::new(renderer));
        self
    }

    /// Renders the releases among `files` (if any), leaving the rest.
    /// The set as it is applied: encrypted files decrypted (with the
    /// project's `decryption`), charts rendered, and the objects holding
    /// decrypted values named.
    async fn expand(
        &self,
        spec: &cfg::ManifestProject,
        files: Vec<v1::ManifestFile>,
    ) -> Result<Expanded, String> {
        let decryptor = crate::decrypt::Decryptor {
            client: self.client.clone(),
            namespace: self.inventory_namespace.clone(),
        };
        let (mut opened, keys) = decryptor.open(spec.decryption.as_ref(), files).await?;
        let files = std::mem::take(&mut opened.files);
        let mut expanded = self.render(files).await?;
        expanded.encrypted = crate::decrypt::finish(&mut expanded.files, keys.as_ref(), &opened)?;
        Ok(expanded)
    }

    /// Renders the charts of a set (`render_on: agent`).
    async fn render(&self, files: Vec<v1::ManifestFile>) -> Result<Expanded, String> {
        if files.iter().all(|f| f.render.is_empty()) {
            return Ok(Expanded {
                files: files
                    .into_iter()
                    .map(|f| ManifestFile {
                        path: f.path,
                        bytes: f.content,
                    })
                    .collect(),
                ..Expanded::default()
            });
        }
        match &self.renderer {
            Some(renderer) => renderer.expand(files).await,
            None => Err(
                "this project renders a chart on the agent, and this agentk renders none".into(),
            ),
        }
    }

    /// Whether this replica may apply, and its changes.
    fn leading(&self, agent: &str) -> watch::Receiver<bool> {
        let Some(election) = &self.election else {
            if let Some(observed) = &self.observed {
                observed.set_leader(true);
            }
            return watch::channel(true).1;
        };
        self.leadership
            .get_or_init(|| {
                let leadership = Leadership::start(
                    self.client.clone(),
                    &self.inventory_namespace,
                    format!("tether-gitops-{agent}"),
                    election.identity.clone(),
                    election.shutdown.clone(),
                );
                if let Some(observed) = self.observed.clone() {
                    let mut leading = leadership.watch();
                    tokio::spawn(async move {
                        loop {
                            observed.set_leader(*leading.borrow_and_update());
                            if leading.changed().await.is_err() {
                                return;
                            }
                        }
                    });
                }
                leadership
            })
            .watch()
    }

    /// What Hello tells kas: the commit synced per project.
    pub fn synced(&self) -> Vec<v1::SyncedCommit> {
        lock(&self.synced)
            .iter()
            .map(|(project, commit)| v1::SyncedCommit {
                project_id: project.clone(),
                commit_id: commit.clone(),
            })
            .collect()
    }

    /// The last report of every project, for a new session.
    pub fn last_reports(&self) -> Vec<v1::SyncReport> {
        lock(&self.last_reports).values().cloned().collect()
    }

    /// Forgets partly received sets: called when a session ends, since kas
    /// sends a set again, whole and under a new transfer id, on the next.
    pub fn drop_partial_sets(&self) {
        lock(&self.pending).clear();
    }

    /// Takes one message of a set; syncs once the set is complete. Chunks
    /// are assembled per send (transfer id) and in order: a message of
    /// another send starts afresh (or, if it is not a first chunk, is
    /// dropped with the partial set), so an interrupted transfer's resend
    /// never mixes with what came before.
    pub fn receive(&self, agent: &str, message: v1::Manifests) {
        let project = message.project_id.clone();
        let complete = {
            let mut pending = lock(&self.pending);
            let entry = pending.entry(project.clone()).or_default();
            if entry.transfer_id != message.transfer_id || message.chunk == 0 {
                *entry = Pending {
                    transfer_id: message.transfer_id,
                    next_chunk: 0,
                    files: Vec::new(),
                };
            }
            if message.chunk != entry.next_chunk {
                tracing::warn!(
                    project = %project,
                    transfer = message.transfer_id,
                    chunk = message.chunk,
                    expected = entry.next_chunk,
                    "manifest chunk out of order: the partial set is dropped"
                );
                pending.remove(&project);
                return;
            }
            entry.next_chunk += 1;
            entry.files.extend(message.files);
            if !message.last {
                return;
            }
            pending.remove(&project).unwrap_or_default()
        };
        let Some(spec) = self.config.manifest_project(&project) else {
            tracing::warn!(project = %project, "manifests for a project the configuration does not name");
            return;
        };
        let job = Job {
            agent: agent.to_owned(),
            commit: message.commit_id,
            error: (!message.error.is_empty()).then_some(message.error),
            files: complete.files,
            spec,
            traceparent: message.traceparent,
        };
        tracing::info!(project = %project, commit = %job.commit, files = job.files.len(), "manifests received");
        if let Some(observed) = &self.observed {
            observed.set_received();
        }
        let leading = self.leading(agent);
        let mut workers = lock(&self.workers);
        let worker = workers.entry(project.clone()).or_insert_with(|| {
            let (tx, rx) = watch::channel(None);
            let span = tracing::info_span!("gitops", project = %project);
            tokio::spawn(
                self.clone()
                    .work(project.clone(), rx, leading)
                    .instrument(span),
            );
            tx
        });
        worker.send_replace(Some(job));
    }

    /// One project's worker: runs each new set, then follows the objects'
    /// health and corrects drift until the next set arrives. While a set
    /// runs, each phase is reported as it starts; after it, each change of
    /// health (at most one report a second), until every object is Current,
    /// or one Failed, or the reconcile timeout passes, which fails the sync
    /// naming what is not Current.
    async fn work(
        self,
        project: String,
        mut jobs: watch::Receiver<Option<Job>>,
        mut leading: watch::Receiver<bool>,
    ) {
        let mut state = AppliedState::default();
        let (drift_tx, mut drift_rx) = mpsc::unbounded_channel();
        // Health changes from the drift watches, tagged with the sync they
        // belong to: a watch of an older sync may still have queued some.
        let (health_tx, mut health_rx) = mpsc::unbounded_channel::<(u64, ObjRef, Health, String)>();
        let mut generation = 0u64;
        // Background work of the last sync; dropped (aborted) by the next.
        let mut followers: Vec<AbortOnDrop> = Vec::new();
        let mut last: Option<Following> = None;
        // The newest set, applied or held while another replica leads.
        let mut newest: Option<Job> = None;
        let mut tick = tokio::time::interval(REPORT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = last.as_ref().and_then(Following::deadline);
            let to_run: Option<Job> = tokio::select! {
                changed = jobs.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let Some(job) = jobs.borrow_and_update().clone() else {
                        continue;
                    };
                    newest = Some(job.clone());
                    if *leading.borrow_and_update() {
                        Some(job)
                    } else {
                        tracing::info!(commit = %job.commit, "another replica leads GitOps: holding the set");
                        None
                    }
                }
                changed = leading.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *leading.borrow_and_update() {
                        if let Some(job) = &newest {
                            tracing::info!(commit = %job.commit, "won GitOps leadership: applying the newest set");
                        }
                        newest.clone()
                    } else {
                        // Health and drift work stop with the leadership,
                        // and so do this replica's reports: the new leader
                        // reports from now on, and a resent report of ours
                        // must not overwrite its newer one.
                        followers.clear();
                        last = None;
                        lock(&self.last_reports).remove(&project);
                        None
                    }
                }
                Some((tag, object, health, message)) = health_rx.recv() => {
                    if tag == generation
                        && let Some(f) = &mut last
                    {
                        f.health_changed(&object, health, message);
                    }
                    None
                }
                _ = tick.tick() => {
                    if let Some(f) = &mut last
                        && f.dirty
                    {
                        f.dirty = false;
                        self.report_following(&project, f);
                    }
                    None
                }
                () = sleep_until(deadline) => {
                    if let Some(f) = &mut last {
                        f.timed_out = true;
                        self.report_following(&project, f);
                    }
                    None
                }
                Some(event) = drift_rx.recv() => {
                    self.tell_drift(&event);
                    if let Some(f) = &mut last {
                        f.outcome.drift.push(event);
                        // Keep the report bounded: the newest corrections.
                        if f.outcome.drift.len() > MAX_DRIFT_EVENTS {
                            f.outcome.drift.remove(0);
                        }
                        self.report_following(&project, f);
                    }
                    None
                }
            };
            if let Some(job) = to_run {
                followers.clear();
                generation += 1;
                let commit = job.commit.clone();
                let reconcile_timeout = job.spec.reconcile_timeout;
                // A root of its own unless kas's trace of the commit goes
                // on here.
                let span = tracing::info_span!(
                    parent: None,
                    "sync",
                    project = %project,
                    commit = %commit,
                    agent = %job.agent,
                    otel.status_code = tracing::field::Empty,
                );
                tether_runtime::telemetry::extract(&span, &job.traceparent);
                let before = self.uids(&state);
                // Losing the lease mid-sync stops applying at once; the
                // new leader applies the whole set (the inventory is
                // crash-safe).
                let outcome = tokio::select! {
                    outcome = self.run(&project, job, &mut state).instrument(span.clone()) => Some(outcome),
                    _ = leading.wait_for(|l| !*l) => None,
                };
                let Some((outcome, dry_run)) = outcome else {
                    tracing::warn!(commit = %commit, "lost GitOps leadership mid-sync: stopped");
                    continue;
                };
                lock(&self.applied).insert(project.clone(), state.clone());
                release_free_memory();
                let follows = outcome.error.is_none() && !dry_run;
                if !dry_run {
                    self.tell_outcome(&project, &commit, &outcome, &before);
                }
                let mut following = Following::new(
                    commit,
                    outcome,
                    dry_run,
                    follows.then_some(reconcile_timeout),
                );
                following.trace_id =
                    tether_runtime::telemetry::sampled_trace_id(&span).unwrap_or_default();
                let health =
                    tracing::info_span!(parent: &span, "wait", phase = "waiting_for_health");
                following.trace = Some((span, health));
                self.report_following(&project, &mut following);
                if follows {
                    let (tx, tag) = (health_tx.clone(), generation);
                    let sink: drift::HealthSink = Arc::new(move |object, health, message| {
                        let _ = tx.send((tag, object, health, message));
                    });
                    followers.push(AbortOnDrop(tokio::spawn(drift::watch(
                        self.client.clone(),
                        state.records.clone(),
                        drift_tx.clone(),
                        sink,
                    ))));
                }
                last = Some(following);
            }
        }
    }

    /// Reports a finished sync as its health stands now.
    fn report_following(&self, project: &str, f: &mut Following) {
        let (state, phase, error, waiting) = f.verdict();
        let waiting: Vec<ObjectOutcome> = waiting
            .into_iter()
            .take(MAX_WAITING_REPORTED)
            .cloned()
            .collect();
        if phase != f.phase {
            f.phase = phase;
            f.since = std::time::SystemTime::now();
            if phase == Phase::Done
                && let Some((sync, _health)) = f.trace.take()
            {
                // Ends the trace's agent part: every object Current, or
                // why not.
                if error.is_some() {
                    sync.record("otel.status_code", "error");
                }
            }
            if phase == Phase::Done {
                match &error {
                    None => {
                        tracing::info!(commit = %f.commit, objects = f.outcome.objects.len(), "every object Current")
                    }
                    Some(e) => {
                        tracing::warn!(commit = %f.commit, error = %e, "sync failed on health")
                    }
                }
            }
        }
        let mut outcome = f.outcome.clone();
        outcome.error = error;
        let waiting: Vec<&ObjectOutcome> = waiting.iter().collect();
        self.send_report(
            project,
            &f.commit,
            &outcome,
            state,
            phase,
            f.since,
            &waiting,
            &f.trace_id,
        );
    }

    /// The uid and apiVersion of each object applied so far, for the
    /// Events of those a sync prunes (empty without Events).
    fn uids(&self, state: &AppliedState) -> HashMap<ObjRef, (String, String)> {
        if !self.events.enabled() {
            return HashMap::new();
        }
        state
            .records
            .iter()
            .map(|(o, r)| (o.clone(), (r.uid.clone(), r.resource.api_version.clone())))
            .collect()
    }

    /// Events on what a sync changed: each object applied, pruned, or
    /// failed.
    fn tell_outcome(
        &self,
        project: &str,
        commit: &str,
        outcome: &SyncOutcome,
        before: &HashMap<ObjRef, (String, String)>,
    ) {
        if !self.events.enabled() {
            return;
        }
        let short: String = commit.chars().take(12).collect();
        for o in &outcome.objects {
            let known = before.get(&o.object);
            let (kind, reason, message) = match o.action {
                Action::Applied => (
                    crate::events::Kind::Normal,
                    "Applied",
                    format!("Applied commit {short} of {project} (server-side apply)"),
                ),
                Action::Pruned => (
                    crate::events::Kind::Normal,
                    "Pruned",
                    format!("Deleted: not in commit {short} of {project}"),
                ),
                Action::Failed => (
                    crate::events::Kind::Warning,
                    "SyncFailed",
                    format!(
                        "Commit {short} of {project}: {}",
                        if self.holds_decrypted(&o.object.kind, &o.object.namespace, &o.object.name)
                        {
                            ENCRYPTED_REFUSED
                        } else {
                            shown_reason(&o.object.kind, &o.message)
                        }
                    ),
                ),
                _ => continue,
            };
            self.events.record(crate::events::Note {
                api_version: o
                    .api_version()
                    .map(str::to_owned)
                    .or_else(|| known.map(|k| k.1.clone()))
                    .unwrap_or_default(),
                kind: o.object.kind.clone(),
                namespace: o.object.namespace.clone(),
                name: o.object.name.clone(),
                uid: o
                    .uid()
                    .map(str::to_owned)
                    .or_else(|| known.map(|k| k.0.clone()))
                    .unwrap_or_default(),
                type_: kind,
                reason,
                message,
            });
        }
    }

    /// Whether an object of any project's last set holds decrypted values.
    fn holds_decrypted(&self, kind: &str, _namespace: &str, name: &str) -> bool {
        lock(&self.encrypted)
            .values()
            .any(|set| crate::decrypt::is_sensitive(set, kind, name))
    }

    /// A drift correction: counted, and told on the object.
    fn tell_drift(&self, event: &drift::DriftEvent) {
        if let Some(observed) = &self.observed {
            observed.drift_corrected(event.corrected.is_ok());
        }
        let (kind, reason, message) = match &event.corrected {
            Ok(()) => (
                crate::events::Kind::Normal,
                "DriftCorrected",
                format!("Applied again: {} by {}", event.what, event.who),
            ),
            Err(e) => (
                crate::events::Kind::Warning,
                "DriftCorrectionFailed",
                format!(
                    "{} by {}; applying again failed: {}",
                    event.what,
                    event.who,
                    if self.holds_decrypted(
                        &event.object.kind,
                        &event.object.namespace,
                        &event.object.name,
                    ) {
                        ENCRYPTED_REFUSED
                    } else {
                        shown_reason(&event.object.kind, e)
                    }
                ),
            ),
        };
        self.events.record(crate::events::Note {
            api_version: event.api_version.clone(),
            kind: event.object.kind.clone(),
            namespace: event.object.namespace.clone(),
            name: event.object.name.clone(),
            uid: event.uid.clone(),
            type_: kind,
            reason,
            message,
        });
    }

    /// How a manifest project is synced (and planned).
    fn sync_options(&self, spec: &cfg::ManifestProject, agent: &str, project: &str) -> SyncOptions {
        SyncOptions {
            default_namespace: spec.default_namespace.clone(),
            inventory: tether_gitops::inventory::Inventory::for_project(
                agent,
                project,
                &self.inventory_namespace,
            ),
            inventory_policy: match spec.inventory_policy {
                cfg::InventoryPolicy::MustMatch => InventoryPolicy::MustMatch,
                cfg::InventoryPolicy::AdoptIfNoInventory => InventoryPolicy::AdoptIfNoInventory,
                cfg::InventoryPolicy::AdoptAll => InventoryPolicy::AdoptAll,
            },
            prune: spec.prune,
            prune_timeout: spec.prune_timeout,
            prune_propagation: match spec.prune_propagation_policy {
                cfg::PrunePropagationPolicy::Orphan => kube::api::PropagationPolicy::Orphan,
                cfg::PrunePropagationPolicy::Background => kube::api::PropagationPolicy::Background,
                cfg::PrunePropagationPolicy::Foreground => kube::api::PropagationPolicy::Foreground,
            },
            server_dry_run: spec.dry_run_strategy == cfg::DryRunStrategy::Server,
            client_dry_run: spec.dry_run_strategy == cfg::DryRunStrategy::Client,
            reconcile_timeout: spec.reconcile_timeout,
            hook_timeout: spec.hook_timeout,
            limits: Limits::default(),
        }
    }

    /// Takes one chunk of a plan request; once the last has come, the plan
    /// to run (every replica may plan: it changes nothing).
    pub fn receive_plan(
        &self,
        agent: &str,
        request: v1::PlanRequest,
    ) -> Option<impl Future<Output = v1::PlanReport> + Send + 'static> {
        let plan_id = request.plan_id;
        let files = {
            let mut plans = lock(&self.plans);
            let entry = plans.entry(plan_id).or_default();
            if request.chunk != entry.next_chunk {
                plans.remove(&plan_id);
                tracing::warn!(plan = plan_id, "plan chunk out of order: dropped");
                return None;
            }
            entry.next_chunk += 1;
            entry.files.extend(request.files);
            if !request.last {
                // At most a few plans are assembled at once.
                if plans.len() > MAX_PENDING_PLANS {
                    plans.clear();
                }
                return None;
            }
            plans.remove(&plan_id).unwrap_or_default().files
        };
        let spec = self.config.manifest_project(&request.project_id);
        let options = spec.map(|spec| self.sync_options(&spec, agent, &request.project_id));
        let client = self.client.clone();
        let this = self.clone();
        let project = request.project_id;
        let applied = lock(&self.applied)
            .get(&project)
            .cloned()
            .unwrap_or_default();
        Some(async move {
            let mut report = v1::PlanReport {
                plan_id,
                ..Default::default()
            };
            let Some(options) = options else {
                report.error = format!(
                    "project {project} is not a manifest project of this agent's configuration"
                );
                return report;
            };
            let Some(spec) = this.config.manifest_project(&project) else {
                report.error = format!("project {project} is no longer in the configuration");
                return report;
            };
            let expanded = match this.expand(&spec, files).await {
                Ok(expanded) => expanded,
                Err(e) => {
                    report.error = e;
                    return report;
                }
            };
            match tether_gitops::plan::plan(&client, &options, &expanded.files, &applied).await {
                Ok(plan) => {
                    report.dry_runs = u32::try_from(plan.dry_runs).unwrap_or(u32::MAX);
                    report.objects = plan
                        .objects
                        .into_iter()
                        .map(|p| {
                            let key = (
                                p.object.kind.clone(),
                                p.object.namespace.clone(),
                                p.object.name.clone(),
                            );
                            let mut planned = planned_message(p);
                            if crate::decrypt::is_sensitive(&expanded.encrypted, &key.0, &key.2) {
                                hide_values(&mut planned, crate::decrypt::HIDDEN);
                                // A dry run's refusal may quote a value.
                                if !planned.message.is_empty() {
                                    planned.message = ENCRYPTED_REFUSED.to_owned();
                                }
                            } else if crate::decrypt::is_sensitive(
                                &expanded.secret_backed,
                                &key.0,
                                &key.2,
                            ) {
                                hide_values(&mut planned, HIDDEN_FROM_SECRET);
                            }
                            planned
                        })
                        .collect();
                }
                Err(e) => report.error = e.to_string(),
            }
            report
        })
    }

    /// Syncs one set; returns the outcome and whether it was a dry run.
    async fn run(&self, project: &str, job: Job, state: &mut AppliedState) -> (SyncOutcome, bool) {
        if let Some(error) = job.error {
            tracing::warn!(commit = %job.commit, error = %error, "kas could not read the manifests; nothing changes");
            let outcome = SyncOutcome {
                error: Some(error),
                ..SyncOutcome::default()
            };
            return (outcome, false);
        }
        let options = self.sync_options(&job.spec, &job.agent, project);
        let throttle = Mutex::new(Throttle::default());
        let trace_id = tether_runtime::telemetry::sampled_trace_id(&tracing::Span::current())
            .unwrap_or_default();
        let started = std::time::SystemTime::now();
        let observe = |progress: Progress<'_>| {
            let mut t = lock(&throttle);
            if !t.due(progress.phase) {
                return;
            }
            let outcome = SyncOutcome {
                objects: progress.objects.to_vec(),
                duration: started.elapsed().unwrap_or_default(),
                ..SyncOutcome::default()
            };
            let waiting: Vec<&ObjectOutcome> = progress
                .waiting
                .iter()
                .filter_map(|&i| progress.objects.get(i))
                .collect();
            self.send_report(
                project,
                &job.commit,
                &outcome,
                v1::SyncState::Syncing,
                progress.phase,
                t.since,
                &waiting,
                &trace_id,
            );
        };
        let outcome = match self.expand(&job.spec, job.files).await {
            Ok(expanded) => {
                lock(&self.encrypted).insert(project.to_owned(), expanded.encrypted.clone());
                sync::sync_observed(&self.client, &options, &expanded.files, state, &observe).await
            }
            Err(error) => {
                tracing::warn!(commit = %job.commit, error = %error, "a chart did not render; nothing changes");
                SyncOutcome {
                    error: Some(error),
                    ..SyncOutcome::default()
                }
            }
        };
        if let Some(observed) = &self.observed {
            observed.set_applied();
            observed.applied_in(outcome.error.is_none(), outcome.duration);
            observed.pruned(outcome.count(Action::Pruned) as u64);
        }
        match &outcome.error {
            None => tracing::info!(
                commit = %job.commit,
                applied = outcome.count(Action::Applied),
                unchanged = outcome.count(Action::Unchanged),
                pruned = outcome.count(Action::Pruned),
                duration = ?outcome.duration,
                "synced"
            ),
            Some(e) => {
                let hidden = lock(&self.encrypted)
                    .get(project)
                    .cloned()
                    .unwrap_or_default();
                tracing::warn!(commit = %job.commit, error = %hide_in_error(e, &hidden), "sync failed");
            }
        }
        let dry_run = options.server_dry_run || options.client_dry_run;
        if outcome.error.is_none() && !dry_run {
            lock(&self.synced).insert(project.to_owned(), job.commit.clone());
        }
        (outcome, dry_run)
    }

    #[allow(clippy::too_many_arguments)]
    fn send_report(
        &self,
        project: &str,
        commit: &str,
        outcome: &SyncOutcome,
        state: v1::SyncState,
        phase: Phase,
        since: std::time::SystemTime,
        waiting: &[&ObjectOutcome],
        trace_id: &str,
    ) {
        let hidden = lock(&self.encrypted)
            .get(project)
            .cloned()
            .unwrap_or_default();
        let object = |o: &ObjectOutcome| v1::ObjectResult {
            group: o.object.group.clone(),
            kind: o.object.kind.clone(),
            namespace: o.object.namespace.clone(),
            name: o.object.name.clone(),
            action: o.action.as_str().to_owned(),
            health: o
                .health
                .map(|h| h.to_string())
                .unwrap_or_else(|| "Unknown".into()),
            message: if o.action == Action::Failed
                && crate::decrypt::is_sensitive(&hidden, &o.object.kind, &o.object.name)
            {
                ENCRYPTED_REFUSED.to_owned()
            } else {
                bounded(&o.message)
            },
        };
        let report = v1::SyncReport {
            project_id: project.to_owned(),
            commit_id: commit.to_owned(),
            state: state as i32,
            error: outcome
                .error
                .as_deref()
                .map(|e| hide_in_error(e, &hidden))
                .unwrap_or_default(),
            applied: outcome.count(Action::Applied) as u32,
            unchanged: outcome.count(Action::Unchanged) as u32,
            pruned: outcome.count(Action::Pruned) as u32,
            duration: Some(prost_duration(outcome.duration)),
            objects: outcome.objects.iter().map(object).collect(),
            drift: outcome
                .drift
                .iter()
                .map(|d| v1::DriftEvent {
                    group: d.object.group.clone(),
                    kind: d.object.kind.clone(),
                    namespace: d.object.namespace.clone(),
                    name: d.object.name.clone(),
                    who: d.who.clone(),
                    what: d.what.clone(),
                    error: match d.corrected.clone().err() {
                        Some(_)
                            if crate::decrypt::is_sensitive(
                                &hidden,
                                &d.object.kind,
                                &d.object.name,
                            ) =>
                        {
                            ENCRYPTED_REFUSED.to_owned()
                        }
                        other => other.unwrap_or_default(),
                    },
                    at: rfc3339(d.at),
                })
                .collect(),
            phase: phase.as_str().to_owned(),
            phase_since: rfc3339(since),
            waiting: waiting
                .iter()
                .take(MAX_WAITING_REPORTED)
                .map(|o| object(o))
                .collect(),
            trace_id: trace_id.to_owned(),
        };
        lock(&self.last_reports).insert(project.to_owned(), report.clone());
        let _ = self.reports.send(report);
    }
}

/// The API server's reason as an Event may show it. Events are read by
/// roles that may not read Secrets (`view`), and an apply error can quote
/// the value it refused: a Secret's reason stays in the sync report, which
/// only kas's administrators see.
fn shown_reason<'a>(kind: &str, message: &'a str) -> &'a str {
    if kind == "Secret" {
        "the API server refused it (its reason is in the sync report: Secrets' values stay out of Events)"
    } else {
        message
    }
}

/// Most drift corrections one report carries.
const MAX_DRIFT_EVENTS: usize = 50;
/// Most objects a report names as waited for.
const MAX_WAITING_REPORTED: usize = 20;
/// Health changes are reported at most this often (phases at once).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// When a sync in progress reports: at each new phase, and within a phase
/// at most once every [`REPORT_EVERY`].
#[derive(Debug)]
struct Throttle {
    phase: Option<Phase>,
    since: std::time::SystemTime,
    sent: Option<std::time::Instant>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            phase: None,
            since: std::time::SystemTime::now(),
            sent: None,
        }
    }
}

impl Throttle {
    fn due(&mut self, phase: Phase) -> bool {
        let now = std::time::Instant::now();
        if self.phase != Some(phase) {
            self.phase = Some(phase);
            self.since = std::time::SystemTime::now();
        } else if self.sent.is_some_and(|t| now - t < REPORT_EVERY) {
            return false;
        }
        self.sent = Some(now);
        true
    }
}

/// The last sync of a project, as its health is followed.
#[derive(Debug)]
struct Following {
    commit: String,
    outcome: SyncOutcome,
    dry_run: bool,
    /// Where each object is in `outcome.objects`.
    index: HashMap<ObjRef, usize>,
    /// When health must be settled, if it is followed.
    deadline: Option<tokio::time::Instant>,
    timeout: Duration,
    timed_out: bool,
    /// A health change not reported yet.
    dirty: bool,
    phase: Phase,
    since: std::time::SystemTime,
    /// The sync's span and its health wait's, open until the sync is done.
    trace: Option<(tracing::Span, tracing::Span)>,
    /// The sync's trace id when it is exported, for its reports.
    trace_id: String,
}

impl Following {
    fn new(commit: String, outcome: SyncOutcome, dry_run: bool, timeout: Option<Duration>) -> Self {
        let index = outcome
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| (o.object.clone(), i))
            .collect();
        Following {
            commit,
            outcome,
            dry_run,
            index,
            deadline: timeout.map(|t| tokio::time::Instant::now() + t),
            timeout: timeout.unwrap_or_default(),
            timed_out: false,
            dirty: false,
            phase: Phase::Applying,
            since: std::time::SystemTime::now(),
            trace: None,
            trace_id: String::new(),
        }
    }

    /// When the reconcile timeout passes, while health is unsettled.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        if self.timed_out {
            return None;
        }
        self.deadline.filter(|_| !self.unsettled().is_empty())
    }

    fn health_changed(&mut self, object: &ObjRef, health: Health, message: String) {
        if let Some(&i) = self.index.get(object) {
            let o = &mut self.outcome.objects[i];
            if o.health != Some(health) || o.message != message {
                o.health = Some(health);
                o.message = message;
                self.dirty = true;
            }
        }
        // The reconcile timeout bounds the sync's first convergence only:
        // an object that regresses later (a pod evicted, a scale-up) is
        // told as its health, not as a sync that failed long after.
        if !self.timed_out && self.unsettled().is_empty() {
            self.deadline = None;
        }
    }

    /// Applied objects whose health is not known to be Current or Failed.
    fn unsettled(&self) -> Vec<&ObjectOutcome> {
        self.outcome
            .objects
            .iter()
            .filter(|o| matches!(o.action, Action::Applied | Action::Unchanged))
            .filter(|o| o.follows() && !matches!(o.health, Some(Health::Current | Health::Failed)))
            .collect()
    }

    /// The state, phase and error to report, and what health waits for.
    fn verdict(&self) -> (v1::SyncState, Phase, Option<String>, Vec<&ObjectOutcome>) {
        if let Some(e) = &self.outcome.error {
            return (
                v1::SyncState::Failed,
                Phase::Done,
                Some(e.clone()),
                Vec::new(),
            );
        }
        if self.dry_run {
            return (v1::SyncState::DryRun, Phase::Done, None, Vec::new());
        }
        let unsettled = self.unsettled();
        if unsettled.is_empty() {
            return match sync::health_failure(&self.outcome.objects) {
                Some(e) => (v1::SyncState::Failed, Phase::Done, Some(e), Vec::new()),
                None => (v1::SyncState::Synced, Phase::Done, None, Vec::new()),
            };
        }
        if self.timed_out {
            let e = sync::late_message(&self.outcome.objects, self.timeout);
            return (v1::SyncState::Failed, Phase::Done, Some(e), unsettled);
        }
        (
            v1::SyncState::Synced,
            Phase::WaitingForHealth,
            None,
            unsettled,
        )
    }
}

/// Most characters of an object's message a report carries: a report must
/// stay well under the channel's message limit however many objects fail
/// with long webhook errors.
const MAX_MESSAGE_CHARS: usize = 512;

fn bounded(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &message[..at]),
        None => message.to_owned(),
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A task that ends when this is dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn rfc3339(at: std::time::SystemTime) -> String {
    let seconds = at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    k8s_openapi::jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Hands memory freed after a sync (parsed manifests, API responses) back
/// to the system, so agentk's RSS reflects what it keeps.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn prost_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(transfer_id: u64, chunk: u32, last: bool, path: &str) -> v1::Manifests {
        v1::Manifests {
            project_id: "team/app".into(),
            commit_id: "c1".into(),
            files: vec![v1::ManifestFile {
                path: path.into(),
                content: b"x".to_vec(),
                render: String::new(),
            }],
            last,
            error: String::new(),
            transfer_id,
            chunk,
            traceparent: String::new(),
        }
    }

    fn pending_paths(gitops: &GitOps) -> Vec<String> {
        lock(&gitops.pending)
            .get("team/app")
            .map(|p| p.files.iter().map(|f| f.path.clone()).collect())
            .unwrap_or_default()
    }

    async fn gitops() -> GitOps {
        let (reports, _) = mpsc::unbounded_channel();
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        let level = tether_runtime::logging::init("warn", tether_runtime::logging::LogFormat::Text);
        GitOps::new(client, ConfigState::new(level), "ns".into(), reports, None)
    }

    #[tokio::test]
    async fn a_resent_set_never_mixes_with_the_interrupted_one() {
        let gitops = gitops().await;
        gitops.receive("a", message(1, 0, false, "old-0.yaml"));
        gitops.receive("a", message(1, 1, false, "old-1.yaml"));
        // The session dropped; kas sends the set again under a new id.
        gitops.receive("a", message(2, 0, false, "new-0.yaml"));
        assert_eq!(pending_paths(&gitops), ["new-0.yaml"]);
        // A late chunk of the old send is out of order: dropped, with it.
        gitops.receive("a", message(1, 2, false, "old-2.yaml"));
        assert!(pending_paths(&gitops).is_empty());
    }

    #[tokio::test]
    async fn a_gap_in_the_chunks_drops_the_partial_set() {
        let gitops = gitops().await;
        gitops.receive("a", message(5, 0, false, "a.yaml"));
        gitops.receive("a", message(5, 2, false, "c.yaml"));
        assert!(pending_paths(&gitops).is_empty());
        gitops.receive("a", message(6, 0, false, "a.yaml"));
        gitops.drop_partial_sets();
        assert!(pending_paths(&gitops).is_empty());
    }
}
