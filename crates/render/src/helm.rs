//! `helm template` of one chart: in the manifest project, or fetched from a
//! chart repository by kas (helm itself never reaches the network).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tether_agent_config::HelmChart;

use crate::objects;
use crate::output::RenderError;
use crate::sandbox::{self, Invocation, Limits};

/// What a chart is called in messages: its release and where it comes from.
pub fn describe(chart: &HelmChart) -> String {
    match (&chart.path, &chart.repository) {
        (Some(path), _) => format!("helm chart {} ({path})", chart.release_name),
        (None, Some(repository)) => format!(
            "helm chart {} ({}/{}@{})",
            chart.release_name,
            repository.trim_end_matches('/'),
            chart.chart.as_deref().unwrap_or_default(),
            chart.version.as_deref().unwrap_or_default()
        ),
        (None, None) => format!("helm chart {}", chart.release_name),
    }
}

/// Everything `helm template` is given.
#[derive(Debug)]
pub struct Template<'a> {
    pub helm: &'a Path,
    /// The exported repository (values files are read from it).
    pub repo: &'a Path,
    /// The run's own folder.
    pub home: &'a Path,
    pub chart: &'a HelmChart,
    /// A chart folder, or a chart archive fetched from its repository.
    pub source: PathBuf,
    pub namespace: &'a str,
    /// The cluster's version as its agent reported it.
    pub kube_version: Option<&'a str>,
    /// What the cluster serves, as its agent reported it.
    pub api_versions: &'a [String],
    /// Values files written from the cluster's Secrets (on the agent),
    /// applied after the chart's values files and before inline values.
    pub secret_values: &'a [PathBuf],
    pub limits: Limits,
}

/// Renders the chart; its objects, namespaced and with hooks ordered.
pub async fn template(t: &Template<'_>) -> Result<Vec<Value>, RenderError> {
    let what = describe(t.chart);
    let fail = |file: Option<String>, message: String| RenderError {
        what: what.clone(),
        file,
        message,
    };
    if t.source.is_dir() {
        if !t.source.join("Chart.yaml").is_file() {
            return Err(fail(None, "no Chart.yaml in the chart's folder".into()));
        }
        if let Some(file) = uses_lookup(&t.source) {
            return Err(fail(
                Some(relative(t.repo, &file)),
                "the chart calls `lookup`, which reads the live cluster: kas renders without one, so charts using lookup are not supported".into(),
            ));
        }
        if let Some((file, reference)) = schema_reaching_out(&t.source) {
            return Err(fail(
                Some(relative(t.repo, &file)),
                format!(
                    "the values schema's $ref {reference:?} names a URL or file outside the chart: refused (a render reaches nothing but its repository); keep the schema whole in the chart"
                ),
            ));
        }
    }
    let mut args: Vec<OsString> = vec![
        "template".into(),
        t.chart.release_name.clone().into(),
        t.source.clone().into_os_string(),
        "--namespace".into(),
        t.namespace.into(),
    ];
    if t.chart.include_crds {
        args.push("--include-crds".into());
    }
    if t.chart.skip_tests {
        args.push("--skip-tests".into());
    }
    if let Some(version) = t.kube_version.filter(|v| !v.is_empty()) {
        args.push("--kube-version".into());
        args.push(version.into());
    }
    // One argument each, `=`-joined: a value can never read as a flag.
    for version in t.api_versions {
        args.push(format!("--api-versions={version}").into());
    }
    for file in &t.chart.values_files {
        let path = t.repo.join(file);
        if !path.is_file() {
            return Err(fail(
                Some(file.clone()),
                "the values file is not in the repository at this commit".into(),
            ));
        }
        // kas holds no decryption key, and rendering ciphertext would
        // apply it: the agent decrypts, so the chart renders there.
        if std::fs::read(&path).is_ok_and(|bytes| tether_sops::is_encrypted(file, &bytes)) {
            return Err(fail(
                Some(file.clone()),
                "the values file is encrypted with SOPS, and kas never decrypts: render the chart on the agent (render_on: agent, with the project's decryption)".into(),
            ));
        }
        args.push("--values".into());
        args.push(path.into_os_string());
    }
    for file in t.secret_values {
        args.push("--values".into());
        args.push(file.clone().into_os_string());
    }
    if !t.chart.values.is_empty() {
        let inline = t.home.join("values-inline.json");
        let text = serde_json::to_vec(&t.chart.values).map_err(|e| fail(None, e.to_string()))?;
        std::fs::write(&inline, text).map_err(|e| fail(None, format!("writing values: {e}")))?;
        args.push("--values".into());
        args.push(inline.into_os_string());
    }
    let invocation = Invocation {
        program: t.helm.to_owned(),
        args,
        dir: t.home.to_owned(),
        env: sandbox::base_env(t.home),
        folders: confined_to(&[t.repo, t.home]).map_err(|e| fail(None, e.to_string()))?,
        ..Invocation::default()
    };
    let out = sandbox::run(&invocation, t.limits).await.map_err(|e| {
        // Paths in helm's messages are the export's; say them as the
        // repository's.
        let message = e
            .to_string()
            .replace(&format!("{}/", t.repo.display()), "")
            .replace(&format!("{}/", t.home.display()), "");
        fail(None, message)
    })?;
    let text =
        String::from_utf8(out).map_err(|_| fail(None, "printed text that is not UTF-8".into()))?;
    let mut objects = objects::parse_documents(&text).map_err(|e| fail(None, e.to_string()))?;
    objects::place_in_namespace(&mut objects, t.namespace);
    objects::order_hooks(&mut objects);
    Ok(objects)
}

/// A folder a render runs in that cannot be made. The message leaves the
/// path out: it is kas's scratch space, not something of the project.
#[derive(Debug, thiserror::Error)]
#[error("a folder to render in: {source}")]
pub struct NoFolder {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// `folder` and its parents, made if missing.
pub(crate) fn make_folder(folder: &Path) -> Result<(), NoFolder> {
    std::fs::create_dir_all(folder).map_err(|source| NoFolder {
        path: folder.to_owned(),
        source,
    })
}

/// The folders a confined run is given, made if missing (an agent's
/// export of a chart from a repository has no files).
pub(crate) fn confined_to(folders: &[&Path]) -> Result<Vec<PathBuf>, NoFolder> {
    folders
        .iter()
        .map(|folder| make_folder(folder).map(|()| folder.to_path_buf()))
        .collect()
}

fn relative(repo: &Path, file: &Path) -> String {
    file.strip_prefix(repo)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// The first template of the chart (or of a chart it vendors) that calls
/// `lookup`.
fn uses_lookup(chart: &Path) -> Option<PathBuf> {
    let mut pending = vec![chart.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path);
                continue;
            }
            let in_templates = path.components().any(|c| c.as_os_str() == "templates");
            if !in_templates {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if calls_lookup(&text) {
                return Some(path);
            }
        }
    }
    None
}

/// The first `values.schema.json` of the chart (or of a chart it vendors)
/// with a reference helm's validator would load from outside the chart:
/// a URL (`http://`, `https://`, `file://`) or an absolute path. Only
/// references within the document (`#/definitions/x`) and relative paths
/// pass; the sandbox would refuse the rest anyway, this names them.
fn schema_reaching_out(chart: &Path) -> Option<(PathBuf, String)> {
    let mut pending = vec![chart.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path);
                continue;
            }
            if entry.file_name() != "values.schema.json" {
                continue;
            }
            let Some(schema) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            else {
                continue;
            };
            if let Some(reference) = outside_reference(&schema) {
                return Some((path, reference));
            }
        }
    }
    None
}

fn outside_reference(schema: &Value) -> Option<String> {
    match schema {
        Value::Object(map) => map
            .iter()
            .find_map(|(key, value)| match (key.as_str(), value) {
                ("$ref" | "$dynamicRef" | "$recursiveRef", Value::String(reference))
                    if reference.contains(':')
                        || reference.starts_with('/')
                        || reference.contains("..") =>
                {
                    Some(reference.clone())
                }
                _ => outside_reference(value),
            }),
        Value::Array(items) => items.iter().find_map(outside_reference),
        _ => None,
    }
}

/// Whether template text calls `lookup` inside an action (`{{ … }}`).
fn calls_lookup(text: &str) -> bool {
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let action = &rest[open + 2..];
        let close = action.find("}}").unwrap_or(action.len());
        let inside = &action[..close];
        let mut words = inside
            .split(|c: char| c.is_whitespace() || c == '(' || c == '|')
            .filter(|w| !w.is_empty());
        if words.any(|w| w == "lookup") {
            return true;
        }
        rest = &action[close..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_references_outside_the_chart_are_found() {
        for outside in [
            r#"{"$ref": "http://127.0.0.1:9/s.json"}"#,
            r#"{"properties": {"a": {"$ref": "file:///var/lib/kas/secrets-key"}}}"#,
            r#"{"allOf": [{"$ref": "/etc/passwd"}]}"#,
            r#"{"$defs": {"x": {"$dynamicRef": "https://example.invalid/x"}}}"#,
            r#"{"$ref": "../../../outside.json"}"#,
        ] {
            let schema: Value = serde_json::from_str(outside).expect("json");
            assert!(outside_reference(&schema).is_some(), "{outside}");
        }
        for inside in [
            r##"{"$schema": "https://json-schema.org/draft-07/schema#", "$ref": "#/definitions/a"}"##,
            r#"{"properties": {"a": {"$ref": "common.json"}}}"#,
        ] {
            let schema: Value = serde_json::from_str(inside).expect("json");
            assert_eq!(outside_reference(&schema), None, "{inside}");
        }
    }

    #[test]
    fn lookup_calls_are_found_in_actions_only() {
        assert!(calls_lookup(
            r#"{{ $s := lookup "v1" "Secret" .Release.Namespace "db" }}"#
        ));
        assert!(calls_lookup(
            r#"{{- if (lookup "v1" "Namespace" "" "x") }}"#
        ));
        assert!(!calls_lookup(
            "# lookup the value in the docs\nkind: ConfigMap"
        ));
        assert!(!calls_lookup("{{ .Values.lookupTable }}"));
    }
}
