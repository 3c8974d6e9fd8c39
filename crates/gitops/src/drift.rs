//! Drift correction: after a sync, agentk watches what it applied. When
//! someone takes over a field agentk owns (`kubectl edit`, `kubectl scale`:
//! server-side apply moves the field to their manager) or deletes the
//! object, agentk applies its last body again at once and reports who did
//! what. Changes to fields agentk does not own (status, fields other
//! controllers set) are not drift and are left alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, WatchEvent, WatchParams};
use kube::discovery::ApiResource;
use tokio::sync::mpsc;

use crate::health::{Health, health_of_group_kind};
use crate::inventory::{FIELD_MANAGER, ObjRef};
use crate::record::{Record, our_fields};

/// One correction.
#[derive(Clone, Debug)]
pub struct DriftEvent {
    pub object: ObjRef,
    /// The field manager that made the change, as managedFields name it;
    /// `unknown` for a deletion (only the audit log knows).
    pub who: String,
    /// `changed fields agentk owns` or `deleted`.
    pub what: String,
    /// Whether applying again succeeded, and if not, why.
    pub corrected: Result<(), String>,
    pub at: SystemTime,
    /// The object's uid after the correction (empty if it failed).
    pub uid: String,
    /// Its apiVersion.
    pub api_version: String,
}

/// Drift watches reopened since the process started (the server ends
/// each after its timeout; errors end them sooner), for agentk's metrics.
pub fn watch_restarts() -> u64 {
    WATCH_RESTARTS.load(std::sync::atomic::Ordering::Relaxed)
}

static WATCH_RESTARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// apiVersion, plural, namespace: one watch each.
type WatchKey = (String, String, String);
/// The resource, whether it is namespaced, and its objects by name.
type WatchGroup = (ApiResource, bool, HashMap<String, Arc<Record>>);

/// Told each new health of a watched object (and its reason).
pub type HealthSink = Arc<dyn Fn(ObjRef, Health, String) + Send + Sync>;

/// Watches every object in `records` until the task is dropped, sending a
/// [`DriftEvent`] for each correction and telling `health` each change of
/// an object's health.
pub async fn watch(
    client: kube::Client,
    records: HashMap<ObjRef, Arc<Record>>,
    events: mpsc::UnboundedSender<DriftEvent>,
    health: HealthSink,
) {
    // One watch per resource and namespace.
    let mut groups: HashMap<WatchKey, WatchGroup> = HashMap::new();
    for (object, record) in records {
        let key = (
            record.resource.api_version.clone(),
            record.resource.plural.clone(),
            object.namespace.clone(),
        );
        groups
            .entry(key)
            .or_insert_with(|| (record.resource.clone(), record.namespaced, HashMap::new()))
            .2
            .insert(object.name.clone(), record);
    }
    let watches = groups
        .into_iter()
        .map(|((_, _, namespace), (resource, namespaced, records))| {
            let api: Api<DynamicObject> = if namespaced {
                Api::namespaced_with(client.clone(), &namespace, &resource)
            } else {
                Api::all_with(client.clone(), &resource)
            };
            watch_one(
                api,
                resource,
                namespace,
                records,
                events.clone(),
                health.clone(),
            )
        });
    futures_util::future::join_all(watches).await;
}

async fn watch_one(
    api: Api<DynamicObject>,
    resource: ApiResource,
    namespace: String,
    records: HashMap<String, Arc<Record>>,
    events: mpsc::UnboundedSender<DriftEvent>,
    health: HealthSink,
) {
    let params = WatchParams::default().timeout(290);
    // The fields agentk owns now, per object, as corrections change them.
    let mut fields: HashMap<String, Option<u64>> = HashMap::new();
    // The health last told, per object.
    let mut told: HashMap<String, (Health, String)> = HashMap::new();
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            WATCH_RESTARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // From "0": the current state first, so drift that happened before
        // the watch started is found too.
        let stream = match api.watch(&params, "0").await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(resource = %resource.plural, error = %e, "drift watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let opened = std::time::Instant::now();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let (object, deleted) = match event {
                Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => (o, false),
                Ok(WatchEvent::Deleted(o)) => (o, true),
                Ok(WatchEvent::Bookmark(_)) => continue,
                Ok(WatchEvent::Error(_)) | Err(_) => break,
            };
            let Some(name) = object.metadata.name.clone() else {
                continue;
            };
            let Some(record) = records.get(&name) else {
                continue;
            };
            let value = if deleted {
                None
            } else {
                serde_json::to_value(&object).ok()
            };
            let now = health_of_group_kind(&resource.group, &resource.kind, value.as_ref());
            if told.get(&name) != Some(&now) {
                told.insert(name.clone(), now.clone());
                let reference = ObjRef {
                    group: resource.group.clone(),
                    kind: resource.kind.clone(),
                    namespace: namespace.clone(),
                    name: name.clone(),
                };
                health(reference, now.0, now.1);
            }
            let owned = fields.entry(name.clone()).or_insert(record.fields);
            let (who, what) = if deleted {
                ("unknown".to_owned(), "deleted".to_owned())
            } else if our_fields(&object.metadata) != *owned {
                (
                    last_other_manager(&object.metadata),
                    "changed fields agentk owns".to_owned(),
                )
            } else {
                continue;
            };
            let reference = ObjRef {
                group: resource.group.clone(),
                kind: resource.kind.clone(),
                namespace: namespace.clone(),
                name: name.clone(),
            };
            tracing::info!(object = %reference, who = %who, what = %what, "drift; applying again");
            let body: serde_json::Value = match serde_json::from_str(&record.body) {
                Ok(body) => body,
                Err(e) => {
                    tracing::error!(error = %e, "the recorded body does not parse");
                    continue;
                }
            };
            let applied = api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await;
            let (corrected, uid) = match applied {
                Ok(applied) => {
                    *owned = our_fields(&applied.metadata);
                    (Ok(()), applied.metadata.uid.unwrap_or_default())
                }
                Err(e) => (Err(e.to_string()), String::new()),
            };
            let _ = events.send(DriftEvent {
                object: reference,
                who,
                what,
                corrected,
                at: SystemTime::now(),
                uid,
                api_version: resource.api_version.clone(),
            });
        }
        // A watch the server ends at once is not reopened at once.
        if opened.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The manager of the newest managedFields entry that is neither agentk's
/// nor a status write.
fn last_other_manager(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() != Some(FIELD_MANAGER))
        // Controllers' status writes are not what took agentk's fields.
        .filter(|m| m.subresource.as_deref() != Some("status"))
        .max_by_key(|m| m.time.as_ref().map(|t| t.0))
        .and_then(|m| m.manager.clone())
        .unwrap_or_else(|| "unknown".to_owned())
}
