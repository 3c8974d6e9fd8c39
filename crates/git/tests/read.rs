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
