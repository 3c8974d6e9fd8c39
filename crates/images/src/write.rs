//! A project's files rewritten for the latest images, checked, committed
//! and pushed.
//!
//! Everything is checked before anything is written: a marker naming no
//! policy, a value it cannot place, a file that was YAML and is not after
//! the change: each refuses the whole update, and nothing is pushed. When
//! the branch moved underneath, the change is made again on its new tip
//! (the markers are read again there, so someone's edit to the same file
//! is kept) and pushed again: never a force-push to the project's branch.
//!
//! Blocking: callers run it on a blocking thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tether_agent_config::image_updates::UpdateSettings;
use tether_git::push::{PushAuth, PushError, Pushed, Worktree};

use crate::markers::{self, Change, Latest};

/// Files looked at in one update, at most.
pub const MAX_FILES: usize = 10_000;
/// A YAML file larger than this is skipped.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Times a change is made again on a branch that moved.
const ATTEMPTS: u32 = 5;

/// One update of one project.
#[derive(Debug)]
pub struct Job<'a> {
    /// The project's URL, and how to push to it.
    pub url: &'a str,
    pub auth: PushAuth,
    /// The branch the project is read from.
    pub base: &'a str,
    pub settings: &'a UpdateSettings,
    /// The newest image of each policy, by name.
    pub latest: &'a BTreeMap<String, Latest>,
    /// A scratch folder of this job's own.
    pub work: &'a Path,
    /// Each run of git's deadline.
    pub timeout: Duration,
    /// The commit kas last pushed to the push branch, when it is a branch
    /// of kas's own: kas replaces that branch only while it is still there
    /// (never a branch someone else made or moved).
    pub owned: Option<&'a str>,
}

/// What an update did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The commit pushed; `None` when git already held every value.
    pub commit: Option<String>,
    /// The branch written to.
    pub branch: String,
    pub files: Vec<FileChanges>,
    /// Pushes tried (more than one when the branch moved).
    pub attempts: u32,
}

/// The changes made to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChanges {
    pub path: String,
    pub changes: Vec<Change>,
}

/// Why nothing was pushed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Git(#[from] PushError),
    #[error(
        "{path}:{line}: the marker names policy {policy:?}, which .tether/image-updates.yaml does not have"
    )]
    UnknownPolicy {
        path: String,
        line: usize,
        policy: String,
    },
    #[error(
        "{path}:{line}: the marker's value cannot be found on its line (write it as `key: value # {{\"$imagepolicy\": …}}`)"
    )]
    Unplaced { path: String, line: usize },
    #[error("{path} would not be valid YAML after the change: {reason}")]
    Broken { path: String, reason: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "branch {branch:?} exists and is not the one kas pushed last: kas replaces only a push branch of its own (delete it, or name another push_branch)"
    )]
    NotOurs { branch: String },
    #[error("update.paths[{index}] leads out of the repository (through a symbolic link)")]
    Escapes { index: usize },
    #[error("branch {branch:?} kept moving: {attempts} pushes were refused")]
    KeptMoving { branch: String, attempts: u32 },
}

/// Makes and pushes the change.
pub fn write(job: &Job<'_>) -> Result<Written, WriteError> {
    write_with(job, |_| {})
}

/// As [`write`], calling `before_push(attempt)` between the commit and its
/// push: the moment another writer can move the branch (tests push there).
pub fn write_with(job: &Job<'_>, mut before_push: impl FnMut(u32)) -> Result<Written, WriteError> {
    let tree = Worktree::create(job.work, job.url, job.auth.clone(), job.timeout)?;
    let branch = job
        .settings
        .push_branch
        .clone()
        .unwrap_or_else(|| job.base.to_owned());
    let own_branch = branch != job.base;
    for attempt in 1..=ATTEMPTS {
        let base = tree.fetch(job.base)?.ok_or_else(|| PushError::NoBranch {
            url: tether_git::redact(job.url),
            branch: job.base.to_owned(),
        })?;
        // A branch of kas's own is made again from the base each time, and
        // replaced only if it is still what was fetched.
        let existing = match own_branch {
            true => tree.fetch(&branch)?,
            false => None,
        };
        if let Some(tip) = &existing
            && job.owned != Some(tip.as_str())
        {
            return Err(WriteError::NotOurs { branch });
        }
        tree.checkout(&base)?;
        let files = rewrite_tree(tree.path(), &job.settings.paths, job.latest)?;
        let message = message(&job.settings.message, &files);
        let author = (
            job.settings.author_name.as_str(),
            job.settings.author_email.as_str(),
        );
        let Some(commit) = tree.commit_all(author, &message)? else {
            // Git holds every value on the base already; a branch of
            // kas's own that still differs is left for a reviewer.
            return Ok(Written {
                commit: None,
                branch,
                files,
                attempts: attempt - 1,
            });
        };
        if let Some(existing) = &existing
            && tree.tree(existing)? == tree.tree(&commit)?
        {
            return Ok(Written {
                commit: None,
                branch,
                files,
                attempts: attempt - 1,
            });
        }
        let replacing = own_branch.then_some(existing.as_deref());
        before_push(attempt);
        match tree.push(&branch, replacing)? {
            Pushed::Done { commit } => {
                return Ok(Written {
                    commit: Some(commit),
                    branch,
                    files,
                    attempts: attempt,
                });
            }
            Pushed::Moved => {
                tracing::info!(
                    branch,
                    attempt,
                    "the branch moved: making the change again on its new tip"
                );
            }
        }
    }
    Err(WriteError::KeptMoving {
        branch,
        attempts: ATTEMPTS,
    })
}

/// Rewrites the marked values of every YAML file under `paths` of `root`
/// (the whole tree when empty), checking each before writing any.
pub fn rewrite_tree(
    root: &Path,
    paths: &[String],
    latest: &BTreeMap<String, Latest>,
) -> Result<Vec<FileChanges>, WriteError> {
    let mut files = Vec::new();
    // A path through a symbolic link of the repository (`link/.`) must not
    // lead the walk out of it: every start is resolved and must stay in.
    let root = &root.canonicalize().map_err(|source| WriteError::Read {
        path: ".".into(),
        source,
    })?;
    let starts: Vec<PathBuf> = match paths.is_empty() {
        true => vec![root.to_owned()],
        false => paths
            .iter()
            .map(|p| root.join(p.trim_end_matches('/')))
            .collect(),
    };
    for (index, start) in starts.into_iter().enumerate() {
        let Ok(resolved) = start.canonicalize() else {
            continue;
        };
        if !resolved.starts_with(root) {
            return Err(WriteError::Escapes { index });
        }
        collect(root, &resolved, &mut files);
    }
    files.sort();
    files.dedup();
    let mut planned: Vec<(PathBuf, String, FileChanges)> = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&file).map_err(|source| WriteError::Read {
            path: relative.clone(),
            source,
        })?;
        if !text.contains("$imagepolicy") {
            continue;
        }
        let out = markers::rewrite(&text, latest);
        if let Some((line, policy)) = out.unknown.first() {
            return Err(WriteError::UnknownPolicy {
                path: relative,
                line: *line,
                policy: policy.clone(),
            });
        }
        if let Some(line) = out.unplaced.first() {
            return Err(WriteError::Unplaced {
                path: relative,
                line: *line,
            });
        }
        if out.changes.is_empty() {
            continue;
        }
        // A file that was YAML must stay YAML (a Helm template that was
        // not is left to its renderer).
        if is_yaml(&text) && !is_yaml(&out.text) {
            let reason = serde_saphyr::from_multiple::<serde_json::Value>(&out.text)
                .err()
                .map(|e| e.to_string().lines().next().unwrap_or_default().to_owned())
                .unwrap_or_default();
            return Err(WriteError::Broken {
                path: relative,
                reason,
            });
        }
        planned.push((
            file,
            out.text,
            FileChanges {
                path: relative,
                changes: out.changes,
            },
        ));
    }
    let mut changed = Vec::new();
    for (file, text, changes) in planned {
        std::fs::write(&file, text).map_err(|source| WriteError::Read {
            path: changes.path.clone(),
            source,
        })?;
        changed.push(changes);
    }
    Ok(changed)
}

/// The commit message: the template with `{{summary}}` (`app: 1.2.0 ->
/// 1.3.0, web: …`, the tags) and `{{changes}}` (one line per value
/// changed, as written).
pub fn message(template: &str, files: &[FileChanges]) -> String {
    let mut lines = Vec::new();
    for file in files {
        for change in &file.changes {
            lines.push(format!(
                "- {}:{}: {}: {} -> {}",
                file.path, change.line, change.policy, change.old, change.new
            ));
        }
    }
    template
        .replace("{{summary}}", &summary(files).join(", "))
        .replace("{{changes}}", &lines.join("\n"))
}

/// One `policy: old -> new` per policy changed, in tags (`app: 1.2.0 ->
/// 1.3.0`), in the order the files name them.
pub fn summary(files: &[FileChanges]) -> Vec<String> {
    let mut summary: Vec<String> = Vec::new();
    for change in files.iter().flat_map(|f| &f.changes) {
        let prefix = format!("{}: ", change.policy);
        if !summary.iter().any(|s| s.starts_with(&prefix)) {
            summary.push(format!(
                "{prefix}{} -> {}",
                tag_of(&change.old),
                tag_of(&change.new)
            ));
        }
    }
    summary
}

/// The tag part of a marked value: `1.3.0` of
/// `registry:5000/team/app:1.3.0`; a tag or a name as it is.
fn tag_of(value: &str) -> &str {
    let name_end = value.rfind('/').map_or(0, |i| i + 1);
    match value[name_end..].find(':') {
        Some(colon) => &value[name_end + colon + 1..],
        None => value,
    }
}

fn is_yaml(text: &str) -> bool {
    serde_saphyr::from_multiple::<serde_json::Value>(text).is_ok()
}

/// YAML files under `at`, never following a symbolic link, never into
/// `.git`, at most [`MAX_FILES`].
fn collect(root: &Path, at: &Path, out: &mut Vec<PathBuf>) {
    let mut stack = vec![at.to_owned()];
    let mut seen = 0usize;
    while let Some(path) = stack.pop() {
        seen += 1;
        if seen > MAX_FILES || !path.starts_with(root) {
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if path.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if meta.is_file()
            && meta.len() <= MAX_FILE_BYTES
            && path.extension().is_some_and(|e| e == "yaml" || e == "yml")
        {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_summary_names_tags_not_whole_references() {
        assert_eq!(super::tag_of("127.0.0.1:5000/team/app:1.3.0"), "1.3.0");
        assert_eq!(
            super::tag_of("ghcr.io/a/b:1.3.0@sha256:ab"),
            "1.3.0@sha256:ab"
        );
        assert_eq!(super::tag_of("1.3.0"), "1.3.0");
        assert_eq!(super::tag_of("ghcr.io/team/app"), "ghcr.io/team/app");
    }
}
