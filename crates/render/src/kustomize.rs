//! `kustomize build` of one directory of the manifest project.

use std::ffi::OsString;
use std::path::Path;

use serde_json::Value;
use tether_agent_config::Kustomization;

use crate::output::RenderError;
use crate::sandbox::{self, Invocation, Limits};

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Builds `k` in the repository exported at `repo`; the YAML it printed,
/// substituted.
pub async fn build(
    kustomize: &Path,
    repo: &Path,
    home: &Path,
    k: &Kustomization,
    limits: Limits,
) -> Result<String, RenderError> {
    let what = format!("kustomization {}", k.path);
    let fail = |file: Option<String>, message: String| RenderError {
        what: what.clone(),
        file,
        message,
    };
    let dir = repo.join(&k.path);
    if !KUSTOMIZATION_FILES.iter().any(|f| dir.join(f).is_file()) {
        return Err(fail(
            None,
            format!("{} holds no kustomization.yaml", k.path),
        ));
    }
    if !k.allow_remote_bases {
        refuse_remote(repo).map_err(|(file, message)| fail(Some(file), message))?;
    }
    let mut env = sandbox::base_env(home);
    if k.allow_remote_bases {
        // Remote bases are fetched with git, which needs a PATH.
        env.retain(|(name, _)| name != "PATH");
        env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    }
    let invocation = Invocation {
        program: kustomize.to_owned(),
        args: vec![OsString::from("build"), dir.into_os_string()],
        dir: home.to_owned(),
        env,
    };
    let out = sandbox::run(&invocation, limits).await.map_err(|e| {
        fail(
            None,
            e.to_string().replace(&format!("{}/", repo.display()), ""),
        )
    })?;
    let text =
        String::from_utf8(out).map_err(|_| fail(None, "printed text that is not UTF-8".into()))?;
    crate::substitute::substitute(&text, &k.substitute)
        .map_err(|e| fail(None, format!("substitution: {e}")))
}

/// Whether an entry of a kustomization names something outside the
/// repository: a URL, a git remote or a hosting site's shorthand.
fn is_remote(entry: &str) -> bool {
    entry.contains("://")
        || entry.starts_with("git@")
        || entry.contains("?ref=")
        || entry.contains(".git//")
        || ["github.com/", "gitlab.com/", "bitbucket.org/"]
            .iter()
            .any(|host| entry.starts_with(host))
}

/// Refuses remote bases and Helm inflation in every kustomization of the
/// repository (what the build reaches cannot be known before it runs, and
/// a kustomization file is small): `(file, message)`.
fn refuse_remote(repo: &Path) -> Result<(), (String, String)> {
    let mut pending = vec![repo.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            let name = entry.file_name();
            if !KUSTOMIZATION_FILES.iter().any(|f| name == *f) {
                continue;
            }
            let file = path
                .strip_prefix(repo)
                .unwrap_or(&path)
                .display()
                .to_string();
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            // A file that does not parse is kustomize's to report.
            let Ok(docs) = crate::objects::parse_documents(&text) else {
                continue;
            };
            for doc in docs {
                if doc.get("helmCharts").is_some()
                    || doc.get("helmChartInflationGenerator").is_some()
                {
                    return Err((
                        file,
                        "helmCharts in a kustomization are not run (they fetch charts at build time); list the chart under helm_charts".into(),
                    ));
                }
                for field in ["resources", "bases", "components"] {
                    let entries = doc.get(field).and_then(Value::as_array);
                    for entry in entries.into_iter().flatten().filter_map(Value::as_str) {
                        if is_remote(entry) {
                            return Err((
                                file,
                                format!(
                                    "{field} names {entry:?}, outside the repository; set allow_remote_bases: true to let kustomize fetch it"
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_entries_are_told_from_local_ones() {
        for remote in [
            "https://github.com/org/repo//deploy?ref=v1",
            "github.com/kubernetes-sigs/kustomize/examples/multibases?ref=v3.3.1",
            "git@github.com:org/repo.git",
            "ssh://git@example.com/repo.git//base",
        ] {
            assert!(is_remote(remote), "{remote}");
        }
        for local in ["../base", "deployment.yaml", "components/github.com-like"] {
            assert!(!is_remote(local), "{local}");
        }
    }
}
