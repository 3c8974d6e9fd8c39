//! Reading refs and blobs with gix.

use std::fmt;
use std::path::Path;

use gix::ObjectId;

use crate::GitError;

/// A commit id, as full lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CommitId(ObjectId);

impl CommitId {
    pub fn parse(hex: &str) -> Option<Self> {
        ObjectId::from_hex(hex.as_bytes()).ok().map(CommitId)
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A file read at a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRead {
    pub bytes: Vec<u8>,
}

fn open(dir: &Path, location: &str) -> Result<gix::Repository, GitError> {
    let mut repo = gix::open(dir).map_err(|e| GitError::Open {
        location: location.to_owned(),
        message: e.to_string(),
    })?;
    // `refs/replace/*` in a tenant's repository would serve one commit's
    // files under another's id, the one whose signature was verified
    // (git verifies with replacements off, and so kas reads).
    repo.objects.ignore_replacements = true;
    Ok(repo)
}

pub(crate) fn resolve(
    dir: &Path,
    location: &str,
    reference: Option<&str>,
) -> Result<CommitId, GitError> {
    let repo = open(dir, location)?;
    let not_found = || GitError::RefNotFound {
        location: location.to_owned(),
        reference: reference.unwrap_or("HEAD").to_owned(),
    };
    let Some(name) = reference else {
        let id = repo.head_id().map_err(|_| not_found())?;
        return peel_to_commit(&repo, id.detach(), location);
    };
    // The order git uses for a short name: branch, then tag.
    for full in [format!("refs/heads/{name}"), format!("refs/tags/{name}")] {
        if let Ok(mut r) = repo.find_reference(full.as_str()) {
            let id = r.peel_to_id().map_err(|e| GitError::Read {
                location: location.to_owned(),
                what: full.clone(),
                message: e.to_string(),
            })?;
            return peel_to_commit(&repo, id.detach(), location);
        }
    }
    match ObjectId::from_hex(name.as_bytes()) {
        Ok(id) if repo.find_header(id).is_ok() => peel_to_commit(&repo, id, location),
        _ => Err(not_found()),
    }
}

/// Annotated tags peel to the commit they name; anything else that is not a
/// commit is an error.
fn peel_to_commit(
    repo: &gix::Repository,
    id: ObjectId,
    location: &str,
) -> Result<CommitId, GitError> {
    let object = repo.find_object(id).map_err(|e| GitError::Read {
        location: location.to_owned(),
        what: id.to_string(),
        message: e.to_string(),
    })?;
    let commit = object.peel_to_commit().map_err(|e| GitError::Read {
        location: location.to_owned(),
        what: id.to_string(),
        message: e.to_string(),
    })?;
    Ok(CommitId(commit.id))
}

fn read_error(location: &str, what: &str, e: &dyn std::error::Error) -> GitError {
    GitError::Read {
        location: location.to_owned(),
        what: what.to_owned(),
        message: e.to_string(),
    }
}

/// The root tree of `commit`.
fn tree_at<'r>(
    repo: &'r gix::Repository,
    location: &str,
    commit: &CommitId,
) -> Result<gix::Tree<'r>, GitError> {
    let what = commit.to_string();
    repo.find_commit(commit.0)
        .map_err(|e| read_error(location, &what, &e))?
        .tree()
        .map_err(|e| read_error(location, &what, &e))
}

pub(crate) fn read_file(
    dir: &Path,
    location: &str,
    commit: &CommitId,
    path: &str,
    limit: u64,
) -> Result<Option<FileRead>, GitError> {
    let repo = open(dir, location)?;
    let read_error = |what: &str, e: &dyn std::error::Error| read_error(location, what, e);
    let tree = tree_at(&repo, location, commit)?;
    let Some(entry) = tree
        .lookup_entry_by_path(path)
        .map_err(|e| read_error(path, &e))?
    else {
        return Ok(None);
    };
    if !entry.mode().is_blob() {
        return Ok(None);
    }
    let size = repo
        .find_header(entry.oid())
        .map_err(|e| read_error(path, &e))?
        .size();
    if size > limit {
        return Err(GitError::TooLarge {
            path: path.to_owned(),
            commit: commit.to_string(),
            size,
            limit,
        });
    }
    let blob = repo
        .find_object(entry.oid())
        .map_err(|e| read_error(path, &e))?;
    Ok(Some(FileRead {
        bytes: blob.detach().data,
    }))
}

/// Bounds on what one manifest project may select, as the GitLab agent has
/// them.
#[derive(Clone, Debug)]
pub struct SelectLimits {
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    pub max_files: usize,
}

impl Default for SelectLimits {
    fn default() -> Self {
        SelectLimits {
            max_file_bytes: 5 << 20,
            max_total_bytes: 20 << 20,
            max_files: 1_000,
        }
    }
}

/// A file a glob selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matched {
    pub path: String,
    pub bytes: Vec<u8>,
}

pub(crate) fn select_files(
    dir: &Path,
    location: &str,
    commit: &CommitId,
    globs: &[String],
    limits: &SelectLimits,
) -> Result<Vec<Matched>, GitError> {
    let mut set = globset::GlobSetBuilder::new();
    for glob in globs {
        // A glob that reaches outside the repository is a mistake whose
        // empty selection would prune everything: refuse the whole set.
        if glob.split(['/', '\\']).any(|segment| segment == "..") {
            return Err(GitError::Glob {
                glob: glob.clone(),
                message: "it has a '..' segment; globs select files inside the repository".into(),
            });
        }
        let compiled = globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .map_err(|e| GitError::Glob {
                glob: glob.clone(),
                message: e.kind().to_string(),
            })?;
        set.add(compiled);
    }
    let set = set.build().map_err(|e| GitError::Glob {
        glob: globs.join(", "),
        message: e.to_string(),
    })?;
    let repo = open(dir, location)?;
    let read_error = |what: &str, e: &dyn std::error::Error| read_error(location, what, e);
    let tree = tree_at(&repo, location, commit)?;
    let mut recorder = gix::traverse::tree::Recorder::default();
    tree.traverse()
        .breadthfirst(&mut recorder)
        .map_err(|e| read_error(&commit.to_string(), &e))?;
    let mut selected: Vec<(String, ObjectId)> = recorder
        .records
        .into_iter()
        .filter(|entry| entry.mode.is_blob())
        .filter_map(|entry| {
            let path = String::from_utf8(entry.filepath.into()).ok()?;
            set.is_match(&path).then_some((path, entry.oid))
        })
        .collect();
    selected.sort();
    if selected.len() > limits.max_files {
        return Err(GitError::OverLimit {
            what: format!("{} files match", selected.len()),
            commit: commit.to_string(),
            limit: limits.max_files as u64,
        });
    }
    let mut total = 0u64;
    let mut files = Vec::with_capacity(selected.len());
    for (path, oid) in selected {
        let size = repo
            .find_header(oid)
            .map_err(|e| read_error(&path, &e))?
            .size();
        if size > limits.max_file_bytes {
            return Err(GitError::TooLarge {
                path,
                commit: commit.to_string(),
                size,
                limit: limits.max_file_bytes,
            });
        }
        total += size;
        if total > limits.max_total_bytes {
            return Err(GitError::OverLimit {
                what: "the selected files' total size".to_owned(),
                commit: commit.to_string(),
                limit: limits.max_total_bytes,
            });
        }
        let blob = repo.find_object(oid).map_err(|e| read_error(&path, &e))?;
        files.push(Matched {
            path,
            bytes: blob.detach().data,
        });
    }
    Ok(files)
}
