//! Notifications: what happens to an agent (a sync that succeeded or
//! failed, an object whose health degraded, drift put back, a long
//! disconnection, a token about to expire) told to the destinations its
//! config names (`notifications:`, a Tether extension) and kas's own
//! (`kas serve --notifications FILE`).
//!
//! A destination names a notification secret held by kas (URLs of Slack
//! and Teams webhooks are secrets themselves; nothing of them is in git).
//! An agent's config may name only secrets of its own top-level group
//! ([`tether_agent_config::policy::may_use_secret`]): the notifier takes an
//! agent's destinations only as [`AgentDestinations`], which holds those
//! that passed the rule, so no path can send with another team's secret.
//! Delivery never holds anything up: one bounded queue and task per
//! destination, each request under a timeout and retried with backoff; the
//! same notice (event, agent, object, message, commit) goes to a
//! destination once within five minutes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ring::hmac;
use tether_agent_config::{Notification, NotificationEvent, NotificationProvider};
use tether_store::{NotificationSecret, Store};

use crate::ordered::Worker;

/// Notices waiting per destination at most.
const QUEUE: usize = 256;
/// Destinations with a live task at most.
const MAX_DESTINATIONS: usize = 1000;
/// A destination's task ends after this long without notices.
const IDLE: Duration = Duration::from_secs(120);
const TIMEOUT: Duration = Duration::from_secs(10);
/// While kas drains: retries that end within its grace period.
const DRAIN_BACKOFF: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(2)];
/// Waits before the second, third and fourth tries (not draining).
pub const BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(25),
];
/// The same notice is sent to a destination once in this window.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(300);
/// Notices remembered for deduplication at most.
const REMEMBERED: usize = 10_000;

/// One thing to tell.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Notice {
    pub event: NotificationEvent,
    pub agent: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub project: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub commit: String,
    /// `Kind namespace/name`, when the notice is about one object.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub object: String,
    pub message: String,
}

impl Notice {
    /// One line a person reads.
    pub fn text(&self) -> String {
        let what = match self.event {
            NotificationEvent::SyncSucceeded => "sync succeeded",
            NotificationEvent::SyncFailed => "sync failed",
            NotificationEvent::HealthDegraded => "health degraded",
            NotificationEvent::DriftCorrected => "drift corrected",
            NotificationEvent::AgentDisconnected => "agent disconnected",
            NotificationEvent::TokenExpiring => "token expiring",
            NotificationEvent::ImageUpdated => "image updated",
            NotificationEvent::ImageUpdateFailed => "image update failed",
            NotificationEvent::RolloutStarted => "rollout started",
            NotificationEvent::WavePassed => "wave passed",
            NotificationEvent::RolloutHalted => "rollout halted",
            NotificationEvent::RolloutRolledBack => "rollout rolled back",
            NotificationEvent::RolloutCompleted => "rollout completed",
            NotificationEvent::CommitUnverified => "commit refused: not verified",
        };
        let mut text = format!("Tether: agent {}: {what}", self.agent);
        if !self.project.is_empty() {
            text.push_str(&format!(" · {}", self.project));
        }
        if !self.commit.is_empty() {
            text.push_str(&format!(" @ {}", &self.commit[..self.commit.len().min(12)]));
        }
        if !self.object.is_empty() {
            text.push_str(&format!(" · {}", self.object));
        }
        if !self.message.is_empty() {
            text.push_str(&format!(": {}", self.message));
        }
        text
    }
}

/// The destinations of an agent's config that it may use: built only by
/// [`AgentDestinations::of`], which applies the secrets' scope (or empty,
/// the `Default`, for an agent without a config in use).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentDestinations(Vec<Notification>);

impl AgentDestinations {
    /// The destinations of `agent`'s config (`named`, the config being in
    /// `config_project`) whose secret it may use, and why each other one
    /// is refused.
    pub fn of(agent: &str, config_project: &str, named: &[Notification]) -> (Self, Vec<String>) {
        let mut allowed = Vec::new();
        let mut refused = Vec::new();
        for destination in named {
            match tether_agent_config::policy::may_use_secret(
                agent,
                config_project,
                &destination.url_secret,
            ) {
                Ok(()) => allowed.push(destination.clone()),
                Err(reason) => refused.push(reason.to_string()),
            }
        }
        (AgentDestinations(allowed), refused)
    }

    pub fn as_slice(&self) -> &[Notification] {
        &self.0
    }

    /// Those not in `told` (by URL secret and provider), which takes
    /// them: a fleet-wide event goes once to a destination many agents
    /// of the fleet name.
    pub fn not_in(&self, told: &mut std::collections::HashSet<String>) -> Self {
        AgentDestinations(
            self.0
                .iter()
                .filter(|d| told.insert(format!("{}:{}", provider_name(d.provider), d.url_secret)))
                .cloned()
                .collect(),
        )
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;
type DedupKey = (String, NotificationEvent, String, String, String, String);

/// Sends notices to their destinations. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    store: Arc<dyn Store>,
    drain: tether_runtime::Drain,
    client: HttpsClient,
    /// kas's own destinations, for every agent.
    global: Vec<Notification>,
    /// How long an agent is gone before it is told.
    disconnected_after: Duration,
    queues: crate::ordered::KeyedQueues<Notice>,
    sent: Mutex<HashMap<DedupKey, Instant>>,
    /// With replicas: whether an agent is connected to another one.
    elsewhere: std::sync::OnceLock<Elsewhere>,
}

/// Whether an agent is connected to another kas replica: an agent gone
/// from one replica may be back on another within the grace period.
pub type Elsewhere =
    Arc<dyn Fn(String) -> futures_util::future::BoxFuture<'static, bool> + Send + Sync>;

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

impl Notifier {
    /// Each destination's sender, and each wait for a disconnected agent,
    /// runs on `drain`: queued notices are delivered before kas exits.
    pub fn new(
        store: Arc<dyn Store>,
        global: Vec<Notification>,
        disconnected_after: Duration,
        ca_pem: Option<&[u8]>,
        drain: tether_runtime::Drain,
    ) -> anyhow::Result<Self> {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(tether_runtime::https::connector(ca_pem)?);
        Ok(Notifier {
            inner: Some(Arc::new(Inner {
                store,
                drain,
                client,
                global,
                disconnected_after,
                queues: crate::ordered::KeyedQueues::new(QUEUE, MAX_DESTINATIONS),
                sent: Mutex::default(),
                elsewhere: std::sync::OnceLock::new(),
            })),
        })
    }

    /// With replicas: `elsewhere` says whether an agent is connected to
    /// another replica, so that one that moved is not told as gone.
    pub fn set_elsewhere(&self, elsewhere: Elsewhere) {
        if let Some(inner) = &self.inner {
            let _ = inner.elsewhere.set(elsewhere);
        }
    }

    /// Sends nothing.
    pub fn disabled() -> Self {
        Notifier { inner: None }
    }

    /// Queues `notice` for the agent's destinations (`own`, those of its
    /// config it may use) and kas's; never waits.
    pub fn notify(&self, own: &AgentDestinations, notice: Notice) {
        self.notify_some(own, true, notice);
    }

    /// Queues `notice` for `own` only, not kas's destinations: the other
    /// agents of a fleet-wide event, once kas's were told.
    pub fn notify_own(&self, own: &AgentDestinations, notice: Notice) {
        self.notify_some(own, false, notice);
    }

    fn notify_some(&self, own: &AgentDestinations, global: bool, notice: Notice) {
        let Some(inner) = &self.inner else {
            return;
        };
        let global = match global {
            true => inner.global.as_slice(),
            false => &[],
        };
        for destination in own.as_slice().iter().chain(global) {
            if !destination.wants(notice.event) {
                continue;
            }
            let name = format!(
                "{}:{}",
                provider_name(destination.provider),
                destination.url_secret
            );
            if !inner.first_time(&name, &notice) {
                continue;
            }
            let pushed = inner.queues.push(&name, notice.clone(), |rx| {
                let worker = Worker::new(rx, inner.drain.signal(), IDLE);
                inner
                    .drain
                    .spawn(deliver_in_order(inner.clone(), destination.clone(), worker));
            });
            if let Err(why) = pushed {
                tracing::warn!(destination = %name, why = ?why, "notice dropped");
            }
        }
    }
}

impl Notifier {
    /// Tells of `agent` if it is still not `connected` once the grace
    /// period (`--notify-disconnected-after`) is over: called as one of its
    /// sessions ends. With replicas, a session that moved to another
    /// replica is not seen from here: see the README.
    pub fn watch_disconnect(
        &self,
        connected: impl Fn(&str) -> bool + Send + 'static,
        agent: String,
        own: AgentDestinations,
        reason: String,
    ) {
        let Some(inner) = &self.inner else {
            return;
        };
        let after = inner.disconnected_after;
        let this = self.clone();
        let mut signal = inner.drain.signal();
        inner.drain.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(after) => {}
                // kas is stopping, not the agent: it reconnects to another.
                _ = signal.signalled() => return,
            }
            if connected(&agent) {
                return;
            }
            let elsewhere = this
                .inner
                .as_ref()
                .and_then(|inner| inner.elsewhere.get().cloned());
            if let Some(elsewhere) = elsewhere
                && elsewhere(agent.clone()).await
            {
                tracing::debug!(agent = %agent, "agent connected to another replica: not told as gone");
                return;
            }
            this.notify(
                &own,
                Notice {
                    event: NotificationEvent::AgentDisconnected,
                    agent,
                    project: String::new(),
                    commit: String::new(),
                    object: String::new(),
                    message: format!("no session for {after:?} (last: {reason})"),
                },
            );
        });
    }

    /// Every hour, tells of agent tokens that expire within 7 days, once
    /// per token (while this kas runs), to the agent's destinations
    /// (`destinations_of`: those of its config in use) and kas's own. `lead` says whether this replica
    /// is the one that checks (one replica does, when there are several).
    pub async fn watch_token_expiry<D, L, F>(
        self,
        destinations_of: D,
        lead: L,
        mut shutdown: tether_runtime::Shutdown,
    ) where
        D: Fn(&str) -> AgentDestinations,
        L: Fn() -> F,
        F: std::future::Future<Output = bool>,
    {
        const EVERY: Duration = Duration::from_secs(3600);
        const WITHIN: i64 = 7 * 24 * 3600;
        let Some(inner) = self.inner.clone() else {
            return;
        };
        let mut told = std::collections::HashSet::new();
        let mut first = true;
        loop {
            let wait = if first {
                Duration::from_secs(30)
            } else {
                EVERY
            };
            first = false;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.signalled() => return,
            }
            if !lead().await {
                continue;
            }
            let now = tether_store::time::now();
            let Ok(agents) = inner.store.list_agents().await else {
                continue;
            };
            for agent in agents {
                let Ok(tokens) = inner.store.list_tokens(&agent.name).await else {
                    continue;
                };
                for token in tokens {
                    let Some(expires) = token.expires_at else {
                        continue;
                    };
                    let soon = expires > now && expires - now <= WITHIN;
                    if !soon || token.revoked_at.is_some() || !told.insert(token.id) {
                        continue;
                    }
                    let own = destinations_of(&agent.name);
                    self.notify(
                        &own,
                        Notice {
                            event: NotificationEvent::TokenExpiring,
                            agent: agent.name.clone(),
                            project: String::new(),
                            commit: String::new(),
                            object: format!("token {} ({})", token.name, token.id),
                            message: format!(
                                "expires at {}",
                                tether_store::time::to_rfc3339(expires)
                            ),
                        },
                    );
                }
            }
        }
    }
}

impl Inner {
    /// Whether `notice` was not sent to `destination` within the window;
    /// remembers it.
    fn first_time(&self, destination: &str, notice: &Notice) -> bool {
        let key = (
            destination.to_owned(),
            notice.event,
            notice.agent.clone(),
            notice.object.clone(),
            notice.message.clone(),
            notice.commit.clone(),
        );
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        if sent.len() >= REMEMBERED {
            sent.retain(|_, at| at.elapsed() < DEDUP_WINDOW);
            if sent.len() >= REMEMBERED {
                sent.clear();
            }
        }
        match sent.get(&key) {
            Some(at) if at.elapsed() < DEDUP_WINDOW => false,
            _ => {
                sent.insert(key, Instant::now());
                true
            }
        }
    }
}

async fn deliver_in_order(inner: Arc<Inner>, destination: Notification, mut queue: Worker<Notice>) {
    while let Some(notice) = queue.next().await {
        let secret = match inner
            .store
            .notification_secret(&destination.url_secret)
            .await
        {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                tracing::warn!(secret = %destination.url_secret, "no notification secret of that name: notice dropped");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = ?e, "cannot read the notification secret");
                continue;
            }
        };
        // Draining, a notice gets the retries that fit in the grace period.
        let backoff: &[Duration] = match queue.draining() {
            true => &DRAIN_BACKOFF,
            false => &BACKOFF,
        };
        if let Err(e) = deliver(
            &inner.client,
            destination.provider,
            &secret,
            &notice,
            backoff,
        )
        .await
        {
            tracing::warn!(secret = %destination.url_secret, event = notice.event.as_str(), error = %e, "notification not delivered");
        }
    }
}

/// Why a notice was not delivered: what the last try met. Nothing of the
/// destination's URL is kept, since the URL is a secret.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Failed(#[source] hyper_util::client::legacy::Error),
    #[error("answered {0}")]
    Answered(http::StatusCode),
}

impl DeliveryError {
    /// Whether another try may succeed: a transport error, a 5xx or a 429.
    fn is_transient(&self) -> bool {
        match self {
            DeliveryError::Request(_) => false,
            DeliveryError::Timeout(_) | DeliveryError::Failed(_) => true,
            DeliveryError::Answered(status) => {
                status.is_server_error() || *status == http::StatusCode::TOO_MANY_REQUESTS
            }
        }
    }
}

/// Delivers one notice, trying again with backoff after a transport error,
/// a 5xx or a 429.
pub async fn deliver(
    client: &HttpsClient,
    provider: NotificationProvider,
    secret: &NotificationSecret,
    notice: &Notice,
    backoff: &[Duration],
) -> Result<(), DeliveryError> {
    let mut waits = backoff.iter();
    loop {
        let request = request(provider, secret, notice)?;
        let failed = match tokio::time::timeout(TIMEOUT, client.request(request)).await {
            Err(_) => DeliveryError::Timeout(TIMEOUT),
            Ok(Err(e)) => DeliveryError::Failed(e),
            Ok(Ok(response)) if response.status().is_success() => return Ok(()),
            Ok(Ok(response)) => DeliveryError::Answered(response.status()),
        };
        if !failed.is_transient() {
            return Err(failed);
        }
        match waits.next() {
            Some(wait) => tokio::time::sleep(*wait).await,
            None => return Err(failed),
        }
    }
}

/// Why a notice cannot be made into a request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Serialize(#[from] serde_json::Error),
    /// The URL or a header is not one `http` takes; which part is not said
    /// (the URL is a secret).
    #[error("cannot build the notification: {0}")]
    Build(#[source] http::Error),
}

/// The request each destination takes.
pub fn request(
    provider: NotificationProvider,
    secret: &NotificationSecret,
    notice: &Notice,
) -> Result<Request<Full<Bytes>>, RequestError> {
    let text = notice.text();
    let body = match provider {
        NotificationProvider::Generic => {
            let at = tether_store::time::to_rfc3339(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or_default(),
            );
            let mut json = serde_json::to_value(notice)?;
            json["text"] = text.into();
            json["at"] = at.into();
            json
        }
        NotificationProvider::Slack => serde_json::json!({ "text": text }),
        NotificationProvider::Teams => serde_json::json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [{ "type": "TextBlock", "text": text, "wrap": true }],
                },
            }],
        }),
    };
    let body = Bytes::from(body.to_string());
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(&secret.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("tether-kas/", env!("CARGO_PKG_VERSION")),
        );
    if provider == NotificationProvider::Generic {
        builder = builder.header("x-tether-event", notice.event.as_str());
        if let Some(key) = &secret.signing_key {
            builder = builder.header("x-tether-signature", sign(key, &body));
        }
    }
    builder.body(Full::new(body)).map_err(RequestError::Build)
}

/// `sha256=<hex HMAC-SHA256 of body>`, as the generic provider signs.
pub fn sign(key: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
    let tag = hmac::sign(&key, body);
    format!("sha256={}", tether_credentials::hex::encode(tag.as_ref()))
}

fn provider_name(p: NotificationProvider) -> &'static str {
    match p {
        NotificationProvider::Generic => "generic",
        NotificationProvider::Slack => "slack",
        NotificationProvider::Teams => "teams",
    }
}

/// What a sync report tells, given what this session already told of
/// `report`'s commit (`told`, updated): success or failure once per commit,
/// each degraded object, each drift correction.
pub fn of_report(
    agent: &str,
    report: &tether_proto::v1::SyncReport,
    told: &mut std::collections::HashSet<(String, String, NotificationEvent)>,
) -> Vec<Notice> {
    use tether_proto::v1::SyncState;
    let base = |event, object: String, message: String| Notice {
        event,
        agent: agent.to_owned(),
        project: report.project_id.clone(),
        commit: report.commit_id.clone(),
        object,
        message,
    };
    let mut notices = Vec::new();
    let mut once = |event, message: String, notices: &mut Vec<Notice>| {
        if told.len() > REMEMBERED {
            told.clear();
        }
        if told.insert((report.project_id.clone(), report.commit_id.clone(), event)) {
            notices.push(base(event, String::new(), message));
        }
    };
    match SyncState::try_from(report.state).unwrap_or(SyncState::Unspecified) {
        SyncState::Failed => {
            let first = report
                .error
                .lines()
                .next()
                .unwrap_or("sync failed")
                .to_owned();
            once(NotificationEvent::SyncFailed, first, &mut notices);
        }
        SyncState::Synced => {
            let settled = report
                .objects
                .iter()
                .filter(|o| matches!(o.action.as_str(), "applied" | "unchanged"))
                .all(|o| o.health == "Current");
            if settled {
                let message = format!("{} objects Current", report.objects.len());
                once(NotificationEvent::SyncSucceeded, message, &mut notices);
            }
        }
        _ => {}
    }
    let describe = |kind: &str, namespace: &str, name: &str| match namespace {
        "" => format!("{kind} {name}"),
        ns => format!("{kind} {ns}/{name}"),
    };
    for o in report.objects.iter().filter(|o| o.health == "Failed") {
        notices.push(base(
            NotificationEvent::HealthDegraded,
            describe(&o.kind, &o.namespace, &o.name),
            o.message.clone(),
        ));
    }
    for d in &report.drift {
        let message = match d.error.as_str() {
            "" => format!("{} by {}, applied again at {}", d.what, d.who, d.at),
            error => format!("{} by {}; applying again failed: {error}", d.what, d.who),
        };
        notices.push(base(
            NotificationEvent::DriftCorrected,
            describe(&d.kind, &d.namespace, &d.name),
            message,
        ));
    }
    notices
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::v1;

    fn secret(key: Option<&str>) -> NotificationSecret {
        NotificationSecret {
            name: "ops".into(),
            url: "https://hooks.example.com/x".into(),
            signing_key: key.map(str::to_owned),
            created_at: 0,
        }
    }

    fn notice() -> Notice {
        Notice {
            event: NotificationEvent::SyncFailed,
            agent: "prod".into(),
            project: "team/app".into(),
            commit: "0123456789abcdef".into(),
            object: String::new(),
            message: "web: refused".into(),
        }
    }

    fn body(request: &Request<Full<Bytes>>) -> (Bytes, serde_json::Value) {
        use http_body_util::BodyExt;
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(request.body().clone().collect())
            .expect("body")
            .to_bytes();
        let json = serde_json::from_slice(&bytes).expect("JSON");
        (bytes, json)
    }

    #[test]
    fn each_provider_gets_its_shape_and_the_generic_one_is_signed() {
        let generic =
            request(NotificationProvider::Generic, &secret(Some("k")), &notice()).expect("generic");
        let (bytes, json) = body(&generic);
        assert_eq!(json["event"], "sync_failed");
        assert_eq!(json["agent"], "prod");
        assert_eq!(json["commit"], "0123456789abcdef");
        assert!(json["at"].is_string());
        assert_eq!(
            generic.headers()["x-tether-signature"],
            sign("k", &bytes).as_str()
        );
        let slack = request(NotificationProvider::Slack, &secret(None), &notice()).expect("slack");
        assert_eq!(
            body(&slack).1["text"],
            "Tether: agent prod: sync failed · team/app @ 0123456789ab: web: refused"
        );
        assert!(slack.headers().get("x-tether-signature").is_none());
        let teams = request(NotificationProvider::Teams, &secret(None), &notice()).expect("teams");
        let card = &body(&teams).1["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["content"]["type"], "AdaptiveCard");
    }

    #[test]
    fn a_report_tells_success_or_failure_once_per_commit() {
        let mut told = Default::default();
        let mut report = v1::SyncReport {
            project_id: "team/app".into(),
            commit_id: "c1".into(),
            state: v1::SyncState::Synced as i32,
            objects: vec![v1::ObjectResult {
                kind: "Deployment".into(),
                namespace: "apps".into(),
                name: "web".into(),
                action: "applied".into(),
                health: "InProgress".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(
            of_report("prod", &report, &mut told).is_empty(),
            "not settled yet"
        );
        report.objects[0].health = "Current".into();
        let events: Vec<_> = of_report("prod", &report, &mut told)
            .into_iter()
            .map(|n| n.event)
            .collect();
        assert_eq!(events, [NotificationEvent::SyncSucceeded]);
        assert!(
            of_report("prod", &report, &mut told).is_empty(),
            "once per commit"
        );
        report.objects[0].health = "Failed".into();
        report.objects[0].message = "ProgressDeadlineExceeded".into();
        report.drift.push(v1::DriftEvent {
            kind: "Deployment".into(),
            namespace: "apps".into(),
            name: "web".into(),
            who: "kubectl-edit".into(),
            what: "changed fields agentk owns".into(),
            at: "2026-11-29T16:00:00Z".into(),
            ..Default::default()
        });
        let notices = of_report("prod", &report, &mut told);
        assert_eq!(notices[0].event, NotificationEvent::HealthDegraded);
        assert_eq!(notices[0].object, "Deployment apps/web");
        assert_eq!(notices[1].event, NotificationEvent::DriftCorrected);
        assert!(notices[1].message.contains("kubectl-edit"));
    }
}
