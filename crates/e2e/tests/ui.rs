//! The web UI in a real browser (headless Chromium through its WebDriver)
//! against real kas and agentk, one behaviour per test, each on a world of
//! its own (an agent synced, the admin signed in): the agent connected
//! with its sync, the session cookie and the pages' security headers, a
//! pushed commit's sync appearing without a reload, a drifted object put
//! back (and by whom), the diff between two syncs, the plan of an unmerged
//! branch, a project's webhook secret (shown once), forms refused without
//! their CSRF token, a token created and the agent's revoked, users seeing
//! only what the agent's `user_access` admits, and a user made in the UI.
//! `TETHER_UI_SCREENSHOTS=DIR` saves the screenshots the book shows.

use tether_e2e as support;

use std::time::Duration;

use support::browser::Browser;
use support::{Setup, commit, last_line, new_repo, wait};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";

fn configmap(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{a: '1'}}\n")
}

/// An agent `prod` whose first commit is synced, in a namespace of its
/// own, and a browser signed in as the admin.
struct World {
    setup: Setup,
    _agentk: support::Proc,
    repo: std::path::PathBuf,
    ns: String,
    first: String,
    admin: String,
    browser: Browser,
    _namespace: tether_testenv::TestNamespace,
}

impl World {
    /// Blocking: call from `spawn_blocking`.
    fn start(namespace: tether_testenv::TestNamespace) -> World {
        let ns = namespace.name().to_owned();
        let mut setup = Setup::start_with(&["--poll-interval", "60s"]);
        setup.pod_namespace = ns.clone();
        let repo = setup.dir.path().join("repo");
        new_repo(&repo);
        let config = format!(
            "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    paths: [{{glob: 'manifests/*.yaml'}}]\nuser_access:\n  access_as: {{agent: {{}}}}\n  groups: [{{id: team}}]\n"
        );
        let first = commit(
            &repo,
            &[
                (CONFIG, Some(config.as_str())),
                ("manifests/one.yaml", Some(&configmap("one"))),
            ],
        );
        let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
        let agentk = setup.agentk(&token);
        wait("the first sync", Duration::from_secs(90), || {
            setup
                .sync_of(&first)
                .is_some_and(|s| s["state"] == "synced")
        });
        let admin = std::fs::read_to_string(setup.dir.path().join("kas/admin-token"))
            .expect("admin token")
            .trim()
            .to_owned();
        let browser = Browser::start(setup.dir.path());
        sign_in(&browser, &setup.api, &admin);
        wait("the agents page", Duration::from_secs(10), || {
            browser.exists("#agents")
        });
        World {
            setup,
            _agentk: agentk,
            repo,
            ns,
            first,
            admin,
            browser,
            _namespace: namespace,
        }
    }

    /// Saves a screenshot for the book when `TETHER_UI_SCREENSHOTS` names
    /// a folder.
    fn shot(&self, name: &str) {
        if let Some(dir) = std::env::var_os("TETHER_UI_SCREENSHOTS") {
            self.browser
                .screenshot(&std::path::PathBuf::from(dir).join(format!("{name}.png")));
        }
    }

    fn page(&self, path: &str) {
        self.browser.goto(&format!("{}{path}", self.setup.api));
    }

    /// A second commit adding a ConfigMap, synced; its id.
    fn push_second(&self) -> String {
        let second = commit(
            &self.repo,
            &[("manifests/two.yaml", Some(&configmap("two")))],
        );
        self.setup
            .cli(&["project", "refresh", "team/config"])
            .expect("refresh");
        wait("the second sync", Duration::from_secs(60), || {
            self.setup
                .sync_of(&second)
                .is_some_and(|s| s["state"] == "synced")
        });
        second
    }
}

/// Runs `test` on a world of its own, in a namespace named after it.
async fn in_world(name: &str, test: impl FnOnce(&World) + Send + 'static) {
    let namespace = tether_testenv::shared()
        .namespace(name)
        .await
        .expect("namespace");
    tokio::task::spawn_blocking(move || test(&World::start(namespace)))
        .await
        .expect("test body");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_is_told_and_the_admin_sees_the_agent_connected_with_its_sync() {
    in_world("e2e-ui-agents", |w| {
        // Signed out, every page leads to the sign-in form; a wrong token
        // is told so.
        w.browser.delete_cookies();
        sign_in(&w.browser, &w.setup.api, "tadm_not-the-token");
        wait("the sign-in error", Duration::from_secs(10), || {
            w.browser
                .text("#error")
                .is_some_and(|e| e.contains("not an admin token"))
        });
        sign_in(&w.browser, &w.setup.api, &w.admin);
        wait("the agents page", Duration::from_secs(10), || {
            w.browser.exists("#agents")
        });
        let row = w
            .browser
            .text("tr[data-agent=prod]")
            .expect("the agent's row");
        assert!(row.contains("connected") && row.contains("synced"), "{row}");
        assert!(row.contains(&w.first[..10]), "{row}");
        w.shot("ui-agents");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_session_cookie_is_strict_and_every_page_forbids_framing_caching_and_foreign_code() {
    in_world("e2e-ui-headers", |w| {
        let cookie = w
            .browser
            .cookies()
            .into_iter()
            .find(|c| c["name"] == "tether_session")
            .expect("a session cookie");
        assert_eq!(cookie["httpOnly"], true, "{cookie}");
        assert_eq!(cookie["secure"], true, "{cookie}");
        assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
        let addr = w
            .setup
            .api
            .trim_start_matches("http://")
            .parse()
            .expect("address");
        let session_cookie = format!(
            "tether_session={}",
            cookie["value"].as_str().expect("value")
        );
        let (_, _, head) =
            support::ui_client::request(addr, "GET", "/ui/", &session_cookie, "").expect("page");
        let head = head.to_lowercase();
        for expected in [
            "content-security-policy: default-src 'none'; script-src 'sha256-",
            "frame-ancestors 'none'",
            "x-frame-options: deny",
            "x-content-type-options: nosniff",
            "cache-control: no-store",
        ] {
            assert!(head.contains(expected), "{expected} not in {head}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_appears_on_the_open_page_and_its_sync_shows_every_object() {
    in_world("e2e-ui-push", |w| {
        // The page listens for changes: no reload.
        w.page("/ui/agents/prod");
        let second = commit(&w.repo, &[("manifests/two.yaml", Some(&configmap("two")))]);
        w.setup
            .cli(&["project", "refresh", "team/config"])
            .expect("refresh");
        wait(
            "the new sync on the open page",
            Duration::from_secs(30),
            || w.browser.source().contains(&second[..10]),
        );
        w.shot("ui-agent");
        // Every object in a tree by namespace and kind.
        w.page(&format!(
            "/ui/agents/prod/sync?project=team%2Fconfig&commit={second}"
        ));
        wait("the second sync's objects", Duration::from_secs(30), || {
            w.page(&format!(
                "/ui/agents/prod/sync?project=team%2Fconfig&commit={second}"
            ));
            w.browser.exists("tr[data-object='ConfigMap/two']")
        });
        let tree = w.browser.source();
        assert!(tree.contains(&w.ns), "namespace heading");
        assert!(
            w.browser.exists("tr[data-object='ConfigMap/one']"),
            "{tree}"
        );
        w.shot("ui-sync");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drifted_object_is_shown_put_back_and_by_whom() {
    in_world("e2e-ui-drift", |w| {
        tether_testenv::shared().kubectl_ok(&[
            "patch",
            "configmap",
            "one",
            "-n",
            &w.ns,
            "--type",
            "merge",
            "-p",
            r#"{"data":{"a":"2"}}"#,
            "--field-manager=someone",
        ]);
        let first = w.first.clone();
        wait(
            "the drift correction on the sync page",
            Duration::from_secs(30),
            || {
                w.page(&format!(
                    "/ui/agents/prod/sync?project=team%2Fconfig&commit={first}"
                ));
                w.browser
                    .text("#drift")
                    .is_some_and(|t| t.contains("someone"))
            },
        );
        w.shot("ui-sync-drift");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_diff_between_two_syncs_shows_the_object_added_and_its_file() {
    in_world("e2e-ui-diff", |w| {
        let second = w.push_second();
        // The history's compare form leads to the diff page.
        w.page("/ui/agents/prod");
        w.browser.click(".compare");
        wait("the diff page", Duration::from_secs(30), || {
            w.browser.url().contains("/ui/agents/prod/diff?")
        });
        w.page(&format!(
            "/ui/agents/prod/diff?project=team%2Fconfig&from={}&to={second}",
            w.first
        ));
        wait("the diff's objects", Duration::from_secs(30), || {
            w.browser
                .exists("tr[data-object='ConfigMap/two'][data-change=added]")
        });
        let file = w
            .browser
            .text(".file-diff[data-path='manifests/two.yaml']")
            .unwrap_or_else(|| panic!("the file's diff: {}", w.browser.source()));
        assert!(file.contains("+kind: ConfigMap"), "{file}");
        assert!(
            !w.browser
                .exists(".file-diff[data-path='manifests/one.yaml']"),
            "an unchanged file is not shown"
        );
        w.shot("ui-diff");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plan_of_an_unmerged_branch_shows_its_change_and_applies_nothing() {
    in_world("e2e-ui-plan", |w| {
        tether_testenv::git::git(&w.repo, &["checkout", "-q", "-b", "feature"]);
        let planned = commit(
            &w.repo,
            &[(
                "manifests/one.yaml",
                Some(&configmap("one").replace("'1'", "'3'")),
            )],
        );
        tether_testenv::git::git(&w.repo, &["checkout", "-q", "main"]);
        w.page("/ui/agents/prod");
        w.browser.click("#plan-link");
        wait("the plan form", Duration::from_secs(10), || {
            w.browser.exists("#plan-form")
        });
        w.browser.type_into("#commit", "feature");
        w.browser.click("#plan");
        wait("the plan", Duration::from_secs(60), || {
            w.browser.exists("#plan-counts") || w.browser.exists("#refused")
        });
        let change = w
            .browser
            .text("tr[data-object='ConfigMap/one']")
            .unwrap_or_else(|| panic!("the planned change: {}", w.browser.source()));
        assert!(
            change.contains("update") && change.contains('3'),
            "{change}"
        );
        assert!(
            w.browser.source().contains(&planned),
            "the plan names the commit"
        );
        w.shot("ui-plan");
        let (session, csrf) = session_and_csrf(&w.browser);
        let unknown = post_form(
            &w.setup.api,
            "/ui/agents/prod/plan",
            &session,
            &format!("csrf={csrf}&project=team%2Fconfig&commit=no-such-branch"),
        );
        assert_eq!(unknown, 404, "the plan of a commit that does not exist");
        let data = tether_testenv::shared().kubectl_ok(&[
            "get",
            "configmap",
            "one",
            "-n",
            &w.ns,
            "-o",
            "jsonpath={.data.a}",
        ]);
        assert_eq!(data.trim(), "1", "a plan changes nothing");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_projects_webhook_secret_is_shown_once_with_each_hosts_url() {
    in_world("e2e-ui-webhook", |w| {
        w.page("/ui/projects");
        assert!(
            w.browser
                .text("tr[data-project='team/config']")
                .is_some_and(|t| t.contains("prod")),
            "{}",
            w.browser.source()
        );
        w.page("/ui/project?id=team%2Fconfig");
        w.browser.click("#create-webhook");
        wait("the webhook secret", Duration::from_secs(10), || {
            w.browser.exists("#webhook-secret")
        });
        let secret = w.browser.text("#webhook-secret").expect("secret");
        assert_eq!(secret.len(), 64, "{secret}");
        assert!(
            w.browser
                .text("#webhook-urls")
                .is_some_and(|t| t.contains(&format!(
                    "{}/api/v1/projects/team%2Fconfig/hooks/gitea",
                    w.setup.api
                ))),
            "{}",
            w.browser.source()
        );
        w.page("/ui/project?id=team%2Fconfig");
        assert!(
            w.browser
                .text("#webhook-state")
                .is_some_and(|t| t.contains("active")),
            "{}",
            w.browser.source()
        );
        assert!(!w.browser.source().contains(&secret), "never shown again");
        w.shot("ui-project");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forms_without_their_csrf_token_are_refused() {
    in_world("e2e-ui-csrf", |w| {
        let (session, _) = session_and_csrf(&w.browser);
        let refused = post_form(&w.setup.api, "/ui/logout", &session, "csrf=wrong");
        assert_eq!(refused, 403, "logout without the session's CSRF token");
        let refused = post_form(
            &w.setup.api,
            "/ui/login",
            "",
            &format!("token={}&csrf=x", w.admin),
        );
        assert_eq!(refused, 403, "sign-in without the form's own cookie");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_made_in_the_ui_is_shown_once_and_the_agents_revoked_token_takes_it_offline() {
    in_world("e2e-ui-tokens", |w| {
        w.page("/ui/agents/prod");
        w.browser.type_into("input[name=name]", "spare");
        w.browser.click("#create-token");
        wait("the new token's page", Duration::from_secs(10), || {
            w.browser.exists("#new-token")
        });
        let shown = w.browser.text("#new-token").expect("the new token, once");
        assert!(!shown.is_empty());
        w.page("/ui/agents/prod");
        assert!(!w.browser.source().contains(&shown), "never shown again");
        w.browser.click("#revoke-1");
        wait(
            "the agent offline on its page",
            Duration::from_secs(30),
            || {
                w.browser
                    .text("#connection")
                    .is_some_and(|t| t.contains("offline"))
            },
        );
        assert!(
            w.browser
                .text("tr[data-token='1']")
                .is_some_and(|t| t.contains("revoked")),
            "{}",
            w.browser.source()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_sees_only_the_agents_that_admit_them_and_only_their_own_tokens() {
    in_world("e2e-ui-users", |w| {
        let outsider = user(&w.setup, "bob", "elsewhere");
        let member = user(&w.setup, "ann", "team");
        w.browser.delete_cookies();
        sign_in(&w.browser, &w.setup.api, &outsider);
        wait("bob's agents page", Duration::from_secs(10), || {
            w.browser.exists("#agents")
        });
        assert!(
            !w.browser.exists("tr[data-agent=prod]"),
            "{}",
            w.browser.source()
        );
        w.page("/ui/agents/prod");
        assert!(
            w.browser.source().contains("no such agent"),
            "{}",
            w.browser.source()
        );
        w.browser.delete_cookies();
        sign_in(&w.browser, &w.setup.api, &member);
        wait("ann's agents page", Duration::from_secs(10), || {
            w.browser.exists("#agents")
        });
        assert!(
            w.browser.exists("tr[data-agent=prod]"),
            "{}",
            w.browser.source()
        );
        w.page("/ui/users");
        assert!(
            w.browser.url().ends_with("/ui/users/ann"),
            "{}",
            w.browser.url()
        );
        w.page("/ui/users/bob");
        assert!(w.browser.exists("#not-found"), "{}", w.browser.source());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_made_in_the_ui_may_do_only_their_own_and_revoking_their_sessions_token_ends_it() {
    in_world("e2e-ui-new-user", |w| {
        user(&w.setup, "ann", "team");
        w.page("/ui/users");
        w.browser.type_into("#new-user input[name=name]", "cat");
        w.browser
            .type_into("#new-user input[name=memberships]", "team, other/group");
        w.browser.click("#create-user");
        wait("cat's page", Duration::from_secs(10), || {
            w.browser.exists("#user-tokens")
        });
        assert_eq!(
            w.browser.text("#memberships").as_deref(),
            Some("team, other/group")
        );
        w.browser.type_into("#new-pat input[name=name]", "laptop");
        w.browser.click("#create-pat");
        wait("cat's new token", Duration::from_secs(10), || {
            w.browser.exists("#new-pat-token")
        });
        let pat = w.browser.text("#new-pat-token").expect("the token, once");
        w.shot("ui-user-token");
        w.browser.delete_cookies();
        sign_in(&w.browser, &w.setup.api, &pat);
        wait("cat's agents page", Duration::from_secs(10), || {
            w.browser.exists("tr[data-agent=prod]")
        });
        w.page("/ui/users/cat");
        let laptop = w.browser.text("#user-tokens").expect("cat's tokens");
        // What a user may not do is refused, whatever the form says.
        let (session, csrf) = session_and_csrf(&w.browser);
        for (path, body, status) in [
            ("/ui/users/ann/tokens", "name=x&expires_in_days=30", 403),
            ("/ui/users/cat/tokens", "name=x&expires_in_days=0", 422),
            ("/ui/users/cat/tokens", "name=x&expires_in_days=400", 422),
            ("/ui/users", "name=evil", 403),
            ("/ui/users/ann/delete", "", 403),
            ("/ui/agents/prod/plan", "commit=main", 403),
            ("/ui/agents/prod/tokens", "name=x", 403),
            ("/ui/project/webhook?id=team%2Fconfig", "", 403),
        ] {
            let answer = post_form(&w.setup.api, path, &session, &format!("csrf={csrf}&{body}"));
            assert_eq!(answer, status, "{path} {body}");
        }
        assert!(
            laptop.contains("laptop") && laptop.contains("active"),
            "{laptop}"
        );
        w.browser.type_into("#new-pat input[name=name]", "ci");
        w.browser.click("#create-pat");
        wait("cat's own new token", Duration::from_secs(10), || {
            w.browser.exists("#new-pat-token")
        });
        w.page("/ui/users/cat");
        let laptop_id = w
            .browser
            .source()
            .split("data-token=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a token row")
            .to_owned();
        w.browser.click(&format!("#revoke-pat-{laptop_id}"));
        wait("the session ended", Duration::from_secs(10), || {
            w.browser.url().ends_with("/ui/login")
        });
    })
    .await;
}

/// A user member of `group`, and their personal access token.
fn user(setup: &Setup, name: &str, group: &str) -> String {
    setup
        .cli(&["user", "create", name, "--member-of", group])
        .expect("user");
    last_line(setup.cli(&["user", "token", "create", name, "--name", "browser"]))
}

fn sign_in(browser: &Browser, api: &str, token: &str) {
    browser.goto(&format!("{api}/ui/"));
    assert!(browser.url().ends_with("/ui/login"), "{}", browser.url());
    assert!(
        browser.exists("#token"),
        "no sign-in form: {}",
        browser.source()
    );
    browser.type_into("#token", token);
    browser.click("#sign-in");
}

/// The browser's session cookie and the page's CSRF token.
fn session_and_csrf(browser: &Browser) -> (String, String) {
    let cookie = browser
        .cookies()
        .into_iter()
        .find(|c| c["name"] == "tether_session")
        .and_then(|c| c["value"].as_str().map(str::to_owned))
        .expect("a session cookie");
    let csrf = browser
        .source()
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form with the CSRF token")
        .to_owned();
    (cookie, csrf)
}

/// A form POST as a script elsewhere would send it, with `session` as
/// the session cookie: the status code.
fn post_form(api: &str, path: &str, session: &str, body: &str) -> u16 {
    let addr = api.trim_start_matches("http://").parse().expect("address");
    let cookie = match session {
        "" => String::new(),
        value => format!("tether_session={value}"),
    };
    support::ui_client::request(addr, "POST", path, &cookie, body)
        .map(|(status, _, _)| status)
        .unwrap_or(0)
}
