//! Git repositories as kas reads them: resolve a ref to a commit and read
//! files at that commit straight from the object database, never checking
//! anything out.
//!
//! A project's URL is either a local path, read in place, or a remote
//! (`https://`, `ssh://`, `git@host:path`, `file://`), kept as a bare mirror
//! in kas's data folder. Fetching a mirror runs the `git` program, so that
//! every credential helper, SSH config and proxy setting users already have
//! works unchanged; reading is done in-process with gix.
//!
//! Every function here blocks: callers run them on a blocking thread.

mod mirror;
pub mod push;
mod read;
mod verify;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use read::{CommitId, FileRead, Matched, SelectLimits};
pub use verify::{
    Confine, Object, ObjectKind, SignatureFormat, Signed, TrustedKeys, Unverified, Verifier,
    VerifyError,
};

/// Why a repository could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot open git repository {location}: {message}")]
    Open { location: String, message: String },
    #[error("git fetch from {url} failed: {message}")]
    Fetch { url: String, message: String },
    #[error("ref {reference:?} not found in {location}")]
    RefNotFound { location: String, reference: String },
    #[error("cannot read {what} in {location}: {message}")]
    Read {
        location: String,
        what: String,
        message: String,
    },
    #[error("glob {glob:?} is invalid: {message}")]
    Glob { glob: String, message: String },
    #[error("{what} at {commit}: more than the limit of {limit}")]
    OverLimit {
        what: String,
        commit: String,
        limit: u64,
    },
    #[error("{path} at {commit} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        path: String,
        commit: String,
        size: u64,
        limit: u64,
    },
}

/// How long one run of git (a clone or a fetch) may take by default.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a project's objects are read from.
#[derive(Debug, Clone)]
pub struct Source {
    url: String,
    kind: Kind,
    timeout: Duration,
}

#[derive(Debug, Clone)]
enum Kind {
    /// A repository on this machine, read in place (a new commit is visible
    /// at once, no fetch needed).
    Local(PathBuf),
    /// A remote, mirrored into a bare repository of kas's own.
    Mirror(PathBuf),
}

impl Source {
    /// The source for a project URL. Remote URLs are mirrored under
    /// `mirrors`, one folder per URL.
    pub fn new(url: &str, mirrors: &Path) -> Self {
        Self::with_mirror_key(url, url, mirrors)
    }

    /// The source of kas project `project`: its mirror folder is its own
    /// (two projects with one URL never share a mirror, so their fetches
    /// cannot race), and a new URL gets a new mirror.
    pub fn for_project(project: &str, url: &str, mirrors: &Path) -> Self {
        Self::with_mirror_key(url, &format!("{project}\n{url}"), mirrors)
    }

    fn with_mirror_key(url: &str, key: &str, mirrors: &Path) -> Self {
        let kind = if is_remote(url) {
            Kind::Mirror(mirrors.join(mirror::folder_name(url, key)))
        } else {
            Kind::Local(PathBuf::from(url))
        };
        Source {
            url: url.to_owned(),
            kind,
            timeout: DEFAULT_FETCH_TIMEOUT,
        }
    }

    /// Bounds each run of git for this source.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URL without any password it carries, fit for logs and errors.
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }

    /// Brings the source up to date with its origin: a fetch for a mirror
    /// (a clone the first time), nothing for a local repository.
    pub fn update(&self) -> Result<(), GitError> {
        match &self.kind {
            Kind::Local(_) => Ok(()),
            Kind::Mirror(dir) => mirror::update(&self.url, &self.display_url(), dir, self.timeout),
        }
    }

    fn git_dir(&self) -> &Path {
        match &self.kind {
            Kind::Local(p) | Kind::Mirror(p) => p,
        }
    }

    /// The branch the repository's HEAD names (the remote's default branch,
    /// for a mirror), `None` when HEAD is detached or unreadable.
    pub fn default_branch(&self) -> Option<String> {
        let dir = self.git_dir();
        let head = std::fs::read_to_string(dir.join(".git").join("HEAD"))
            .or_else(|_| std::fs::read_to_string(dir.join("HEAD")))
            .ok()?;
        head.trim()
            .strip_prefix("ref: refs/heads/")
            .filter(|b| !b.is_empty())
            .map(str::to_owned)
    }

    /// The URL as given (with any password it carries): for git itself.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The commit `reference` (a branch, a tag or a full commit id) points
    /// to, or the default branch's when `None`.
    pub fn resolve(&self, reference: Option<&str>) -> Result<CommitId, GitError> {
        read::resolve(self.git_dir(), &self.display_url(), reference)
    }

    /// The file at `path` in `commit`, `None` if there is none; files over
    /// `limit` bytes are an error, found before the file is loaded.
    pub fn read_file(
        &self,
        commit: &CommitId,
        path: &str,
        limit: u64,
    ) -> Result<Option<FileRead>, GitError> {
        read::read_file(self.git_dir(), &self.display_url(), commit, path, limit)
    }
}

/// `scheme://user:password@host/...` becomes `scheme://user:***@host/...`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

impl Source {
    /// Every file at `commit` whose path matches one of `globs` (git's
    /// path syntax: `*` stays within a folder, `**` crosses folders,
    /// `{a,b}` alternates), read under `limits`, sorted by path.
    pub fn select_files(
        &self,
        commit: &CommitId,
        globs: &[String],
        limits: &SelectLimits,
    ) -> Result<Vec<Matched>, GitError> {
        read::select_files(self.git_dir(), &self.display_url(), commit, globs, limits)
    }
}

/// Whether a project URL names a remote rather than a folder on this machine.
pub fn is_remote(url: &str) -> bool {
    url.contains("://") || scp_like(url)
}

/// Why a URL cannot be a project's repository.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("the repository URL is empty")]
    Empty,
    #[error("repository URL {0:?} starts with '-'")]
    Option(String),
    #[error(
        "repository URL {0:?} uses a git remote helper ('::'); only file, git, http, https and ssh are allowed"
    )]
    RemoteHelper(String),
    #[error("repository URL scheme {0}:// is not allowed; use file, git, http, https or ssh")]
    Scheme(String),
}

/// Why `url` cannot be a project's repository: only a local path and
/// `file://`, `http(s)://`, `ssh://`, `git://` and `user@host:path` are
/// accepted. git's `ext::` (and `fd::`) transports run commands on kas's
/// machine; whoever may register a project must not get that.
pub fn check_url(url: &str) -> Result<(), UrlRefused> {
    let url = url.trim();
    if url.is_empty() {
        return Err(UrlRefused::Empty);
    }
    if url.starts_with('-') {
        return Err(UrlRefused::Option(url.to_owned()));
    }
    if url.contains("::") {
        return Err(UrlRefused::RemoteHelper(redact(url)));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(
            scheme.as_str(),
            "file" | "git" | "http" | "https" | "ssh" | "git+ssh" | "ssh+git"
        ) {
            return Err(UrlRefused::Scheme(scheme));
        }
    }
    Ok(())
}

/// `user@host:path`, git's scp-like SSH syntax.
fn scp_like(url: &str) -> bool {
    match url.split_once(':') {
        Some((host, _)) => !host.is_empty() && !host.contains('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_are_told_from_paths() {
        assert!(is_remote("https://example.com/a.git"));
        assert!(is_remote("ssh://git@example.com/a.git"));
        assert!(is_remote("git@example.com:team/a.git"));
        assert!(is_remote("file:///srv/git/a.git"));
        assert!(!is_remote("/srv/git/a"));
        assert!(!is_remote("relative/repo"));
        assert!(!is_remote("./a:b"));
    }

    #[test]
    fn only_real_transports_are_accepted() {
        for ok in [
            "/srv/git/a",
            "https://u:pw@example.com/a.git",
            "ssh://git@example.com/a.git",
            "git@example.com:team/a.git",
            "file:///srv/a.git",
            "git://example.com/a.git",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "ext::sh -c touch% /tmp/pwned",
            "fd::17",
            "transport::whatever",
            "ftp://example.com/a.git",
            "--upload-pack=touch /tmp/x",
            "",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(redact("https://u:pw@h/x.git"), "https://u:***@h/x.git");
        assert_eq!(redact("https://tok@h/x@y"), "https://tok:***@h/x@y");
        assert_eq!(redact("https://h/x.git"), "https://h/x.git");
        assert_eq!(redact("/srv/a"), "/srv/a");
    }
}
