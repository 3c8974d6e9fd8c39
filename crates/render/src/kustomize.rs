//! `kustomize build` of one directory of the manifest project.

use std::ffi::OsString;
use std::path::Path;

use serde_json::Value;
use tether_agent_config::Kustomization;

use crate::egress::Egress;
use crate::output::RenderError;
use crate::sandbox::{self, Invocation, Limits};

/// What a build that fetches remote bases is given: only where an
/// administrator allowed them for the project (`kas project set ID
/// --allow-remote-bases`) and the config asks (`allow_remote_bases`).
#[derive(Clone, Copy, Debug)]
pub struct RemoteBases<'a> {
    /// Decides every connection, through kas's egress proxy.
    pub egress: &'a Egress,
    /// The system's git, which kustomize runs to clone a base.
    pub git: &'a Path,
}

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Builds `k` in the repository exported at `repo`; the YAML it printed,
/// substituted. With `remote` (the administrator's consent) and the
/// config's `allow_remote_bases`, remote `resources`, `bases` and
/// `components` are fetched by kustomize's git, in the sandbox, through a
/// proxy of kas's that decides each connection with the egress policy.
pub async fn build(
    kustomize: &Path,
    repo: &Path,
    home: &Path,
    k: &Kustomization,
    remote: Option<RemoteBases<'_>>,
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
    let remote = remote.filter(|_| k.allow_remote_bases);
    let consent = match (remote.is_some(), k.allow_remote_bases) {
        (true, _) => Consent::Given,
        (false, true) => Consent::Missing,
        (false, false) => Consent::NotAsked,
    };
    refuse_remote(repo, consent).map_err(|(file, message)| fail(Some(file), message))?;
    let mut env = sandbox::base_env(home);
    let mut invocation = Invocation {
        program: kustomize.to_owned(),
        args: vec![OsString::from("build"), dir.into_os_string()],
        dir: home.to_owned(),
        folders: crate::helm::confined_to(&[repo, home]).map_err(|e| fail(None, e.to_string()))?,
        ..Invocation::default()
    };
    let proxy = match remote {
        None => None,
        Some(remote) => {
            let proxy = crate::egress_proxy::Proxy::start(remote.egress.clone())
                .await
                .map_err(|e| fail(None, format!("kas's egress proxy: {e}")))?;
            let git_folder = remote.git.parent().unwrap_or(Path::new("/usr/bin"));
            env.retain(|(name, _)| name != "PATH");
            for (name, value) in [
                ("PATH", git_folder.as_os_str().to_owned()),
                ("HTTPS_PROXY", proxy.url().into()),
                ("HTTP_PROXY", proxy.url().into()),
                ("https_proxy", proxy.url().into()),
                ("http_proxy", proxy.url().into()),
                ("TMPDIR", home.as_os_str().to_owned()),
                ("GIT_CONFIG_NOSYSTEM", "1".into()),
                ("GIT_TERMINAL_PROMPT", "0".into()),
                ("GIT_ALLOW_PROTOCOL", "https:http".into()),
            ] {
                env.push((name.to_owned(), value));
            }
            invocation.system = std::iter::once(remote.git.to_owned())
                .chain(
                    crate::sandbox::GIT_SYSTEM
                        .iter()
                        .map(std::path::PathBuf::from),
                )
                .filter(|path| path.exists())
                .collect();
            invocation.devices = vec!["/dev/null".into(), "/dev/urandom".into()];
            invocation.proxy_port = Some(proxy.port());
            Some(proxy)
        }
    };
    invocation.env = env;
    let out = sandbox::run(&invocation, limits).await.map_err(|e| {
        let mut message = e.to_string().replace(&format!("{}/", repo.display()), "");
        if let Some(refusals) = proxy
            .as_ref()
            .map(|p| p.refusals())
            .filter(|r| !r.is_empty())
        {
            message.push_str(&format!(
                "; kas's egress proxy refused: {}",
                refusals.join("; ")
            ));
        }
        fail(None, message)
    })?;
    drop(proxy);
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

/// Whether remote bases may be fetched for a build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Consent {
    /// The config asks and an administrator allowed the project.
    Given,
    /// The config asks; no administrator allowed the project.
    Missing,
    /// The config does not ask.
    NotAsked,
}

/// Refuses what would make kustomize reach outside the repository, in
/// every kustomization of the repository (what the build reaches cannot
/// be known before it runs, and a kustomization file is small): remote
/// entries in any field that loads a file, remote bases unless consented
/// (and then `https://` or `http://` only: the proxy decides which), and
/// Helm inflation. The sandbox refuses the network in any case; this says
/// why, naming the file and the field: `(file, message)`.
fn refuse_remote(repo: &Path, consent: Consent) -> Result<(), (String, String)> {
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
                    let base = ["resources", "bases", "components"].contains(&field.as_str());
                    let over_http = entry.starts_with("https://") || entry.starts_with("http://");
                    if base && consent == Consent::Given && over_http {
                        continue;
                    }
                    let how = match (base, consent) {
                        (true, Consent::Given) => {
                            "; remote bases are fetched over https:// (or http:// where kas's egress policy allows the address) only"
                        }
                        (true, Consent::Missing) => {
                            "; allow_remote_bases needs an administrator's consent for the project: kas project set ID --allow-remote-bases"
                        }
                        (true, Consent::NotAsked) => {
                            "; remote bases need allow_remote_bases: true in the config and an administrator's consent for the project (kas project set ID --allow-remote-bases)"
                        }
                        (false, _) => "; put the file in the repository",
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

            // Consent to remote bases lets a base through, never any
            // other field: every field but resources is tried with it.
            let consent = match field {
                "resources" => Consent::NotAsked,
                _ => Consent::Given,
            };
            let refused = refuse_remote(repo.path(), consent);

            let (file, message) = refused.expect_err(&text);
            assert_eq!(file, "app/kustomization.yaml");
            assert!(
                message.starts_with(&format!("{field} names")),
                "{field}: {message}"
            );
        }
    }

    #[test]
    fn remote_bases_pass_only_with_consent_and_over_http_and_local_files_always() {
        let repo = tempfile::tempdir().expect("a folder");
        std::fs::write(
            repo.path().join("kustomization.yaml"),
            "resources: [deploy.yaml, ../base]\nconfigMapGenerator: [{name: x, files: [a.txt, key=b.txt], envs: [c.env]}]\npatches: [{path: p.yaml}]\n",
        )
        .expect("written");
        assert!(refuse_remote(repo.path(), Consent::NotAsked).is_ok());
        let write = |text: &str| {
            std::fs::write(repo.path().join("kustomization.yaml"), text).expect("written")
        };
        write("resources: [https://example.invalid/org/repo//base?ref=v1]\n");
        assert!(refuse_remote(repo.path(), Consent::Given).is_ok());
        let (_, message) = refuse_remote(repo.path(), Consent::Missing).expect_err("no consent");
        assert!(
            message.contains("kas project set ID --allow-remote-bases"),
            "{message}"
        );
        let (_, message) = refuse_remote(repo.path(), Consent::NotAsked).expect_err("not asked");
        assert!(message.contains("allow_remote_bases: true"), "{message}");
        write("resources: [git@example.invalid:org/repo.git//base]\n");
        let (_, message) = refuse_remote(repo.path(), Consent::Given).expect_err("ssh");
        assert!(message.contains("https://"), "{message}");
    }
}
