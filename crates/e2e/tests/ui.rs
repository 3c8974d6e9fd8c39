//! The web UI in a real browser (headless Chromium through its WebDriver)
//! against real kas and agentk: sign in with the admin token, see the
//! agent connected, a pushed commit's sync appear without a reload, the
//! sync's objects as a tree, a drifted object put back (and by whom), a
//! token created (shown once) and the agent's token revoked from the UI
//! and the agent go offline; the session cookie's flags; forms refused without their CSRF
//! token; a user whom the agent's `user_access` does not admit sees nothing
//! of it, a user it admits sees it. Also: the diff between two syncs,
//! the plan of an unmerged branch, a project's webhook secret created
//! (shown once), and a user created with a token, who signs in with it,
//! makes their own and revokes the one their session runs on.

use tether_e2e as support;

use std::time::Duration;

use support::browser::Browser;
use support::{Setup, commit, last_line, new_repo, wait};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";

fn configmap(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{a: '1'}}\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_ui_in_a_real_browser() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-ui").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || ui(&ns))
        .await
        .expect("test body");
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

fn ui(ns: &str) {
    let mut setup = Setup::start_with(&["--poll-interval", "60s"]);
    setup.pod_namespace = ns.to_owned();
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
    let _agentk = setup.agentk(&token);
    wait("the first sync", Duration::from_secs(90), || {
        setup
            .sync_of(&first)
            .is_some_and(|s| s["state"] == "synced")
    });
    let shots = std::env::var_os("TETHER_UI_SCREENSHOTS").map(std::path::PathBuf::from);
    let shot = |browser: &Browser, name: &str| {
        if let Some(dir) = &shots {
            browser.screenshot(&dir.join(format!("{name}.png")));
        }
    };

    // Signed out, every page leads to the sign-in form; a wrong token is
    // told so.
    let browser = Browser::start(setup.dir.path());
    sign_in(&browser, &setup.api, "tadm_not-the-token");
    wait("the sign-in error", Duration::from_secs(10), || {
        browser
            .text("#error")
            .is_some_and(|e| e.contains("not an admin token"))
    });

    // The admin: the agent, connected, with its sync.
    let admin =
        std::fs::read_to_string(setup.dir.path().join("kas/admin-token")).expect("admin token");
    sign_in(&browser, &setup.api, admin.trim());
    wait("the agents page", Duration::from_secs(10), || {
        browser.exists("#agents")
    });
    let row = browser
        .text("tr[data-agent=prod]")
        .expect("the agent's row");
    assert!(row.contains("connected") && row.contains("synced"), "{row}");
    assert!(row.contains(&first[..10]), "{row}");
    shot(&browser, "ui-agents");

    // The session cookie: HttpOnly, Secure, SameSite=Strict.
    let cookie = browser
        .cookies()
        .into_iter()
        .find(|c| c["name"] == "tether_session")
        .expect("a session cookie");
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["secure"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    // Every page: a policy allowing only its own script and style (the
    // live updates below run under it), never framed, never cached.
    let addr = setup
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

    // A push shows up without a reload (the page listens for changes).
    browser.goto(&format!("{}/ui/agents/prod", setup.api));
    let second = commit(&repo, &[("manifests/two.yaml", Some(&configmap("two")))]);
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait(
        "the new sync on the open page",
        Duration::from_secs(30),
        || browser.source().contains(&second[..10]),
    );
    shot(&browser, "ui-agent");

    // The sync: every object in a tree by namespace and kind.
    browser.goto(&format!(
        "{}/ui/agents/prod/sync?project=team%2Fconfig&commit={second}",
        setup.api
    ));
    let tree = browser.source();
    assert!(tree.contains(ns), "namespace heading");
    assert!(
        browser.exists("tr[data-object='ConfigMap/one']")
            && browser.exists("tr[data-object='ConfigMap/two']"),
        "{tree}"
    );
    shot(&browser, "ui-sync");

    // Someone changes an object agentk owns: the sync page shows it put
    // back, and by whom.
    tether_testenv::shared().kubectl_ok(&[
        "patch",
        "configmap",
        "one",
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        r#"{"data":{"a":"2"}}"#,
        "--field-manager=someone",
    ]);
    wait(
        "the drift correction on the sync page",
        Duration::from_secs(30),
        || {
            browser.goto(&format!(
                "{}/ui/agents/prod/sync?project=team%2Fconfig&commit={second}",
                setup.api
            ));
            browser
                .text("#drift")
                .is_some_and(|t| t.contains("someone"))
        },
    );
    shot(&browser, "ui-sync-drift");

    // The difference between the two syncs: the object added, and (for
    // the admin) the manifest file's diff. The history's compare form
    // leads there.
    browser.goto(&format!("{}/ui/agents/prod", setup.api));
    browser.click(".compare");
    wait("the diff page", Duration::from_secs(30), || {
        browser.url().contains("/ui/agents/prod/diff?")
    });
    browser.goto(&format!(
        "{}/ui/agents/prod/diff?project=team%2Fconfig&from={first}&to={second}",
        setup.api
    ));
    wait("the diff's objects", Duration::from_secs(30), || {
        browser.exists("tr[data-object='ConfigMap/two'][data-change=added]")
    });
    let file = browser
        .text(".file-diff[data-path='manifests/two.yaml']")
        .unwrap_or_else(|| panic!("the file's diff: {}", browser.source()));
    assert!(file.contains("+kind: ConfigMap"), "{file}");
    assert!(
        !browser.exists(".file-diff[data-path='manifests/one.yaml']"),
        "an unchanged file is not shown"
    );
    shot(&browser, "ui-diff");

    // The plan of a branch not merged: what it would change, nothing
    // applied.
    tether_testenv::git::git(&repo, &["checkout", "-q", "-b", "feature"]);
    let planned = commit(
        &repo,
        &[(
            "manifests/one.yaml",
            Some(&configmap("one").replace("'1'", "'3'")),
        )],
    );
    tether_testenv::git::git(&repo, &["checkout", "-q", "main"]);
    browser.goto(&format!("{}/ui/agents/prod", setup.api));
    browser.click("#plan-link");
    wait("the plan form", Duration::from_secs(10), || {
        browser.exists("#plan-form")
    });
    browser.type_into("#commit", "feature");
    browser.click("#plan");
    wait("the plan", Duration::from_secs(60), || {
        browser.exists("#plan-counts") || browser.exists("#refused")
    });
    let change = browser
        .text("tr[data-object='ConfigMap/one']")
        .unwrap_or_else(|| panic!("the planned change: {}", browser.source()));
    assert!(
        change.contains("update") && change.contains('3'),
        "{change}"
    );
    assert!(
        browser.source().contains(&planned),
        "the plan names the commit"
    );
    shot(&browser, "ui-plan");
    let (session, csrf) = session_and_csrf(&browser);
    let unknown = post_form(
        &setup.api,
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
        ns,
        "-o",
        "jsonpath={.data.a}",
    ]);
    assert_eq!(data.trim(), "1", "a plan changes nothing");

    // Projects: the admin creates the push webhook's secret, shown once
    // with the URL for each git host.
    browser.goto(&format!("{}/ui/projects", setup.api));
    assert!(
        browser
            .text("tr[data-project='team/config']")
            .is_some_and(|t| t.contains("prod")),
        "{}",
        browser.source()
    );
    browser.goto(&format!("{}/ui/project?id=team%2Fconfig", setup.api));
    browser.click("#create-webhook");
    wait("the webhook secret", Duration::from_secs(10), || {
        browser.exists("#webhook-secret")
    });
    let secret = browser.text("#webhook-secret").expect("secret");
    assert_eq!(secret.len(), 64, "{secret}");
    assert!(
        browser
            .text("#webhook-urls")
            .is_some_and(|t| t.contains(&format!(
                "{}/api/v1/projects/team%2Fconfig/hooks/gitea",
                setup.api
            ))),
        "{}",
        browser.source()
    );
    browser.goto(&format!("{}/ui/project?id=team%2Fconfig", setup.api));
    assert!(
        browser
            .text("#webhook-state")
            .is_some_and(|t| t.contains("active")),
        "{}",
        browser.source()
    );
    assert!(!browser.source().contains(&secret), "never shown again");
    shot(&browser, "ui-project");

    // Forms without their CSRF token are refused; with the cookie only.
    let session = cookie["value"].as_str().expect("value").to_owned();
    let refused = post_form(&setup.api, "/ui/logout", &session, "csrf=wrong");
    assert_eq!(refused, 403, "logout without the session's CSRF token");
    let refused = post_form(
        &setup.api,
        "/ui/login",
        "",
        &format!("token={}&csrf=x", admin.trim()),
    );
    assert_eq!(refused, 403, "sign-in without the form's own cookie");

    // A token created from the UI is shown once; the agent's own token
    // revoked from the UI: its page shows it offline.
    browser.goto(&format!("{}/ui/agents/prod", setup.api));
    browser.type_into("input[name=name]", "spare");
    browser.click("#create-token");
    wait("the new token's page", Duration::from_secs(10), || {
        browser.exists("#new-token")
    });
    let shown = browser.text("#new-token").expect("the new token, once");
    assert!(!shown.is_empty());
    browser.goto(&format!("{}/ui/agents/prod", setup.api));
    assert!(!browser.source().contains(&shown), "never shown again");
    browser.click("#revoke-1");
    wait(
        "the agent offline on its page",
        Duration::from_secs(30),
        || {
            browser
                .text("#connection")
                .is_some_and(|t| t.contains("offline"))
        },
    );
    assert!(
        browser
            .text("tr[data-token='1']")
            .is_some_and(|t| t.contains("revoked")),
        "{}",
        browser.source()
    );

    // Users: one the agent's user_access does not admit sees nothing of
    // it; one it admits sees it.
    let outsider = user(&setup, "bob", "elsewhere");
    let member = user(&setup, "ann", "team");
    browser.delete_cookies();
    sign_in(&browser, &setup.api, &outsider);
    wait("bob's agents page", Duration::from_secs(10), || {
        browser.exists("#agents")
    });
    assert!(
        !browser.exists("tr[data-agent=prod]"),
        "{}",
        browser.source()
    );
    browser.goto(&format!("{}/ui/agents/prod", setup.api));
    assert!(
        browser.source().contains("no such agent"),
        "{}",
        browser.source()
    );
    browser.delete_cookies();
    sign_in(&browser, &setup.api, &member);
    wait("ann's agents page", Duration::from_secs(10), || {
        browser.exists("#agents")
    });
    assert!(
        browser.exists("tr[data-agent=prod]"),
        "{}",
        browser.source()
    );
    // ann sees her own tokens only.
    browser.goto(&format!("{}/ui/users", setup.api));
    assert!(
        browser.url().ends_with("/ui/users/ann"),
        "{}",
        browser.url()
    );
    browser.goto(&format!("{}/ui/users/bob", setup.api));
    assert!(browser.exists("#not-found"), "{}", browser.source());

    // Users from the UI: the admin creates one and their token (shown
    // once); the user signs in with it, makes a token of their own and
    // revokes the one their session runs on: the session ends.
    browser.delete_cookies();
    sign_in(&browser, &setup.api, admin.trim());
    wait("the agents page", Duration::from_secs(10), || {
        browser.exists("#agents")
    });
    browser.goto(&format!("{}/ui/users", setup.api));
    browser.type_into("#new-user input[name=name]", "cat");
    browser.type_into("#new-user input[name=memberships]", "team, other/group");
    browser.click("#create-user");
    wait("cat's page", Duration::from_secs(10), || {
        browser.exists("#user-tokens")
    });
    assert_eq!(
        browser.text("#memberships").as_deref(),
        Some("team, other/group")
    );
    browser.type_into("#new-pat input[name=name]", "laptop");
    browser.click("#create-pat");
    wait("cat's new token", Duration::from_secs(10), || {
        browser.exists("#new-pat-token")
    });
    let pat = browser.text("#new-pat-token").expect("the token, once");
    shot(&browser, "ui-user-token");
    browser.delete_cookies();
    sign_in(&browser, &setup.api, &pat);
    wait("cat's agents page", Duration::from_secs(10), || {
        browser.exists("tr[data-agent=prod]")
    });
    browser.goto(&format!("{}/ui/users/cat", setup.api));
    let laptop = browser.text("#user-tokens").expect("cat's tokens");
    // What a user may not do is refused, whatever the form says.
    let (session, csrf) = session_and_csrf(&browser);
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
        let answer = post_form(&setup.api, path, &session, &format!("csrf={csrf}&{body}"));
        assert_eq!(answer, status, "{path} {body}");
    }
    assert!(
        laptop.contains("laptop") && laptop.contains("active"),
        "{laptop}"
    );
    browser.type_into("#new-pat input[name=name]", "ci");
    browser.click("#create-pat");
    wait("cat's own new token", Duration::from_secs(10), || {
        browser.exists("#new-pat-token")
    });
    browser.goto(&format!("{}/ui/users/cat", setup.api));
    let laptop_id = browser
        .source()
        .split("data-token=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a token row")
        .to_owned();
    browser.click(&format!("#revoke-pat-{laptop_id}"));
    wait("the session ended", Duration::from_secs(10), || {
        browser.url().ends_with("/ui/login")
    });
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
