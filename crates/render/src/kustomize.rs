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
    refuse_remote(repo).map_err(|(file, message)| fail(Some(file), message))?;
    let env = sandbox::base_env(home);
    let invocation = Invocation {
        program: kustomize.to_owned(),
        args: vec![OsString::from("build"), dir.into_os_string()],
        dir: home.to_owned(),
        env,
        folders: crate::helm::confined_to(&[repo, home]).map_err(|e| fail(None, e))?,
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
/// repository: a URL, a git remote or a hosting site's shorthand. A
/// generator's `key=path` is judged by its path.
fn is_remote(entry: &str) -> bool {
    let entry = entry.trim();
    entry.contains("://")
        || entry.starts_with("git@")
        || entry.contains("?ref=")
        || entry.contains(".git//")
        || ["github.com/", "gitlab.com/", "bitbucket.org/"]
            .iter()
            .any(|host| entry.starts_with(host))
        || entry
            .split_once('=')
            .is_some_and(|(_, path)| path.contains("://"))
}

/// Where a kustomization names a file kustomize loads: every one of them
/// is fetched by kustomize itself when it is a URL, before its load
/// restrictor is asked. Each entry is `(field, entries)` read from one
/// document.
fn file_references(doc: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let strings = |value: Option<&Value>| -> Vec<String> {
        match value {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    };
    // Lists of paths (or inline text, which is never remote).
    for field in [
        "resources",
        "bases",
        "components",
        "crds",
        "configurations",
        "patchesStrategicMerge",
        "transformers",
        "generators",
        "validators",
    ] {
        for entry in strings(doc.get(field)) {
            found.push((field.to_owned(), entry));
        }
    }
    // Lists of objects with a `path`.
    for field in ["patches", "patchesJson6902", "replacements"] {
        for item in doc
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for entry in strings(item.get("path")) {
                found.push((format!("{field}[].path"), entry));
            }
        }
    }
    for entry in strings(doc.get("openapi").and_then(|o| o.get("path"))) {
        found.push(("openapi.path".to_owned(), entry));
    }
    for field in ["configMapGenerator", "secretGenerator"] {
        for item in doc
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for source in ["files", "envs", "env"] {
                for entry in strings(item.get(source)) {
                    found.push((format!("{field}[].{source}"), entry));
                }
            }
        }
    }
    found
}

/// Refuses what would make kustomize reach outside the repository, in
/// every kustomization of the repository (what the build reaches cannot
/// be known before it runs, and a kustomization file is small): remote
/// entries in any field that loads a file, remote bases included, and
/// Helm inflation. The sandbox refuses the network in any case; this says
/// why, naming the file and the field: `(file, message)`.
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
                if ["helmCharts", "helmChartInflationGenerator", "helmGlobals"]
                    .iter()
                    .any(|field| doc.get(field).is_some())
                {
                    return Err((
                        file,
                        "helmCharts in a kustomization are not run (they fetch charts at build time); list the chart under helm_charts".into(),
                    ));
                }
                for (field, entry) in file_references(&doc) {
                    if !is_remote(&entry) {
                        continue;
                    }
                    let how = if ["resources", "bases", "components"].contains(&field.as_str()) {
                        "; remote bases are not fetched (allow_remote_bases is ignored): vendor the base into the repository"
                    } else {
                        "; put the file in the repository"
                    };
                    return Err((
                        file,
                        format!(
                            "{field} names {entry:?}, outside the repository: refused (a render reaches nothing but its repository){how}"
                        ),
                    ));
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

    /// Every field in which kustomize loads a file by URL, as a hostile
    /// repository would use it; each must be refused naming its field.
    #[test]
    fn every_field_that_loads_a_file_is_checked() {
        let url = "http://127.0.0.1:9/x";
        let cases = [
            ("resources", format!("resources: [{url}]")),
            ("crds", format!("crds: [{url}]")),
            ("configurations", format!("configurations: [{url}]")),
            (
                "patchesStrategicMerge",
                format!("patchesStrategicMerge: [{url}]"),
            ),
            ("transformers", format!("transformers: [{url}]")),
            ("generators", format!("generators: [{url}]")),
            ("validators", format!("validators: [{url}]")),
            ("patches[].path", format!("patches: [{{path: {url}}}]")),
            (
                "patchesJson6902[].path",
                format!("patchesJson6902: [{{path: {url}, target: {{kind: X, name: y}}}}]"),
            ),
            (
                "replacements[].path",
                format!("replacements: [{{path: {url}}}]"),
            ),
            ("openapi.path", format!("openapi: {{path: {url}}}")),
            (
                "configMapGenerator[].files",
                format!("configMapGenerator: [{{name: x, files: [{url}]}}]"),
            ),
            (
                "configMapGenerator[].files",
                format!("configMapGenerator: [{{name: x, files: [key={url}]}}]"),
            ),
            (
                "configMapGenerator[].envs",
                format!("configMapGenerator: [{{name: x, envs: [{url}]}}]"),
            ),
            (
                "secretGenerator[].env",
                format!("secretGenerator: [{{name: x, env: {url}}}]"),
            ),
            (
                "secretGenerator[].files",
                format!("secretGenerator: [{{name: x, files: [{url}]}}]"),
            ),
        ];
        for (field, text) in cases {
            let repo = tempfile::tempdir().expect("a folder");
            std::fs::create_dir_all(repo.path().join("app")).expect("a folder");
            std::fs::write(repo.path().join("app/kustomization.yaml"), &text).expect("written");

            let refused = refuse_remote(repo.path());

            let (file, message) = refused.expect_err(&text);
            assert_eq!(file, "app/kustomization.yaml");
            assert!(
                message.starts_with(&format!("{field} names")),
                "{field}: {message}"
            );
        }
    }

    #[test]
    fn local_files_pass_and_remote_bases_are_refused() {
        let repo = tempfile::tempdir().expect("a folder");
        std::fs::write(
            repo.path().join("kustomization.yaml"),
            "resources: [deploy.yaml, ../base]\nconfigMapGenerator: [{name: x, files: [a.txt, key=b.txt], envs: [c.env]}]\npatches: [{path: p.yaml}]\n",
        )
        .expect("written");
        assert!(refuse_remote(repo.path()).is_ok());
        std::fs::write(
            repo.path().join("kustomization.yaml"),
            "resources: [https://example.invalid/org/repo//base?ref=v1]\n",
        )
        .expect("written");
        let (_, message) = refuse_remote(repo.path()).expect_err("a remote base");
        assert!(message.contains("vendor the base"), "{message}");
    }
}
