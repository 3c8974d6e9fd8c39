//! Commit statuses on the git host: every agent's sync of every commit
//! shows on the commit as its own context, `tether/<agent>`: pending when
//! kas sends the commit, success once it is synced and every object is
//! Current, failure with the first error.
//!
//! Posting never holds up a sync: events go into a bounded queue per
//! project (dropped, and logged, when it is full), one task per project
//! posts them in order (so a late "pending" never overwrites "success"),
//! each request under a timeout with a few retries, and an identical status
//! already posted for the same agent and commit is not posted again. A
//! project without a status target (`kas project status set`) posts
//! nothing.
//!
//! The commit goes into the host's URL, and with a sync report it comes
//! from the agent: a session posts only for a commit kas gave it
//! (the channel's record of commits sent), and nothing but a full commit id (40 or 64
//! lower-case hex digits) ever reaches a URL here ([`is_commit_id`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tether_store::{StatusTarget, Store};

use crate::ordered::Worker;

/// Events waiting per project at most.
const QUEUE: usize = 256;
/// Projects with a live posting task at most; past it, events of new
/// projects are dropped until some go idle.
const MAX_PROJECTS: usize = 10_000;
/// A project's task ends after this long without events.
const IDLE: Duration = Duration::from_secs(60);
/// Per request, and how often a failed request is tried again.
const TIMEOUT: Duration = Duration::from_secs(10);
const RETRIES: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(2)];
/// Statuses remembered per project, to skip repeats.
const REMEMBERED: usize = 4096;
/// Git hosts cut descriptions at 140 characters (GitHub) or 255 (GitLab).
const MAX_DESCRIPTION: usize = 140;
/// Characters of a refused commit that reach the log.
const LOGGED_COMMIT: usize = 80;

/// Whether `commit` is a full commit id: 40 (SHA-1) or 64 (SHA-256)
/// lower-case hex digits, as git and every host write it. Nothing else may
/// reach a status URL (no `?`, `/`, `..`, abbreviation or branch name).
pub fn is_commit_id(commit: &str) -> bool {
    matches!(commit.len(), 40 | 64)
        && commit
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// At most the first [`LOGGED_COMMIT`] characters of `commit`, for a log
/// line: the text may be an attacker's.
pub fn loggable(commit: &str) -> String {
    commit.chars().take(LOGGED_COMMIT).collect()
}

/// What a status says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    Success,
    Failure,
}

/// One agent's sync of one commit of a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusEvent {
    pub project: String,
    pub commit: String,
    pub agent: String,
    pub state: State,
    pub description: String,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Hands status events to the per-project posters. Cheap to clone.
#[derive(Clone)]
pub struct Statuses {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    store: Arc<dyn Store>,
    drain: tether_runtime::Drain,
    client: HttpsClient,
    queues: crate::ordered::KeyedQueues<StatusEvent>,
}

impl std::fmt::Debug for Statuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statuses")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

impl Statuses {
    /// Posts with the web's CA roots (`ca_pem` for a private CA); each
    /// project's poster runs on `drain`, which waits for what is queued.
    pub fn new(
        store: Arc<dyn Store>,
        ca_pem: Option<&[u8]>,
        drain: tether_runtime::Drain,
    ) -> anyhow::Result<Self> {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(tether_runtime::https::connector(ca_pem)?);
        Ok(Statuses {
            inner: Some(Arc::new(Inner {
                store,
                drain,
                client,
                queues: crate::ordered::KeyedQueues::new(QUEUE, MAX_PROJECTS),
            })),
        })
    }

    /// Posts nothing (tests of other things).
    pub fn disabled() -> Self {
        Statuses { inner: None }
    }

    /// Queues `event`; never waits. An event whose commit is not a full
    /// commit id is dropped, and logged.
    pub fn report(&self, event: StatusEvent) {
        let Some(inner) = &self.inner else {
            return;
        };
        if !is_commit_id(&event.commit) {
            tracing::warn!(
                project = %event.project,
                agent = %event.agent,
                commit = %loggable(&event.commit),
                "commit status not posted: not a full commit id"
            );
            return;
        }
        let project = event.project.clone();
        let pushed = inner.queues.push(&project, event, |rx| {
            let worker = Worker::new(rx, inner.drain.signal(), IDLE);
            inner
                .drain
                .spawn(post_in_order(inner.clone(), project.clone(), worker));
        });
        if let Err(why) = pushed {
            tracing::warn!(project = %project, why = ?why, "commit status dropped");
        }
    }
}

/// One project's poster: its events in order, until idle or, once kas
/// drains, until what was queued is posted.
async fn post_in_order(inner: Arc<Inner>, project: String, mut queue: Worker<StatusEvent>) {
    let mut posted: HashMap<(String, String), State> = HashMap::new();
    while let Some(event) = queue.next().await {
        let key = (event.agent.clone(), event.commit.clone());
        if posted.get(&key) == Some(&event.state) {
            continue;
        }
        let target = match inner.store.status_target(&project).await {
            Ok(Some(target)) => target,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(project = %project, error = ?e, "cannot read the status target");
                continue;
            }
        };
        match post(&inner.client, &target, &event).await {
            Ok(()) => {
                if posted.len() >= REMEMBERED {
                    posted.clear();
                }
                posted.insert(key, event.state);
                tracing::debug!(project = %project, commit = %event.commit, agent = %event.agent, state = ?event.state, "commit status posted");
            }
            Err(e) => tracing::warn!(
                project = %project,
                commit = %event.commit,
                agent = %event.agent,
                error = %e,
                "cannot post the commit status"
            ),
        }
    }
}

/// Why a status was not posted: what the last try met.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Failed(#[source] hyper_util::client::legacy::Error),
    /// The host refused; `said` is the start of its answer, which usually
    /// says why (a token without the scope, a repository it cannot see).
    #[error("{provider} answered {status}: {said}")]
    Answered {
        provider: String,
        status: http::StatusCode,
        said: String,
    },
}

impl PostError {
    /// Whether another try may succeed: a transport error, a 5xx or a 429.
    fn is_transient(&self) -> bool {
        match self {
            PostError::Request(_) => false,
            PostError::Timeout(_) | PostError::Failed(_) => true,
            PostError::Answered { status, .. } => {
                status.is_server_error() || *status == http::StatusCode::TOO_MANY_REQUESTS
            }
        }
    }
}

/// Posts one status, trying again after a transport error or a 5xx/429.
pub async fn post(
    client: &HttpsClient,
    target: &StatusTarget,
    event: &StatusEvent,
) -> Result<(), PostError> {
    let mut waits = RETRIES.iter();
    loop {
        let request = request(target, event)?;
        let outcome = tokio::time::timeout(TIMEOUT, client.request(request)).await;
        let failed = match outcome {
            Err(_) => PostError::Timeout(TIMEOUT),
            Ok(Err(e)) => PostError::Failed(e),
            Ok(Ok(response)) => {
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                let body = tokio::time::timeout(TIMEOUT, response.into_body().collect())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                PostError::Answered {
                    provider: target.provider.clone(),
                    status,
                    said: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
                }
            }
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

/// Why a status cannot be made into a request. Nothing of the target's
/// token is kept.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The commit as it may be logged ([`loggable`]): it came from an
    /// agent.
    #[error("{0:?} is not a full commit id (40 or 64 lower-case hex digits)")]
    NotACommit(String),
    #[error("unknown commit status provider {0:?}")]
    UnknownProvider(String),
    #[error("cannot build the status request: {0}")]
    Build(#[source] http::Error),
}

/// The request each host documents for a commit status.
pub fn request(
    target: &StatusTarget,
    event: &StatusEvent,
) -> Result<Request<Full<Bytes>>, RequestError> {
    if !is_commit_id(&event.commit) {
        return Err(RequestError::NotACommit(loggable(&event.commit)));
    }
    let api = target.api_url.trim_end_matches('/');
    let context = format!("tether/{}", event.agent);
    let description: String = event.description.chars().take(MAX_DESCRIPTION).collect();
    let (uri, auth_name, auth_value, body) = match target.provider.as_str() {
        "github" | "gitea" | "forgejo" => {
            let state = match event.state {
                State::Pending => "pending",
                State::Success => "success",
                State::Failure => "failure",
            };
            let (name, value) = match target.provider.as_str() {
                "github" => (header::AUTHORIZATION, format!("Bearer {}", target.token)),
                _ => (header::AUTHORIZATION, format!("token {}", target.token)),
            };
            (
                format!(
                    "{api}/repos/{}/statuses/{}",
                    target.repository, event.commit
                ),
                name,
                value,
                serde_json::json!({ "state": state, "context": context, "description": description }),
            )
        }
        "gitlab" => {
            let state = match event.state {
                State::Pending => "running",
                State::Success => "success",
                State::Failure => "failed",
            };
            (
                format!(
                    "{api}/projects/{}/statuses/{}",
                    tether_api::segment(&target.repository),
                    event.commit
                ),
                header::HeaderName::from_static("private-token"),
                target.token.clone(),
                serde_json::json!({ "state": state, "name": context, "description": description }),
            )
        }
        other => return Err(RequestError::UnknownProvider(other.to_owned())),
    };
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("tether-kas/", env!("CARGO_PKG_VERSION")),
        )
        .header(auth_name, auth_value);
    if target.provider == "github" {
        builder = builder
            .header(header::ACCEPT, "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(RequestError::Build)
}

/// What a sync report amounts to as a status: success once synced and
/// every object Current, failure with the first error, else still pending
/// (applied, health not settled).
pub fn of_report(report: &tether_proto::v1::SyncReport) -> (State, String) {
    use tether_proto::v1::SyncState;
    match SyncState::try_from(report.state).unwrap_or(SyncState::Unspecified) {
        SyncState::Failed => {
            let first = report.error.lines().next().unwrap_or("sync failed");
            (State::Failure, first.to_owned())
        }
        SyncState::Synced => {
            // Pruned and kept objects have no health to wait for.
            let unsettled = report
                .objects
                .iter()
                .filter(|o| matches!(o.action.as_str(), "applied" | "unchanged"))
                .filter(|o| o.health != "Current")
                .count();
            match unsettled {
                0 => (
                    State::Success,
                    format!("synced: {} objects Current", report.objects.len()),
                ),
                // No count in the text: health reports come every second
                // while a set converges, and a new text is a new post to
                // the git host.
                _ => (
                    State::Pending,
                    "applied; waiting for every object to be Current".to_owned(),
                ),
            }
        }
        SyncState::DryRun => (State::Pending, "dry run: nothing applied".to_owned()),
        SyncState::Syncing => (
            State::Pending,
            format!(
                "syncing: {}",
                tether_api::known_phase(&report.phase).replace('_', " ")
            ),
        ),
        SyncState::Unspecified => (State::Pending, "syncing".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::v1;

    fn target(provider: &str) -> StatusTarget {
        StatusTarget {
            provider: provider.into(),
            api_url: "https://git.example.com/api/".into(),
            repository: "team/app".into(),
            token: "t0ken".into(),
            created_at: 0,
        }
    }

    const COMMIT: &str = "0123abcd0123abcd0123abcd0123abcd0123abcd";

    fn event(state: State) -> StatusEvent {
        StatusEvent {
            project: "team/app".into(),
            commit: COMMIT.into(),
            agent: "prod".into(),
            state,
            description: "d".repeat(300),
        }
    }

    fn body(request: &Request<Full<Bytes>>) -> serde_json::Value {
        use http_body_util::BodyExt;
        let bytes = block_on(request.body().clone().collect())
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("JSON")
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn each_host_gets_its_documented_request() {
        let github = request(&target("github"), &event(State::Failure)).expect("github");
        assert_eq!(
            github.uri(),
            format!("https://git.example.com/api/repos/team/app/statuses/{COMMIT}").as_str()
        );
        assert_eq!(github.headers()["authorization"], "Bearer t0ken");
        assert_eq!(github.headers()["accept"], "application/vnd.github+json");
        let sent = body(&github);
        assert_eq!(sent["state"], "failure");
        assert_eq!(sent["context"], "tether/prod");
        assert_eq!(sent["description"].as_str().map(str::len), Some(140));

        let gitea = request(&target("gitea"), &event(State::Success)).expect("gitea");
        assert_eq!(gitea.headers()["authorization"], "token t0ken");
        assert_eq!(body(&gitea)["state"], "success");

        let gitlab = request(&target("gitlab"), &event(State::Pending)).expect("gitlab");
        assert_eq!(
            gitlab.uri(),
            format!("https://git.example.com/api/projects/team%2Fapp/statuses/{COMMIT}").as_str()
        );
        assert_eq!(gitlab.headers()["private-token"], "t0ken");
        let sent = body(&gitlab);
        assert_eq!(sent["state"], "running");
        assert_eq!(sent["name"], "tether/prod");
        assert_eq!(
            body(&request(&target("gitlab"), &event(State::Failure)).expect("gitlab"))["state"],
            "failed"
        );
        assert!(matches!(
            request(&target("svn"), &event(State::Success)),
            Err(RequestError::UnknownProvider(p)) if p == "svn"
        ));
    }

    #[test]
    fn only_a_full_commit_id_reaches_a_url() {
        let sha256 = "0123abcd".repeat(8);
        for ok in [COMMIT, sha256.as_str()] {
            assert!(is_commit_id(ok), "{ok}");
            let mut e = event(State::Success);
            e.commit = ok.into();
            assert!(request(&target("github"), &e).is_ok(), "{ok}");
        }
        let traversal = format!("{COMMIT}/../../../other/repo/statuses/{COMMIT}");
        let query = format!("{COMMIT}?sha={COMMIT}");
        for bad in [
            "",
            "0123abcd",
            "main",
            &COMMIT.to_uppercase(),
            &format!("{COMMIT}0"),
            &traversal,
            &query,
            &format!("../{}", &COMMIT[3..]),
        ] {
            assert!(!is_commit_id(bad), "{bad}");
            let mut e = event(State::Success);
            e.commit = bad.into();
            for provider in ["github", "gitea", "gitlab"] {
                assert!(
                    matches!(
                        request(&target(provider), &e),
                        Err(RequestError::NotACommit(_))
                    ),
                    "{provider} {bad}"
                );
            }
        }
        assert_eq!(loggable(&"x".repeat(10_000)).len(), LOGGED_COMMIT);
    }

    #[test]
    fn a_report_is_success_only_once_everything_is_current() {
        let object = |action: &str, health: &str| v1::ObjectResult {
            action: action.into(),
            health: health.into(),
            ..Default::default()
        };
        let mut report = v1::SyncReport {
            state: v1::SyncState::Synced as i32,
            objects: vec![
                object("applied", "Current"),
                object("applied", "InProgress"),
            ],
            ..Default::default()
        };
        assert_eq!(of_report(&report).0, State::Pending);
        let syncing = v1::SyncReport {
            state: v1::SyncState::Syncing as i32,
            phase: "waiting_for_hooks".into(),
            ..report.clone()
        };
        assert_eq!(
            of_report(&syncing),
            (State::Pending, "syncing: waiting for hooks".to_owned())
        );
        report.objects[1].health = "Current".into();
        report.objects.push(object("pruned", "NotFound"));
        assert_eq!(of_report(&report).0, State::Success);
        report.state = v1::SyncState::Failed as i32;
        report.error = "web: the API server refuses it\nmore".into();
        assert_eq!(
            of_report(&report),
            (State::Failure, "web: the API server refuses it".to_owned())
        );
    }
}
