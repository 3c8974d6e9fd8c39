//! Config from git to a running agent, end to end: a repository made with
//! the git CLI, kas and agentk as real processes. A new commit reaches the
//! agent within 2 s of a refresh and within one poll interval without one; a
//! broken config is never sent and its error, with file and line, shows on
//! the agent in the API.

use tether_e2e as support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{Setup, wait};

/// Short, so that the test of polling without a trigger stays quick.
const POLL_INTERVAL: Duration = Duration::from_secs(3);
const CONFIG: &str = ".gitlab/agents/prod/config.yaml";

/// Commits `text` as the agent's config file; returns the commit id.
fn commit_config(repo: &Path, text: &str) -> String {
    support::commit(repo, &[(CONFIG, Some(text))])
}

/// Whether agentk said it applied the config of `commit` (its
/// `ConfigApplied`, which kas shows on the agent's connection).
fn applied(setup: &Setup, commit: &str) -> bool {
    setup
        .connections("prod")
        .first()
        .is_some_and(|c| c["config_commit"] == commit)
}

fn config_follows_git(wss: bool) {
    let setup = Setup::start_with(&["--poll-interval", "3s"]);
    let repo = setup.dir.path().join("config-repo");
    support::new_repo(&repo);
    let first = commit_config(&repo, "observability:\n  logging:\n    level: info\n");
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let address = if wss {
        format!("wss://{}/agent", setup.agent_endpoint)
    } else {
        setup.agent_addr.clone()
    };
    let agentk = setup.agentk_at(&token, &address);
    wait(
        "the first config to be applied",
        Duration::from_secs(60),
        || applied(&setup, &first),
    );
    assert!(
        !agentk.log().contains("DEBUG"),
        "info level shows no debug lines"
    );

    // With the trigger: within 2 s, and the debug level takes effect live.
    let second = commit_config(&repo, "observability:\n  logging:\n    level: debug\n");
    let triggered = Instant::now();
    let answer = setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    assert!(answer.contains(&second), "{answer}");
    wait(
        "the refreshed config to be applied",
        Duration::from_secs(2),
        || applied(&setup, &second),
    );
    eprintln!("refresh to applied: {:?}", triggered.elapsed());
    assert!(
        agentk.log().contains("DEBUG") && agentk.log().contains("log filter set"),
        "the debug level applies at once:\n{}",
        agentk.log()
    );

    // A broken file is never sent; the error names the file and line.
    let broken = commit_config(&repo, "gitops:\n  manifest_projects: [\n    - id: x\n");
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait("the config error to show", Duration::from_secs(5), || {
        setup.agent("prod")["config"]["error"]["commit"] == broken.as_str()
    });
    let status = setup.agent("prod")["config"].clone();
    assert_eq!(
        status["commit"],
        second.as_str(),
        "the last good config stays"
    );
    assert_eq!(status["error"]["file"], CONFIG);
    assert!(status["error"]["line"].as_u64().is_some(), "{status}");
    assert!(applied(&setup, &second), "a broken config is never sent");

    // Without the trigger: within one poll interval (plus delivery).
    let fixed = commit_config(&repo, "observability:\n  logging:\n    level: info\n");
    let committed = Instant::now();
    wait(
        "the polled config to be applied",
        POLL_INTERVAL + Duration::from_secs(1),
        || applied(&setup, &fixed),
    );
    eprintln!("commit to applied by polling: {:?}", committed.elapsed());
    let status = setup.agent("prod")["config"].clone();
    assert_eq!(status["commit"], fixed.as_str());
    assert!(status["error"].is_null(), "{status}");
    let (status, metrics) = support::http_get(setup.admin, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    for expected in [
        "tether_kas_agent_sessions 1",
        "tether_kas_agent_configs_sent_total 3",
        "tether_kas_agent_configs_rejected_total 1",
        "tether_kas_git_polls_total{result=\"ok\"}",
    ] {
        assert!(metrics.contains(expected), "{expected} in\n{metrics}");
    }
    assert!(!setup.kas.log().contains(&token) && !agentk.log().contains(&token));
}

#[test]
fn config_follows_git_over_grpcs() {
    config_follows_git(false);
}

#[test]
fn a_remote_project_is_mirrored_and_a_missing_file_is_the_empty_config() {
    let setup = Setup::start();
    let repo = setup.dir.path().join("upstream");
    support::new_repo(&repo);
    let head = support::commit(&repo, &[("README", Some("no agent config here\n"))]);
    let token = setup.register_agent_in("prod", &format!("file://{}", repo.display()));
    let _agentk = setup.agentk(&token);
    wait(
        "the empty config to be applied",
        Duration::from_secs(60),
        || applied(&setup, &head),
    );
    assert!(
        setup
            .dir
            .path()
            .join("kas/git-mirrors")
            .read_dir()
            .expect("mirrors")
            .count()
            == 1
    );
}

#[test]
fn config_follows_git_over_wss() {
    config_follows_git(true);
}
