//! One sync of one manifest project: the whole set is parsed, resolved and
//! checked before anything changes; then the inventory records the union of
//! old and new, objects are applied in dependency order with server-side
//! apply, what left git is pruned, and the inventory records the final set.
//! A crash at any point leaves an inventory that covers everything the
//! project may own, so nothing is orphaned and nothing forgotten.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use futures_util::{StreamExt, stream};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::discovery::{ApiResource, Discovery};
use serde_json::Value;

use crate::follow::{self, Target, Until};
use crate::health::{Health, health_of_group_kind};
use crate::hooks::{self, DeletePolicy};
use crate::inventory::{FIELD_MANAGER, Inventory, ON_REMOVE_ANNOTATION, OWNER_ANNOTATION, ObjRef};
use crate::kinds::{self, Resolved};
use crate::manifest::{self, Limits, ManifestFile, Object};
use crate::progress::{Observer, Phase, Progress};
pub use crate::record::{Record, Records};
pub(crate) use crate::record::{fingerprint, our_fields};

/// Objects applied at once within one kind.
const APPLY_CONCURRENCY: usize = 16;
/// How long custom resources wait for their CRD to be Established.
const CRD_ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Which objects a sync may take over (the GitLab agent's `inventory_policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InventoryPolicy {
    /// Only objects this inventory owns.
    MustMatch,
    /// Also objects no inventory owns.
    AdoptIfNoInventory,
    /// Any object.
    AdoptAll,
}

/// How to sync one manifest project.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Namespace for namespaced objects that name none.
    pub default_namespace: String,
    pub inventory: Inventory,
    pub inventory_policy: InventoryPolicy,
    pub prune: bool,
    pub prune_timeout: Duration,
    pub prune_propagation: PropagationPolicy,
    /// `dry_run_strategy: server`: apply with dryRun=All, prune nothing.
    pub server_dry_run: bool,
    /// `dry_run_strategy: client`: validate and plan only; send nothing.
    pub client_dry_run: bool,
    /// How long objects that others depend on may take to become Current.
    pub reconcile_timeout: Duration,
    /// How long a Helm hook may take to complete.
    pub hook_timeout: Duration,
    pub limits: Limits,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Applied,
    /// Its desired content did not change since agentk applied it, and
    /// nobody took over any field agentk owns: not sent again.
    Unchanged,
    /// Validated and planned by a client-side dry run; not sent.
    Planned,
    Pruned,
    /// Left in the cluster: annotated on-remove keep, or prune is off.
    Kept,
    Failed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Applied => "applied",
            Action::Unchanged => "unchanged",
            Action::Planned => "planned",
            Action::Pruned => "pruned",
            Action::Kept => "kept",
            Action::Failed => "failed",
        }
    }
}

/// What happened to one object.
#[derive(Clone, Debug)]
pub struct ObjectOutcome {
    pub object: ObjRef,
    pub action: Action,
    pub health: Option<Health>,
    pub message: String,
    /// How to read it back, for health.
    resource: Option<(ApiResource, bool)>,
    /// What was applied, for the next sync and for drift correction.
    record: Option<Arc<Record>>,
}

/// What a manifest project's syncs applied, kept between syncs (in memory:
/// a restarted agent applies everything once, then skips again).
#[derive(Clone, Default)]
pub struct AppliedState {
    pub records: Records,
    /// Hooks deleted by their policy once they settled, with the
    /// fingerprint of what ran: the same content is not created again.
    pub(crate) finished_hooks: std::collections::HashMap<ObjRef, u64>,
    /// API discovery from an earlier sync: run again only when a kind is
    /// not found in it or the last sync applied CRDs.
    discovery: Option<std::sync::Arc<Discovery>>,
}

/// What a sync did.
#[derive(Clone, Debug, Default)]
pub struct SyncOutcome {
    /// Why the sync failed, if it did; with file and document where the
    /// manifests are at fault.
    pub error: Option<String>,
    pub objects: Vec<ObjectOutcome>,
    pub duration: Duration,
    /// Corrections made after the sync (see [`crate::drift`]).
    pub drift: Vec<crate::drift::DriftEvent>,
}

impl ObjectOutcome {
    /// Whether its health is followed after the sync: it was applied (or
    /// left unchanged) and is still in the cluster.
    pub fn follows(&self) -> bool {
        self.resource.is_some()
    }
}

impl SyncOutcome {
    fn failed(error: String, started: Instant) -> Self {
        SyncOutcome {
            error: Some(error),
            duration: started.elapsed(),
            ..SyncOutcome::default()
        }
    }

    pub fn count(&self, action: Action) -> usize {
        self.objects.iter().filter(|o| o.action == action).count()
    }
}

/// Brings the cluster to the state of `files`; `state` remembers what was
/// applied, so that unchanged objects are not sent again.
pub async fn sync(
    client: &kube::Client,
    options: &SyncOptions,
    files: &[ManifestFile],
    state: &mut AppliedState,
) -> SyncOutcome {
    sync_observed(client, options, files, state, &crate::progress::ignore).await
}

/// [`sync`], telling `observe` each phase and what it waits for.
pub async fn sync_observed(
    client: &kube::Client,
    options: &SyncOptions,
    files: &[ManifestFile],
    state: &mut AppliedState,
    observe: Observer<'_>,
) -> SyncOutcome {
    let started = Instant::now();
    observe(Progress {
        phase: Phase::Applying,
        objects: &[],
        waiting: &[],
    });
    let objects = match manifest::parse(files, &options.limits) {
        Ok(objects) => objects,
        Err(problems) => return SyncOutcome::failed(join(&problems), started),
    };
    let mut fresh = false;
    let discovery = loop {
        let discovery = match state.discovery.clone() {
            Some(cached) => cached,
            None => match Discovery::new(client.clone())
                .run()
                .instrument(tracing::info_span!("discover"))
                .await
            {
                Ok(d) => {
                    fresh = true;
                    std::sync::Arc::new(d)
                }
                Err(e) => {
                    return SyncOutcome::failed(format!("API discovery failed: {e}"), started);
                }
            },
        };
        state.discovery = Some(discovery.clone());
        match resolve_set(&discovery, objects.clone(), &options.default_namespace) {
            Ok(planned) => break (discovery, planned),
            // The kind may be new since discovery was cached.
            Err(_) if !fresh => state.discovery = None,
            Err(problems) => return SyncOutcome::failed(problems.join("; "), started),
        }
    };
    let (discovery, planned) = discovery;

    let old = match options.inventory.load(client).await {
        Ok(old) => old,
        Err(e) => return SyncOutcome::failed(format!("cannot read the inventory: {e}"), started),
    };
    let mut outcome = SyncOutcome::default();
    let mut owned = Vec::with_capacity(planned.len());
    for (object, resolved) in planned {
        match check_ownership(client, options, &old, &object, &resolved).await {
            Ok(()) => owned.push((object, resolved)),
            Err(refused) => outcome.objects.push(ObjectOutcome {
                object: ObjRef::from_key(&object.key),
                action: Action::Failed,
                health: None,
                message: refused.to_string(),
                resource: None,
                record: None,
            }),
        }
    }
    if options.client_dry_run {
        outcome
            .objects
            .extend(owned.iter().map(|(o, _)| ObjectOutcome {
                object: ObjRef::from_key(&o.key),
                action: Action::Planned,
                health: None,
                message: "client dry run: validated, not sent".into(),
                resource: None,
                record: None,
            }));
        outcome.duration = started.elapsed();
        return outcome;
    }
    let new: BTreeSet<ObjRef> = owned
        .iter()
        .map(|(o, _)| ObjRef::from_key(&o.key))
        .collect();

    // What the inventory in the cluster holds; written only when it must
    // change, so that a sync that changes nothing writes nothing.
    let mut stored = old.clone();
    if !options.server_dry_run {
        let union: BTreeSet<ObjRef> = old.union(&new).cloned().collect();
        if union != stored {
            if let Err(e) = options.inventory.save(client, &union).await {
                return SyncOutcome::failed(format!("cannot write the inventory: {e}"), started);
            }
            stored = union;
        }
    }

    let current = if options.server_dry_run {
        CurrentFields::new()
    } else {
        current_fields(client, &owned, &state.records).await
    };
    let (mut applied, stopped) = apply_all(client, options, owned, state, &current, observe).await;
    if !options.server_dry_run && stopped.is_none() {
        outcome.error = settle_hooks(client, options, &mut applied, state, observe).await;
    }
    if stopped.is_some() {
        outcome.error = stopped;
    }
    if applied
        .iter()
        .any(|o| o.object.kind == "CustomResourceDefinition" && o.action == Action::Applied)
    {
        // New kinds may be served now.
        state.discovery = None;
    }
    if !options.server_dry_run {
        for o in &applied {
            match &o.record {
                Some(record) => {
                    state.records.insert(o.object.clone(), record.clone());
                }
                None => {
                    state.records.remove(&o.object);
                }
            }
        }
    }
    outcome.objects.extend(applied);

    let mut keep = new.clone();
    let gone: Vec<ObjRef> = old.difference(&new).cloned().collect();
    if options.server_dry_run {
        // Nothing is pruned in a dry run.
    } else if options.prune && outcome.error.is_none() {
        // (A sync stopped by a hook or a dependency prunes nothing: what
        // left git stays in the inventory for the next sync.)
        if !gone.is_empty() {
            observe(Progress {
                phase: Phase::Pruning,
                objects: &outcome.objects,
                waiting: &[],
            });
        }
        let pruned = prune(client, &discovery, options, gone)
            .instrument(tracing::info_span!("prune"))
            .await;
        for p in &pruned {
            state.records.remove(&p.object);
            state.finished_hooks.remove(&p.object);
            // An object that could not be deleted stays in the inventory,
            // so that the next sync tries again.
            if p.action == Action::Failed {
                keep.insert(p.object.clone());
            }
        }
        outcome.objects.extend(pruned);
    } else {
        keep.extend(gone);
    }
    if !options.server_dry_run
        && keep != stored
        && let Err(e) = options.inventory.save(client, &keep).await
    {
        outcome.error = Some(format!("cannot write the inventory: {e}"));
    }
    if outcome.error.is_none() {
        let failed: Vec<String> = outcome
            .objects
            .iter()
            .filter(|o| o.action == Action::Failed)
            .map(|o| format!("{}: {}", o.object, o.message))
            .collect();
        if !failed.is_empty() {
            outcome.error = Some(failed.join("; "));
        }
    }
    outcome.duration = started.elapsed();
    outcome
}

/// Hooks whose delete policy removes them once they settle: waits for
/// them (up to the hook timeout), deletes those that settled the way
/// their policy names, and remembers what ran (see [`crate::hooks`]).
/// Why the sync fails, if a hook did not settle in time.
async fn settle_hooks(
    client: &kube::Client,
    options: &SyncOptions,
    applied: &mut [ObjectOutcome],
    state: &mut AppliedState,
    observe: Observer<'_>,
) -> Option<String> {
    for o in applied.iter() {
        if o.action == Action::Applied {
            state.finished_hooks.remove(&o.object);
        }
    }
    let settling: Vec<usize> = applied
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            o.action == Action::Applied
                && o.record
                    .as_ref()
                    .and_then(|r| r.hook)
                    .is_some_and(DeletePolicy::deletes_when_settled)
        })
        .map(|(i, _)| i)
        .collect();
    if settling.is_empty() {
        return None;
    }
    let settled = wait_for(
        client,
        applied,
        &settling,
        Until::Settled,
        Phase::WaitingForHooks,
        options.hook_timeout,
        observe,
    )
    .await;
    let late = (!settled).then(|| {
        not_done(
            applied,
            &settling,
            Until::Settled,
            "hook_timeout",
            options.hook_timeout,
        )
    });
    for &i in &settling {
        let o = &mut applied[i];
        let (Some(record), Some((resource, namespaced))) = (o.record.clone(), o.resource.clone())
        else {
            continue;
        };
        let succeeded = match o.health {
            Some(Health::Current) => true,
            Some(Health::Failed) => false,
            _ => continue,
        };
        let Some(reason) = record.hook.and_then(|h| h.reason(succeeded)) else {
            continue;
        };
        let api = api_for(client, &resource, namespaced, &o.object.namespace);
        match hooks::delete_and_wait(&api, &o.object).await {
            Ok(()) => {
                state.finished_hooks.insert(o.object.clone(), record.hash);
                state.records.remove(&o.object);
                o.record = None;
                o.resource = None;
                let prefix = if o.message.is_empty() {
                    String::new()
                } else {
                    format!("{}; ", o.message)
                };
                o.message = format!("{prefix}deleted: helm.sh/hook-delete-policy {reason}");
            }
            Err(e) => o.message = format!("helm.sh/hook-delete-policy {reason}: {e}"),
        }
    }
    late
}

/// How to follow the health of `o`, if it was applied.
fn target(index: usize, o: &ObjectOutcome) -> Option<Target> {
    let (resource, namespaced) = o.resource.clone()?;
    Some(Target {
        index,
        object: o.object.clone(),
        resource,
        namespaced,
    })
}

/// Follows `members` of `objects` (those not yet done) from the live
/// objects until each is done by `until` or `timeout` passes, updating
/// their health and telling `observe` of each change. Whether all were
/// done in time.
async fn wait_for(
    client: &kube::Client,
    objects: &mut [ObjectOutcome],
    members: &[usize],
    until: Until,
    phase: Phase,
    timeout: Duration,
    observe: Observer<'_>,
) -> bool {
    let targets: Vec<Target> = members
        .iter()
        .filter(|&&i| !until.done(objects[i].health))
        .filter_map(|&i| target(i, &objects[i]))
        .collect();
    if targets.is_empty() {
        return true;
    }
    let mut waiting: Vec<usize> = targets.iter().map(|t| t.index).collect();
    observe(Progress {
        phase,
        objects,
        waiting: &waiting,
    });
    follow::wait(client, targets, until, timeout, |changes| {
        for change in changes {
            let o = &mut objects[change.index];
            o.health = Some(change.health);
            o.message = change.message;
        }
        waiting.retain(|&i| !until.done(objects[i].health));
        observe(Progress {
            phase,
            objects,
            waiting: &waiting,
        });
    })
    .await
}

/// Why `members` are not done: each with its health and status message.
fn not_done(
    objects: &[ObjectOutcome],
    members: &[usize],
    until: Until,
    setting: &str,
    timeout: Duration,
) -> String {
    let late: Vec<String> = members
        .iter()
        .map(|&i| &objects[i])
        .filter(|o| o.resource.is_some() && !until.done(o.health))
        .take(MAX_NAMED)
        .map(describe)
        .collect();
    let failed: Vec<String> = members
        .iter()
        .map(|&i| &objects[i])
        .filter(|o| o.health == Some(Health::Failed))
        .take(MAX_NAMED)
        .map(describe)
        .collect();
    match (failed.is_empty(), late.is_empty()) {
        (false, _) => format!("failed: {}", failed.join("; ")),
        (true, false) => format!(
            "not Current within {setting} {}: {}",
            humantime(timeout),
            late.join("; ")
        ),
        (true, true) => format!("did not settle within {setting} {}", humantime(timeout)),
    }
}

/// Objects one error message names at most.
const MAX_NAMED: usize = 10;

fn describe(o: &ObjectOutcome) -> String {
    let health = o.health.map_or("Unknown".to_owned(), |h| h.to_string());
    match o.message.as_str() {
        "" => format!("{} is {health}", o.object),
        m => format!("{} is {health} ({m})", o.object),
    }
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// Why the health of a finished sync is not all Current, if it is not:
/// the objects that Failed, else none (objects still in progress are not a
/// failure until their timeout passes; see [`late_message`]).
pub fn health_failure(objects: &[ObjectOutcome]) -> Option<String> {
    let failed: Vec<String> = objects
        .iter()
        .filter(|o| o.health == Some(Health::Failed) && o.action != Action::Failed)
        .take(MAX_NAMED)
        .map(describe)
        .collect();
    (!failed.is_empty()).then(|| format!("failed: {}", failed.join("; ")))
}

/// Why a health wait that timed out failed: the objects not Current.
pub fn late_message(objects: &[ObjectOutcome], timeout: Duration) -> String {
    let members: Vec<usize> = (0..objects.len()).collect();
    not_done(
        objects,
        &members,
        Until::Current,
        "reconcile_timeout",
        timeout,
    )
}

/// Waits until every applied object is Current (or Failed), or `timeout`
/// passes, updating each object's health from watches.
pub async fn wait_for_health(client: &kube::Client, outcome: &mut SyncOutcome, timeout: Duration) {
    follow_health(
        client,
        &mut outcome.objects,
        timeout,
        &crate::progress::ignore,
    )
    .await;
}

/// [`wait_for_health`] on `objects`, telling `observe` of each change;
/// whether every object settled in time.
pub async fn follow_health(
    client: &kube::Client,
    objects: &mut [ObjectOutcome],
    timeout: Duration,
    observe: Observer<'_>,
) -> bool {
    let members: Vec<usize> = (0..objects.len()).collect();
    wait_for(
        client,
        objects,
        &members,
        Until::Settled,
        Phase::WaitingForHealth,
        timeout,
        observe,
    )
    .await
}

fn join(problems: &[manifest::ManifestError]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Resolves every object, sets namespaces, and refuses the set if any kind
/// is unknown or an object appears twice once namespaces are set.
pub(crate) fn resolve_set(
    discovery: &Discovery,
    objects: Vec<Object>,
    default_namespace: &str,
) -> Result<Vec<(Object, Resolved)>, Vec<String>> {
    let mut problems = Vec::new();
    let mut planned = Vec::with_capacity(objects.len());
    for object in &objects {
        let Some(resolved) = kinds::resolve(discovery, &objects, object) else {
            problems.push(format!(
                "{}: unknown kind {} (apiVersion {}): not served by the API server and not defined by a CRD in these manifests",
                object.location, object.key.kind, object.api_version
            ));
            continue;
        };
        let mut object = object.clone();
        if resolved.namespaced {
            if object.key.namespace.is_none() {
                let ns = if default_namespace.is_empty() {
                    "default"
                } else {
                    default_namespace
                };
                object.set_namespace(ns);
            }
        } else if object.key.namespace.is_some() {
            object.key.namespace = None;
            if let Some(Value::Object(meta)) = object.body.get_mut("metadata") {
                meta.remove("namespace");
            }
        }
        planned.push((object, resolved));
    }
    let resolved: Vec<Object> = planned.iter().map(|(o, _)| o.clone()).collect();
    problems.extend(
        manifest::duplicates(&resolved)
            .iter()
            .map(ToString::to_string),
    );
    match crate::depends::waves(&resolved) {
        Ok(waves) => {
            for ((_, r), wave) in planned.iter_mut().zip(waves) {
                r.wave = wave;
            }
        }
        Err(cycle) => problems.extend(cycle),
    }
    if problems.is_empty() {
        Ok(planned)
    } else {
        Err(problems)
    }
}

/// Annotates `object` as owned by the inventory `id`, as cli-utils does.
pub(crate) fn mark_owner(object: &mut Object, id: &str) {
    if let Some(Value::Object(meta)) = object.body.get_mut("metadata") {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(a) = annotations {
            a.insert(OWNER_ANNOTATION.into(), Value::String(id.to_owned()));
        }
    }
}

pub(crate) fn api_for(
    client: &kube::Client,
    resource: &ApiResource,
    namespaced: bool,
    namespace: &str,
) -> Api<DynamicObject> {
    if namespaced {
        Api::namespaced_with(client.clone(), namespace, resource)
    } else {
        Api::all_with(client.clone(), resource)
    }
}

/// Why this inventory may not apply an object.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OwnershipError {
    #[error("cannot read it: {0}")]
    Read(#[source] kube::Error),
    #[error(
        "exists and belongs to inventory {id}; not taken over (inventory_policy: adopt_all would)"
    )]
    OtherInventory { id: String },
    #[error(
        "exists and no inventory owns it; not taken over (inventory_policy: adopt_if_no_inventory would)"
    )]
    NoInventory,
}

/// Whether this inventory may apply `object`, by `inventory_policy`.
pub(crate) async fn check_ownership(
    client: &kube::Client,
    options: &SyncOptions,
    old: &BTreeSet<ObjRef>,
    object: &Object,
    resolved: &Resolved,
) -> Result<(), OwnershipError> {
    if resolved.pending_crd || old.contains(&ObjRef::from_key(&object.key)) {
        return Ok(());
    }
    let api = api_for(
        client,
        &resolved.resource,
        resolved.namespaced,
        object.key.namespace.as_deref().unwrap_or_default(),
    );
    let existing = match api.get_metadata_opt(&object.key.name).await {
        Ok(existing) => existing,
        // A namespace the set creates: nothing can exist in it yet.
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => return Err(OwnershipError::Read(e)),
    };
    let Some(existing) = existing else {
        return Ok(());
    };
    let owner = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(OWNER_ANNOTATION))
        .cloned();
    match (owner, options.inventory_policy) {
        (Some(id), _) if id == options.inventory.id => Ok(()),
        (_, InventoryPolicy::AdoptAll) => Ok(()),
        (None, InventoryPolicy::AdoptIfNoInventory) => Ok(()),
        (Some(id), _) => Err(OwnershipError::OtherInventory { id }),
        (None, _) => Err(OwnershipError::NoInventory),
    }
}

/// Applies CRDs and Namespaces first (waiting for CRDs to be Established),
/// then everything else kind by kind in the conventional order, the objects
/// of one kind concurrently. A depends-on wave (Helm's hooks are placed in
/// waves too) starts once everything before it is Current; what does not
/// become Current in time, or fails, stops the apply there, with why.
async fn apply_all(
    client: &kube::Client,
    options: &SyncOptions,
    mut owned: Vec<(Object, Resolved)>,
    state: &AppliedState,
    current: &CurrentFields,
    observe: Observer<'_>,
) -> (Vec<ObjectOutcome>, Option<String>) {
    let order =
        |(o, r): &(Object, Resolved)| (r.wave, kinds::stage(&o.key.kind), kinds::rank(&o.key.kind));
    owned.sort_by_key(order);
    let mut outcomes: Vec<ObjectOutcome> = Vec::with_capacity(owned.len());
    let mut batch: Vec<(Object, Resolved)> = Vec::new();
    let mut crds_pending = Vec::new();
    let mut wave = 0;
    let mut iter = owned.into_iter().peekable();
    while let Some(item) = iter.next() {
        let key = order(&item);
        batch.push(item);
        if iter.peek().map(order) == Some(key) {
            continue;
        }
        if key.0 > wave {
            // A depends-on wave: what came before must be Current first.
            wave = key.0;
            if let Err(why) = wait_for_wave(client, options, &mut outcomes, observe).await {
                return (outcomes, Some(why.to_string()));
            }
            observe(Progress {
                phase: Phase::Applying,
                objects: &outcomes,
                waiting: &[],
            });
        }
        if key.1 > 0 && !crds_pending.is_empty() {
            wait_established(client, std::mem::take(&mut crds_pending)).await;
        }
        let span = tracing::info_span!("apply", wave = key.0, stage = key.1, objects = batch.len());
        let applied: Vec<ObjectOutcome> = stream::iter(std::mem::take(&mut batch))
            .map(|(object, resolved)| apply_one(client, options, object, resolved, state, current))
            .buffer_unordered(APPLY_CONCURRENCY)
            .collect()
            .instrument(span)
            .await;
        for o in &applied {
            if o.object.kind == "CustomResourceDefinition" && o.action != Action::Failed {
                crds_pending.push(o.object.name.clone());
            }
        }
        outcomes.extend(applied);
    }
    (outcomes, None)
}

/// Why the next depends-on wave did not start.
#[derive(Debug, thiserror::Error)]
#[error("stopped before the next wave: {what} {not_done}")]
struct WaveStopped {
    /// `a Helm hook` or `a dependency`.
    what: &'static str,
    /// What was not Current in time, and the setting that gave the time.
    not_done: String,
}

/// Waits until everything applied so far is Current: under the hook
/// timeout while a Helm hook is among what is awaited, else under the
/// reconcile timeout. Why not, if it is not.
async fn wait_for_wave(
    client: &kube::Client,
    options: &SyncOptions,
    outcomes: &mut [ObjectOutcome],
    observe: Observer<'_>,
) -> Result<(), WaveStopped> {
    let members: Vec<usize> = (0..outcomes.len())
        .filter(|&i| outcomes[i].resource.is_some() && outcomes[i].health != Some(Health::Current))
        .collect();
    let hooks = members.iter().any(|&i| {
        outcomes[i]
            .record
            .as_ref()
            .is_some_and(|r| r.hook.is_some())
    });
    let (phase, setting, timeout) = if hooks {
        (Phase::WaitingForHooks, "hook_timeout", options.hook_timeout)
    } else {
        (
            Phase::WaitingForDependencies,
            "reconcile_timeout",
            options.reconcile_timeout,
        )
    };
    wait_for(
        client,
        outcomes,
        &members,
        Until::Settled,
        phase,
        timeout,
        observe,
    )
    .instrument(tracing::info_span!(
        "wait",
        phase = phase.as_str(),
        objects = members.len()
    ))
    .await;
    if members
        .iter()
        .all(|&i| outcomes[i].health == Some(Health::Current))
    {
        return Ok(());
    }
    Err(WaveStopped {
        what: if hooks { "a Helm hook" } else { "a dependency" },
        not_done: not_done(outcomes, &members, Until::Current, setting, timeout),
    })
}

async fn apply_one(
    client: &kube::Client,
    options: &SyncOptions,
    mut object: Object,
    resolved: Resolved,
    state: &AppliedState,
    current: &CurrentFields,
) -> ObjectOutcome {
    let reference = ObjRef::from_key(&object.key);
    mark_owner(&mut object, &options.inventory.id);
    let api = api_for(
        client,
        &resolved.resource,
        resolved.namespaced,
        &reference.namespace,
    );
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    if options.server_dry_run {
        params = params.dry_run();
    }
    let hook = DeletePolicy::of(&object.body);
    let body = Value::Object(object.body);
    let text = body.to_string();
    let hash = fingerprint(&text);
    if !options.server_dry_run
        && let Some(record) = unchanged_since(&state.records, &reference, hash, current)
    {
        return ObjectOutcome {
            object: reference,
            action: Action::Unchanged,
            health: None,
            message: String::new(),
            resource: Some((resolved.resource, resolved.namespaced)),
            record: Some(record.clone()),
        };
    }
    if !options.server_dry_run && state.finished_hooks.get(&reference) == Some(&hash) {
        return ObjectOutcome {
            object: reference,
            action: Action::Unchanged,
            health: Some(Health::Current),
            message: "hook ran and was deleted by its helm.sh/hook-delete-policy".into(),
            resource: None,
            record: None,
        };
    }
    let replace = hook.is_some_and(|h| h.before_creation) && !options.server_dry_run;
    let changed_hook = state
        .records
        .get(&reference)
        .is_some_and(|r| r.hash != hash);
    if replace
        && changed_hook
        && let Err(e) = hooks::delete_and_wait(&api, &reference).await
    {
        return ObjectOutcome {
            object: reference,
            action: Action::Failed,
            health: None,
            message: format!("helm.sh/hook-delete-policy: before-hook-creation: {e}"),
            resource: None,
            record: None,
        };
    }
    let mut result = api
        .patch(&reference.name, &params, &Patch::Apply(&body))
        .await;
    // A hook agentk has no record of (it restarted) whose new content
    // cannot be patched in (a Job's template): created again, as the
    // policy says.
    if replace && !changed_hook && matches!(&result, Err(kube::Error::Api(e)) if e.code == 422) {
        result = match hooks::delete_and_wait(&api, &reference).await {
            Ok(()) => {
                api.patch(&reference.name, &params, &Patch::Apply(&body))
                    .await
            }
            Err(_) => result,
        };
    }
    match result {
        Ok(applied) => {
            let fields = our_fields(&applied.metadata);
            let value = serde_json::to_value(&applied).ok();
            let (h, message) = health_of_group_kind(
                &resolved.resource.group,
                &resolved.resource.kind,
                value.as_ref(),
            );
            ObjectOutcome {
                object: reference,
                action: Action::Applied,
                health: Some(h),
                message,
                resource: Some((resolved.resource.clone(), resolved.namespaced)),
                record: Some(Arc::new(Record {
                    hash,
                    hook,
                    fields,
                    resource: resolved.resource,
                    namespaced: resolved.namespaced,
                    body: Arc::from(text),
                    uid: applied.metadata.uid.clone().unwrap_or_default(),
                })),
            }
        }
        Err(e) => ObjectOutcome {
            object: reference,
            action: Action::Failed,
            health: None,
            message: match e {
                kube::Error::Api(api) => api.message,
                other => other.to_string(),
            },
            resource: None,
            record: None,
        },
    }
}

impl ObjectOutcome {
    /// The object's uid as the apply returned it, when it was applied.
    pub fn uid(&self) -> Option<&str> {
        self.record
            .as_ref()
            .map(|r| r.uid.as_str())
            .filter(|u| !u.is_empty())
    }

    /// The object's apiVersion, when known.
    pub fn api_version(&self) -> Option<&str> {
        self.resource.as_ref().map(|(r, _)| r.api_version.as_str())
    }
}

impl std::fmt::Debug for AppliedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppliedState")
            .field("records", &self.records.len())
            .field("discovery_cached", &self.discovery.is_some())
            .finish()
    }
}

/// For objects agentk applied before with the same content: the fields it
/// owns in the cluster now. Absent: the object is gone, or not known.
pub(crate) type CurrentFields = std::collections::HashMap<ObjRef, Option<u64>>;

/// The record of `reference` if applying `hash` (the fingerprint of the
/// body as it would be sent) again would change nothing: agentk applied
/// exactly that, and the fields it owned right after are still its own
/// (someone who changed one of them took it over).
pub(crate) fn unchanged_since<'a>(
    records: &'a Records,
    reference: &ObjRef,
    hash: u64,
    current: &CurrentFields,
) -> Option<&'a Arc<Record>> {
    let record = records.get(reference)?;
    (record.hash == hash && current.get(reference) == Some(&record.fields)).then_some(record)
}

/// Reads what [`CurrentFields`] needs with one metadata LIST per resource
/// and namespace, rather than one GET per object.
pub(crate) async fn current_fields(
    client: &kube::Client,
    owned: &[(Object, Resolved)],
    records: &Records,
) -> CurrentFields {
    let mut current = CurrentFields::new();
    let mut lists: std::collections::HashMap<(String, String, String), (ApiResource, bool)> =
        std::collections::HashMap::new();
    for (object, resolved) in owned {
        let reference = ObjRef::from_key(&object.key);
        if records.contains_key(&reference) {
            lists
                .entry((
                    resolved.resource.api_version.clone(),
                    resolved.resource.plural.clone(),
                    reference.namespace.clone(),
                ))
                .or_insert_with(|| (resolved.resource.clone(), resolved.namespaced));
        }
    }
    for ((_, _, namespace), (resource, namespaced)) in lists {
        let api = api_for(client, &resource, namespaced, &namespace);
        let Ok(list) = api.list_metadata(&Default::default()).await else {
            continue;
        };
        for item in list.items {
            let Some(name) = item.metadata.name.clone() else {
                continue;
            };
            let reference = ObjRef {
                group: resource.group.clone(),
                kind: resource.kind.clone(),
                namespace: namespace.clone(),
                name,
            };
            current.insert(reference, our_fields(&item.metadata));
        }
    }
    current
}

async fn wait_established(client: &kube::Client, names: Vec<String>) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + CRD_ESTABLISH_TIMEOUT;
    for name in names {
        while Instant::now() < deadline {
            let established = api.get_opt(&name).await.ok().flatten().is_some_and(|crd| {
                crd.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            if established {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Deletes what left git, in reverse apply order: only objects this
/// inventory owns, never one annotated `on-remove: keep`.
async fn prune(
    client: &kube::Client,
    discovery: &Discovery,
    options: &SyncOptions,
    mut gone: Vec<ObjRef>,
) -> Vec<ObjectOutcome> {
    let order = |o: &ObjRef| std::cmp::Reverse((kinds::stage(&o.kind), kinds::rank(&o.kind)));
    gone.sort_by_key(order);
    let mut outcomes = Vec::with_capacity(gone.len());
    // Kind by kind in reverse apply order; the objects of one kind at once.
    let mut rest = gone.as_slice();
    while let Some(first) = rest.first() {
        let n = rest.iter().take_while(|o| order(o) == order(first)).count();
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        let done: Vec<ObjectOutcome> = stream::iter(batch.iter().cloned())
            .map(|object| async move {
                let (action, message) = match prune_one(client, discovery, options, &object).await {
                    Ok(result) => result,
                    Err(failed) => (Action::Failed, failed.to_string()),
                };
                ObjectOutcome {
                    object,
                    action,
                    health: None,
                    message,
                    resource: None,
                    record: None,
                }
            })
            .buffer_unordered(APPLY_CONCURRENCY)
            .collect()
            .await;
        outcomes.extend(done);
    }
    outcomes
}

/// Why an object gone from git was not pruned.
#[derive(Debug, thiserror::Error)]
enum PruneError {
    #[error("cannot read it: {0}")]
    Read(#[source] kube::Error),
    #[error("cannot delete it: {0}")]
    Delete(#[source] kube::Error),
}

async fn prune_one(
    client: &kube::Client,
    discovery: &Discovery,
    options: &SyncOptions,
    object: &ObjRef,
) -> Result<(Action, String), PruneError> {
    let Some((resource, caps)) = discovery
        .get(&object.group)
        .and_then(|g| g.recommended_kind(&object.kind))
    else {
        // The kind is gone (its CRD deleted): so is the object.
        return Ok((Action::Pruned, "its kind is no longer served".into()));
    };
    let namespaced = matches!(caps.scope, kube::discovery::Scope::Namespaced);
    let api = api_for(client, &resource, namespaced, &object.namespace);
    let Some(existing) = api
        .get_metadata_opt(&object.name)
        .await
        .map_err(PruneError::Read)?
    else {
        return Ok((Action::Pruned, "already gone".into()));
    };
    let annotations = existing.metadata.annotations.unwrap_or_default();
    if annotations.get(ON_REMOVE_ANNOTATION).map(String::as_str) == Some("keep") {
        return Ok((
            Action::Kept,
            format!("annotated {ON_REMOVE_ANNOTATION}: keep"),
        ));
    }
    match annotations.get(OWNER_ANNOTATION) {
        Some(id) if *id == options.inventory.id => {}
        other => {
            return Ok((
                Action::Kept,
                format!(
                    "not pruned: owned by {}",
                    other.map_or("no inventory".to_owned(), |id| format!("inventory {id}"))
                ),
            ));
        }
    }
    let params = DeleteParams {
        propagation_policy: Some(options.prune_propagation.clone()),
        ..DeleteParams::default()
    };
    match api.delete(&object.name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok((Action::Pruned, String::new())),
        Err(e) => return Err(PruneError::Delete(e)),
    }
    let deadline = Instant::now() + options.prune_timeout;
    while Instant::now() < deadline {
        match api.get_metadata_opt(&object.name).await {
            Ok(None) => return Ok((Action::Pruned, String::new())),
            Ok(Some(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok((
        Action::Pruned,
        format!(
            "deletion requested; still present after {:?}",
            options.prune_timeout
        ),
    ))
}
