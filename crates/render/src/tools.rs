//! Finding the render tools (helm, kustomize) once, at start.
//!
//! Renders run with a cleared environment ([`crate::sandbox`]), so a bare
//! program name cannot be looked up when a render spawns it: there is no
//! `PATH` by then. kas and agentk therefore resolve each tool when they
//! start, from the flag (or settings file) or else the bare name on their
//! own `PATH`, to an absolute path, run its version command once, and keep
//! both. A tool that is missing or does not run is a reason, kept as it is
//! and shown wherever a render would have used the tool, never a reason to
//! stop: renders are optional.
//!
//! Invariant: a [`Tool`]'s path is absolute, names an executable file, and
//! answered its version command; nothing else here spawns a program.
//!
//! The path is canonical up to its last component: the folder is resolved
//! (no `..`, no symlinked folders), the file name is kept as found. Running
//! a symlink's target instead of the link would break tools that dispatch
//! on their own name (snap's `/snap/bin/helm` → `/usr/bin/snap`, a
//! multi-call binary), so where the link leads is shown beside it
//! ([`Tool::target`]), not run.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sandbox::{self, Invocation, Limits};

/// How long a version command may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// A version command's output kept at most; past it, the tool is refused.
const VERSION_OUTPUT_BYTES: usize = 16 << 10;

/// One tool as kas or agentk was told of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// Its usual name, looked up on `PATH` when nothing is given.
    pub name: &'static str,
    /// The flag that names it, for messages (`--helm`).
    pub flag: &'static str,
    /// What the flag or settings file said, if anything.
    pub given: Option<PathBuf>,
    /// The arguments that print its version, and nothing else.
    pub version_args: &'static [&'static str],
}

/// A tool found and run once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tool {
    /// Absolute, its folder canonical: what renders run.
    pub path: PathBuf,
    /// Where `path` leads when it is a symlink.
    pub target: Option<PathBuf>,
    /// The first line its version command printed (`v4.1.4+g…`).
    pub version: String,
}

/// Why a tool cannot be used. Each message names the tool, what was tried
/// and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Nothing executable where the flag points, or on `PATH`.
    #[error("{tool} not found: {tried}")]
    NotFound { tool: &'static str, tried: String },
    /// A file, but not one that can be run.
    #[error("{tool} {path} is not an executable file ({reason}); {hint}")]
    NotExecutable {
        tool: &'static str,
        path: PathBuf,
        reason: &'static str,
        hint: String,
    },
    /// Found, but its version command failed.
    #[error("{tool} {path} does not run (`{command}`): {source}")]
    DoesNotRun {
        tool: &'static str,
        path: PathBuf,
        command: String,
        #[source]
        source: sandbox::Failure,
    },
}

/// Both tools kas renders with, each found or the reason it is not.
#[derive(Debug)]
pub struct RenderTools {
    pub helm: Result<Tool, ToolError>,
    pub kustomize: Result<Tool, ToolError>,
}

// === impl Wanted ===

impl Wanted {
    /// helm, as `--helm` gave it (or not: an empty value is none).
    pub fn helm(given: Option<PathBuf>) -> Self {
        Wanted {
            name: "helm",
            flag: "--helm",
            given: given.filter(|p| !p.as_os_str().is_empty()),
            version_args: &["version", "--short"],
        }
    }

    /// kustomize, as `--kustomize` gave it (or not: an empty value is
    /// none).
    pub fn kustomize(given: Option<PathBuf>) -> Self {
        Wanted {
            name: "kustomize",
            flag: "--kustomize",
            given: given.filter(|p| !p.as_os_str().is_empty()),
            version_args: &["version"],
        }
    }

    /// The absolute path this tool is at: a name with a `/` as it is
    /// (relative to `cwd`), a bare name (given or the usual one) on the
    /// folders of `search` (a `PATH` value), in order.
    pub fn locate(&self, search: Option<&OsStr>, cwd: &Path) -> Result<PathBuf, ToolError> {
        let program = self
            .given
            .as_deref()
            .unwrap_or_else(|| Path::new(self.name));
        if program.as_os_str().as_bytes().contains(&b'/') {
            let path = cwd.join(program);
            return match executable(&path) {
                Ok(()) => absolute(&path).map_err(|e| self.not_found(&path, e)),
                Err(Refusal::Missing(e)) => Err(self.not_found(&path, e)),
                Err(Refusal::NotExecutable(reason)) => Err(ToolError::NotExecutable {
                    tool: self.name,
                    path,
                    reason,
                    hint: format!("give {} a program", self.flag),
                }),
            };
        }
        let mut refused = None;
        for dir in search.map(std::env::split_paths).into_iter().flatten() {
            // A relative folder would make the answer depend on where kas
            // was started; like Go's exec.LookPath, such entries are not
            // searched.
            if !dir.is_absolute() {
                continue;
            }
            let candidate = dir.join(program);
            match executable(&candidate) {
                Ok(()) => match absolute(&candidate) {
                    Ok(path) => return Ok(path),
                    Err(_) => continue,
                },
                // As execvp does: keep looking, report it if nothing else.
                Err(Refusal::NotExecutable(reason)) => {
                    refused.get_or_insert((candidate, reason));
                }
                Err(Refusal::Missing(_)) => {}
            }
        }
        let on_path = match search {
            Some(search) if !search.is_empty() => {
                format!("on PATH ({})", search.to_string_lossy())
            }
            _ => "on PATH (PATH is not set)".to_owned(),
        };
        let asked = match &self.given {
            None => format!("{} not given", self.flag),
            Some(given) => format!("{} {}", self.flag, given.display()),
        };
        if let Some((path, reason)) = refused {
            return Err(ToolError::NotExecutable {
                tool: self.name,
                path,
                reason,
                hint: format!("{asked}, and no other {} {on_path}", program.display()),
            });
        }
        Err(ToolError::NotFound {
            tool: self.name,
            tried: format!("{asked} and no {} {on_path}", program.display()),
        })
    }

    /// Locates the tool and runs its version command once, in the
    /// sandbox renders use, under a short deadline.
    pub async fn resolve(&self, search: Option<&OsStr>) -> Result<Tool, ToolError> {
        let cwd = std::env::current_dir().map_err(|e| ToolError::NotFound {
            tool: self.name,
            tried: format!("the current folder, to resolve {}: {e}", self.flag),
        })?;
        let path = self.locate(search, &cwd)?;
        let version = self.version(&path).await?;
        let target = std::fs::symlink_metadata(&path)
            .is_ok_and(|m| m.file_type().is_symlink())
            .then(|| std::fs::canonicalize(&path).ok())
            .flatten();
        Ok(Tool {
            path,
            target,
            version,
        })
    }

    async fn version(&self, path: &Path) -> Result<String, ToolError> {
        let does_not_run = |source| ToolError::DoesNotRun {
            tool: self.name,
            path: path.to_owned(),
            command: format!("{} {}", self.name, self.version_args.join(" ")),
            source,
        };
        let home = sandbox::workspace().map_err(|e| {
            does_not_run(sandbox::Failure::Failed(format!(
                "a folder to run it in: {e}"
            )))
        })?;
        let invocation = Invocation {
            program: path.to_owned(),
            args: self.version_args.iter().map(OsString::from).collect(),
            dir: home.path().to_owned(),
            env: sandbox::base_env(home.path()),
            folders: vec![home.path().to_owned()],
            ..Invocation::default()
        };
        let limits = Limits {
            timeout: VERSION_TIMEOUT,
            output_bytes: VERSION_OUTPUT_BYTES,
            // Asking a version runs nothing of a tenant's, and a kernel
            // without Landlock must still be able to say which tools it
            // has.
            sandbox: sandbox::Mode::Off,
            ..Limits::default()
        };
        let out = sandbox::run(&invocation, limits)
            .await
            .map_err(does_not_run)?;
        let text = String::from_utf8_lossy(&out);
        Ok(text.lines().next().unwrap_or_default().trim().to_owned())
    }

    fn not_found(&self, path: &Path, error: std::io::Error) -> ToolError {
        ToolError::NotFound {
            tool: self.name,
            tried: format!("{} {}: {error}", self.flag, path.display()),
        }
    }
}

// === impl Tool ===

impl std::fmt::Display for Tool {
    /// `/usr/local/bin/helm v4.1.4`, with the link's target when it is one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(target) = &self.target {
            write!(f, " (-> {})", target.display())?;
        }
        write!(f, " {}", self.version)
    }
}

// === impl RenderTools ===

impl RenderTools {
    /// Resolves both, each on its own: one missing does not hide the other.
    pub async fn resolve(helm: Wanted, kustomize: Wanted, search: Option<&OsStr>) -> Self {
        let (helm, kustomize) = tokio::join!(helm.resolve(search), kustomize.resolve(search));
        RenderTools { helm, kustomize }
    }

    /// One line for a readiness probe's details and the log:
    /// `helm=/usr/local/bin/helm v4.1.4 kustomize=/usr/local/bin/kustomize v5.8.1`,
    /// a missing tool as `helm missing (helm not found: …)`.
    pub fn summary(&self) -> String {
        let one = |name: &str, tool: &Result<Tool, ToolError>| match tool {
            Ok(tool) => format!("{name}={tool}"),
            Err(e) => format!("{name} missing ({e})"),
        };
        format!(
            "{} {}",
            one("helm", &self.helm),
            one("kustomize", &self.kustomize)
        )
    }
}

// === helpers of locate ===

/// Why a path cannot be run.
enum Refusal {
    Missing(std::io::Error),
    NotExecutable(&'static str),
}

/// Whether `path` (symlinks followed) is a regular file with an execute
/// bit. Like execvp, the bits are what is checked, not who may use them:
/// running it says the rest.
fn executable(path: &Path) -> Result<(), Refusal> {
    let meta = std::fs::metadata(path).map_err(Refusal::Missing)?;
    if !meta.is_file() {
        return Err(Refusal::NotExecutable("not a regular file"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(Refusal::NotExecutable("no execute permission"));
    }
    Ok(())
}

/// `path` (absolute) with its folder canonical and its file name kept.
fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return std::fs::canonicalize(path);
    };
    Ok(std::fs::canonicalize(dir)?.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder with an executable script `name` that prints `version`.
    fn tool_in(dir: &Path, name: &str, version: &str) -> PathBuf {
        std::fs::create_dir_all(dir).expect("dir");
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\necho {version}\necho more\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    fn search(dirs: &[&Path]) -> OsString {
        std::env::join_paths(dirs).expect("joinable")
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    #[test]
    fn a_bare_name_is_found_on_path_in_order_and_runs_once() {
        let root = tempfile::tempdir().expect("dir");
        let (first, second) = (root.path().join("first"), root.path().join("second"));
        std::fs::create_dir_all(&first).expect("dir");
        let expected = tool_in(&second, "helm", "v9.9.9");
        tool_in(&root.path().join("third"), "helm", "v0.0.1");
        let path = search(&[&first, &second, &root.path().join("third")]);

        let tool = block_on(Wanted::helm(None).resolve(Some(&path))).expect("found");
        assert_eq!(
            tool.path,
            std::fs::canonicalize(&expected).expect("canonical")
        );
        assert!(tool.path.is_absolute());
        assert_eq!(tool.version, "v9.9.9", "the first line only");
        assert_eq!(tool.target, None);
    }

    #[test]
    fn a_name_with_a_slash_is_used_as_it_is_made_absolute() {
        let root = tempfile::tempdir().expect("dir");
        tool_in(&root.path().join("bin"), "my-kustomize", "v5.0.0");
        // Not looked up on PATH, even though one is there.
        tool_in(&root.path().join("elsewhere"), "my-kustomize", "v1.0.0");
        let path = search(&[&root.path().join("elsewhere")]);

        let wanted = Wanted::kustomize(Some("./bin/../bin/my-kustomize".into()));
        let found = wanted.locate(Some(&path), root.path()).expect("found");
        let canonical_root = std::fs::canonicalize(root.path()).expect("canonical");
        assert_eq!(found, canonical_root.join("bin/my-kustomize"));
    }

    #[test]
    fn a_symlink_is_run_as_named_and_its_target_shown() {
        let root = tempfile::tempdir().expect("dir");
        let real = tool_in(&root.path().join("real"), "helm-4", "v4.1.4");
        let links = root.path().join("links");
        std::fs::create_dir_all(&links).expect("dir");
        std::os::unix::fs::symlink(&real, links.join("helm")).expect("symlink");

        let tool = block_on(Wanted::helm(None).resolve(Some(&search(&[&links])))).expect("found");
        let canonical = |p: &Path| std::fs::canonicalize(p).expect("canonical");
        assert_eq!(tool.path, canonical(&links).join("helm"));
        assert_eq!(tool.target, Some(canonical(&real)));
        assert_eq!(
            tool.to_string(),
            format!(
                "{} (-> {}) v4.1.4",
                tool.path.display(),
                canonical(&real).display()
            )
        );
    }

    #[test]
    fn a_missing_tool_names_the_flag_and_the_path_searched() {
        let root = tempfile::tempdir().expect("dir");
        let path = search(&[&root.path().join("a"), Path::new("/nonexistent")]);

        let err = Wanted::helm(None)
            .locate(Some(&path), root.path())
            .expect_err("missing");
        assert!(matches!(err, ToolError::NotFound { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "helm not found: --helm not given and no helm on PATH ({})",
                path.to_string_lossy()
            )
        );
        let err = Wanted::helm(None)
            .locate(None, root.path())
            .expect_err("missing");
        assert!(err.to_string().contains("PATH is not set"), "{err}");

        let err = Wanted::kustomize(Some("/nonexistent/kustomize".into()))
            .locate(Some(&path), root.path())
            .expect_err("missing");
        let text = err.to_string();
        assert!(
            text.starts_with("kustomize not found: --kustomize /nonexistent/kustomize: "),
            "{text}"
        );
    }

    #[test]
    fn a_file_that_is_not_executable_is_refused_saying_so() {
        let root = tempfile::tempdir().expect("dir");
        let bin = root.path().join("bin");
        let plain = tool_in(&bin, "helm", "v1");
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("chmod");

        let err = Wanted::helm(None)
            .locate(Some(&search(&[&bin])), root.path())
            .expect_err("refused");
        let ToolError::NotExecutable { path, reason, .. } = &err else {
            panic!("not executable: {err:?}")
        };
        assert_eq!(path, &plain);
        assert_eq!(*reason, "no execute permission");
        assert!(err.to_string().contains("--helm not given"), "{err}");

        // An executable one later on PATH is taken instead.
        let later = tool_in(&root.path().join("later"), "helm", "v2");
        let found = Wanted::helm(None)
            .locate(
                Some(&search(&[&bin, &root.path().join("later")])),
                root.path(),
            )
            .expect("found");
        assert_eq!(found, std::fs::canonicalize(later).expect("canonical"));

        // Given with a slash: refused, naming the flag's fix.
        let err = Wanted::helm(Some(plain.clone()))
            .locate(None, root.path())
            .expect_err("refused");
        assert!(err.to_string().contains("give --helm a program"), "{err}");
        let err = Wanted::helm(Some(bin.clone()))
            .locate(None, root.path())
            .expect_err("a folder");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_tool_that_fails_its_version_command_does_not_run() {
        let root = tempfile::tempdir().expect("dir");
        let path = root.path().join("helm");
        std::fs::write(&path, "#!/bin/sh\necho broken install >&2\nexit 2\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");

        let err = block_on(Wanted::helm(Some(path)).resolve(None)).expect_err("fails");
        assert!(matches!(err, ToolError::DoesNotRun { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("(`helm version --short`): broken install"),
            "{text}"
        );
    }

    #[test]
    fn the_summary_names_each_tool_or_why_it_is_missing() {
        let tools = RenderTools {
            helm: Ok(Tool {
                path: "/opt/bin/helm".into(),
                target: None,
                version: "v4.1.4".into(),
            }),
            kustomize: Err(ToolError::NotFound {
                tool: "kustomize",
                tried: "--kustomize not given and no kustomize on PATH (/usr/bin)".into(),
            }),
        };
        assert_eq!(
            tools.summary(),
            "helm=/opt/bin/helm v4.1.4 kustomize missing (kustomize not found: --kustomize not given and no kustomize on PATH (/usr/bin))"
        );
    }
}
