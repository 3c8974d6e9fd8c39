//! One trace per commit and agent: from the webhook or poll that found the
//! commit, through the fetch, the render and the send, to the agent's
//! apply and every object Current.
//!
//! kas opens the trace's root span when a follower gives the agent a
//! commit; it starts when the commit was found (the webhook's arrival, or
//! the poll's start), so its length is the time from push to healthy. The
//! agent continues the trace from the `traceparent` its manifests carry,
//! and the root ends when the agent reports the sync done (or failed), or
//! when a newer commit replaces it, or the session ends.
//!
//! The spans go through OpenTelemetry's global tracer: with tracing off it
//! is a no-op, and nothing here costs more than a map lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use opentelemetry::trace::{
    Link, Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};

/// How a commit was found, for its deliveries' traces.
#[derive(Clone, Debug)]
pub struct Found {
    /// `webhook`, `poll`, `peer` (another replica announced it) or
    /// `refresh` (an API or UI call).
    pub via: &'static str,
    /// When its cause arrived: the webhook's delivery, or the poll's start.
    pub at: SystemTime,
    /// The fetch and resolve that read it.
    pub fetch: (SystemTime, SystemTime),
    /// The span of the webhook delivery, linked from each trace.
    pub link: Option<opentelemetry::trace::SpanContext>,
}

/// The open roots of one session, per project. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct SyncTraces {
    open: Arc<Mutex<HashMap<String, Open>>>,
}

struct Open {
    commit: String,
    cx: Context,
}

impl std::fmt::Debug for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Open")
            .field("commit", &self.commit)
            .finish()
    }
}

fn tracer() -> opentelemetry::global::BoxedTracer {
    opentelemetry::global::tracer_provider().tracer("kas")
}

impl SyncTraces {
    /// Opens the trace of `commit` of `project` for `agent` and returns its
    /// context, for kas's spans of the delivery and the `traceparent`
    /// sent along. The project's previous trace ends, superseded.
    pub fn begin(
        &self,
        project: &str,
        commit: &str,
        agent: &str,
        found: Option<&Found>,
    ) -> Context {
        let tracer = tracer();
        let now = SystemTime::now();
        let mut attributes = vec![
            KeyValue::new("tether.agent", agent.to_owned()),
            KeyValue::new("tether.project", project.to_owned()),
            KeyValue::new("vcs.ref.head.revision", commit.to_owned()),
            KeyValue::new("tether.found_by", found.map_or("rollout", |f| f.via)),
        ];
        attributes.shrink_to_fit();
        let mut builder = tracer
            .span_builder("commit to agent")
            .with_kind(SpanKind::Internal)
            .with_start_time(found.map_or(now, |f| f.at.min(now)))
            .with_attributes(attributes);
        if let Some(link) = found.and_then(|f| f.link.clone()) {
            builder = builder.with_links(vec![Link::with_context(link)]);
        }
        let root = builder.start_with_context(&tracer, &Context::new());
        let cx = Context::new().with_span(root);
        if let Some(found) = found {
            let mut fetch = tracer
                .span_builder("git fetch")
                .with_kind(SpanKind::Client)
                .with_start_time(found.fetch.0)
                .with_attributes([KeyValue::new("tether.found_by", found.via)])
                .start_with_context(&tracer, &cx);
            fetch.end_with_timestamp(found.fetch.1);
        }
        let previous = self.lock().insert(
            project.to_owned(),
            Open {
                commit: commit.to_owned(),
                cx: cx.clone(),
            },
        );
        if let Some(previous) = previous {
            let span = previous.cx.span();
            span.set_attribute(KeyValue::new("tether.superseded_by", commit.to_owned()));
            span.end();
        }
        cx
    }

    /// A report of `project` at `commit`: a finished sync ends its trace.
    pub fn reported(&self, project: &str, commit: &str, done: bool, error: &str) {
        if !done {
            return;
        }
        let mut open = self.lock();
        if open.get(project).is_none_or(|o| o.commit != commit) {
            return;
        }
        if let Some(o) = open.remove(project) {
            let span = o.cx.span();
            if error.is_empty() {
                span.set_status(Status::Ok);
            } else {
                span.set_status(Status::error(error.chars().take(500).collect::<String>()));
            }
            span.end();
        }
    }

    /// Forgets the projects the session no longer follows (their traces
    /// end).
    pub fn retain_projects(&self, followed: impl Fn(&str) -> bool) {
        self.lock().retain(|project, o| {
            let keep = followed(project);
            if !keep {
                o.cx.span().end();
            }
            keep
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        // Ending twice is harmless; a session that ends leaves no span open.
        self.cx.span().end();
    }
}
