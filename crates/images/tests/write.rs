//! Writing back to a real git remote (a bare repository the git CLI made):
//! exactly the marked lines change, one commit carries every image, a
//! branch that moved is built on, not overwritten, a branch of kas's own
//! is replaced, and bad input pushes nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tether_agent_config::image_updates;
use tether_git::push::PushAuth;
use tether_images::markers::Latest;
use tether_images::write::{Job, WriteError, write, write_with};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app # the app\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: 'registry.example.com/team/app:1.2.0' # {\"$imagepolicy\": \"app\"}\n";
const VALUES: &str = "image:\n  repository: registry.example.com/team/app # {\"$imagepolicy\": \"app:name\"}\n  tag: \"1.2.0\" # {\"$imagepolicy\": \"app:tag\"}\nsidecar:\n  tag: 0.9.0 # {\"$imagepolicy\": \"sidecar:tag\"}\n";
const KUSTOMIZATION: &str = "resources:\r\n- deployment.yaml\r\nimages:\r\n- name: app\r\n  newTag: 1.2.0 # {\"$imagepolicy\": \"flux-system:app:tag\"}\r\n";

/// A bare remote with `main` holding the three files, and a clone of it.
struct Remote {
    _dir: tempfile::TempDir,
    bare: std::path::PathBuf,
    clone: std::path::PathBuf,
    work: std::path::PathBuf,
}

fn remote() -> Remote {
    let dir = tempfile::tempdir().expect("tempdir");
    let bare = dir.path().join("remote.git");
    let clone = dir.path().join("clone");
    git(
        dir.path(),
        &[
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            "remote.git",
        ],
    );
    git(dir.path(), &["clone", "--quiet", "remote.git", "clone"]);
    std::fs::create_dir_all(clone.join("deploy/chart")).expect("folders");
    std::fs::write(clone.join("deploy/deployment.yaml"), DEPLOYMENT).expect("file");
    std::fs::write(clone.join("deploy/chart/values.yaml"), VALUES).expect("file");
    std::fs::write(clone.join("deploy/kustomization.yaml"), KUSTOMIZATION).expect("file");
    std::fs::write(
        clone.join("README.md"),
        "image: x # {\"$imagepolicy\": \"nope\"}\n",
    )
    .expect("file");
    git(&clone, &["checkout", "--quiet", "-b", "main"]);
    git(&clone, &["add", "."]);
    git(&clone, &["commit", "--quiet", "-m", "first"]);
    git(&clone, &["push", "--quiet", "origin", "main"]);
    Remote {
        work: dir.path().join("work"),
        _dir: dir,
        bare,
        clone,
    }
}

fn latest(tags: &[(&str, &str)]) -> BTreeMap<String, Latest> {
    tags.iter()
        .map(|(name, tag)| {
            (
                name.to_string(),
                Latest {
                    repository: format!("registry.example.com/team/{name}"),
                    tag: tag.to_string(),
                    digest: None,
                    pin: false,
                },
            )
        })
        .collect()
}

fn settings_of(yaml: &str) -> image_updates::UpdateSettings {
    settings(yaml)
}

fn settings(yaml: &str) -> image_updates::UpdateSettings {
    let text = format!("images: []\nupdate:\n{yaml}");
    image_updates::parse(&text).expect("valid").0.update
}

fn job<'a>(
    remote: &'a Remote,
    settings: &'a image_updates::UpdateSettings,
    latest: &'a BTreeMap<String, Latest>,
) -> Job<'a> {
    Job {
        url: remote.bare.to_str().expect("utf-8"),
        auth: PushAuth::None,
        base: "main",
        settings,
        latest,
        work: &remote.work,
        timeout: Duration::from_secs(60),
        owned: None,
    }
}

fn show(remote: &Remote, rev_path: &str) -> String {
    git(&remote.bare, &["show", rev_path])
}

#[test]
fn one_commit_changes_exactly_the_marked_values_of_every_kind_of_file() {
    let remote = remote();
    let settings = settings(
        "  paths: [deploy/]\n  commit: {author: {name: Tether, email: tether@example.com}}\n",
    );
    let latest = latest(&[("app", "1.3.0"), ("sidecar", "1.0.0")]);
    let written = write(&job(&remote, &settings, &latest)).expect("written");
    let commit = written.commit.expect("a commit");
    assert_eq!(written.branch, "main");
    assert_eq!(git(&remote.bare, &["rev-parse", "main"]).trim(), commit);
    assert_eq!(
        show(&remote, "main:deploy/deployment.yaml"),
        DEPLOYMENT.replace("app:1.2.0'", "app:1.3.0'")
    );
    assert_eq!(
        show(&remote, "main:deploy/chart/values.yaml"),
        VALUES
            .replace("\"1.2.0\"", "\"1.3.0\"")
            .replace("0.9.0", "1.0.0")
    );
    assert_eq!(
        show(&remote, "main:deploy/kustomization.yaml"),
        KUSTOMIZATION.replace("1.2.0", "1.3.0"),
        "CRLF line endings kept"
    );
    // One commit, by the configured author, naming each image old and new.
    let log = git(
        &remote.bare,
        &["log", "--format=%an <%ae>%n%B", "-1", "main"],
    );
    assert!(log.starts_with("Tether <tether@example.com>"), "{log}");
    assert!(log.contains("app: 1.2.0 -> 1.3.0"), "{log}");
    assert!(log.contains("sidecar: 0.9.0 -> 1.0.0"), "{log}");
    assert_eq!(
        git(&remote.bare, &["rev-list", "--count", "main"]).trim(),
        "2"
    );
    let changed = git(&remote.bare, &["diff", "--numstat", "main~1", "main"]);
    assert_eq!(changed.lines().count(), 3, "{changed}");
    assert!(
        changed
            .lines()
            .all(|l| l.starts_with("1\t1\t") || l.starts_with("2\t2\t")),
        "{changed}"
    );

    // Run again: git holds every value, nothing is pushed.
    let again = write(&job(&remote, &settings, &latest)).expect("written");
    assert_eq!(again.commit, None);
    assert_eq!(git(&remote.bare, &["rev-parse", "main"]).trim(), commit);
}

#[test]
fn a_branch_that_moved_underneath_is_built_on_not_overwritten() {
    let remote = remote();
    let settings = settings("  paths: [deploy/]\n");
    let latest = latest(&[("app", "1.3.0"), ("sidecar", "0.9.0")]);
    let written = write_with(&job(&remote, &settings, &latest), |attempt| {
        if attempt == 1 {
            // Someone pushes between kas's commit and its push: a change to
            // the very file kas changes, on another line.
            let file = remote.clone.join("deploy/deployment.yaml");
            let text = std::fs::read_to_string(&file).expect("file");
            std::fs::write(&file, text.replace("# the app", "# the app, by the team"))
                .expect("file");
            git(
                &remote.clone,
                &["commit", "--quiet", "-am", "a teammate's change"],
            );
            git(&remote.clone, &["push", "--quiet", "origin", "main"]);
        }
    })
    .expect("written");
    assert_eq!(written.attempts, 2, "refused once, then pushed");
    let log = git(&remote.bare, &["log", "--format=%s", "main"]);
    assert_eq!(
        log.lines().collect::<Vec<_>>()[1],
        "a teammate's change",
        "{log}"
    );
    let deployment = show(&remote, "main:deploy/deployment.yaml");
    assert!(
        deployment.contains("# the app, by the team"),
        "{deployment}"
    );
    assert!(deployment.contains("app:1.3.0'"), "{deployment}");
}

#[test]
fn a_push_branch_is_made_from_the_base_and_replaced_only_while_it_is_kas_own() {
    let remote = remote();
    let settings = settings("  paths: [deploy/]\n  push_branch: tether/images\n");
    let first = latest(&[("app", "1.3.0"), ("sidecar", "0.9.0")]);
    let written = write(&job(&remote, &settings, &first)).expect("written");
    assert_eq!(written.branch, "tether/images");
    let pushed = written.commit.expect("a commit");
    assert_eq!(
        git(&remote.bare, &["rev-list", "--count", "main"]).trim(),
        "1",
        "the project's branch is untouched"
    );
    let owned = |tip: &str| {
        let mut job = job(&remote, &settings, &first);
        job.owned = Some(tip);
        write(&job)
    };
    // The same images again: the branch already holds them.
    assert_eq!(owned(&pushed).expect("written").commit, None);
    // A newer image: the branch is made again from main, one commit ahead.
    let second = latest(&[("app", "1.4.0"), ("sidecar", "0.9.0")]);
    let mut newer = job(&remote, &settings, &second);
    newer.owned = Some(&pushed);
    let written = write(&newer).expect("written");
    let pushed = written.commit.expect("a commit");
    assert_eq!(
        git(
            &remote.bare,
            &["rev-list", "--count", "main..tether/images"]
        )
        .trim(),
        "1"
    );
    assert!(show(&remote, "tether/images:deploy/deployment.yaml").contains("app:1.4.0'"));
    // Someone moved the branch since: kas does not replace it.
    git(
        &remote.clone,
        &["push", "--quiet", "--force", "origin", "main:tether/images"],
    );
    let refused = owned(&pushed).expect_err("not replaced");
    assert!(matches!(refused, WriteError::NotOurs { .. }), "{refused}");
    // Nor a branch it never made (another team's, say).
    git(
        &remote.clone,
        &["push", "--quiet", "origin", "main:release"],
    );
    let theirs = settings_of("  push_branch: release\n");
    let refused = write(&job(&remote, &theirs, &first)).expect_err("not replaced");
    assert!(matches!(refused, WriteError::NotOurs { .. }), "{refused}");
}

#[test]
fn bad_input_pushes_nothing() {
    let remote = remote();
    let head = git(&remote.bare, &["rev-parse", "main"]);
    // A marker naming no policy (README.md's is not read: not YAML).
    let settings = settings("  paths: [deploy/]\n");
    let only_app = latest(&[("app", "1.3.0")]);
    let err = write(&job(&remote, &settings, &only_app)).expect_err("refused");
    assert!(
        matches!(&err, WriteError::UnknownPolicy { path, line: 5, policy } if path == "deploy/chart/values.yaml" && policy == "sidecar"),
        "{err}"
    );
    // A value that would break the YAML.
    let broken = latest(&[("app", "1.3.0: [x"), ("sidecar", "1.0.0")]);
    let err = write(&job(&remote, &settings, &broken)).expect_err("refused");
    assert!(matches!(err, WriteError::Broken { .. }), "{err}");
    assert_eq!(
        git(&remote.bare, &["rev-parse", "main"]),
        head,
        "nothing pushed"
    );
}

#[test]
fn a_path_through_a_symbolic_link_cannot_lead_out_of_the_repository() {
    let remote = remote();
    let outside = remote.bare.parent().expect("parent").join("outside");
    std::fs::create_dir_all(&outside).expect("folder");
    let victim = "image: x:1 # {\"$imagepolicy\": \"app\"}\n";
    std::fs::write(outside.join("victim.yaml"), victim).expect("file");
    std::os::unix::fs::symlink(&outside, remote.clone.join("link")).expect("symlink");
    git(&remote.clone, &["add", "link"]);
    git(&remote.clone, &["commit", "--quiet", "-m", "a link out"]);
    git(&remote.clone, &["push", "--quiet", "origin", "main"]);
    let settings = settings("  paths: [link/., deploy/]\n");
    let latest = latest(&[("app", "9.9.9"), ("sidecar", "1.0.0")]);
    let refused = write(&job(&remote, &settings, &latest)).expect_err("refused");
    assert!(
        matches!(refused, WriteError::Escapes { index: 0 }),
        "{refused}"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("victim.yaml")).expect("file"),
        victim
    );
}
