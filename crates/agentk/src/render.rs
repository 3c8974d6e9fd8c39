//! Charts rendered on the agent (`render_on: agent`): kas sends the chart
//! and its values files instead of objects, and agentk runs the same
//! sandboxed `helm template` kas would, adding values read from Secrets in
//! the release's namespace (`values_from`). The Secrets' contents stay in
//! the cluster: they are never logged, never sent to kas, and a plan shows
//! which fields of such a release would change but not their values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::Value;
use tether_agent_config::HelmChart;
use tether_gitops::manifest::ManifestFile;
use tether_proto::v1;
use tokio::sync::watch;
use tracing::Instrument;

use crate::cluster_info::ApiVersions;

/// The settings file and the archive of a release, as kas names them.
const RELEASE_FILE: &str = "release.json";
const CHART_ARCHIVE: &str = "chart.tgz";
/// Largest values document read from a Secret.
const MAX_SECRET_VALUES: usize = 1 << 20;

/// How agentk renders: its helm, and what its cluster is.
#[derive(Clone)]
pub struct AgentRenderer {
    /// helm's absolute path, resolved once at start ([`find_helm`]), or
    /// why there is none: a release sent to render here then fails with
    /// that reason.
    pub helm: Result<PathBuf, String>,
    /// Whether helm runs confined by the kernel ([`sandbox`]).
    pub sandbox: tether_render::SandboxMode,
    pub client: kube::Client,
    pub kube_version: String,
    pub api_versions: watch::Receiver<ApiVersions>,
}

/// A set with its releases rendered: plain manifest files, and the
/// objects whose values came from Secrets (a plan shows no values of
/// theirs).
#[derive(Debug, Default)]
pub struct Expanded {
    pub files: Vec<ManifestFile>,
    pub secret_backed: crate::decrypt::Sensitive,
    /// The objects holding values decrypted from SOPS files: a plan shows
    /// `(encrypted)` for theirs, and reports and Events no message that
    /// could quote them.
    pub encrypted: crate::decrypt::Sensitive,
}

impl AgentRenderer {
    /// Renders the releases among `files`; the other files pass as they
    /// are. All or nothing: one release that fails fails the set.
    pub async fn expand(&self, files: Vec<v1::ManifestFile>) -> Result<Expanded, String> {
        let mut expanded = Expanded::default();
        let mut releases: BTreeMap<String, Vec<v1::ManifestFile>> = BTreeMap::new();
        for file in files {
            if file.render.is_empty() {
                expanded.files.push(ManifestFile {
                    path: file.path,
                    bytes: file.content,
                });
            } else {
                releases.entry(file.render.clone()).or_default().push(file);
            }
        }
        for (release, files) in releases {
            let span = tracing::info_span!("render", release = %release);
            let (objects, from_secrets) = self.render(&release, files).instrument(span).await?;
            if from_secrets {
                for o in &objects {
                    let at = |path: &[&str]| {
                        path.iter()
                            .try_fold(o, |v, k| v.get(*k))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    // Without the namespace, as `decrypt::Sensitive`: the
                    // sync defaults it later.
                    expanded.secret_backed.insert((
                        at(&["kind"]),
                        String::new(),
                        at(&["metadata", "name"]),
                    ));
                }
            }
            let groups = tether_render::split_objects(objects, tether_render::FILE_BYTES);
            for (n, items) in groups.into_iter().enumerate() {
                let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
                expanded.files.push(ManifestFile {
                    path: format!("helm-on-agent/{release}-{n}.json"),
                    bytes: serde_json::to_vec(&list).map_err(|e| e.to_string())?,
                });
            }
        }
        Ok(expanded)
    }

    /// One release: its objects, and whether Secrets gave it values.
    async fn render(
        &self,
        release: &str,
        files: Vec<v1::ManifestFile>,
    ) -> Result<(Vec<Value>, bool), String> {
        let fail =
            |message: String| format!("helm chart {release} (rendered on the agent): {message}");
        let helm = self
            .helm
            .as_ref()
            .map_err(|why| fail(format!("this agent has no helm: {why}")))?;
        let settings = files
            .iter()
            .find(|f| f.path == RELEASE_FILE)
            .ok_or_else(|| fail("kas sent no release settings".into()))?;
        let settings: Value = serde_json::from_slice(&settings.content)
            .map_err(|e| fail(format!("unreadable release settings: {e}")))?;
        let chart: HelmChart = serde_json::from_value(settings["chart"].clone())
            .map_err(|e| fail(format!("unreadable release settings: {e}")))?;
        let namespace = settings["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let work = tether_render::sandbox::workspace()
            .map_err(|e| fail(format!("a folder to render in: {e}")))?;
        let (repo, home) = (work.path().join("repo"), work.path().join("home"));
        std::fs::create_dir_all(&home).map_err(|e| fail(format!("a folder to render in: {e}")))?;
        let mut archive = None;
        for file in &files {
            match file.path.as_str() {
                RELEASE_FILE => {}
                CHART_ARCHIVE if chart.path.is_none() => {
                    let at = home.join(CHART_ARCHIVE);
                    std::fs::write(&at, &file.content).map_err(|e| fail(e.to_string()))?;
                    archive = Some(at);
                }
                path => write_inside(&repo, path, &file.content).map_err(fail)?,
            }
        }
        let source = match (&chart.path, archive) {
            (Some(path), _) => repo.join(path),
            (None, Some(archive)) => archive,
            (None, None) => return Err(fail("kas sent no chart".into())),
        };
        let secret_values = self
            .secret_values(&chart, &namespace, &home)
            .await
            .map_err(fail)?;
        let api_versions = self.api_versions.borrow().clone();
        let objects = tether_render::helm::template(&tether_render::helm::Template {
            helm,
            repo: &repo,
            home: &home,
            chart: &chart,
            source,
            namespace: &namespace,
            kube_version: Some(self.kube_version.as_str()).filter(|v| !v.is_empty()),
            api_versions: &api_versions,
            secret_values: &secret_values,
            limits: tether_render::Limits {
                sandbox: self.sandbox,
                ..tether_render::Limits::default()
            },
        })
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!(objects = objects.len(), "rendered on the agent");
        Ok((objects, !secret_values.is_empty()))
    }

    /// Writes each `values_from` document into `home`, in order.
    async fn secret_values(
        &self,
        chart: &HelmChart,
        namespace: &str,
        home: &Path,
    ) -> Result<Vec<PathBuf>, String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let mut written = Vec::new();
        for (i, from) in chart.values_from.iter().enumerate() {
            let named = format!("Secret {namespace}/{}", from.secret);
            let secret = api
                .get_opt(&from.secret)
                .await
                .map_err(|e| format!("cannot read {named}: {e}"))?;
            let value = secret.as_ref().and_then(|s| {
                s.data
                    .as_ref()
                    .and_then(|d| d.get(&from.key))
                    .map(|b| b.0.clone())
            });
            let Some(value) = value else {
                if from.optional {
                    continue;
                }
                return Err(match secret {
                    None => {
                        format!("{named} does not exist (values_from; optional: true skips it)")
                    }
                    Some(_) => format!("{named} has no key {:?}", from.key),
                });
            };
            if value.len() > MAX_SECRET_VALUES {
                return Err(format!(
                    "{named}, key {:?}: {} bytes, more than the limit of {MAX_SECRET_VALUES}",
                    from.key,
                    value.len()
                ));
            }
            let file = home.join(format!("values-from-{i}.yaml"));
            std::fs::write(&file, &value).map_err(|e| format!("writing values: {e}"))?;
            written.push(file);
        }
        Ok(written)
    }
}

/// `--render-sandbox` as agentk runs with it: `on` is checked here, once
/// (a probe thread confined as helm will be); where it does not hold,
/// agentk runs on and each `render_on: agent` chart fails saying why,
/// never rendered unconfined unless `off` was asked.
pub fn sandbox(given: &str) -> tether_render::SandboxMode {
    if given == "off" {
        tracing::warn!(
            "--render-sandbox=off: helm runs without the kernel's sandbox for render_on: agent charts"
        );
        return tether_render::SandboxMode::Off;
    }
    match tether_render::sandbox::kernel::probe() {
        Ok(()) => tracing::info!("render_on: agent charts render in the kernel's sandbox"),
        Err(why) => tracing::warn!(
            error = %why,
            "the kernel's sandbox does not hold here: render_on: agent charts will fail (--render-sandbox=off runs them unconfined)"
        ),
    }
    tether_render::SandboxMode::Kernel
}

/// `--helm` (or `helm` on agentk's `PATH`) resolved once, as kas resolves
/// its tools: renders run with no `PATH`, so they get the absolute path.
/// Logged with its version; without it agentk runs on, and only charts
/// with `render_on: agent` fail, saying why.
pub async fn find_helm(given: Option<PathBuf>) -> Result<PathBuf, String> {
    let wanted = tether_render::Wanted::helm(given);
    let search = std::env::var_os("PATH");
    match wanted.resolve(search.as_deref()).await {
        Ok(tool) => {
            tracing::info!(
                path = %tool.path.display(),
                target = tool.target.as_ref().map(|t| t.display().to_string()),
                version = %tool.version,
                "helm found, for charts rendered on the agent"
            );
            Ok(tool.path)
        }
        // Most agents render nothing themselves: no helm is no problem
        // until a chart asks for one.
        Err(e) if wanted.given.is_none() => {
            tracing::info!(reason = %e, "no helm: charts with render_on: agent cannot render here");
            Err(format!("{e}; start agentk with --helm (AGENTK_HELM)"))
        }
        Err(e) => {
            tracing::warn!(error = %e, "--helm cannot be used: charts with render_on: agent fail");
            Err(e.to_string())
        }
    }
}

/// Writes `content` at `path` under `root`, refusing a path that would
/// leave it (kas sends repository paths; checked again here).
fn write_inside(root: &Path, path: &str, content: &[u8]) -> Result<(), String> {
    let relative = Path::new(path);
    let safe = !path.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !safe {
        return Err(format!("kas sent a file outside the chart: {path:?}"));
    }
    let at = root.join(relative);
    if let Some(parent) = at.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(&at, content).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_written_only_inside_the_folder() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(write_inside(dir.path(), "charts/web/Chart.yaml", b"x").is_ok());
        assert!(dir.path().join("charts/web/Chart.yaml").is_file());
        for bad in ["../escape", "/etc/passwd", "a/../../b", ""] {
            assert!(write_inside(dir.path(), bad, b"x").is_err(), "{bad}");
        }
    }
}
