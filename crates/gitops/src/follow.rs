//! Health followed from the live objects: one LIST, then one WATCH from the
//! list's resourceVersion, per resource and namespace, for as long as the
//! caller polls. Each object's health is computed with the kind the caller
//! applied it as (a list's items carry no `kind`), and a change is sent only
//! when the health or its reason changed.
//!
//! Why watches and not polling: a set of 200 Deployments converges over a
//! minute; a watch tells each step as it happens at the cost of one open
//! request per resource and namespace, where a poll would read all 200
//! every half second and still lag.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use kube::discovery::ApiResource;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::health::{Health, health_of_group_kind};
use crate::inventory::ObjRef;

/// One object to follow; `index` is the caller's, given back with each
/// change.
#[derive(Clone, Debug)]
pub struct Target {
    pub index: usize,
    pub object: ObjRef,
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// A new health of the object at `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub index: usize,
    pub health: Health,
    pub message: String,
}

/// How long a failed LIST or WATCH waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// A watch is renewed this often (the API server ends it anyway).
const WATCH_SECONDS: u32 = 290;

/// Follows every target until dropped, sending each change of health.
pub async fn follow(
    client: kube::Client,
    targets: Vec<Target>,
    changes: mpsc::UnboundedSender<Change>,
) {
    let mut groups: HashMap<(String, String, String), Vec<Target>> = HashMap::new();
    for t in targets {
        groups
            .entry((
                t.resource.api_version.clone(),
                t.resource.plural.clone(),
                t.object.namespace.clone(),
            ))
            .or_default()
            .push(t);
    }
    let all = groups
        .into_values()
        .map(|group| follow_group(client.clone(), group, changes.clone()));
    futures_util::future::join_all(all).await;
}

/// The objects of one resource in one namespace.
async fn follow_group(
    client: kube::Client,
    group: Vec<Target>,
    changes: mpsc::UnboundedSender<Change>,
) {
    let Some(first) = group.first() else {
        return;
    };
    let (resource, namespaced) = (first.resource.clone(), first.namespaced);
    let api: Api<DynamicObject> = if namespaced {
        Api::namespaced_with(client, &first.object.namespace, &resource)
    } else {
        Api::all_with(client, &resource)
    };
    let kind = resource.kind.clone();
    let by_name: HashMap<String, usize> = group
        .iter()
        .map(|t| (t.object.name.clone(), t.index))
        .collect();
    // What was last sent per object, so that a repeat is not.
    let mut told: HashMap<usize, (Health, String)> = HashMap::new();
    let mut tell = |index: usize, object: Option<&Value>| -> bool {
        let (health, message) = health_of_group_kind(&resource.group, &kind, object);
        let now = (health, message.clone());
        if told.get(&index) == Some(&now) {
            return true;
        }
        told.insert(index, now);
        changes
            .send(Change {
                index,
                health,
                message,
            })
            .is_ok()
    };
    // A single object is read by name; more with one list of the namespace.
    let list_params = match group.as_slice() {
        [only] => ListParams::default().fields(&format!("metadata.name={}", only.object.name)),
        _ => ListParams::default(),
    };
    loop {
        let list = match api.list(&list_params).await {
            Ok(list) => list,
            Err(e) => {
                tracing::debug!(resource = %resource.plural, error = %e, "health list failed; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let mut seen: HashMap<usize, Value> = HashMap::new();
        for item in list.items {
            if let Some(&index) = item.metadata.name.as_ref().and_then(|n| by_name.get(n))
                && let Ok(value) = serde_json::to_value(&item)
            {
                seen.insert(index, value);
            }
        }
        for &index in by_name.values() {
            if !tell(index, seen.get(&index)) {
                return;
            }
        }
        drop(seen);
        let version = list.metadata.resource_version.unwrap_or_default();
        let mut params = WatchParams::default().timeout(WATCH_SECONDS);
        if let [only] = group.as_slice() {
            params = params.fields(&format!("metadata.name={}", only.object.name));
        }
        let stream = match api.watch(&params, &version).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(resource = %resource.plural, error = %e, "health watch failed; listing again");
                tokio::time::sleep(RETRY).await;
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
                // Expired or broken: list again.
                Ok(WatchEvent::Error(_)) | Err(_) => break,
            };
            let Some(&index) = object.metadata.name.as_ref().and_then(|n| by_name.get(n)) else {
                continue;
            };
            let value = if deleted {
                None
            } else {
                serde_json::to_value(&object).ok()
            };
            if !tell(index, value.as_ref()) {
                return;
            }
        }
        // A watch the server ends at once (an error event, a closed
        // stream) is not reopened at once: no spinning against it.
        if opened.elapsed() < RETRY {
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Which objects a wait is over with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Current or Failed: the health of the set is known.
    Settled,
    /// Current: what depends on them may be applied.
    Current,
}

impl Until {
    pub fn done(self, health: Option<Health>) -> bool {
        match self {
            Until::Settled => matches!(health, Some(Health::Current | Health::Failed)),
            Until::Current => health == Some(Health::Current),
        }
    }
}

/// Follows `targets` (those not yet done) until each is done by `until`
/// or `timeout` passes, calling `changed` with each batch of changes.
/// Whether every target was done in time.
pub async fn wait(
    client: &kube::Client,
    targets: Vec<Target>,
    until: Until,
    timeout: Duration,
    mut changed: impl FnMut(Vec<Change>),
) -> bool {
    let mut open: std::collections::HashSet<usize> = targets.iter().map(|t| t.index).collect();
    if open.is_empty() {
        return true;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let follower = follow(client.clone(), targets, tx);
    let mut follower = std::pin::pin!(follower);
    let deadline = tokio::time::sleep(timeout);
    let mut deadline = std::pin::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut follower => return false,
            () = &mut deadline => return false,
            Some(first) = rx.recv() => {
                let mut batch = vec![first];
                while let Ok(change) = rx.try_recv() {
                    batch.push(change);
                }
                for change in &batch {
                    if until.done(Some(change.health)) {
                        open.remove(&change.index);
                    } else {
                        open.insert(change.index);
                    }
                }
                changed(batch);
                if open.is_empty() {
                    return true;
                }
            }
        }
    }
}
