//! Git repositories for tests, made with the real git CLI, as users make
//! them: a fixed author, one branch named `main`.

use std::path::Path;
use std::process::Command;

/// Runs git in `dir` and returns its trimmed output.
///
/// # Panics
/// If git cannot run or fails; the message carries its stderr.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "tether-test")
        .env("GIT_AUTHOR_EMAIL", "test@tether.invalid")
        .env("GIT_COMMITTER_NAME", "tether-test")
        .env("GIT_COMMITTER_EMAIL", "test@tether.invalid")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A new repository at `path` with one branch, `main`.
pub fn new_repo(path: &Path) {
    std::fs::create_dir_all(path).expect("create the repository folder");
    git(path, &["init", "-q", "-b", "main"]);
}

/// Writes (`Some`) or deletes (`None`) files in `repo`, commits, and returns
/// the commit id.
pub fn commit(repo: &Path, changes: &[(&str, Option<&str>)]) -> String {
    for (path, text) in changes {
        let file = repo.join(path);
        match text {
            Some(text) => {
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent).expect("create folders");
                }
                std::fs::write(&file, text).expect("write the file");
            }
            None => std::fs::remove_file(&file).expect("remove the file"),
        }
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "--allow-empty", "-m", "change"]);
    git(repo, &["rev-parse", "HEAD"])
}
