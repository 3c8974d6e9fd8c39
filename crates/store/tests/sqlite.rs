//! The embedded store keeps kas's records as the REST API promises.

use tether_credentials::{Token, TokenKind};
use tether_store::*;

const T0: UnixTime = 1_800_000_000;

async fn store_with_agent() -> (SqliteStore, Agent) {
    let store = SqliteStore::open_in_memory().expect("opens");
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

#[tokio::test]
async fn an_active_token_authenticates_its_agent() {
    let (store, agent) = store_with_agent().await;
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

#[tokio::test]
async fn revoked_and_expired_tokens_say_why_they_are_refused() {
    let (store, _) = store_with_agent().await;
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

#[tokio::test]
async fn names_are_unique_and_validated() {
    let (store, _) = store_with_agent().await;
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

#[tokio::test]
async fn a_project_in_use_cannot_be_deleted_and_agents_take_their_tokens_along() {
    let (store, _) = store_with_agent().await;
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

#[tokio::test]
async fn a_token_that_expires_before_it_exists_is_refused() {
    let (store, _) = store_with_agent().await;
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
    assert_eq!(store.schema_version().await.expect("version"), 4);
    assert_eq!(store.list_agents().await.expect("agents").len(), 1);
    let project = store.get_project("p").await.expect("get").expect("present");
    assert_eq!(project.credentials_ref.as_deref(), Some("deploy-key"));
    assert_eq!(project.git_ref.as_deref(), Some("release"));
    assert!(matches!(
        store.authenticate(&token.hash(), T0).await.expect("lookup"),
        TokenStatus::Active { .. }
    ));
}

#[tokio::test]
async fn manifest_grants_are_recorded_listed_revoked_and_go_with_their_agent() {
    let store = SqliteStore::open_in_memory().expect("store");
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
