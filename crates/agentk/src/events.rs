//! Kubernetes Events on the objects agentk changes: what `kubectl describe`
//! and `kubectl get events` show of an apply, a prune, a drift correction
//! or a failure.
//!
//! Written like the kubelet's (client-go's recorder): an Event repeated on
//! the same object with the same reason and message within ten minutes
//! raises the first one's count instead of adding another, and each object
//! has a token bucket (25 at once, then one per five minutes) so a flapping
//! object cannot flood the API server. Recording never blocks a sync: the
//! queue is bounded, and what does not fit is dropped and counted. The
//! writer also paces itself (at most [`WRITES_PER_SECOND`]), since a first
//! sync of thousands of objects would otherwise send as many Events at once.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

use crate::observability::Connected;

/// Notes waiting to be written; more are dropped (and counted).
const QUEUE: usize = 1024;
/// Aggregation entries kept, oldest forgotten first (client-go keeps 4096).
const REMEMBERED: usize = 4096;
/// A repeat within this time raises the count of the Event it repeats.
const AGGREGATE_WITHIN: Duration = Duration::from_secs(600);
/// Per object: Events at once, then one per [`REFILL`].
const BURST: f64 = 25.0;
const REFILL: Duration = Duration::from_secs(300);
/// The writer's pace.
pub const WRITES_PER_SECOND: u32 = 50;
/// Longest message kept, as the API server's limit for an Event's note.
const MESSAGE_BYTES: usize = 1024;

/// `Normal` or `Warning`, as Kubernetes types them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Normal,
    Warning,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Normal => "Normal",
            Kind::Warning => "Warning",
        }
    }
}

/// One thing to tell about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub api_version: String,
    pub kind: String,
    /// Empty for a cluster-scoped object (its Events go to `default`).
    pub namespace: String,
    pub name: String,
    /// Empty when unknown (a failed create): `kubectl get events` shows it,
    /// `kubectl describe` (which matches by uid) does not.
    pub uid: String,
    pub type_: Kind,
    /// CamelCase, as Kubernetes' reasons are: `Applied`, `Pruned`,
    /// `DriftCorrected`, `ApplyFailed`, …
    pub reason: &'static str,
    pub message: String,
}

/// Where notes are queued. Cheap to clone; a recorder made with
/// [`Recorder::disabled`] drops everything.
#[derive(Clone, Debug)]
pub struct Recorder {
    tx: Option<mpsc::Sender<Note>>,
    observed: Option<Connected>,
}

impl Recorder {
    /// Starts the writer, which stops when every recorder is dropped.
    pub fn start(client: kube::Client, instance: String, observed: Option<Connected>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(client, instance, rx, observed.clone()));
        Recorder {
            tx: Some(tx),
            observed,
        }
    }

    pub fn disabled() -> Self {
        Recorder {
            tx: None,
            observed: None,
        }
    }

    /// Whether notes are written at all.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `note`; a full queue drops it.
    pub fn record(&self, mut note: Note) {
        let Some(tx) = &self.tx else { return };
        // The API server's words may be long: cut before they are queued
        // and kept as aggregation keys.
        truncate(&mut note.message, MESSAGE_BYTES);
        if tx.try_send(note).is_err()
            && let Some(observed) = &self.observed
        {
            observed.event_dropped();
        }
    }
}

/// What was written for one (object, reason, message).
struct Written {
    name: String,
    count: i32,
    at: Instant,
}

type Key = (String, String, String, String, &'static str, String);

fn key(note: &Note) -> Key {
    (
        note.kind.clone(),
        note.namespace.clone(),
        note.name.clone(),
        note.uid.clone(),
        note.reason,
        note.message.clone(),
    )
}

/// The per-object token buckets.
#[derive(Default)]
struct SpamFilter {
    buckets: HashMap<(String, String, String), (f64, Instant)>,
}

impl SpamFilter {
    fn admit(&mut self, note: &Note, now: Instant) -> bool {
        if self.buckets.len() >= REMEMBERED {
            // Forget the full ones first: they would admit anyway. Then the
            // least recently used half, never every bucket at once (which
            // would give each object its burst again).
            self.buckets
                .retain(|_, (tokens, at)| *tokens + refill(now - *at) < BURST);
            if self.buckets.len() >= REMEMBERED {
                let mut ages: Vec<Instant> = self.buckets.values().map(|(_, at)| *at).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                self.buckets.retain(|_, (_, at)| *at > cut);
            }
        }
        let bucket = self
            .buckets
            .entry((note.kind.clone(), note.namespace.clone(), note.name.clone()))
            .or_insert((BURST, now));
        let tokens = (bucket.0 + refill(now - bucket.1)).min(BURST);
        if tokens < 1.0 {
            *bucket = (tokens, now);
            return false;
        }
        *bucket = (tokens - 1.0, now);
        true
    }
}

fn refill(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() / REFILL.as_secs_f64()
}

async fn write(
    client: kube::Client,
    instance: String,
    mut rx: mpsc::Receiver<Note>,
    observed: Option<Connected>,
) {
    let mut written: HashMap<Key, Written> = HashMap::new();
    let mut order: VecDeque<Key> = VecDeque::new();
    let mut spam = SpamFilter::default();
    let mut pace = tokio::time::interval(Duration::from_secs(1) / WRITES_PER_SECOND);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while let Some(note) = rx.recv().await {
        let now = Instant::now();
        if !spam.admit(&note, now) {
            if let Some(o) = &observed {
                o.event_dropped();
            }
            continue;
        }
        pace.tick().await;
        let k = key(&note);
        let namespace = if note.namespace.is_empty() {
            "default".to_owned()
        } else {
            note.namespace.clone()
        };
        let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
        let stamp = k8s_openapi::jiff::Timestamp::now();
        let repeat = written
            .get(&k)
            .filter(|w| now.duration_since(w.at) < AGGREGATE_WITHIN);
        let result = match repeat {
            Some(w) => {
                let patch = serde_json::json!({
                    "count": w.count + 1,
                    "lastTimestamp": Time(stamp),
                });
                api.patch(&w.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| (w.name.clone(), w.count + 1))
            }
            None => Err(kube::Error::Api(
                kube::core::Status::failure("not written yet", "NotFound")
                    .with_code(404)
                    .boxed(),
            )),
        };
        let result = match result {
            Ok(done) => Ok(done),
            // Not written yet, or gone (Events expire after an hour).
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let event = new_event(&note, &namespace, &instance, stamp);
                let name = event.metadata.name.clone().unwrap_or_default();
                api.create(&PostParams::default(), &event)
                    .await
                    .map(|_| (name, 1))
            }
            Err(e) => Err(e),
        };
        match result {
            Ok((name, count)) => {
                if let Some(o) = &observed {
                    o.event_written(note.type_);
                }
                if !written.contains_key(&k) {
                    order.push_back(k.clone());
                    if order.len() > REMEMBERED
                        && let Some(old) = order.pop_front()
                    {
                        written.remove(&old);
                    }
                }
                // A repeat keeps the first Event's start, so a steady
                // repeat opens a new Event every ten minutes, as the
                // kubelet's do.
                let at = match written.get(&k) {
                    Some(w) if count > 1 => w.at,
                    _ => now,
                };
                written.insert(k, Written { name, count, at });
            }
            Err(e) => {
                // An agent bound to a narrower role may not write Events:
                // that costs the Events, never the sync.
                tracing::debug!(object = %note.name, reason = note.reason, error = %e, "cannot record an Event");
                if let Some(o) = &observed {
                    o.event_dropped();
                }
            }
        }
    }
}

fn new_event(
    note: &Note,
    namespace: &str,
    instance: &str,
    stamp: k8s_openapi::jiff::Timestamp,
) -> Event {
    let nanos = stamp.as_nanosecond();
    let mut message = note.message.clone();
    truncate(&mut message, MESSAGE_BYTES);
    // As client-go names them: the object's name and a time, within a
    // name's 253 characters.
    let mut prefix = note.name.clone();
    truncate(&mut prefix, 200);
    Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                prefix.trim_end_matches(['.', '-']),
                nanos
            )),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(note.api_version.clone()).filter(|v| !v.is_empty()),
            kind: Some(note.kind.clone()),
            name: Some(note.name.clone()),
            namespace: Some(note.namespace.clone()).filter(|n| !n.is_empty()),
            uid: Some(note.uid.clone()).filter(|u| !u.is_empty()),
            ..ObjectReference::default()
        },
        reason: Some(note.reason.to_owned()),
        message: Some(message),
        type_: Some(note.type_.as_str().to_owned()),
        count: Some(1),
        first_timestamp: Some(Time(stamp)),
        last_timestamp: Some(Time(stamp)),
        event_time: Some(MicroTime(stamp)),
        action: Some(note.reason.to_owned()),
        source: Some(EventSource {
            component: Some("agentk".to_owned()),
            host: None,
        }),
        reporting_component: Some("tether.dev/agentk".to_owned()),
        reporting_instance: Some(instance.chars().take(128).collect()),
        ..Event::default()
    }
}

/// Cuts `text` to at most `bytes`, on a character boundary.
fn truncate(text: &mut String, bytes: usize) {
    if text.len() > bytes {
        let mut end = bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &str) -> Note {
        Note {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "ns".into(),
            name: name.into(),
            uid: String::new(),
            type_: Kind::Normal,
            reason: "Applied",
            message: "applied".into(),
        }
    }

    #[test]
    fn each_object_gets_a_burst_then_one_event_per_refill() {
        let mut spam = SpamFilter::default();
        let t0 = Instant::now();
        for _ in 0..25 {
            assert!(spam.admit(&note("a"), t0));
        }
        assert!(!spam.admit(&note("a"), t0));
        // Another object has its own bucket.
        assert!(spam.admit(&note("b"), t0));
        assert!(!spam.admit(&note("a"), t0 + REFILL / 2));
        assert!(spam.admit(&note("a"), t0 + REFILL + Duration::from_secs(1)));
    }

    #[test]
    fn an_event_is_named_for_its_object_and_carries_what_describe_shows() {
        let mut n = note("web");
        n.uid = "u-1".into();
        n.message = "é".repeat(1000);
        let e = new_event(&n, "ns", "agentk-0", k8s_openapi::jiff::Timestamp::now());
        assert!(e.metadata.name.expect("a test value").starts_with("web."));
        n.name = "a".repeat(253);
        let long = new_event(&n, "ns", "agentk-0", k8s_openapi::jiff::Timestamp::now());
        assert!(long.metadata.name.expect("a test value").len() <= 253);
        assert_eq!(e.involved_object.uid.as_deref(), Some("u-1"));
        assert_eq!(e.reason.as_deref(), Some("Applied"));
        assert!(e.message.expect("a test value").len() <= MESSAGE_BYTES);
        assert_eq!(e.count, Some(1));
    }
}
