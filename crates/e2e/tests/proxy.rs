//! Cluster access through kas: the real kubectl, pointed at kas's
//! Kubernetes API proxy by a kubeconfig `kas kubeconfig` wrote, reaches the
//! real cluster through agentk's tunnels, as the identity the agent's config
//! file names; RBAC is the real API server's.

use tether_e2e as support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use support::{Setup, commit, kubectl, last_line, new_repo, wait};

const ISSUER: &str = "https://ci.tether.test";
const URL_ISSUER: &str = "https://ci2.tether.test";
const AUDIENCE: &str = "tether-kas";

fn config(ns: &str) -> String {
    format!(
        r#"ci_access:
  projects:
    - id: team/app
      default_namespace: {ns}
      access_as: {{ ci_job: {{}} }}
    - id: team/deployer
      access_as:
        impersonate: {{ username: tether-test-deployer, groups: [tether-test-deployers] }}
    - id: team/admin
  groups:
    - id: ci
      environments: [production]
      protected_branches_only: true
      access_as: {{ ci_job: {{}} }}
user_access:
  access_as: {{ user: {{}} }}
  projects: [{{ id: team/config }}]
"#
    )
}

/// An ES256 signing key and its JWKS.
struct Signer {
    key: EcdsaKeyPair,
    jwks: String,
}

impl Signer {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("key");
        let point = key.public_key().as_ref();
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]})
        .to_string();
        Signer { key, jwks }
    }

    fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": "k1"});
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), signed.as_bytes())
            .expect("signs");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// GitLab CI's claims for a job of `project`.
fn job_claims(issuer: &str, project: &str, environment: &str, job: u64) -> Value {
    let now = unix_now();
    json!({
        "iss": issuer, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 300,
        "project_path": project, "job_id": job, "ref": "main", "ref_protected": "true",
        "environment": environment, "user_login": "bob",
    })
}

/// Serves `body` at any path over plain HTTP, as an issuer's JWKS endpoint.
fn serve_jwks(body: String) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// Runs kubectl; its exit status, stdout and stderr.
fn run(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = kubectl(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let (ok, out, err) = run(kubeconfig, args);
    assert!(ok, "kubectl {args:?} through kas failed: {err}");
    out
}

/// A raw request to the proxy: status, body, and how long it took.
async fn proxy_get(setup: &Setup, bearer: &str, path: &str) -> (u16, String, Duration) {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let ca = std::fs::read(setup.dir.path().join("kas/agent-ca.crt")).expect("CA");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.expect("PEM")).expect("CA");
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<Bytes>>(connector);
    let request = http::Request::get(format!("https://{}/k8s-proxy{path}", setup.proxy))
        .header("authorization", format!("Bearer {bearer}"))
        .body(Empty::new())
        .expect("request");
    let started = Instant::now();
    let response = client.request(request).await.expect("proxy answers");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        started.elapsed(),
    )
}

/// Watches of `resource` in namespaces open at the API server now.
fn open_watches(resource: &str) -> u64 {
    let metrics = tether_testenv::shared().kubectl_ok(&["get", "--raw", "/metrics"]);
    metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_longrunning_requests{"))
        .filter(|l| {
            l.contains(&format!("resource=\"{resource}\""))
                && l.contains("scope=\"namespace\"")
                && l.contains("verb=\"WATCH\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// One agent `prod` in a namespace of its own, with the config, RBAC,
/// projects, users, tokens and OIDC issuers every test of the proxy's
/// behaviours below starts from: each test has its own.
struct World {
    setup: Setup,
    agentk: Option<support::Proc>,
    ns: String,
    other: String,
    work: tempfile::TempDir,
    signer: Signer,
    url_signer: Signer,
    /// Project access tokens of team/app, team/deployer, team/admin and
    /// team/other.
    app: String,
    deployer: String,
    admin: String,
    other_project: String,
    /// Personal access tokens: alice is a member of team, mallory of
    /// nothing the agent serves.
    alice: String,
    alice_token_id: String,
    mallory: String,
    _namespaces: (tether_testenv::TestNamespace, tether_testenv::TestNamespace),
}

impl World {
    async fn start(name: &str) -> World {
        let cluster = tether_testenv::shared();
        let ns_guard = cluster.namespace(name).await.expect("namespace");
        let other_guard = cluster
            .namespace(&format!("{name}-other"))
            .await
            .expect("namespace");
        let (ns, other) = (ns_guard.name().to_owned(), other_guard.name().to_owned());

        // RBAC in the cluster: the impersonated deployer may read
        // ConfigMaps in `ns` only; CI jobs of team/app (a group kas maps
        // them to) may edit it.
        let rbac = format!(
            r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: cm-reader, namespace: {ns}}}
rules: [{{apiGroups: [""], resources: [configmaps], verbs: [get, list, watch]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: deployer-reads, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-reader}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: tether-test-deployer}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: app-ci-edits, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "tether:project:team/app"}}]
"#
        );
        let work = tempfile::tempdir().expect("tempdir");
        let rbac_file = work.path().join("rbac.yaml");
        std::fs::write(&rbac_file, rbac).expect("write");
        cluster.kubectl_ok(&["apply", "-f", rbac_file.to_str().expect("utf-8")]);

        let signer = Signer::new();
        let url_signer = Signer::new();
        let jwks_file = work.path().join("jwks.json");
        std::fs::write(&jwks_file, &signer.jwks).expect("write");
        let jwks_url = serve_jwks(url_signer.jwks.clone());
        let settings = work.path().join("kas.yaml");
        std::fs::write(
            &settings,
            format!(
                "oidc_issuers:\n  - {{issuer: {ISSUER}, audience: {AUDIENCE}, jwks_file: {}, projects: ['ci/*', 'team/*']}}\n  - {{issuer: {URL_ISSUER}, audience: {AUDIENCE}, jwks_url: 'http://{jwks_url}/jwks', projects: ['ci/*']}}\n",
                jwks_file.display()
            ),
        )
        .expect("write");

        let mut setup = Setup::start_with(&["--config", settings.to_str().expect("utf-8")]);
        setup.pod_namespace = ns.clone();
        let repo = setup.dir.path().join("repo");
        new_repo(&repo);
        commit(
            &repo,
            &[(".gitlab/agents/prod/config.yaml", Some(&config(&ns)))],
        );
        let agent_token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
        for project in ["team/app", "team/deployer", "team/admin", "team/other"] {
            setup
                .cli(&["project", "add", project, "--url", "/srv/git/none"])
                .expect("project");
        }
        let project_token = |project: &str| {
            last_line(setup.cli(&["project", "token", "create", project, "--name", "ci"]))
        };
        let (app, deployer, admin, other_project) = (
            project_token("team/app"),
            project_token("team/deployer"),
            project_token("team/admin"),
            project_token("team/other"),
        );
        setup
            .cli(&["user", "create", "alice", "--member-of", "team"])
            .expect("user");
        setup
            .cli(&["user", "create", "mallory", "--member-of", "elsewhere"])
            .expect("user");
        let alice_created = setup
            .cli(&["user", "token", "create", "alice", "--name", "laptop"])
            .expect("alice's token");
        let alice_token_id = alice_created
            .split_whitespace()
            .nth(1)
            .expect("token <id> created")
            .to_owned();
        let alice = last_line(Some(alice_created));
        let mallory = last_line(setup.cli(&["user", "token", "create", "mallory", "--name", "x"]));

        let agentk = setup.agentk(&agent_token);
        setup.wait_for_tunnels();
        World {
            setup,
            agentk: Some(agentk),
            ns,
            other,
            work,
            signer,
            url_signer,
            app,
            deployer,
            admin,
            other_project,
            alice,
            alice_token_id,
            mallory,
            _namespaces: (ns_guard, other_guard),
        }
    }

    fn kubeconfig(&self, token: &str, name: &str) -> PathBuf {
        self.setup.kubeconfig_for(token, name)
    }
}

const NAMESPACES: &str = "/api/v1/namespaces";

#[tokio::test(flavor = "multi_thread")]
async fn the_agents_own_identity_and_a_ci_job_reach_the_cluster_as_the_config_says() {
    let world = World::start("e2e-proxy-ci").await;
    let cluster = tether_testenv::shared();
    let ns = &world.ns;

    // The agent's own identity (team/admin: access_as agent, the default).
    let admin_kc = world.kubeconfig(&world.admin, "admin");
    let namespaces = run_ok(&admin_kc, &["get", "ns", "-o", "name"]);
    assert!(
        namespaces.contains(&format!("namespace/{ns}")),
        "{namespaces}"
    );

    // ci_job: server-side apply into the context's default namespace,
    // allowed by the RoleBinding to the job's project group.
    let app_kc = world.kubeconfig(&world.app, "app");
    let kc_text = std::fs::read_to_string(&app_kc).expect("kubeconfig");
    assert!(kc_text.contains("team/config:prod"), "{kc_text}");
    assert!(kc_text.contains(&format!("namespace: {ns}")), "{kc_text}");
    let manifest = world.work.path().join("cm.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-ci}\ndata: {via: kas}\n",
    )
    .expect("write");
    run_ok(
        &app_kc,
        &[
            "apply",
            "--server-side",
            "-f",
            manifest.to_str().expect("utf-8"),
        ],
    );
    let cm = cluster
        .get_json(&["configmap", "from-ci", "-n", ns])
        .expect("applied through kas");
    assert_eq!(cm["data"]["via"], "kas");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_sees_the_job_not_the_identity_the_client_asks_for() {
    let world = World::start("e2e-proxy-whoami").await;
    let app_kc = world.kubeconfig(&world.app, "app");
    let whoami: Value = serde_json::from_str(&run_ok(
        &app_kc,
        &[
            "auth",
            "whoami",
            "-o",
            "json",
            "--as",
            "system:admin",
            "--as-group",
            "system:masters",
        ],
    ))
    .expect("JSON");
    let user = &whoami["status"]["userInfo"];
    assert!(
        user["username"]
            .as_str()
            .is_some_and(|u| u.starts_with("tether:ci_job:project-token-")),
        "{whoami}"
    );
    let groups = user["groups"].to_string();
    assert!(groups.contains("tether:project:team/app"), "{groups}");
    assert!(!groups.contains("system:masters"), "{groups}");
    assert_eq!(
        user["extra"]["tether.dev/agent"],
        json!(["prod"]),
        "{whoami}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_impersonated_identity_reaches_only_what_its_role_allows() {
    let world = World::start("e2e-proxy-impersonate").await;
    let deployer_kc = world.kubeconfig(&world.deployer, "deployer");
    run_ok(&deployer_kc, &["get", "configmaps", "-n", &world.ns]);
    let (ok, _, err) = run(&deployer_kc, &["get", "configmaps", "-n", &world.other]);
    assert!(!ok);
    assert!(
        err.contains("forbidden") && err.contains("User \"tether-test-deployer\""),
        "{err}"
    );
    let (ok, _, err) = run(
        &deployer_kc,
        &[
            "get",
            "configmaps",
            "-n",
            &world.other,
            "--as",
            "system:admin",
        ],
    );
    assert!(
        !ok && err.contains("tether-test-deployer"),
        "impersonation header not stripped: {err}"
    );
    // The API server's 403s, forwarded, are counted as the CI caller's.
    assert!(
        world
            .setup
            .metric("tether_kas_proxy_requests_total{caller=\"ci\",code=\"403\",route=\"local\"}")
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_runs_as_themself_and_a_revoked_token_stops_at_once() {
    let world = World::start("e2e-proxy-user").await;
    let alice_kc = world.kubeconfig(&world.alice, "alice");
    let whoami: Value =
        serde_json::from_str(&run_ok(&alice_kc, &["auth", "whoami", "-o", "json"])).expect("JSON");
    assert_eq!(
        whoami["status"]["userInfo"]["username"],
        "tether:user:alice"
    );
    // Revoked, the token stops working at once, although kas had just
    // admitted it.
    world
        .setup
        .cli(&["user", "token", "revoke", "alice", &world.alice_token_id])
        .expect("revoke");
    let (ok, _, err) = run(&alice_kc, &["auth", "whoami"]);
    assert!(
        !ok && err.contains("personal access token was revoked"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_sees_later_events_and_ends_upstream_when_its_client_leaves() {
    let world = World::start("e2e-proxy-watch").await;
    let (setup, ns) = (&world.setup, &world.ns);
    let cluster = tether_testenv::shared();
    let admin_kc = world.kubeconfig(&world.admin, "admin");
    // An event after the watch started reaches kubectl.
    let proxied_before = setup.metric("tether_kas_proxy_requests_total");
    let mut watch = kubectl(&admin_kc)
        .args(["get", "pods", "-n", ns, "-w", "--watch-only", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl watch");
    let watch_out = watch.stdout.take().expect("stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(watch_out)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    // kubectl lists, then watches from the list's version; kas counts a
    // request once its response has started, so the second is the watch.
    wait("the watch to be proxied", Duration::from_secs(20), || {
        setup.metric("tether_kas_proxy_requests_total") >= proxied_before + 2.0
    });
    cluster.kubectl_ok(&[
        "run",
        "watched",
        "-n",
        ns,
        "--image=nginx",
        "--restart=Never",
    ]);
    let line = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("the watch saw the new pod");
    assert_eq!(line, "pod/watched");
    let _ = watch.kill();
    let _ = watch.wait();

    // A client that goes away ends the upstream watch within 1 s.
    let before = open_watches("limitranges");
    let mut watch = kubectl(&admin_kc)
        .args(["get", "limitranges", "-n", ns, "-w"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl watch");
    wait(
        "the API server to hold the watch",
        Duration::from_secs(20),
        || open_watches("limitranges") > before,
    );
    let _ = watch.kill();
    let _ = watch.wait();
    let killed = Instant::now();
    while open_watches("limitranges") > before {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "the API server still holds the watch {:?} after the client left",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_name_what_is_missing() {
    let world = World::start("e2e-proxy-refusals").await;
    let setup = &world.setup;
    let (status, body, _) = proxy_get(
        setup,
        &format!("ci:prod:{}", world.other_project),
        NAMESPACES,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("project team/other may not use agent prod"),
        "{body}"
    );
    let (status, body, _) =
        proxy_get(setup, &format!("pat:prod:{}", world.mallory), NAMESPACES).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("member of no project or group"), "{body}");
    let (status, body, _) = proxy_get(setup, "pat:prod:tthr_user_nonsense", NAMESPACES).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, _) = proxy_get(
        setup,
        &format!("ci:nosuchagent:{}", world.admin),
        NAMESPACES,
    )
    .await;
    assert_eq!(status, 404);
    // Each is counted as the proxy answered it.
    assert!(setup.metric("tether_kas_proxy_requests_total{code=\"403\",route=\"local\"}") >= 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_id_tokens_run_as_the_job_and_bad_ones_are_refused() {
    let world = World::start("e2e-proxy-oidc").await;
    let (setup, signer, url_signer) = (&world.setup, &world.signer, &world.url_signer);
    let good = signer.sign(&job_claims(ISSUER, "ci/pipeline", "production", 4242));
    let oidc_kc = world.kubeconfig(&good, "oidc");
    let whoami: Value =
        serde_json::from_str(&run_ok(&oidc_kc, &["auth", "whoami", "-o", "json"])).expect("JSON");
    assert_eq!(
        whoami["status"]["userInfo"]["username"],
        "tether:ci_job:4242"
    );
    let from_url = url_signer.sign(&job_claims(URL_ISSUER, "ci/pipeline", "production", 7));
    // Discovery is open to every authenticated user: 200 means the token
    // was accepted with keys fetched from jwks_url.
    let (status, body, _) = proxy_get(setup, &format!("ci:prod:{from_url}"), "/version").await;
    assert_eq!(status, 200, "keys fetched from jwks_url: {body}");
    assert!(body.contains("gitVersion"), "{body}");
    // The second issuer speaks for ci/* only: its token for a team project
    // never matches the ci_access entries meant for the first issuer's jobs.
    let crossing = url_signer.sign(&job_claims(URL_ISSUER, "team/app", "production", 8));
    let (status, body, _) = proxy_get(setup, &format!("ci:prod:{crossing}"), "/version").await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("does not speak for project team/app"),
        "{body}"
    );
    let staging = signer.sign(&job_claims(ISSUER, "ci/pipeline", "staging", 1));
    let (status, body, _) = proxy_get(setup, &format!("ci:prod:{staging}"), NAMESPACES).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("environments [production]"), "{body}");
    let mut expired = job_claims(ISSUER, "ci/pipeline", "production", 1);
    expired["exp"] = json!(unix_now() - 600);
    let mut wrong_audience = job_claims(ISSUER, "ci/pipeline", "production", 1);
    wrong_audience["aud"] = json!("someone-else");
    let forged = Signer::new().sign(&job_claims(ISSUER, "ci/pipeline", "production", 1));
    let untrusted = signer.sign(&job_claims(
        "https://evil.test",
        "ci/pipeline",
        "production",
        1,
    ));
    for (what, token) in [
        ("expired", signer.sign(&expired)),
        ("wrong audience", signer.sign(&wrong_audience)),
        ("forged signature", forged),
        ("untrusted issuer", untrusted),
    ] {
        let (status, body, _) = proxy_get(setup, &format!("ci:prod:{token}"), NAMESPACES).await;
        assert_eq!(status, 401, "{what}: {body}");
    }
}

/// The audit trail: every request is logged with who made it and what,
/// never with its token (the log is the behaviour here).
#[tokio::test(flavor = "multi_thread")]
async fn every_request_is_audited_with_who_made_it_never_its_token() {
    let world = World::start("e2e-proxy-audit").await;
    let setup = &world.setup;
    let good = world
        .signer
        .sign(&job_claims(ISSUER, "ci/pipeline", "production", 4242));
    for token in [
        format!("ci:prod:{}", world.app),
        format!("ci:prod:{good}"),
        format!("pat:prod:{}", world.alice),
        format!("ci:prod:{}", world.admin),
    ] {
        proxy_get(setup, &token, "/version").await;
    }
    let log = setup.kas.log();
    assert!(log.contains("who=ci_job:4242 project:ci/pipeline"), "{log}");
    for secret in [&world.app, &world.alice, &world.admin, &good] {
        assert!(!log.contains(secret.as_str()), "a token reached kas's log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_agentk_gone_the_proxy_answers_503_naming_the_agent_at_once() {
    let mut world = World::start("e2e-proxy-gone").await;
    drop(world.agentk.take());
    let setup = &world.setup;
    wait("the tunnels to close", Duration::from_secs(20), || {
        setup.agent("prod")["tunnels"] == 0
    });
    let (status, body, took) =
        proxy_get(setup, &format!("ci:prod:{}", world.admin), NAMESPACES).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("agent prod is not connected"), "{body}");
    assert!(took < Duration::from_secs(2), "503 took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tunnels_ride_websockets_and_close_when_the_token_is_revoked() {
    let mut setup = Setup::start();
    let ns = tether_testenv::shared()
        .namespace("e2e-proxy-wss")
        .await
        .expect("namespace");
    setup.pod_namespace = ns.name().to_owned();
    let (agent_token, admin) = setup.register_admin_access();
    let address = format!("wss://{}/", setup.agent_endpoint);
    let _agentk = setup.agentk_at(&agent_token, &address);
    setup.wait_for_tunnels();
    let kc = setup.kubeconfig_for(&admin, "admin");
    let out = run_ok(&kc, &["get", "ns", ns.name(), "-o", "name"]);
    assert_eq!(out.trim(), format!("namespace/{}", ns.name()));

    // Revoking the agent token closes its tunnels at once; the proxy then
    // says the agent is not connected, and agentk is refused when it redials.
    setup
        .cli(&["token", "revoke", "prod", "1"])
        .expect("revoke");
    wait("the tunnels to close", Duration::from_secs(10), || {
        setup.agent("prod")["tunnels"] == 0
    });
    let (status, body, _) = proxy_get(&setup, &format!("ci:prod:{admin}"), "/version").await;
    assert_eq!(status, 503, "{body}");
    wait("agentk to be refused", Duration::from_secs(30), || {
        setup.metric("tether_kas_agent_auth_failures_total") >= 1.0
    });
}

/// `kubectl logs`, `exec` and `port-forward` against a pod on a simulated
/// node: kwok answers the kubelet API (logs from a file, exec on the host,
/// port-forward to an echo), the API server upgrades the connection, and
/// the upgrade crosses kas and the tunnel.
#[tokio::test(flavor = "multi_thread")]
async fn logs_exec_and_port_forward_cross_the_tunnel() {
    let cluster = tether_testenv::shared();
    let ns = cluster
        .namespace("e2e-proxy-exec")
        .await
        .expect("namespace");
    let ns = ns.name().to_owned();
    let mut setup = Setup::start();
    setup.pod_namespace = ns.clone();
    let (agent_token, admin) = setup.register_admin_access();
    let _agentk = setup.agentk(&agent_token);
    cluster.kubectl_ok(&[
        "run",
        "sim",
        "-n",
        &ns,
        "--image=nginx",
        "--port=80",
        "--restart=Never",
    ]);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/sim",
        "-n",
        &ns,
        "--timeout=60s",
    ]);
    setup.wait_for_tunnels();
    let kc = setup.kubeconfig_for(&admin, "admin");

    let logs = run_ok(&kc, &["logs", "sim", "-n", &ns]);
    for line in tether_testenv::SIMULATED_LOG_LINES {
        assert!(logs.contains(line), "{logs}");
    }
    // logs -f streams: both lines arrive and the stream stays open.
    let mut follow = kubectl(&kc)
        .args(["logs", "-f", "sim", "-n", &ns])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let out = follow.stdout.take().expect("stdout");
    let (tx, followed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    for expected in tether_testenv::SIMULATED_LOG_LINES {
        let line = followed
            .recv_timeout(Duration::from_secs(20))
            .expect("a followed line");
        assert_eq!(line, expected);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        follow.try_wait().expect("status").is_none(),
        "logs -f ended: it did not follow"
    );
    let _ = follow.kill();
    let _ = follow.wait();

    let echoed = run_ok(
        &kc,
        &["exec", "sim", "-n", &ns, "--", "echo", "hello-through-kas"],
    );
    assert_eq!(echoed.trim(), "hello-through-kas");

    let local = support::free_port();
    let mut forward = kubectl(&kc)
        .args([
            "port-forward",
            "pod/sim",
            "-n",
            &ns,
            &format!("{}:80", local.port()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl port-forward");
    let mut stream = None;
    wait("port-forward to listen", Duration::from_secs(20), || {
        stream = std::net::TcpStream::connect(local).ok();
        stream.is_some()
    });
    let mut stream = stream.expect("connected");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    use std::io::{Read, Write};
    stream.write_all(b"ping through kas").expect("write");
    let mut buf = [0u8; 16];
    stream.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"ping through kas");
    let _ = forward.kill();
    let _ = forward.wait();
}
