//! The REST API, driven through its router with a real (in-memory) store.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use kas::api::{ApiState, router};
use serde_json::{Value, json};
use tether_channel::ChannelState;
use tether_channel::repos::{DEFAULT_POLL_INTERVAL, Repos};
use tether_credentials::{Token, TokenKind};
use tether_store::{SqliteStore, Store, TokenStatus};
use tower::ServiceExt;

struct Api {
    router: axum::Router,
    /// Kept: dropping it starts the drain.
    _running: tether_runtime::shutdown::ShutdownTrigger,
    store: Arc<SqliteStore>,
    admin: Token,
}

impl Api {
    async fn new() -> Self {
        let store = Arc::new(SqliteStore::open_in_memory().expect("store"));
        let admin = Token::generate(TokenKind::Admin);
        let channel = ChannelState::default();
        let (running, drain) = tether_runtime::Drain::manual();
        let proxy = Arc::new(kas::proxy::over(
            channel.tunnels.clone(),
            channel.configs.clone(),
            store.clone(),
            "https://kas.example.com:8154/k8s-proxy".into(),
            Default::default(),
            drain.signal(),
        ));
        let repos = Repos::new(
            store.clone(),
            std::env::temp_dir().join("tether-api-test-mirrors"),
            DEFAULT_POLL_INTERVAL,
            Default::default(),
            drain.clone(),
        );
        let router = router(ApiState {
            changes: kas::changes::Changes::new(
                channel.live(),
                channel.control(),
                proxy.clone(),
                store.clone(),
            ),
            proxy,
            store: store.clone(),
            admin: kas::admin_token::AdminAuth::start(
                store.clone(),
                &std::env::temp_dir().join(format!(
                    "tether-api-test-admin-token-{}",
                    &admin.hash().to_hex()[..12]
                )),
                &admin,
            )
            .await
            .expect("the admin token recorded"),
            ui_sessions: kas::ui::session::Sessions::new(b"a key for the tests' UI sessions"),
            live: channel.live(),
            configs: channel.configs.clone(),
            tunnels: channel.tunnels.clone(),
            plans: channel.plans.clone(),
            agent_external_address: "grpcs://kas.example.com:443".into(),
            repos: repos.clone(),
            drain,
            renderer: Err("no renderer in these tests".into()),
            router: None,
            webhook_limiter: Default::default(),
            metrics: Default::default(),
            webhook_sources: std::sync::Arc::new(tether_webhooks::Limiter::per_source()),
            images: std::sync::Arc::new(tether_images::service::Service::new(
                store.clone(),
                std::sync::Arc::new(tether_channel::followed::Followed::new(
                    store.clone(),
                    repos,
                )),
                tether_images::registry::Registries::new(Default::default()),
                tether_images::service::Settings {
                    interval: tether_images::service::DEFAULT_SCAN_INTERVAL,
                    work: std::env::temp_dir().join("tether-api-test-image-updates"),
                    git_timeout: std::time::Duration::from_secs(10),
                },
            )),
            registry_hook_secret: None,
            fleet: tether_rollouts::Fleet::new(store.clone()),
            trace_url: None,
        });
        Api {
            router,
            _running: running,
            store,
            admin,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let auth = format!("Bearer {}", self.admin.expose_secret());
        self.call_as(method, path, body, Some(&auth)).await
    }

    async fn call_as(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        auth: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .expect("valid request");
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }
}

#[tokio::test]
async fn every_route_requires_the_admin_token() {
    let api = Api::new().await;
    let agent_token = Token::generate(TokenKind::Agent);
    let other_admin = Token::generate(TokenKind::Admin);
    for auth in [
        None,
        Some("Bearer nonsense".to_owned()),
        Some(format!("Bearer {}", agent_token.expose_secret())),
        Some(format!("Bearer {}", other_admin.expose_secret())),
        Some(format!("Basic {}", api.admin.expose_secret())),
    ] {
        let (status, body) = api
            .call_as(Method::GET, "/api/v1/agents", None, auth.as_deref())
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("admin token"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn projects_agents_and_tokens_through_their_lifecycle() {
    let api = Api::new().await;
    let (status, project) = api
        .call(
            Method::POST,
            "/api/v1/projects",
            Some(json!({ "id": "team/config", "url": "/srv/git/config.git" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    assert_eq!(project["id"], "team/config");
    let (status, shown) = api
        .call(Method::GET, "/api/v1/projects/team%2Fconfig", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown, project);

    let (status, agent) = api
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(json!({ "name": "prod", "config_project": "team/config" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    assert_eq!(agent["config_path"], ".gitlab/agents/prod/config.yaml");
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(json!({ "name": "prod", "config_project": "team/config" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, err) = api
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(json!({ "name": "Prod_1", "config_project": "team/config" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        err["error"].as_str().unwrap_or_default().contains("Prod_1"),
        "{err}"
    );

    let (status, created) = api
        .call(
            Method::POST,
            "/api/v1/agents/prod/tokens",
            Some(json!({ "name": "ci", "description": "pipeline", "expires_at": "2099-01-01T00:00:00Z" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["token"]
        .as_str()
        .expect("token shown once")
        .to_owned();
    let token = Token::parse_kind(&secret, TokenKind::Agent).expect("an agent token");
    assert_eq!(created["expires_at"], "2099-01-01T00:00:00Z");
    let install = created["install_command"]
        .as_str()
        .expect("install command");
    assert!(
        install.starts_with(
            "agentk generate --agent-token-file=agent-token --kas-address=grpcs://kas.example.com:443"
        ),
        "{install}"
    );
    assert!(
        !install.contains(&secret),
        "the token stays off the command line"
    );

    let (status, listed) = api
        .call(Method::GET, "/api/v1/agents/prod/tokens", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert!(
        !listed.to_string().contains(&secret),
        "listing leaks the token: {listed}"
    );
    assert!(listed[0].get("token").is_none());

    let id = created["id"].as_i64().expect("id");
    let (status, revoked) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/agents/prod/tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let status_now = api
        .store
        .authenticate(&token.hash(), i64::MAX - 1)
        .await
        .expect("lookup");
    assert!(
        matches!(status_now, TokenStatus::Revoked { .. }),
        "{status_now:?}"
    );

    let (status, err) = api
        .call(Method::DELETE, "/api/v1/projects/team%2Fconfig", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    let (status, _) = api.call(Method::DELETE, "/api/v1/agents/prod", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.call(Method::GET, "/api/v1/agents/prod", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .call(Method::DELETE, "/api/v1/projects/team%2Fconfig", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn bad_bodies_are_refused_with_a_reason() {
    let api = Api::new().await;
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/projects",
            Some(json!({ "id": "x", "url": "/x", "colour": "blue" })),
        )
        .await;
    assert!(
        status.is_client_error(),
        "unknown fields are refused, got {status}"
    );
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/projects",
            Some(json!({ "id": "../etc", "url": "/x" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    api.call(
        Method::POST,
        "/api/v1/projects",
        Some(json!({ "id": "p", "url": "/p" })),
    )
    .await;
    api.call(
        Method::POST,
        "/api/v1/agents",
        Some(json!({ "name": "a", "config_project": "p" })),
    )
    .await;
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/agents/a/tokens",
            Some(json!({ "name": "t", "expires_at": "soon" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("RFC 3339"),
        "{body}"
    );
}

/// Every operation openapi.yaml documents reaches a handler, and a method it
/// does not document on a documented path is refused by the router.
#[tokio::test]
async fn refresh_answers_with_the_commit_or_says_what_is_wrong() {
    let api = Api::new().await;
    let (status, _) = api
        .call(Method::POST, "/api/v1/projects/team%2Fnone/refresh", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let missing = "/nonexistent/tether/repo";
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/projects",
            Some(json!({ "id": "team/gone", "url": missing })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = api
        .call(Method::POST, "/api/v1/projects/team%2Fgone/refresh", None)
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains(missing),
        "{body}"
    );

    let repo = tempfile::tempdir().expect("tempdir");
    let git = |args: &[&str]| tether_testenv::git::git(repo.path(), args);
    git(&["init", "-q", "-b", "main"]);
    git(&["commit", "-q", "--allow-empty", "-m", "first"]);
    let head = git(&["rev-parse", "HEAD"]);
    let url = repo.path().to_str().expect("utf-8");
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/projects",
            Some(json!({ "id": "team/here", "url": url, "ref": "main" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = api
        .call(Method::POST, "/api/v1/projects/team%2Fhere/refresh", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "project": "team/here", "commit": head }));
}

#[tokio::test]
async fn a_rotated_admin_token_ends_the_old_one() {
    let mut api = Api::new().await;
    let (status, body) = api.call(Method::POST, "/api/v1/admin/token", None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = api.call(Method::GET, "/api/v1/projects", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old token is over");
    api.admin = Token::parse_kind(body["token"].as_str().expect("a token"), TokenKind::Admin)
        .expect("an admin token");
    let (status, _) = api.call(Method::GET, "/api/v1/projects", None).await;
    assert_eq!(status, StatusCode::OK, "the new one works");
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
        .expect("openapi.yaml");
    let doc: Value = serde_saphyr::from_str(&text).expect("openapi.yaml parses");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 6, "documented paths: {}", paths.len());
    let mut api = Api::new().await;
    for (template, item) in paths {
        let path = template
            .replace("{id}", "1")
            .replace("{token_id}", "1")
            .replace("{name}", "no-such-agent")
            .replace("{project}", "team%2Fnone")
            .replace("{action}", "pause");
        let documented: Vec<String> = item
            .as_object()
            .expect("path item")
            .keys()
            .filter(|k| *k != "parameters")
            .map(|k| k.to_uppercase())
            .collect();
        for method in ["GET", "POST", "DELETE", "PUT", "PATCH"] {
            let body = (method == "POST").then(|| json!({}));
            let (status, body) = api
                .call(
                    Method::from_bytes(method.as_bytes()).expect("method"),
                    &path,
                    body,
                )
                .await;
            // Rotating the admin token ends the old one: go on with the new.
            if let Some(token) = body["token"].as_str()
                && template == "/api/v1/admin/token"
            {
                api.admin = Token::parse_kind(token, TokenKind::Admin).expect("a new admin token");
            }
            let routed = status != StatusCode::METHOD_NOT_ALLOWED
                && !(status == StatusCode::NOT_FOUND && body.is_null());
            let is_documented = documented.iter().any(|m| m == method);
            assert_eq!(
                routed, is_documented,
                "{method} {template}: status {status}, body {body}"
            );
        }
    }
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

impl Api {
    /// A delivery as a git host sends it: no admin token, its own headers.
    async fn deliver(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        self.deliver_from("192.0.2.1:40000", path, headers, body)
            .await
    }

    /// A delivery from `peer`, as the listener tells it to the router.
    async fn deliver_from(
        &self,
        peer: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let peer: std::net::SocketAddr = peer.parse().expect("an address");
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .extension(axum::extract::ConnectInfo(peer));
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let res = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body)).expect("request"))
            .await
            .expect("infallible");
        let status = res.status();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

#[tokio::test]
async fn webhook_deliveries_are_checked_filtered_and_bounded() {
    let api = Api::new().await;
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/projects",
            Some(json!({ "id": "team/app", "url": "/srv/git/app.git" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let hook = "/api/v1/projects/team%2Fapp/hooks/github";
    let push = br#"{"ref":"refs/heads/main","after":"0123"}"#.to_vec();
    // No secret yet: nothing is accepted, and the answer is the same as
    // for a project that does not exist.
    let (status, unset) = api.deliver(hook, &[], push.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{unset}");
    let (status, unknown) = api
        .deliver(
            "/api/v1/projects/team%2Fnone/hooks/github",
            &[],
            push.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        unset["error"].as_str().map(|e| e.replace("team/app", "X")),
        unknown["error"]
            .as_str()
            .map(|e| e.replace("team/none", "X"))
    );

    // Created once, by the admin only.
    let (status, _) = api
        .call_as(
            Method::POST,
            "/api/v1/projects/team%2Fapp/webhook",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, created) = api
        .call(Method::POST, "/api/v1/projects/team%2Fapp/webhook", None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert_eq!(secret.len(), 64);
    assert_eq!(created["paths"]["github"], hook);

    let signed = |body: &[u8], event: &str| {
        vec![
            ("x-github-event", event.to_owned()),
            ("x-hub-signature-256", github_signature(&secret, body)),
        ]
    };
    let (status, answer) = api
        .deliver(hook, &signed(&push, "push"), push.clone())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(
        answer,
        json!({ "outcome": "refresh", "detail": "refs/heads/main" })
    );
    let (status, answer) = api
        .deliver(hook, &signed(b"{}", "ping"), b"{}".to_vec())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(answer["outcome"], "ignored");
    let pull = br#"{"ref":"refs/pull/7/head"}"#.to_vec();
    let (_, answer) = api
        .deliver(hook, &signed(&pull, "push"), pull.clone())
        .await;
    assert_eq!(answer["outcome"], "ignored", "{answer}");

    // Forged, unsigned, signed with another secret, another body.
    let forged = vec![
        ("x-github-event", "push".to_owned()),
        ("x-hub-signature-256", github_signature("guess", &push)),
    ];
    let (status, answer) = api.deliver(hook, &forged, push.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(!answer.to_string().contains(&secret));
    let (status, _) = api
        .deliver(hook, &[("x-github-event", "push".to_owned())], push.clone())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = api
        .deliver(hook, &signed(&push, "push"), pull.clone())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // GitLab's token, in its own header.
    let (status, answer) = api
        .deliver(
            "/api/v1/projects/team%2Fapp/hooks/gitlab",
            &[
                ("x-gitlab-event", "Push Hook".to_owned()),
                ("x-gitlab-token", secret.clone()),
            ],
            push.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let (status, _) = api
        .deliver("/api/v1/projects/team%2Fapp/hooks/svn", &[], push.clone())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "an unknown provider");

    // A body over the bound is refused unread.
    let huge = vec![b' '; 3 * 1024 * 1024 + 1];
    let (status, _) = api
        .deliver(hook, &signed(&huge, "push"), huge.clone())
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // A stranger's unsigned flood is cut at its source's budget and never
    // spends the project's: the git host's next signed delivery passes.
    let mut from_stranger = std::collections::BTreeMap::new();
    for _ in 0..200 {
        let (status, _) = api
            .deliver_from(
                "198.51.100.9:50000",
                hook,
                &[("x-github-event", "push".to_owned())],
                b"{}".to_vec(),
            )
            .await;
        *from_stranger.entry(status.as_u16()).or_insert(0) += 1;
    }
    assert!(
        from_stranger.get(&429).copied().unwrap_or(0) >= 100,
        "the source's budget: {from_stranger:?}"
    );
    let (status, _) = api
        .deliver(hook, &signed(b"{}", "ping"), b"{}".to_vec())
        .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "the project's budget is untouched"
    );

    // A flood of signed deliveries is cut at the project's burst (20).
    let mut limited = 0;
    for _ in 0..40 {
        let (status, _) = api
            .deliver(hook, &signed(b"{}", "ping"), b"{}".to_vec())
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
        }
    }
    assert!(limited >= 15, "{limited} of 30 refused");

    // Removed: deliveries are refused again.
    let (status, _) = api
        .call(Method::DELETE, "/api/v1/projects/team%2Fapp/webhook", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api
        .call(Method::DELETE, "/api/v1/projects/team%2Fapp/webhook", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
