//! Commit statuses posted to a loopback receiver that checks each host's
//! documented request shape: in order per commit, repeats skipped, a 503
//! tried again, a host that is down holding up nothing else, and nothing
//! but a full commit id in a URL.

mod common;

use std::sync::Arc;

use common::{never_drained, receiver, wait_for};
use tether_notify::statuses::{State, StatusEvent, Statuses};
use tether_store::{NewProject, SqliteStore, StatusTarget, Store};

async fn store_with(targets: &[(&str, &str, &str)]) -> Arc<SqliteStore> {
    let store = Arc::new(SqliteStore::open_in_memory().expect("store"));
    for (project, provider, api_url) in targets {
        store
            .create_project(NewProject {
                id: (*project).into(),
                url: "/srv/git/app.git".into(),
                credentials_ref: None,
                created_at: 0,
                git_ref: None,
            })
            .await
            .expect("project");
        store
            .set_status_target(
                project,
                StatusTarget {
                    provider: (*provider).into(),
                    api_url: (*api_url).into(),
                    repository: "team/app".into(),
                    token: "t0ken".into(),
                    created_at: 0,
                },
            )
            .await
            .expect("target");
    }
    store
}

/// A full commit id: nothing shorter reaches a host's URL.
const COMMIT: &str = "c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff";

fn event(project: &str, agent: &str, state: State) -> StatusEvent {
    StatusEvent {
        project: project.into(),
        commit: COMMIT.into(),
        agent: agent.into(),
        state,
        description: "d".into(),
    }
}

#[tokio::test]
async fn statuses_arrive_in_order_once_each_and_survive_a_503() {
    let (url, received) = receiver(1).await;
    let store = store_with(&[("team/app", "github", &url)]).await;
    let statuses = Statuses::new(store, None, never_drained()).expect("statuses");
    statuses.report(event("team/app", "prod", State::Pending));
    statuses.report(event("team/app", "prod", State::Success));
    statuses.report(event("team/app", "prod", State::Success));
    statuses.report(event("team/app", "staging", State::Failure));
    // The 503 answered first is tried again: 1 + 3 posts.
    let got = wait_for(&received, 4).await;
    assert_eq!(got.len(), 4, "{got:#?}");
    let states: Vec<(String, String)> = got
        .iter()
        .skip(1)
        .map(|r| {
            (
                r.body["context"].as_str().unwrap_or_default().to_owned(),
                r.body["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("tether/prod".into(), "pending".into()),
            ("tether/prod".into(), "success".into()),
            ("tether/staging".into(), "failure".into()),
        ]
    );
    assert!(
        got.iter()
            .all(|r| r.path == format!("/repos/team/app/statuses/{COMMIT}"))
    );
    assert!(got.iter().all(|r| r.auth == "Bearer t0ken"));
}

#[tokio::test]
async fn a_host_that_is_down_holds_up_no_other_project() {
    let (url, received) = receiver(0).await;
    let dead = common::dead_url();
    let store = store_with(&[("team/down", "gitlab", &dead), ("team/up", "gitlab", &url)]).await;
    let statuses = Statuses::new(store, None, never_drained()).expect("statuses");
    for _ in 0..10 {
        statuses.report(event("team/down", "prod", State::Pending));
        statuses.report(event("team/down", "prod", State::Success));
    }
    statuses.report(event("team/up", "prod", State::Success));
    let got = wait_for(&received, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].path,
        format!("/projects/team%2Fapp/statuses/{COMMIT}")
    );
    assert_eq!(got[0].auth, "t0ken", "GitLab's PRIVATE-TOKEN header");
    assert_eq!(got[0].body["state"], "success");
    assert_eq!(got[0].body["name"], "tether/prod");
}

/// A commit that is not a full commit id (`../`, `?`, a branch name, upper
/// case) never reaches the host's URL; a full one is posted.
#[tokio::test]
async fn only_a_full_commit_id_is_posted() {
    let (url, received) = receiver(0).await;
    let store = store_with(&[("team/app", "github", &url)]).await;
    let statuses = Statuses::new(store, None, never_drained()).expect("statuses");
    for commit in [
        format!("{COMMIT}/../../../../other/repo/statuses/{COMMIT}"),
        format!("{COMMIT}?state=success"),
        "main".to_owned(),
        COMMIT.to_uppercase(),
    ] {
        statuses.report(StatusEvent {
            commit,
            ..event("team/app", "prod", State::Success)
        });
    }
    // Posted in order after the others: once it is here, they would be.
    statuses.report(event("team/app", "prod", State::Success));
    let got = wait_for(&received, 1).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].path, format!("/repos/team/app/statuses/{COMMIT}"));
}

#[tokio::test]
async fn statuses_queued_when_kas_drains_are_posted_before_the_drain_ends() {
    // Two 503s first: the first event waits in its retries while the
    // others queue behind it.
    let (url, received) = receiver(2).await;
    let store = store_with(&[("team/app", "github", &url)]).await;
    let (stop, drain) = tether_runtime::Drain::manual();
    let statuses = Statuses::new(store, None, drain.clone()).expect("statuses");
    statuses.report(event("team/app", "prod", State::Pending));
    statuses.report(event("team/app", "prod", State::Success));
    statuses.report(event("team/app", "staging", State::Failure));
    stop.trigger();
    assert_eq!(
        drain.wait(std::time::Duration::from_secs(20)).await,
        0,
        "the poster ended within the drain"
    );
    let got = received.lock().expect("log").clone();
    let delivered: Vec<(String, String)> = got
        .iter()
        .skip(2)
        .map(|r| {
            (
                r.body["context"].as_str().unwrap_or_default().to_owned(),
                r.body["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    // Every queued status reached the host (after the two refused tries).
    assert_eq!(got.len(), 5, "{got:#?}");
    for expected in [
        ("tether/prod", "pending"),
        ("tether/prod", "success"),
        ("tether/staging", "failure"),
    ] {
        assert!(
            delivered
                .iter()
                .any(|(c, s)| (c.as_str(), s.as_str()) == expected),
            "{expected:?} not posted: {delivered:?}"
        );
    }
}
