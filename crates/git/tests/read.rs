//! Reading repositories made with the real git CLI, in place and through a
//! mirror.

use std::path::Path;

use tether_git::{GitError, Source};
use tether_testenv::git::{commit, git, new_repo};

fn commit_file(repo: &Path, path: &str, text: &str) -> String {
    commit(repo, &[(path, Some(text))])
}

#[test]
fn a_local_repository_is_read_in_place_at_each_commit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("config");
    new_repo(&repo);
    let first = commit_file(
        &repo,
        ".gitlab/agents/prod/config.yaml",
        "observability: {}\n",
    );
    let source = Source::new(repo.to_str().expect("utf-8"), &tmp.path().join("mirrors"));
    source.update().expect("nothing to do");
    let resolved = source.resolve(None).expect("HEAD resolves");
    assert_eq!(resolved.to_string(), first);

    let second = commit_file(&repo, ".gitlab/agents/prod/config.yaml", "gitops: {}\n");
    let resolved = source.resolve(Some("main")).expect("branch resolves");
    assert_eq!(resolved.to_string(), second);
    let file = source
        .read_file(&resolved, ".gitlab/agents/prod/config.yaml", 1024)
        .expect("readable")
        .expect("present");
    assert_eq!(file.bytes, b"gitops: {}\n");

    // The old commit is still readable by id.
    let old = source.resolve(Some(&first)).expect("commit id resolves");
    let file = source
        .read_file(&old, ".gitlab/agents/prod/config.yaml", 1024)
        .expect("readable")
        .expect("present");
    assert_eq!(file.bytes, b"observability: {}\n");

    assert_eq!(
        source
            .read_file(&resolved, ".gitlab/agents/other/config.yaml", 1024)
            .expect("readable"),
        None
    );
    // A folder is not a file.
    assert_eq!(
        source
            .read_file(&resolved, ".gitlab/agents", 1024)
            .expect("readable"),
        None
    );
    match source.read_file(&resolved, ".gitlab/agents/prod/config.yaml", 4) {
        Err(GitError::TooLarge {
            size: 11, limit: 4, ..
        }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    match source.resolve(Some("no-such-branch")) {
        Err(GitError::RefNotFound { .. }) => {}
        other => panic!("expected RefNotFound, got {other:?}"),
    }
}

#[test]
fn annotated_tags_peel_to_their_commit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("config");
    new_repo(&repo);
    let commit = commit_file(&repo, "a.yaml", "a: 1\n");
    git(&repo, &["tag", "-a", "v1", "-m", "release"]);
    let source = Source::new(repo.to_str().expect("utf-8"), tmp.path());
    assert_eq!(source.resolve(Some("v1")).expect("tag").to_string(), commit);
}

#[test]
fn a_remote_is_mirrored_and_fetched_again_on_update() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("upstream");
    new_repo(&repo);
    let first = commit_file(&repo, "a.yaml", "a: 1\n");
    let url = format!("file://{}", repo.display());
    let mirrors = tmp.path().join("mirrors");
    let source = Source::new(&url, &mirrors);
    assert!(
        source.resolve(None).is_err(),
        "nothing is read before the first update"
    );
    source.update().expect("clone");
    assert_eq!(source.resolve(None).expect("HEAD").to_string(), first);

    let second = commit_file(&repo, "a.yaml", "a: 2\n");
    assert_eq!(
        source.resolve(None).expect("HEAD").to_string(),
        first,
        "not fetched yet"
    );
    source.update().expect("fetch");
    let head = source.resolve(Some("main")).expect("main");
    assert_eq!(head.to_string(), second);
    let file = source
        .read_file(&head, "a.yaml", 100)
        .expect("read")
        .expect("present");
    assert_eq!(file.bytes, b"a: 2\n");
    assert_eq!(std::fs::read_dir(&mirrors).expect("mirrors").count(), 1);
}

#[test]
fn an_unreachable_remote_is_a_fetch_error_that_hides_credentials() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = Source::new("https://user:s3cret@127.0.0.1:9/none.git", tmp.path());
    let err = source.update().expect_err("nothing listens on port 9");
    let text = err.to_string();
    assert!(matches!(err, GitError::Fetch { .. }), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

#[test]
fn globs_select_files_inside_the_tree_under_limits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("manifests");
    new_repo(&repo);
    let head = commit(
        &repo,
        &[
            ("manifests/app/deploy.yaml", Some("a: 1\n")),
            ("manifests/app/svc.yml", Some("b: 2\n")),
            ("manifests/app/nested/cm.json", Some("{}\n")),
            ("manifests/app/README.md", Some("docs\n")),
            ("other/x.yaml", Some("x: 1\n")),
            ("top.yaml", Some("t: 1\n")),
        ],
    );
    let source = Source::new(repo.to_str().expect("utf-8"), tmp.path());
    let commit = source.resolve(Some(&head)).expect("resolves");
    let limits = tether_git::SelectLimits::default();
    let paths = |globs: &[&str]| -> Vec<String> {
        let globs: Vec<String> = globs.iter().map(|g| g.to_string()).collect();
        source
            .select_files(&commit, &globs, &limits)
            .expect("selects")
            .into_iter()
            .map(|m| m.path)
            .collect()
    };
    assert_eq!(
        paths(&["manifests/**/*.{yaml,yml,json}"]),
        [
            "manifests/app/deploy.yaml",
            "manifests/app/nested/cm.json",
            "manifests/app/svc.yml"
        ]
    );
    assert_eq!(
        paths(&["manifests/*/*.yaml", "*.yaml"]),
        ["manifests/app/deploy.yaml", "top.yaml"]
    );
    assert!(paths(&["nothing/**"]).is_empty());

    let tight = tether_git::SelectLimits {
        max_files: 2,
        ..Default::default()
    };
    let globs = vec!["**/*.yaml".to_owned()];
    assert!(matches!(
        source.select_files(&commit, &globs, &tight),
        Err(GitError::OverLimit { .. })
    ));
    let small = tether_git::SelectLimits {
        max_file_bytes: 3,
        ..Default::default()
    };
    assert!(matches!(
        source.select_files(&commit, &globs, &small),
        Err(GitError::TooLarge { .. })
    ));
}

/// A git "server" that accepts connections and never answers.
fn hanging_remote() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).expect("non-blocking accept");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < until {
            match listener.accept() {
                Ok((stream, _)) => held.push(stream),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    });
    (addr, handle)
}

#[test]
fn a_hanging_remote_is_stopped_at_the_timeout() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (addr, _server) = hanging_remote();
    let source = Source::new(&format!("http://{addr}/team/app.git"), tmp.path())
        .with_timeout(std::time::Duration::from_secs(2));
    let started = std::time::Instant::now();
    let err = source.update().expect_err("the remote never answers");
    assert!(err.to_string().contains("did not finish within"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "stopped at the timeout, not later: {:?}",
        started.elapsed()
    );
}

/// Every process's command line, as `ps` shows it to any user.
fn command_lines() -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .collect()
}

#[test]
fn a_password_in_the_url_never_reaches_a_command_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (addr, _server) = hanging_remote();
    let url = format!("http://deploy:s3cret-in-url@{addr}/team/app.git");
    let source = Source::new(&url, tmp.path()).with_timeout(std::time::Duration::from_secs(3));
    let fetching = std::thread::spawn(move || source.update());
    let mut seen_git = false;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < until {
        let lines = command_lines();
        seen_git |= lines.iter().any(|l| l.contains(&addr.to_string()));
        assert!(
            !lines.iter().any(|l| l.contains("s3cret-in-url")),
            "a command line holds the password"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(seen_git, "git ran while we looked");
    let err = fetching.join().expect("thread").expect_err("times out");
    assert!(!err.to_string().contains("s3cret-in-url"), "{err}");
}

#[test]
fn an_ext_url_runs_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let marker = tmp.path().join("pwned");
    let url = format!("ext::sh -c touch% {}", marker.display());
    let source = Source::new(&url, &tmp.path().join("mirrors"));
    assert!(source.update().is_err());
    assert!(!marker.exists(), "git ran the ext:: command");
    assert!(tether_git::check_url(&url).is_err());
}

#[test]
fn two_projects_with_one_url_keep_their_own_mirrors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("upstream");
    new_repo(&repo);
    let head = commit_file(&repo, "a.yaml", "a: 1\n");
    let url = format!("file://{}", repo.display());
    let mirrors = tmp.path().join("mirrors");
    let a = Source::for_project("team-a/app", &url, &mirrors);
    let b = Source::for_project("team-b/app", &url, &mirrors);
    let (ta, tb) = (
        std::thread::spawn(move || a.update()),
        std::thread::spawn(move || b.update()),
    );
    ta.join().expect("thread").expect("a fetched");
    tb.join().expect("thread").expect("b fetched");
    assert_eq!(std::fs::read_dir(&mirrors).expect("mirrors").count(), 2);
    let a = Source::for_project("team-a/app", &url, &mirrors);
    assert_eq!(a.resolve(None).expect("HEAD").to_string(), head);
}
