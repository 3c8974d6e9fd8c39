//! Both stores keep kas's records as the REST API promises: every test
//! here runs against the embedded SQLite store and against a real
//! PostgreSQL server (Debian's package, started by tether-testenv), each
//! test on a fresh database.

use std::sync::Arc;

use tether_credentials::{Token, TokenKind};
use tether_store::*;

type Shared = Arc<dyn Store>;

fn sqlite() -> Shared {
    Arc::new(SqliteStore::open_in_memory().expect("opens"))
}

async fn postgres() -> Shared {
    let url = tether_testenv::shared_postgres()
        .create_database()
        .expect("a fresh database");
    Arc::new(PgStore::connect(&url).await.expect("connects and migrates"))
}

/// Runs each named test against both stores.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::sqlite()).await
            })*
        }
        mod on_postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::postgres().await).await
            })*
        }
    };
}

on_both_stores!(
    an_active_token_authenticates_its_agent,
    revoked_and_expired_tokens_say_why_they_are_refused,
    names_are_unique_and_validated,
    a_project_in_use_cannot_be_deleted_and_agents_take_their_tokens_along,
    a_token_that_expires_before_it_exists_is_refused,
    manifest_grants_are_recorded_listed_revoked_and_go_with_their_agent,
    users_and_access_tokens_round_trip,
    sync_history_keeps_one_entry_per_commit_and_the_newest_fifty,
    config_status_is_kept_per_agent_and_goes_with_it,
    the_agent_config_is_kept_beside_its_status,
    webhook_secrets_are_set_replaced_removed_and_go_with_their_project,
    status_targets_are_set_replaced_removed_and_go_with_their_project,
    notification_secrets_are_set_listed_and_removed,
    remote_bases_consent_the_admin_token_and_ended_sessions_are_kept,
    image_automation_keeps_logins_push_credentials_and_records,
    labels_are_replaced_whole_and_read_back_wherever_the_agent_is,
    labels_of_an_unknown_agent_are_not_found,
    fleet_records_are_put_replaced_read_listed_by_prefix_and_deleted,
    a_fleet_prefix_is_literal_even_with_like_wildcards,
    taking_fleet_records_removes_at_most_the_limit_in_key_order,
    concurrent_takes_never_hand_out_a_fleet_record_twice,
    project_syncs_give_each_agents_newest_entry_of_that_project,
    signature_policies_and_verification_status_are_kept_and_told_once,
);

const T0: UnixTime = 1_800_000_000;

async fn remote_bases_consent_the_admin_token_and_ended_sessions_are_kept(store: Shared) {
    let (store, _) = store_with_agent(store).await;
    let project = store
        .get_project("team/config")
        .await
        .expect("read")
        .expect("there");
    assert!(
        !project.allow_remote_bases,
        "refused until an administrator allows"
    );
    let allowed = store
        .set_project_remote_bases("team/config", true)
        .await
        .expect("set");
    assert!(allowed.allow_remote_bases);
    let read = store
        .get_project("team/config")
        .await
        .expect("read")
        .expect("there");
    assert!(read.allow_remote_bases);
    assert!(
        !store
            .set_project_remote_bases("team/config", false)
            .await
            .expect("set")
            .allow_remote_bases
    );
    assert!(
        store
            .set_project_remote_bases("team/none", true)
            .await
            .is_err()
    );

    assert_eq!(store.admin_token().await.expect("read"), None);
    let first = AdminTokenRecord {
        hash: "a".repeat(64),
        rotated_at_ms: 1,
    };
    assert!(
        store
            .set_admin_token(first.clone(), false)
            .await
            .expect("set")
    );
    let second = AdminTokenRecord {
        hash: "b".repeat(64),
        rotated_at_ms: 2,
    };
    assert!(
        !store
            .set_admin_token(second.clone(), false)
            .await
            .expect("kept"),
        "a second first start records nothing"
    );
    assert_eq!(store.admin_token().await.expect("read"), Some(first));
    assert!(
        store
            .set_admin_token(second.clone(), true)
            .await
            .expect("rotated")
    );
    assert_eq!(store.admin_token().await.expect("read"), Some(second));

    assert!(!store.ui_session_revoked("s1").await.expect("read"));
    store
        .revoke_ui_session("s1", T0 + 10, T0)
        .await
        .expect("ended");
    store
        .revoke_ui_session("s1", T0 + 10, T0)
        .await
        .expect("ended twice");
    assert!(store.ui_session_revoked("s1").await.expect("read"));
    // Past its expiry it is dropped as another ends: bounded by the
    // sessions that could still be presented.
    store
        .revoke_ui_session("s2", T0 + 100, T0 + 20)
        .await
        .expect("ended");
    assert!(!store.ui_session_revoked("s1").await.expect("read"));
    assert!(store.ui_session_revoked("s2").await.expect("read"));
}

async fn store_with_agent(store: Shared) -> (Shared, Agent) {
    store
        .create_project(NewProject {
            id: "team/config".into(),
            url: "/srv/git/config.git".into(),
            credentials_ref: None,
            created_at: T0,
            git_ref: None,
        })
        .await
        .expect("project");
    let agent = store
        .create_agent("prod", "team/config", T0)
        .await
        .expect("agent");
    (store, agent)
}

fn new_token(token: &Token, expires_at: Option<UnixTime>) -> NewToken {
    NewToken {
        name: "ci".into(),
        description: "for the pipeline".into(),
        hash: token.hash(),
        created_at: T0,
        expires_at,
    }
}

async fn an_active_token_authenticates_its_agent(store: Shared) {
    let (store, agent) = store_with_agent(store).await;
    let token = Token::generate(TokenKind::Agent);
    let record = store
        .create_token("prod", new_token(&token, None))
        .await
        .expect("token");
    match store
        .authenticate(&token.hash(), T0 + 1)
        .await
        .expect("lookup")
    {
        TokenStatus::Active { agent: a, token: t } => {
            assert_eq!(a, agent);
            assert_eq!(t, record);
        }
        other => panic!("expected active, got {other:?}"),
    }
    let stranger = Token::generate(TokenKind::Agent);
    assert_eq!(
        store
            .authenticate(&stranger.hash(), T0)
            .await
            .expect("lookup"),
        TokenStatus::Unknown
    );
}

async fn revoked_and_expired_tokens_say_why_they_are_refused(store: Shared) {
    let (store, _) = store_with_agent(store).await;
    let revoked = Token::generate(TokenKind::Agent);
    let record = store
        .create_token("prod", new_token(&revoked, None))
        .await
        .expect("token");
    store
        .revoke_token("prod", record.id, T0 + 5)
        .await
        .expect("revoke");
    // A second revocation keeps the first time.
    let again = store
        .revoke_token("prod", record.id, T0 + 9)
        .await
        .expect("revoke again");
    assert_eq!(again.revoked_at, Some(T0 + 5));
    assert_eq!(
        store
            .authenticate(&revoked.hash(), T0 + 10)
            .await
            .expect("lookup"),
        TokenStatus::Revoked { revoked_at: T0 + 5 }
    );

    let expiring = Token::generate(TokenKind::Agent);
    store
        .create_token("prod", new_token(&expiring, Some(T0 + 100)))
        .await
        .expect("token");
    assert!(matches!(
        store
            .authenticate(&expiring.hash(), T0 + 99)
            .await
            .expect("lookup"),
        TokenStatus::Active { .. }
    ));
    assert_eq!(
        store
            .authenticate(&expiring.hash(), T0 + 100)
            .await
            .expect("lookup"),
        TokenStatus::Expired {
            expired_at: T0 + 100
        }
    );
}

async fn names_are_unique_and_validated(store: Shared) {
    let (store, _) = store_with_agent(store).await;
    assert!(matches!(
        store.create_agent("prod", "team/config", T0).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_agent("Bad_Name", "team/config", T0).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.create_agent("other", "no/such", T0).await,
        Err(StoreError::NotFound(_))
    ));
    let dup = NewProject {
        id: "team/config".into(),
        url: "x".into(),
        credentials_ref: None,
        created_at: T0,
        git_ref: None,
    };
    assert!(matches!(
        store.create_project(dup).await,
        Err(StoreError::Conflict(_))
    ));
    let escape = NewProject {
        id: "../etc".into(),
        url: "x".into(),
        credentials_ref: None,
        created_at: T0,
        git_ref: None,
    };
    assert!(matches!(
        store.create_project(escape).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn a_project_in_use_cannot_be_deleted_and_agents_take_their_tokens_along(store: Shared) {
    let (store, _) = store_with_agent(store).await;
    let token = Token::generate(TokenKind::Agent);
    store
        .create_token("prod", new_token(&token, None))
        .await
        .expect("token");
    let err = store
        .delete_project("team/config")
        .await
        .expect_err("in use");
    assert!(err.to_string().contains("prod"), "{err}");

    store.delete_agent("prod").await.expect("delete agent");
    assert_eq!(
        store.authenticate(&token.hash(), T0).await.expect("lookup"),
        TokenStatus::Unknown
    );
    assert!(matches!(
        store.list_tokens("prod").await,
        Err(StoreError::NotFound(_))
    ));
    store.delete_project("team/config").await.expect("now free");
    assert!(store.list_projects().await.expect("list").is_empty());
}

async fn a_token_that_expires_before_it_exists_is_refused(store: Shared) {
    let (store, _) = store_with_agent(store).await;
    let token = Token::generate(TokenKind::Agent);
    let err = store
        .create_token("prod", new_token(&token, Some(T0)))
        .await
        .expect_err("invalid");
    assert!(matches!(err, StoreError::Invalid(_)));
}

#[tokio::test]
async fn records_survive_a_reopen_and_migrations_run_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kas.db");
    let token = Token::generate(TokenKind::Agent);
    {
        let store = SqliteStore::open(&path).expect("opens");
        store
            .create_project(NewProject {
                id: "p".into(),
                url: "/git/p".into(),
                credentials_ref: Some("deploy-key".into()),
                created_at: T0,
                git_ref: Some("release".into()),
            })
            .await
            .expect("project");
        store.create_agent("a", "p", T0).await.expect("agent");
        store
            .create_token("a", new_token(&token, None))
            .await
            .expect("token");
    }
    let store = SqliteStore::open(&path).expect("reopens");
    assert_eq!(store.schema_version().await.expect("version"), 11);
    assert_eq!(store.list_agents().await.expect("agents").len(), 1);
    let project = store.get_project("p").await.expect("get").expect("present");
    assert_eq!(project.credentials_ref.as_deref(), Some("deploy-key"));
    assert_eq!(project.git_ref.as_deref(), Some("release"));
    assert!(matches!(
        store.authenticate(&token.hash(), T0).await.expect("lookup"),
        TokenStatus::Active { .. }
    ));
}

async fn manifest_grants_are_recorded_listed_revoked_and_go_with_their_agent(store: Shared) {
    for id in ["team/config", "other/secrets"] {
        store
            .create_project(NewProject {
                id: id.into(),
                url: format!("/git/{id}"),
                credentials_ref: None,
                created_at: T0,
                git_ref: None,
            })
            .await
            .expect("project");
    }
    store
        .create_agent("prod", "team/config", T0)
        .await
        .expect("agent");
    let grant = store
        .grant_manifest_project("other/secrets", "prod", T0)
        .await
        .expect("grant");
    assert_eq!(
        (grant.project.as_str(), grant.agent.as_str()),
        ("other/secrets", "prod")
    );
    // Twice keeps the first.
    let again = store
        .grant_manifest_project("other/secrets", "prod", T0 + 5)
        .await
        .expect("grant");
    assert_eq!(again.created_at, T0);
    assert!(matches!(
        store.grant_manifest_project("missing", "prod", T0).await,
        Err(StoreError::NotFound(_))
    ));
    let by_agent = store
        .list_manifest_grants(None, Some("prod"))
        .await
        .expect("list");
    assert_eq!(by_agent, vec![grant.clone()]);
    store
        .revoke_manifest_project("other/secrets", "prod")
        .await
        .expect("revoke");
    assert!(matches!(
        store.revoke_manifest_project("other/secrets", "prod").await,
        Err(StoreError::NotFound(_))
    ));
    store
        .grant_manifest_project("other/secrets", "prod", T0)
        .await
        .expect("grant");
    store.delete_agent("prod").await.expect("delete");
    assert!(
        store
            .list_manifest_grants(Some("other/secrets"), None)
            .await
            .expect("list")
            .is_empty()
    );
}

fn new_access_token(kind: TokenKind, name: &str) -> (Token, NewToken) {
    let token = Token::generate(kind);
    let new = NewToken {
        name: name.into(),
        description: String::new(),
        hash: token.hash(),
        created_at: 100,
        expires_at: Some(200),
    };
    (token, new)
}

async fn users_and_access_tokens_round_trip(store: Shared) {
    store
        .create_project(NewProject {
            id: "team/app".into(),
            url: "/tmp/x".into(),
            credentials_ref: None,
            created_at: 1,
            git_ref: None,
        })
        .await
        .expect("project");
    let alice = store
        .create_user("alice", vec!["team".into()], 1)
        .await
        .expect("user");
    assert_eq!(alice.memberships, vec!["team".to_owned()]);
    assert!(store.create_user("alice", vec![], 1).await.is_err());
    assert!(store.create_user("Bad_Name", vec![], 1).await.is_err());
    assert!(
        store
            .create_user("bob", vec!["../x".into()], 1)
            .await
            .is_err()
    );

    let project = TokenOwner::Project("team/app".into());
    let (ci, new) = new_access_token(TokenKind::Project, "ci");
    let record = store
        .create_access_token(&project, new, true)
        .await
        .expect("project token");
    assert!(record.protected);
    let (pat, new) = new_access_token(TokenKind::User, "laptop");
    let user = TokenOwner::User("alice".into());
    assert!(
        store
            .create_access_token(&user, new.clone(), true)
            .await
            .is_err()
    );
    store
        .create_access_token(&user, new, false)
        .await
        .expect("personal token");

    match store
        .authenticate_access(&ci.hash(), 150)
        .await
        .expect("auth")
    {
        AccessTokenStatus::Active(t) => assert_eq!(t.owner, project),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store
            .authenticate_access(&pat.hash(), 200)
            .await
            .expect("auth"),
        AccessTokenStatus::Expired { expired_at: 200 }
    );
    store
        .revoke_access_token(&project, record.id, 160)
        .await
        .expect("revoke");
    assert_eq!(
        store
            .authenticate_access(&ci.hash(), 170)
            .await
            .expect("auth"),
        AccessTokenStatus::Revoked { revoked_at: 160 }
    );
    let stranger = Token::generate(TokenKind::User);
    assert_eq!(
        store
            .authenticate_access(&stranger.hash(), 150)
            .await
            .expect("auth"),
        AccessTokenStatus::Unknown
    );
    // Deleting the user takes their tokens with them.
    store.delete_user("alice").await.expect("delete");
    assert_eq!(
        store
            .authenticate_access(&pat.hash(), 150)
            .await
            .expect("auth"),
        AccessTokenStatus::Unknown
    );
    let updated = store.set_memberships("alice", vec![]).await;
    assert!(matches!(updated, Err(StoreError::NotFound(_))));
}

/// kas replicas start together: each migrates under the same advisory
/// lock, so the schema is created once, and each sees what the others
/// wrote.
#[tokio::test]
async fn postgres_replicas_migrate_once_and_share_records() {
    let url = tether_testenv::shared_postgres()
        .create_database()
        .expect("a fresh database");
    let connects = (0..3).map(|_| {
        let url = url.clone();
        async move { PgStore::connect(&url).await }
    });
    let replicas: Vec<PgStore> = futures_join_all(connects).await;
    for replica in &replicas {
        assert_eq!(replica.schema_version().await.expect("version"), 8);
    }
    let (a, b) = (&replicas[0], &replicas[2]);
    a.create_project(NewProject {
        id: "team/config".into(),
        url: "/srv/git/config.git".into(),
        credentials_ref: None,
        created_at: T0,
        git_ref: None,
    })
    .await
    .expect("project");
    a.create_agent("prod", "team/config", T0)
        .await
        .expect("agent");
    let token = Token::generate(TokenKind::Agent);
    b.create_token("prod", new_token(&token, None))
        .await
        .expect("token on another replica");
    assert!(matches!(
        a.authenticate(&token.hash(), T0).await.expect("lookup"),
        TokenStatus::Active { .. }
    ));
}

/// Awaits every future, in order (what `futures::join_all` does, without the
/// dependency): they run concurrently on the test's runtime.
async fn futures_join_all<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("task").expect("connects"));
    }
    out
}

fn sync(project: &str, commit: &str, state: &str, at: UnixTime) -> SyncRecord {
    SyncRecord {
        project: project.into(),
        commit: commit.into(),
        state: state.into(),
        reported_at: at,
        report: format!(r#"{{"commit":"{commit}","state":"{state}"}}"#),
    }
}

async fn sync_history_keeps_one_entry_per_commit_and_the_newest_fifty(store: Shared) {
    let (store, _) = store_with_agent(store).await;
    // Applied, then healthy: one entry, updated.
    store
        .record_sync("prod", sync("team/app", "c0", "synced", T0), 50)
        .await
        .expect("record");
    store
        .record_sync("prod", sync("team/app", "c0", "synced", T0 + 3), 50)
        .await
        .expect("record");
    let history = store
        .sync_history("prod", "team/app", 10)
        .await
        .expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].reported_at, T0 + 3);
    for i in 1..=55 {
        store
            .record_sync(
                "prod",
                sync("team/app", &format!("c{i}"), "synced", T0 + i),
                50,
            )
            .await
            .expect("record");
    }
    store
        .record_sync("prod", sync("team/other", "x1", "failed", T0), 50)
        .await
        .expect("record");
    let history = store
        .sync_history("prod", "team/app", 100)
        .await
        .expect("history");
    assert_eq!(history.len(), 50, "only the newest fifty");
    assert_eq!(history[0].commit, "c55", "newest first");
    assert_eq!(history[49].commit, "c6");
    let latest = store.latest_syncs("prod").await.expect("latest");
    let latest: Vec<(&str, &str)> = latest
        .iter()
        .map(|s| (s.project.as_str(), s.commit.as_str()))
        .collect();
    assert_eq!(latest, [("team/app", "c55"), ("team/other", "x1")]);
    assert!(matches!(
        store.latest_syncs("nobody").await,
        Err(StoreError::NotFound(_))
    ));
    store.delete_agent("prod").await.expect("delete");
    store
        .create_agent("prod", "team/config", T0)
        .await
        .expect("again");
    assert!(store.latest_syncs("prod").await.expect("latest").is_empty());
}

async fn config_status_is_kept_per_agent_and_goes_with_it(store: Shared) {
    let (store, _) = store_with_agent(store).await;
    store
        .set_config_status("prod", r#"{"commit":"a"}"#.into())
        .await
        .expect("set");
    store
        .set_config_status("prod", r#"{"commit":"b"}"#.into())
        .await
        .expect("replace");
    assert_eq!(
        store.config_statuses().await.expect("statuses"),
        [("prod".to_owned(), r#"{"commit":"b"}"#.to_owned())]
    );
    store.delete_agent("prod").await.expect("delete");
    assert!(store.config_statuses().await.expect("statuses").is_empty());
}

async fn the_agent_config_is_kept_beside_its_status(store: Shared) {
    let (store, _) = store_with_agent(store).await;
    assert_eq!(store.agent_config("prod").await.expect("read"), None);
    store
        .set_config_status("prod", r#"{"commit":"a"}"#.into())
        .await
        .expect("status");
    let config = StoredConfig {
        commit: "a".repeat(40),
        source: "ci_access:\n  projects: [{ id: team/admin }]\n".into(),
    };
    store
        .set_agent_config("prod", config.clone())
        .await
        .expect("set");
    assert_eq!(
        store.agent_config("prod").await.expect("read"),
        Some(config.clone())
    );
    // The same again changes nothing; a new commit replaces it.
    store
        .set_agent_config("prod", config.clone())
        .await
        .expect("set again");
    let newer = StoredConfig {
        commit: "b".repeat(40),
        source: config.source.clone(),
    };
    store
        .set_agent_config("prod", newer.clone())
        .await
        .expect("replace");
    assert_eq!(store.agent_config("prod").await.expect("read"), Some(newer));
    // The status is untouched by the config, and the other way round.
    store
        .set_config_status("prod", r#"{"commit":"b"}"#.into())
        .await
        .expect("status");
    assert_eq!(
        store.config_statuses().await.expect("statuses"),
        [("prod".to_owned(), r#"{"commit":"b"}"#.to_owned())]
    );
    assert!(store.agent_config("prod").await.expect("read").is_some());
    store.delete_agent("prod").await.expect("delete");
    assert_eq!(store.agent_config("prod").await.expect("read"), None);
}

/// The tunnel tracker and poll leases of replicas on one database.
#[tokio::test]
async fn replicas_track_tunnels_with_heartbeats_and_share_poll_leases() {
    use std::time::Duration;
    let url = tether_testenv::shared_postgres()
        .create_database()
        .expect("a fresh database");
    let db = PgStore::connect(&url).await.expect("connects");
    let replica = |id: &str| ReplicaId {
        id: id.into(),
        url: format!("https://{id}:8155"),
    };
    let (a, b, c) = (replica("a"), replica("b"), replica("c"));
    for r in [&a, &b, &c] {
        db.heartbeat(r).await.expect("heartbeat");
    }
    let fresh = Duration::from_secs(20);
    db.set_tunnels(&a, "prod", 1).await.expect("a");
    db.set_tunnels(&b, "prod", 2).await.expect("b");
    db.set_tunnels(&b, "prod", 3)
        .await
        .expect("one row per agent and replica");
    // Most tunnels first; never the asking replica itself.
    assert_eq!(
        db.tunnel_holders("prod", "c", fresh)
            .await
            .expect("holders"),
        ["https://b:8155", "https://a:8155"]
    );
    assert_eq!(
        db.tunnel_holders("prod", "b", fresh)
            .await
            .expect("holders"),
        ["https://a:8155"]
    );
    assert_eq!(
        db.peers("c", fresh).await.expect("peers"),
        ["https://a:8155", "https://b:8155"],
        "every live replica but the asking one"
    );
    db.set_tunnels(&c, "dev", 2).await.expect("c");
    let mut elsewhere = db.tunnels_elsewhere("c", fresh).await.expect("elsewhere");
    elsewhere.sort();
    assert_eq!(
        elsewhere,
        [("prod".to_owned(), 4)],
        "summed over the other replicas; the asking one's own left out"
    );
    db.set_tunnels(&c, "dev", 0).await.expect("c none");
    // A replica whose heartbeat is older than the window holds nothing.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    db.heartbeat(&a).await.expect("a alive");
    assert_eq!(
        db.peers("c", Duration::from_secs(1)).await.expect("peers"),
        ["https://a:8155"]
    );
    assert_eq!(
        db.tunnel_holders("prod", "c", Duration::from_secs(1))
            .await
            .expect("holders"),
        ["https://a:8155"]
    );
    // Zero removes the row; a graceful stop removes the replica's rows.
    db.set_tunnels(&a, "prod", 0).await.expect("none");
    assert_eq!(
        db.tunnel_holders("prod", "c", fresh)
            .await
            .expect("holders"),
        ["https://b:8155"]
    );
    db.forget_replica(&b, Duration::from_secs(600))
        .await
        .expect("forget");
    assert!(
        db.tunnel_holders("prod", "c", fresh)
            .await
            .expect("holders")
            .is_empty()
    );

    // One leader per project; it renews, the others cannot take it until
    // it expires.
    let ttl = Duration::from_secs(1);
    assert!(db.lead_poll("team/config", &a, ttl).await.expect("lead"));
    assert!(!db.lead_poll("team/config", &c, ttl).await.expect("not c"));
    assert!(db.lead_poll("team/config", &a, ttl).await.expect("renewed"));
    assert!(
        db.lead_poll("team/other", &c, ttl)
            .await
            .expect("another project")
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        db.lead_poll("team/config", &c, ttl)
            .await
            .expect("taken over")
    );
    assert!(!db.lead_poll("team/config", &a, ttl).await.expect("lost"));
}

async fn webhook_secrets_are_set_replaced_removed_and_go_with_their_project(store: Shared) {
    store
        .create_project(NewProject {
            id: "team/app".into(),
            url: "/srv/git/app.git".into(),
            credentials_ref: None,
            created_at: T0,
            git_ref: None,
        })
        .await
        .expect("project");
    assert_eq!(store.webhook_secret("team/app").await.expect("read"), None);
    assert!(matches!(
        store.set_webhook_secret("team/none", "s", T0).await,
        Err(StoreError::NotFound(_))
    ));
    store
        .set_webhook_secret("team/app", "first", T0)
        .await
        .expect("set");
    store
        .set_webhook_secret("team/app", "second", T0 + 1)
        .await
        .expect("replaced");
    assert_eq!(
        store
            .webhook_secret("team/app")
            .await
            .expect("read")
            .as_deref(),
        Some("second")
    );
    store
        .delete_webhook_secret("team/app")
        .await
        .expect("removed");
    assert!(matches!(
        store.delete_webhook_secret("team/app").await,
        Err(StoreError::NotFound(_))
    ));
    store
        .set_webhook_secret("team/app", "third", T0 + 2)
        .await
        .expect("set again");
    store
        .delete_project("team/app")
        .await
        .expect("project deleted");
    assert_eq!(store.webhook_secret("team/app").await.expect("read"), None);
}

async fn status_targets_are_set_replaced_removed_and_go_with_their_project(store: Shared) {
    store
        .create_project(NewProject {
            id: "team/app".into(),
            url: "/srv/git/app.git".into(),
            credentials_ref: None,
            created_at: T0,
            git_ref: None,
        })
        .await
        .expect("project");
    let target = |provider: &str, token: &str| StatusTarget {
        provider: provider.into(),
        api_url: "https://git.example.com/api/v1".into(),
        repository: "team/app".into(),
        token: token.into(),
        created_at: T0,
    };
    assert_eq!(store.status_target("team/app").await.expect("read"), None);
    assert!(matches!(
        store
            .set_status_target("team/none", target("gitea", "t"))
            .await,
        Err(StoreError::NotFound(_))
    ));
    store
        .set_status_target("team/app", target("gitea", "first"))
        .await
        .expect("set");
    store
        .set_status_target("team/app", target("github", "second"))
        .await
        .expect("replaced");
    let stored = store.status_target("team/app").await.expect("read");
    assert_eq!(stored, Some(target("github", "second")));
    assert!(
        !format!("{stored:?}").contains("second"),
        "the token stays out of debug output"
    );
    store
        .delete_status_target("team/app")
        .await
        .expect("removed");
    assert!(matches!(
        store.delete_status_target("team/app").await,
        Err(StoreError::NotFound(_))
    ));
    store
        .set_status_target("team/app", target("gitlab", "third"))
        .await
        .expect("set again");
    store
        .delete_project("team/app")
        .await
        .expect("project deleted");
    assert_eq!(store.status_target("team/app").await.expect("read"), None);
}

async fn notification_secrets_are_set_listed_and_removed(store: Shared) {
    let secret = |name: &str, url: &str, key: Option<&str>| NotificationSecret {
        name: name.into(),
        url: url.into(),
        signing_key: key.map(str::to_owned),
        created_at: T0,
    };
    assert_eq!(store.notification_secret("ops").await.expect("read"), None);
    store
        .set_notification_secret(secret("ops", "https://hooks.example.com/a", None))
        .await
        .expect("set");
    store
        .set_notification_secret(secret("ops", "https://hooks.example.com/b", Some("k")))
        .await
        .expect("replaced");
    store
        .set_notification_secret(secret("audit", "https://audit.example.com", Some("k2")))
        .await
        .expect("another");
    let ops = store.notification_secret("ops").await.expect("read");
    assert_eq!(
        ops,
        Some(secret("ops", "https://hooks.example.com/b", Some("k")))
    );
    assert!(
        !format!("{ops:?}").contains("hooks.example.com"),
        "the URL stays out of debug output"
    );
    assert_eq!(
        store.list_notification_secrets().await.expect("list"),
        [("audit".to_owned(), T0), ("ops".to_owned(), T0)]
    );
    store
        .delete_notification_secret("ops")
        .await
        .expect("removed");
    assert!(matches!(
        store.delete_notification_secret("ops").await,
        Err(StoreError::NotFound(_))
    ));
}

/// Webhook secrets, status tokens and notification URLs are sealed before
/// they are stored: the database alone (a dump, a backup, the SQLite
/// file) does not give them, nor does another key; a value written before
/// sealing is still read.
#[tokio::test]
async fn secrets_are_sealed_at_rest_on_both_databases() {
    let key = Sealer::new(b"0123456789abcdef0123456789abcdef");
    let other = Sealer::new(b"fedcba9876543210fedcba9876543210");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kas.db");
    let sqlite = |sealer: Sealer| -> Shared {
        Arc::new(SqliteStore::open(&path).expect("opens").sealed_with(sealer))
    };
    let url = tether_testenv::shared_postgres()
        .create_database()
        .expect("a fresh database");
    let postgres = |sealer: Sealer| {
        let url = url.clone();
        async move {
            let store: Shared = Arc::new(
                PgStore::connect(&url)
                    .await
                    .expect("connects")
                    .sealed_with(sealer),
            );
            store
        }
    };
    let pairs: Vec<(&str, Shared, Shared, Shared)> = vec![
        (
            "sqlite",
            sqlite(key.clone()),
            sqlite(Sealer::none()),
            sqlite(other.clone()),
        ),
        (
            "postgres",
            postgres(key.clone()).await,
            postgres(Sealer::none()).await,
            postgres(other.clone()).await,
        ),
    ];
    for (name, sealed, bare, wrong) in pairs {
        sealed
            .create_project(NewProject {
                id: "team/app".into(),
                url: "/srv/git/app".into(),
                credentials_ref: None,
                created_at: T0,
                git_ref: None,
            })
            .await
            .expect("project");
        sealed
            .set_webhook_secret("team/app", "hook-secret-1", T0)
            .await
            .expect("webhook");
        sealed
            .set_status_target(
                "team/app",
                StatusTarget {
                    provider: "gitea".into(),
                    api_url: "https://git.example/api/v1".into(),
                    repository: "team/app".into(),
                    token: "status-token-1".into(),
                    created_at: T0,
                },
            )
            .await
            .expect("target");
        sealed
            .set_notification_secret(NotificationSecret {
                name: "ops".into(),
                url: "https://hooks.example/notify-url-1".into(),
                signing_key: Some("signing-key-1".into()),
                created_at: T0,
            })
            .await
            .expect("notification");

        sealed
            .set_registry_login(RegistryLogin {
                host: "registry.example.com".into(),
                username: "robot".into(),
                password: "registry-pass-1".into(),
                groups: vec!["team".into()],
                created_at: T0,
            })
            .await
            .expect("registry login");
        sealed
            .set_push_credential(PushCredential {
                project: "team/app".into(),
                kind: PushSecretKind::Token,
                secret: "push-token-1".into(),
                created_at: T0,
            })
            .await
            .expect("push credential");
        let login = sealed
            .registry_login("registry.example.com")
            .await
            .expect(name);
        assert_eq!(
            login.map(|l| l.password).as_deref(),
            Some("registry-pass-1")
        );
        let push = sealed.push_credential("team/app").await.expect(name);
        assert_eq!(push.map(|p| p.secret).as_deref(), Some("push-token-1"));
        for store in [&bare, &wrong] {
            assert!(
                store.registry_login("registry.example.com").await.is_err(),
                "{name}"
            );
            assert!(store.push_credential("team/app").await.is_err(), "{name}");
        }
        // The same key gives them back.
        assert_eq!(
            sealed.webhook_secret("team/app").await.expect(name),
            Some("hook-secret-1".into())
        );
        let target = sealed.status_target("team/app").await.expect(name);
        assert_eq!(target.map(|t| t.token).as_deref(), Some("status-token-1"));
        let n = sealed.notification_secret("ops").await.expect(name);
        assert_eq!(
            n.map(|n| (n.url, n.signing_key)),
            Some((
                "https://hooks.example/notify-url-1".into(),
                Some("signing-key-1".into())
            ))
        );
        // The database alone, or another key: refused, saying why.
        for store in [&bare, &wrong] {
            let e = store.webhook_secret("team/app").await.expect_err("sealed");
            assert!(e.to_string().contains("cannot be opened"), "{name}: {e}");
            assert!(store.status_target("team/app").await.is_err(), "{name}");
            assert!(store.notification_secret("ops").await.is_err(), "{name}");
        }
        // Written before sealing: read, and sealed at its next write.
        bare.set_webhook_secret("team/app", "legacy", T0)
            .await
            .expect("plain");
        assert_eq!(
            sealed.webhook_secret("team/app").await.expect(name),
            Some("legacy".into())
        );
    }
    // Nothing of the secrets is in SQLite's files.
    for file in ["kas.db", "kas.db-wal"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        for secret in [
            "hook-secret-1",
            "status-token-1",
            "notify-url-1",
            "signing-key-1",
            "registry-pass-1",
            "push-token-1",
        ] {
            assert!(!text.contains(secret), "{secret} in {file}");
        }
    }
}

async fn image_automation_keeps_logins_push_credentials_and_records(store: Shared) {
    let login = |password: &str| RegistryLogin {
        host: "ghcr.io".into(),
        username: "robot".into(),
        password: password.into(),
        groups: vec!["team-a".into(), "team-b".into()],
        created_at: T0,
    };
    store.set_registry_login(login("one")).await.expect("set");
    store
        .set_registry_login(login("two"))
        .await
        .expect("replaced");
    assert_eq!(
        store.registry_login("ghcr.io").await.expect("read"),
        Some(login("two"))
    );
    assert_eq!(
        store.list_registry_logins().await.expect("list"),
        vec![RegistryLoginInfo {
            host: "ghcr.io".into(),
            username: "robot".into(),
            groups: vec!["team-a".into(), "team-b".into()],
            created_at: T0,
        }]
    );
    let scoped = login("x");
    assert!(scoped.serves("team-a/app") && !scoped.serves("team-c/app"));
    store
        .delete_registry_login("ghcr.io")
        .await
        .expect("deleted");
    assert!(matches!(
        store.delete_registry_login("ghcr.io").await,
        Err(StoreError::NotFound(_))
    ));

    let credential = PushCredential {
        project: "team/app".into(),
        kind: PushSecretKind::SshKey,
        secret: "-----BEGIN OPENSSH PRIVATE KEY-----".into(),
        created_at: T0,
    };
    assert!(
        matches!(
            store.set_push_credential(credential.clone()).await,
            Err(StoreError::NotFound(_))
        ),
        "no such project"
    );
    store
        .create_project(NewProject {
            id: "team/app".into(),
            url: "/srv/git/app".into(),
            credentials_ref: None,
            created_at: T0,
            git_ref: None,
        })
        .await
        .expect("project");
    store
        .set_push_credential(credential.clone())
        .await
        .expect("set");
    assert_eq!(
        store.push_credential("team/app").await.expect("read"),
        Some(credential)
    );
    store.delete_project("team/app").await.expect("deleted");
    assert_eq!(store.push_credential("team/app").await.expect("read"), None);

    for (key, value) in [("tags/a", "1"), ("tags/b", "2"), ("status/a", "3")] {
        store
            .put_image_record(ImageRecord {
                key: key.into(),
                value: value.into(),
                updated_at: T0,
            })
            .await
            .expect("put");
    }
    store
        .put_image_record(ImageRecord {
            key: "tags/a".into(),
            value: "1b".into(),
            updated_at: T0 + 1,
        })
        .await
        .expect("replaced");
    let tags = store.image_records("tags/").await.expect("records");
    assert_eq!(
        tags.iter()
            .map(|r| (r.key.as_str(), r.value.as_str()))
            .collect::<Vec<_>>(),
        [("tags/a", "1b"), ("tags/b", "2")]
    );
    store.delete_image_record("tags/a").await.expect("deleted");
    assert_eq!(
        store.image_records("tags/").await.expect("records").len(),
        1
    );
    assert_eq!(store.image_records("").await.expect("records").len(), 2);
}

fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn labels_are_replaced_whole_and_read_back_wherever_the_agent_is(store: Shared) {
    let (store, agent) = store_with_agent(store).await;
    assert!(agent.labels.is_empty(), "a new agent has none");
    let token = Token::generate(TokenKind::Agent);
    store
        .create_token("prod", new_token(&token, None))
        .await
        .expect("token");

    let first = labels(&[("env", "prod"), ("region", "eu-west")]);
    let set = store
        .set_agent_labels("prod", first.clone())
        .await
        .expect("set");
    assert_eq!(set.labels, first);
    assert_eq!((set.id, set.name.as_str()), (agent.id, "prod"));

    // Replaced whole: a label left out is gone.
    let second = labels(&[("env", "staging"), ("tier", "a \"quoted\" välue")]);
    let set = store
        .set_agent_labels("prod", second.clone())
        .await
        .expect("replaced");
    assert_eq!(set.labels, second);
    let read = store.get_agent("prod").await.expect("read").expect("there");
    assert_eq!(read, set);
    assert_eq!(store.list_agents().await.expect("list"), [set]);
    match store
        .authenticate(&token.hash(), T0 + 1)
        .await
        .expect("lookup")
    {
        TokenStatus::Active { agent, .. } => assert_eq!(agent.labels, second),
        other => panic!("expected active, got {other:?}"),
    }

    let cleared = store
        .set_agent_labels("prod", Default::default())
        .await
        .expect("cleared");
    assert!(cleared.labels.is_empty());
}

async fn labels_of_an_unknown_agent_are_not_found(store: Shared) {
    let (store, _) = store_with_agent(store).await;
    let err = store
        .set_agent_labels("nobody", labels(&[("env", "prod")]))
        .await
        .expect_err("no such agent");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert!(err.to_string().contains("nobody"), "{err}");
}

fn fleet(key: &str, value: &str, at: UnixTime) -> FleetRecord {
    FleetRecord {
        key: key.into(),
        value: value.into(),
        updated_at: at,
    }
}

fn keys(records: &[FleetRecord]) -> Vec<&str> {
    records.iter().map(|r| r.key.as_str()).collect()
}

async fn fleet_records_are_put_replaced_read_listed_by_prefix_and_deleted(store: Shared) {
    for key in [
        "rollout/team/b",
        "rollout/team/a",
        "given/prod",
        "rollout0",
        "rollout",
    ] {
        store
            .put_fleet_record(fleet(key, "{}", T0))
            .await
            .expect("put");
    }
    store
        .put_fleet_record(fleet("rollout/team/a", r#"{"step":2}"#, T0 + 1))
        .await
        .expect("replaced");
    assert_eq!(
        store.fleet_record("rollout/team/a").await.expect("read"),
        Some(fleet("rollout/team/a", r#"{"step":2}"#, T0 + 1))
    );
    assert_eq!(
        store.fleet_record("rollout/none").await.expect("read"),
        None
    );

    let listed = store.fleet_records("rollout/").await.expect("listed");
    assert_eq!(
        keys(&listed),
        ["rollout/team/a", "rollout/team/b"],
        "by key"
    );
    assert_eq!(listed[0].value, r#"{"step":2}"#);
    assert_eq!(
        keys(&store.fleet_records("").await.expect("all")),
        [
            "given/prod",
            "rollout",
            "rollout/team/a",
            "rollout/team/b",
            "rollout0"
        ]
    );
    assert!(store.fleet_records("pins/").await.expect("none").is_empty());

    store
        .delete_fleet_record("rollout/team/a")
        .await
        .expect("deleted");
    store
        .delete_fleet_record("rollout/team/a")
        .await
        .expect("deleting what is gone is no error");
    assert_eq!(
        store.fleet_record("rollout/team/a").await.expect("read"),
        None
    );
    assert_eq!(
        keys(&store.fleet_records("rollout/").await.expect("listed")),
        ["rollout/team/b"]
    );
}

async fn a_fleet_prefix_is_literal_even_with_like_wildcards(store: Shared) {
    for key in [
        "pin/100%",
        "pin/100%/a",
        "pin/1000",
        "pin/a_b",
        "pin/axb",
        "pin/a_b/c",
    ] {
        store
            .put_fleet_record(fleet(key, "{}", T0))
            .await
            .expect("put");
    }
    assert_eq!(
        keys(&store.fleet_records("pin/100%").await.expect("listed")),
        ["pin/100%", "pin/100%/a"],
        "% is a percent sign, not any text"
    );
    assert_eq!(
        keys(&store.fleet_records("pin/a_").await.expect("listed")),
        ["pin/a_b", "pin/a_b/c"],
        "_ is an underscore, not any character"
    );
    let taken = store.take_fleet_records("pin/a_", 10).await.expect("taken");
    assert_eq!(keys(&taken), ["pin/a_b", "pin/a_b/c"]);
    assert!(store.fleet_record("pin/axb").await.expect("read").is_some());
}

async fn taking_fleet_records_removes_at_most_the_limit_in_key_order(store: Shared) {
    for i in [4, 1, 5, 3, 2] {
        store
            .put_fleet_record(fleet(
                &format!("control/{i}"),
                &format!("{{\"n\":{i}}}"),
                T0 + i,
            ))
            .await
            .expect("put");
    }
    store
        .put_fleet_record(fleet("controls", "{}", T0))
        .await
        .expect("put");

    let first = store
        .take_fleet_records("control/", 3)
        .await
        .expect("taken");
    assert_eq!(keys(&first), ["control/1", "control/2", "control/3"]);
    assert_eq!(first[0], fleet("control/1", r#"{"n":1}"#, T0 + 1));
    assert_eq!(
        keys(&store.fleet_records("control/").await.expect("listed")),
        ["control/4", "control/5"],
        "what was taken is gone"
    );
    assert!(
        store
            .take_fleet_records("control/", 0)
            .await
            .expect("none")
            .is_empty()
    );
    let rest = store
        .take_fleet_records("control/", 3)
        .await
        .expect("taken");
    assert_eq!(keys(&rest), ["control/4", "control/5"]);
    assert!(
        store
            .take_fleet_records("control/", 3)
            .await
            .expect("taken")
            .is_empty()
    );
    assert!(
        store
            .fleet_record("controls")
            .await
            .expect("read")
            .is_some(),
        "outside the prefix, untouched"
    );
}

/// Replicas poll the same queue of control requests: each request goes to
/// exactly one of them.
async fn concurrent_takes_never_hand_out_a_fleet_record_twice(store: Shared) {
    let all: Vec<String> = (0..40).map(|i| format!("request/{i:02}")).collect();
    for key in &all {
        store
            .put_fleet_record(fleet(key, "{}", T0))
            .await
            .expect("put");
    }
    let takers = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let taken = store
                    .take_fleet_records("request/", 3)
                    .await
                    .expect("taken");
                if taken.is_empty() {
                    return mine;
                }
                mine.extend(taken.into_iter().map(|r| r.key));
            }
        })
    });
    let mut handed_out = Vec::new();
    for taker in takers.collect::<Vec<_>>() {
        handed_out.extend(taker.await.expect("taker"));
    }
    handed_out.sort();
    assert_eq!(handed_out, all, "every request once, none twice");
}

async fn project_syncs_give_each_agents_newest_entry_of_that_project(store: Shared) {
    let (store, _) = store_with_agent(store).await;
    for name in ["dev", "idle"] {
        store
            .create_agent(name, "team/config", T0)
            .await
            .expect("agent");
    }
    assert!(
        store
            .project_syncs("team/app")
            .await
            .expect("none yet")
            .is_empty()
    );
    for (agent, record) in [
        ("prod", sync("team/app", "c1", "synced", T0)),
        ("dev", sync("team/app", "c1", "synced", T0 + 1)),
        ("prod", sync("team/app", "c2", "failed", T0 + 2)),
        ("dev", sync("team/app", "c2", "synced", T0 + 3)),
        ("dev", sync("team/app", "c3", "synced", T0 + 4)),
        ("prod", sync("team/other", "x9", "synced", T0 + 5)),
        ("idle", sync("team/other", "x9", "synced", T0 + 6)),
    ] {
        store.record_sync(agent, record, 50).await.expect("record");
    }
    let syncs = store.project_syncs("team/app").await.expect("syncs");
    assert_eq!(
        syncs,
        [
            ("dev".to_owned(), sync("team/app", "c3", "synced", T0 + 4)),
            ("prod".to_owned(), sync("team/app", "c2", "failed", T0 + 2)),
        ],
        "by agent name, the newest entry each; other projects ignored"
    );
    assert!(
        store
            .project_syncs("team/none")
            .await
            .expect("unknown project")
            .is_empty()
    );
}

async fn signature_policies_and_verification_status_are_kept_and_told_once(store: Shared) {
    let (store, _) = store_with_agent(store).await;
    let policy = VerifyPolicy {
        mode: VerifyMode::Strict,
        ssh_allowed_signers: Some("alice@example.com ssh-ed25519 AAAA\n".into()),
        gpg_keys: None,
        trust_base: Some("a".repeat(40)),
        set_at: T0,
    };
    let set = store
        .set_project_verify("team/config", Some(policy.clone()))
        .await
        .expect("set");
    assert_eq!(set.verify.as_ref(), Some(&policy));
    assert_eq!(set.verification, VerifyStatus::default());
    let refused = VerifyStatus {
        verified: Some("b".repeat(40)),
        signer: Some("ssh alice@example.com SHA256:x".into()),
        refused: Some(Refusal {
            commit: "c".repeat(40),
            reason: "not signed".into(),
            at: T0,
        }),
    };
    assert!(
        store
            .record_verification("team/config", &refused)
            .await
            .expect("record"),
        "a new status is told"
    );
    assert!(
        !store
            .record_verification("team/config", &refused)
            .await
            .expect("record"),
        "the same status again (another replica's) is not"
    );
    // Rotating keys forgets what the old keys verified.
    let rotated = VerifyPolicy {
        gpg_keys: Some("-----BEGIN PGP PUBLIC KEY BLOCK-----".into()),
        ..policy
    };
    let read = store
        .set_project_verify("team/config", Some(rotated.clone()))
        .await
        .expect("rotate");
    assert_eq!(read.verify, Some(rotated));
    assert_eq!(read.verification, VerifyStatus::default());
    // Off forgets both.
    let off = store
        .set_project_verify("team/config", None)
        .await
        .expect("off");
    assert_eq!(off.verify, None);
    assert_eq!(off.verification, VerifyStatus::default());
    assert!(store.set_project_verify("team/none", None).await.is_err());
}
