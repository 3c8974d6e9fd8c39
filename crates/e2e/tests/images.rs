//! Image automation on real parts: distribution's registry (with and
//! without htpasswd), images pushed with skopeo, the repository on Gitea,
//! agentk applying what kas pushed. A new tag becomes one commit changing
//! exactly the marked lines of a plain manifest, a Helm values file and a
//! kustomization, and then the Deployment in the cluster.

use std::time::{Duration, Instant};

use serde_json::Value;
use tether_e2e::images::{World, deployment, image_of, secret_file};
use tether_e2e::wait;
use tether_testenv::git::git;
use tether_testenv::gitea::GitHost;
use tether_testenv::registry::{Registry, RegistryOptions};

#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_tag_becomes_one_commit_on_gitea_and_the_deployment_runs_it() {
    on_real_parts("e2e-images", pushed_tag).await;
}

/// Runs `body` on a blocking thread (it drives blocking clients) with a
/// namespace of its own and a Gitea.
async fn on_real_parts(prefix: &str, body: fn(&tokio::runtime::Handle, &GitHost, &str)) {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace(prefix).await.expect("namespace");
    let name = ns.name().to_owned();
    let host = GitHost::start().await.expect("Gitea");
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || body(&runtime, &host, &name))
        .await
        .expect("test body");
    drop(ns);
}

/// A registry keeping its files in `dir/registry`.
fn registry(
    runtime: &tokio::runtime::Handle,
    dir: &std::path::Path,
    options: RegistryOptions,
) -> Registry {
    runtime
        .block_on(Registry::start(&dir.join("registry"), options))
        .expect("registry")
}

fn pushed_tag(runtime: &tokio::runtime::Handle, host: &GitHost, ns: &str) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (hook_secret_file, hook_secret) = secret_file(scratch.path());
    // The registry's port is needed in the files before kas starts, and
    // kas's address in the registry's notifications: a first registry
    // holds the images, started again with notifications once kas runs.
    let auth = ("pusher".to_owned(), "registry-pass-1".to_owned());
    let data = scratch.path().join("registry");
    let registry = runtime
        .block_on(Registry::start(
            &data,
            RegistryOptions {
                auth: Some(auth.clone()),
                ..Default::default()
            },
        ))
        .expect("registry");
    let addr = registry.addr();
    registry
        .push("team/app", "1.2.0", "one-two")
        .expect("pushed");
    let image = format!("{addr}/team/app");
    let values = format!(
        "image:\n  repository: {image} # {{\"$imagepolicy\": \"app:name\"}}\n  tag: \"1.2.0\" # {{\"$imagepolicy\": \"app:tag\"}}\n"
    );
    let kustomization = "resources: [app.yaml]\nimages:\n- name: app\n  newTag: 1.2.0 # {\"$imagepolicy\": \"flux-system:app:tag\"}\n".to_owned();
    let policy = format!(
        "images:\n  - name: app\n    repository: {image}\n    policy:\n      semver: {{range: \">=1.2.0 <2.0.0\"}}\nupdate:\n  paths: [deploy/]\n  commit:\n    author: {{name: Tether, email: tether@example.com}}\n"
    );
    let manifest = deployment("app", &format!("{image}:1.2.0"), "app");
    let world = World::start(
        host,
        ns,
        &[
            (".tether/image-updates.yaml", &policy),
            ("deploy/app.yaml", &manifest),
            ("deploy/chart/values.yaml", &values),
            ("deploy/kustomization/kustomization.yaml", &kustomization),
        ],
        &hook_secret_file,
        &[],
    );
    let password = scratch.path().join("registry-password");
    std::fs::write(&password, &auth.1).expect("password file");
    // Without credentials the scan is refused, and says how to fix it.
    wait(
        "the scan refused without credentials",
        Duration::from_secs(60),
        || {
            world.policy("app")["message"]
                .as_str()
                .is_some_and(|m| m.contains("kas registry login"))
        },
    );
    // A login for another group's projects is not used for this one: the
    // next scan is still anonymous, and still refused.
    let scans = world.setup.metric("tether_kas_image_scans_total");
    // `kas registry login` for the projects of `group`, then a scan.
    let login_for = |group: &str| {
        world
            .setup
            .cli(&[
                "registry",
                "login",
                &addr.to_string(),
                "--username",
                &auth.0,
                "--password-file",
                password.to_str().expect("utf-8"),
                "--for",
                group,
            ])
            .expect("login");
        world.setup.cli(&["image", "scan"]).expect("scan");
    };
    login_for("other-team");
    wait(
        "a scan without the other group's login",
        Duration::from_secs(60),
        || {
            world.setup.metric("tether_kas_image_scans_total") > scans
                && world.policy("app")["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("kas registry login"))
        },
    );
    login_for("team");
    wait(
        "the policy up to date at 1.2.0",
        Duration::from_secs(60),
        || {
            let p = world.policy("app");
            p["state"] == "up_to_date" && p["latest"] == "1.2.0"
        },
    );
    wait("the Deployment at 1.2.0", Duration::from_secs(90), || {
        image_of(ns, "app") == Some(format!("{image}:1.2.0"))
    });
    let before = world.remote_head();

    // The registry again, now telling kas of every push.
    drop(registry);
    let registry = runtime
        .block_on(Registry::start_on(
            &data,
            addr,
            RegistryOptions {
                auth: Some(auth.clone()),
                notify: Some((
                    format!("{}/api/v1/registry/hooks/distribution", world.setup.api),
                    format!("Bearer {hook_secret}"),
                )),
            },
        ))
        .expect("registry with notifications");
    let pushed = Instant::now();
    // A prerelease and a tag outside the range are ignored.
    registry
        .push("team/app", "1.3.0-rc.1", "rc")
        .expect("pushed");
    registry.push("team/app", "2.0.0", "two").expect("pushed");
    registry
        .push("team/app", "1.3.0", "one-three")
        .expect("pushed");
    wait("kas's commit on Gitea", Duration::from_secs(60), || {
        world.remote_head() != before
    });
    let committed = pushed.elapsed();
    wait("the Deployment at 1.3.0", Duration::from_secs(90), || {
        image_of(ns, "app") == Some(format!("{image}:1.3.0"))
    });
    let applied = pushed.elapsed();
    eprintln!("push to commit {committed:?}, push to Deployment updated {applied:?}");

    let head = world.pull();
    assert_eq!(
        git(
            &world.local,
            &["rev-list", "--count", &format!("{before}..{head}")]
        )
        .trim(),
        "1"
    );
    let log = git(&world.local, &["log", "-1", "--format=%an <%ae>%n%B"]);
    assert!(log.starts_with("Tether <tether@example.com>"), "{log}");
    assert!(log.contains("app: 1.2.0 -> 1.3.0"), "{log}");
    let read = |path: &str| std::fs::read_to_string(world.local.join(path)).expect("file");
    assert_eq!(
        read("deploy/app.yaml"),
        manifest.replace(":1.2.0\"", ":1.3.0\"")
    );
    assert_eq!(
        read("deploy/chart/values.yaml"),
        values.replace("\"1.2.0\"", "\"1.3.0\"")
    );
    assert_eq!(
        read("deploy/kustomization/kustomization.yaml"),
        kustomization.replace("1.2.0", "1.3.0")
    );
    let changed = git(&world.local, &["diff", "--numstat", &before, &head]);
    assert_eq!(changed.lines().count(), 3, "{changed}");
    wait(
        "the update on kas image list",
        Duration::from_secs(30),
        || {
            world
                .images()
                .iter()
                .any(|p| p["last_update"]["commit"] == head.as_str())
                && world.policy("app")["state"] == "up_to_date"
        },
    );
    // The web UI's Images page shows the same.
    let token =
        std::fs::read_to_string(world.setup.dir.path().join("kas/admin-token")).expect("token");
    let api: std::net::SocketAddr = world
        .setup
        .api
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let cookie = tether_e2e::ui_client::sign_in(api, token.trim()).expect("signed in");
    let (status, page) = tether_e2e::ui_client::get(api, "/ui/images", &cookie).expect("page");
    assert_eq!(status, 200);
    assert!(page.contains("data-policy=\"app\""), "{page}");
    assert!(
        page.contains(&head[..10]),
        "the last update's commit: {page}"
    );
    drop(registry);
    drop(scratch);
}

#[tokio::test(flavor = "multi_thread")]
async fn images_found_within_the_batch_window_go_in_one_commit_with_the_digest_pinned() {
    on_real_parts("e2e-images-batch", batched).await;
}

fn batched(runtime: &tokio::runtime::Handle, host: &GitHost, ns: &str) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (hook_secret_file, _) = secret_file(scratch.path());
    let registry = registry(runtime, scratch.path(), RegistryOptions::default());
    let addr = registry.addr();
    registry
        .push("team/api", "main-0a1b2c-1700000000", "api-old")
        .expect("pushed");
    registry
        .push("team/web", "2.0.0", "web-old")
        .expect("pushed");
    let policy = format!(
        "images:\n  - name: api\n    repository: {addr}/team/api\n    policy: {{numerical: {{order: asc}}}}\n    filter_tags: {{pattern: '^main-[a-f0-9]+-(?P<ts>[0-9]+)$', extract: '$ts'}}\n  - name: web\n    repository: {addr}/team/web\n    policy: {{semver: {{range: '^2'}}}}\n    digest: true\nupdate:\n  batch: 8s\n"
    );
    let api = deployment(
        "api",
        &format!("{addr}/team/api:main-0a1b2c-1700000000"),
        "api",
    );
    let web = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: web-image}}\ndata:\n  image: {addr}/team/web:2.0.0 # {{\"$imagepolicy\": \"web\"}}\n"
    );
    let world = World::start(
        host,
        ns,
        &[
            (".tether/image-updates.yaml", &policy),
            ("deploy/api.yaml", &api),
            ("deploy/web.yaml", &web),
        ],
        &hook_secret_file,
        &[],
    );
    // web:2.0.0 is pinned to its digest at once: git holds no digest.
    wait("the first pinning commit", Duration::from_secs(90), || {
        world.policy("web")["in_git"][0]
            .as_str()
            .is_some_and(|v| v.contains("@sha256:"))
    });
    let before = world.remote_head();
    // Two images within the window; a timestamped tag that sorts before
    // the current one by text but after it by number, and one that does
    // not match the filter.
    registry
        .push("team/api", "main-ffff00-1700000900", "api-new")
        .expect("pushed");
    registry
        .push("team/api", "dev-999999-1800000000", "api-dev")
        .expect("pushed");
    world.setup.cli(&["image", "scan"]).expect("scan");
    let web_digest = registry
        .push("team/web", "2.1.0", "web-new")
        .expect("pushed");
    world.setup.cli(&["image", "scan", "web"]).expect("scan");
    wait("one commit for both", Duration::from_secs(90), || {
        world.remote_head() != before
            && world.policy("web")["state"] == "up_to_date"
            && world.policy("api")["state"] == "up_to_date"
    });
    let head = world.pull();
    assert_eq!(
        git(
            &world.local,
            &["rev-list", "--count", &format!("{before}..{head}")]
        )
        .trim(),
        "1",
        "both images in one commit"
    );
    let read = |path: &str| std::fs::read_to_string(world.local.join(path)).expect("file");
    assert!(read("deploy/api.yaml").contains("team/api:main-ffff00-1700000900\""));
    assert!(
        read("deploy/web.yaml").contains(&format!("team/web:2.1.0@{web_digest} #")),
        "{}",
        read("deploy/web.yaml")
    );
    wait(
        "the Deployment at the new tag",
        Duration::from_secs(90),
        || image_of(ns, "api") == Some(format!("{addr}/team/api:main-ffff00-1700000900")),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_pull_request_one_request_is_opened_and_kept_up_to_date() {
    on_real_parts("e2e-images-pr", pull_request).await;
}

fn pull_request(runtime: &tokio::runtime::Handle, host: &GitHost, ns: &str) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (hook_secret_file, _) = secret_file(scratch.path());
    let registry = registry(runtime, scratch.path(), RegistryOptions::default());
    let addr = registry.addr();
    registry.push("team/app", "1.0.0", "one").expect("pushed");
    let policy = format!(
        "images:\n  - name: app\n    repository: {addr}/team/app\n    policy: {{semver: {{range: '^1'}}}}\nupdate:\n  push_branch: tether/images\n  pull_request: true\n"
    );
    let manifest = deployment("app", &format!("{addr}/team/app:1.0.0"), "app");
    let world = World::start(
        host,
        ns,
        &[
            (".tether/image-updates.yaml", &policy),
            ("deploy/app.yaml", &manifest),
        ],
        &hook_secret_file,
        &[],
    );
    let token = host.create_token("kas-pull-requests").expect("token");
    world.setup.set_status_target(
        "gitea",
        &format!("{}/api/v1", host.url()),
        "tether/config",
        &token,
    );
    let main = world.remote_head();
    let open = || -> Vec<Value> {
        host.api("GET", "/api/v1/repos/tether/config/pulls?state=open", None)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    };
    registry
        .push("team/app", "1.1.0", "one-one")
        .expect("pushed");
    world.setup.cli(&["image", "scan"]).expect("scan");
    wait("a pull request", Duration::from_secs(90), || {
        open().len() == 1
    });
    let first = open()[0].clone();
    assert_eq!(first["head"]["ref"], "tether/images");
    assert_eq!(first["base"]["ref"], "main");
    assert!(
        first["title"]
            .as_str()
            .is_some_and(|t| t.contains("app: 1.0.0 -> 1.1.0")),
        "{first}"
    );
    assert_eq!(
        world.remote_head(),
        main,
        "the project's branch is left to the reviewer"
    );

    registry
        .push("team/app", "1.2.0", "one-two")
        .expect("pushed");
    world.setup.cli(&["image", "scan"]).expect("scan");
    wait(
        "the request's branch at 1.2.0",
        Duration::from_secs(90),
        || {
            let pulls = open();
            pulls.len() == 1 && pulls[0]["head"]["sha"] != first["head"]["sha"]
        },
    );
    let pulls = open();
    assert_eq!(
        pulls[0]["number"], first["number"],
        "the same request, kept up to date"
    );
    let branch = git(
        &world.local,
        &["ls-remote", "origin", "refs/heads/tether/images"],
    );
    let sha = branch
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    git(&world.local, &["fetch", "-q", "origin", "tether/images"]);
    let shown = git(&world.local, &["show", &format!("{sha}:deploy/app.yaml")]);
    assert!(shown.contains("team/app:1.2.0\""), "{shown}");
    assert_eq!(
        git(
            &world.local,
            &["rev-list", "--count", &format!("{main}..{sha}")]
        )
        .trim(),
        "1",
        "one commit on top of main"
    );
    let listed = world.images();
    assert!(
        listed[0]["last_update"]["pull_request"]
            .as_str()
            .is_some_and(|u| u.contains("/pulls/")),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_clear_status_pushes_nothing_and_is_told() {
    on_real_parts("e2e-images-bad", bad_input).await;
}

fn bad_input(runtime: &tokio::runtime::Handle, host: &GitHost, ns: &str) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (hook_secret_file, _) = secret_file(scratch.path());
    let registry = registry(runtime, scratch.path(), RegistryOptions::default());
    let addr = registry.addr();
    registry.push("team/app", "1.0.0", "one").expect("pushed");
    registry
        .push("team/app", "latest", "latest")
        .expect("pushed");
    // Nothing listens on the down registry's port (found free, not bound).
    let down = tether_e2e::free_port();
    let receiver = tether_e2e::receiver::Receiver::start();
    let config = format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    paths: [{{glob: 'deploy/*.yaml'}}]\nnotifications:\n- provider: generic\n  url_secret: team/images\n  events: [image_updated, image_update_failed]\n"
    );
    // No tag satisfies the rule; a marker names a policy the file lacks;
    // a repository on a registry that is down.
    let policy = format!(
        "images:\n  - name: app\n    repository: {addr}/team/app\n    policy: {{semver: {{range: '>=5.0.0'}}}}\n  - name: web\n    repository: {down}/team/web\n    policy: {{semver: {{range: '^1'}}}}\n"
    );
    let app = deployment("app", &format!("{addr}/team/app:0.9.0"), "app");
    let ghost = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ghost}\ndata:\n  image: x:1 # {\"$imagepolicy\": \"ghost\"}\n";
    let world = World::start(
        host,
        ns,
        &[
            (".gitlab/agents/prod/config.yaml", &config),
            (".tether/image-updates.yaml", &policy),
            ("deploy/app.yaml", &app),
            ("deploy/ghost.yaml", ghost),
        ],
        &hook_secret_file,
        &[],
    );
    world
        .setup
        .set_notification_secret("team/images", &receiver.url, Some("images-signing-key"));
    let head = world.remote_head();
    wait("each problem shown", Duration::from_secs(60), || {
        let error = world.error();
        error.contains("deploy/ghost.yaml:5")
            && error.contains("\"ghost\"")
            && world.policy("app")["state"] == "no_match"
            && world.policy("web")["state"] == "error"
            && world.policy("web")["message"]
                .as_str()
                .is_some_and(|m| m.contains(&down.to_string()))
    });
    assert_eq!(world.remote_head(), head, "nothing pushed");

    // The file fixed (and the ghost gone): app is updated though web's
    // registry is still down; pushing is refused (a token that cannot
    // write), said on the project and told.
    let fixed = policy.replace(">=5.0.0", ">=1.0.0");
    let local = &world.local;
    tether_e2e::commit(
        local,
        &[
            (".tether/image-updates.yaml", Some(&fixed)),
            ("deploy/ghost.yaml", None),
        ],
    );
    tether_testenv::git::git(local, &["push", "-q", "origin", "main"]);
    let reader = scratch.path().join("read-only-token");
    std::fs::write(&reader, "not-a-token-gitea-knows").expect("token file");
    world
        .setup
        .cli(&[
            "project",
            "push-credentials",
            "team/config",
            "--token-file",
            reader.to_str().expect("utf-8"),
        ])
        .expect("push credentials");
    world
        .setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    world.setup.cli(&["image", "scan"]).expect("scan");
    wait("the refused push shown", Duration::from_secs(60), || {
        world.error().contains("push")
    });
    let pushed_meanwhile = world.remote_head();
    wait("image_update_failed told", Duration::from_secs(30), || {
        receiver
            .requests()
            .iter()
            .any(|r| r.json()["event"] == "image_update_failed")
    });

    // With a token that can write, the next scan pushes, and it is told.
    let token = scratch.path().join("token");
    std::fs::write(
        &token,
        host.create_token("kas-image-updates-2").expect("token"),
    )
    .expect("token file");
    world
        .setup
        .cli(&[
            "project",
            "push-credentials",
            "team/config",
            "--token-file",
            token.to_str().expect("utf-8"),
        ])
        .expect("push credentials");
    world.setup.cli(&["image", "scan"]).expect("scan");
    wait(
        "the update pushed and told",
        Duration::from_secs(60),
        || {
            world.remote_head() != pushed_meanwhile
                && receiver
                    .requests()
                    .iter()
                    .any(|r| r.json()["event"] == "image_updated")
        },
    );
    let told = receiver
        .requests()
        .into_iter()
        .find(|r| r.json()["event"] == "image_updated")
        .expect("told");
    assert_eq!(told.json()["project"], "team/config");
    assert_eq!(told.json()["commit"], world.remote_head());
    assert!(
        told.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("app: 0.9.0 -> 1.0.0")),
        "{}",
        told.json()
    );
    assert_eq!(
        world.policy("app")["latest"],
        "1.0.0",
        "`latest` is not a semver tag: ignored"
    );
}
