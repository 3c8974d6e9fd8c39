//! Notifications delivered to loopback receivers: the generic provider's
//! JSON signed with the secret's key (checked here as a receiver would),
//! Slack's and Teams' shapes, the same notice once in the window, each
//! destination's events only, a destination that is down holding up no
//! other, and an agent's config sending only with its own group's secrets.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{dead_url, never_drained, receiver, wait_for};
use tether_agent_config::{Notification, NotificationEvent, NotificationProvider};
use tether_notify::notifications::{AgentDestinations, Notice, Notifier, sign};
use tether_store::{NotificationSecret, SqliteStore, Store};

async fn secret(store: &SqliteStore, name: &str, url: &str, key: Option<&str>) {
    store
        .set_notification_secret(NotificationSecret {
            name: name.into(),
            url: url.into(),
            signing_key: key.map(str::to_owned),
            created_at: 0,
        })
        .await
        .expect("secret");
}

fn destination(
    provider: NotificationProvider,
    secret: &str,
    events: &[NotificationEvent],
) -> Notification {
    Notification {
        provider,
        url_secret: secret.into(),
        events: events.to_vec(),
    }
}

/// The destinations of agent `prod`'s config (in `team/config`), every one
/// of which it may use.
fn own(named: &[Notification]) -> AgentDestinations {
    let (own, refused) = AgentDestinations::of("prod", "team/config", named);
    assert_eq!(refused, Vec::<String>::new());
    own
}

fn notice(event: NotificationEvent, commit: &str) -> Notice {
    Notice {
        event,
        agent: "prod".into(),
        project: "team/app".into(),
        commit: commit.into(),
        object: String::new(),
        message: "web: the API server refuses it".into(),
    }
}

#[tokio::test]
async fn notices_reach_each_destination_signed_once_and_despite_one_down() {
    let (generic_url, generic) = receiver(0).await;
    let (slack_url, slack) = receiver(0).await;
    let store = Arc::new(SqliteStore::open_in_memory().expect("store"));
    secret(&store, "team/audit", &generic_url, Some("signing-key")).await;
    secret(&store, "team/ops-slack", &slack_url, None).await;
    secret(&store, "team/ops-teams", &dead_url(), None).await;
    let notifier = Notifier::new(
        store,
        Vec::new(),
        Duration::from_secs(300),
        None,
        never_drained(),
    )
    .expect("notifier");
    let own = own(&[
        destination(NotificationProvider::Teams, "team/ops-teams", &[]),
        destination(NotificationProvider::Generic, "team/audit", &[]),
        destination(
            NotificationProvider::Slack,
            "team/ops-slack",
            &[NotificationEvent::SyncFailed],
        ),
    ]);
    notifier.notify(&own, notice(NotificationEvent::SyncFailed, "c1"));
    notifier.notify(&own, notice(NotificationEvent::SyncFailed, "c1"));
    notifier.notify(&own, notice(NotificationEvent::SyncSucceeded, "c2"));

    // The generic receiver: both notices, once each, each signed.
    let got = wait_for(&generic, 2).await;
    assert_eq!(got.len(), 2, "{got:#?}");
    let events: Vec<&str> = got
        .iter()
        .filter_map(|r| r.body["event"].as_str())
        .collect();
    assert_eq!(events, ["sync_failed", "sync_succeeded"]);
    for r in &got {
        let signature = r.header("x-tether-signature").expect("signed");
        assert_eq!(
            signature,
            sign("signing-key", &r.raw),
            "the receiver's check"
        );
        assert_ne!(signature, sign("another-key", &r.raw));
        assert_eq!(r.body["agent"], "prod");
    }
    // Slack takes only what it asked for.
    let got = wait_for(&slack, 1).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].body["text"]
            .as_str()
            .is_some_and(|t| t.contains("sync failed") && t.contains("team/app")),
        "{:?}",
        got[0].body
    );
    assert!(got[0].header("x-tether-signature").is_none());
}

#[tokio::test]
async fn a_destination_without_its_secret_is_skipped() {
    let (url, received) = receiver(0).await;
    let store = Arc::new(SqliteStore::open_in_memory().expect("store"));
    secret(&store, "team/known", &url, None).await;
    let notifier = Notifier::new(
        store,
        Vec::new(),
        Duration::from_secs(300),
        None,
        never_drained(),
    )
    .expect("notifier");
    let own = own(&[
        destination(NotificationProvider::Slack, "team/unknown", &[]),
        destination(NotificationProvider::Slack, "team/known", &[]),
    ]);
    notifier.notify(&own, notice(NotificationEvent::DriftCorrected, "c1"));
    let got = wait_for(&received, 1).await;
    assert_eq!(got.len(), 1);
}

/// An agent whose session ended here but that is connected to another
/// replica when the grace period ends is not told as gone; one that is
/// nowhere is.
#[tokio::test]
async fn an_agent_that_moved_to_another_replica_is_not_told_as_gone() {
    let (url, got) = receiver(0).await;
    let store = Arc::new(SqliteStore::open_in_memory().expect("store"));
    secret(&store, "team/audit", &url, Some("k")).await;
    let (stop, drain) = tether_runtime::Drain::manual();
    let notifier = Notifier::new(
        store,
        Vec::new(),
        Duration::from_millis(100),
        None,
        drain.clone(),
    )
    .expect("notifier");
    let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asked_elsewhere = asked.clone();
    notifier.set_elsewhere(Arc::new(move |agent: String| {
        if agent == "moved" {
            asked_elsewhere.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Box::pin(async move { agent == "moved" })
    }));
    let own = own(&[destination(
        NotificationProvider::Generic,
        "team/audit",
        &[NotificationEvent::AgentDisconnected],
    )]);
    for agent in ["moved", "gone"] {
        notifier.watch_disconnect(|_| false, agent.into(), own.clone(), "EOF".into());
    }
    wait_for(&got, 1).await;
    // Every watcher and sender has ended once the drain returns: what was
    // told is all that will be.
    stop.trigger();
    assert_eq!(drain.wait(Duration::from_secs(10)).await, 0);
    assert!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        "the moved agent was looked for on the other replicas"
    );
    let told: Vec<String> = got
        .lock()
        .expect("log")
        .iter()
        .filter_map(|r| r.body["agent"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(told, ["gone"]);
}

/// A config in `team/…` naming another group's secret, or a kas-wide one,
/// has both refused with the rule, and nothing is sent with them; its own
/// group's secret is used, and kas's settings still use the kas-wide one.
#[tokio::test]
async fn a_config_sends_only_with_its_own_groups_secrets() {
    let (theirs_url, theirs) = receiver(0).await;
    let (wide_url, wide) = receiver(0).await;
    let (ours_url, ours) = receiver(0).await;
    let store = Arc::new(SqliteStore::open_in_memory().expect("store"));
    secret(&store, "other-team/slack", &theirs_url, None).await;
    secret(&store, "audit", &wide_url, Some("kas-key")).await;
    secret(&store, "team/alerts", &ours_url, None).await;
    let settings = vec![destination(NotificationProvider::Generic, "audit", &[])];
    let notifier = Notifier::new(
        store,
        settings,
        Duration::from_secs(300),
        None,
        never_drained(),
    )
    .expect("notifier");
    let (own, refused) = AgentDestinations::of(
        "prod",
        "team/config",
        &[
            destination(NotificationProvider::Slack, "other-team/slack", &[]),
            destination(NotificationProvider::Slack, "audit", &[]),
            destination(NotificationProvider::Slack, "team/alerts", &[]),
        ],
    );
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].contains("other-team/slack")
            && refused[0].contains("top-level group other-team"),
        "{refused:?}"
    );
    assert!(
        refused[1].contains("audit") && refused[1].contains("kas-wide"),
        "{refused:?}"
    );
    notifier.notify(&own, notice(NotificationEvent::SyncFailed, "c1"));

    let got = wait_for(&ours, 1).await;
    assert_eq!(got.len(), 1, "the agent's own group's secret: {got:#?}");
    // kas's settings' generic delivery, and no Slack-shaped one of the
    // agent's config.
    let got = wait_for(&wide, 1).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].header("x-tether-event"), Some("sync_failed"));
    assert!(
        theirs.lock().expect("log").is_empty(),
        "another group's secret was used"
    );
}
