//! Helm charts and kustomizations of a manifest project, rendered on kas
//! into plain objects that agents apply like any other manifest.
//!
//! The tools are found once, when kas starts ([`tools`]): a render runs
//! with a cleared environment, so it is given absolute paths, never names
//! to look up.
//!
//! Rendering happens once per content: the [`cache`] keys a render by the
//! commit, what the config asks, the tools' versions and the cluster's
//! version, so N agents at one commit cost one render. Each render runs the
//! real tools (`helm template`, `kustomize build`) in a [`sandbox`]: a fresh
//! folder with the repository exported into it, a cleared environment, a
//! deadline, an address-space limit and bounded output; at most a few at
//! once. Charts from chart repositories and OCI registries are fetched by
//! kas ([`charts`]), so helm never reaches the network. Helm's hooks become Tether's order
//! ([`objects`]).
//!
//! A project's renders succeed together or not at all: an error names the
//! chart or kustomization, the file when there is one, and the tool's
//! message, and nothing of that commit is sent to the agent.

pub mod cache;
pub mod charts;
mod client;
pub mod helm;
pub mod kustomize;
pub mod metrics;
pub mod objects;
mod oci;
mod output;
pub mod sandbox;
pub mod substitute;
pub mod tools;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::digest;
use tether_agent_config::{HelmChart, Kustomization};
use tokio::sync::Semaphore;

pub use metrics::RenderMetrics;
pub use output::{RenderError, Rendered, RenderedFile};
pub use sandbox::Limits;
pub use tools::{RenderTools, Tool, ToolError, Wanted};

/// A manifest project's renders at one commit.
#[derive(Debug)]
pub struct Job<'a> {
    pub project: &'a str,
    pub commit: &'a str,
    pub default_namespace: &'a str,
    pub kustomizations: &'a [Kustomization],
    pub helm_charts: &'a [HelmChart],
    /// The cluster's version as the agent reported it (`v1.35.4`).
    pub kube_version: Option<&'a str>,
    /// What the cluster serves (`apps/v1`, `apps/v1/Deployment`), for
    /// `.Capabilities.APIVersions`; empty: helm's built-in set.
    pub api_versions: &'a [String],
}

/// The repository at the job's commit, as (path, bytes), read only on a
/// cache miss.
pub type Files = Vec<(String, Vec<u8>)>;

/// Which tools to use, and how renders are bounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// helm as given (`--helm`); `None`: `helm` on `PATH`. Resolved once
    /// into [`RenderTools`].
    pub helm: Option<PathBuf>,
    /// kustomize as given (`--kustomize`); `None`: `kustomize` on `PATH`.
    pub kustomize: Option<PathBuf>,
    pub limits: Limits,
    /// Renders at once.
    pub concurrency: usize,
    /// Renders kept.
    pub cache_entries: usize,
    /// How long a failed render is remembered.
    pub failure_ttl: Duration,
}

impl Settings {
    /// The tools as given (`None`: found on `PATH`), with the default
    /// bounds.
    pub fn new(helm: Option<PathBuf>, kustomize: Option<PathBuf>) -> Self {
        Settings {
            helm,
            kustomize,
            limits: Limits::default(),
            concurrency: 2,
            cache_entries: 256,
            failure_ttl: Duration::from_secs(30),
        }
    }

    /// The tools to resolve, as these settings name them.
    pub fn wanted(&self) -> (Wanted, Wanted) {
        (
            Wanted::helm(self.helm.clone()),
            Wanted::kustomize(self.kustomize.clone()),
        )
    }
}

/// Renders jobs, once per content.
#[derive(Debug)]
pub struct Renderer {
    settings: Settings,
    /// The tools' absolute paths, as resolved at start.
    helm: PathBuf,
    kustomize: PathBuf,
    /// The tools' versions, part of every key.
    versions: String,
    cache: cache::Cache,
    slots: Semaphore,
    fetcher: charts::Fetcher,
    metrics: RenderMetrics,
}

impl Renderer {
    /// A renderer with the tools resolved at start; a missing tool is an
    /// error here, saying what was tried, not at the first render.
    pub fn new(
        settings: Settings,
        tools: &RenderTools,
        metrics: RenderMetrics,
    ) -> Result<Self, String> {
        let (helm, kustomize) = match (&tools.helm, &tools.kustomize) {
            (Ok(helm), Ok(kustomize)) => (helm, kustomize),
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e.to_string()),
            (Err(helm), Err(kustomize)) => return Err(format!("{helm}; {kustomize}")),
        };
        Ok(Renderer {
            versions: format!("helm {}; kustomize {}", helm.version, kustomize.version),
            helm: helm.path.clone(),
            kustomize: kustomize.path.clone(),
            cache: cache::Cache::new(settings.cache_entries, settings.failure_ttl),
            slots: Semaphore::new(settings.concurrency.max(1)),
            fetcher: charts::Fetcher::default(),
            settings,
            metrics,
        })
    }

    /// The tools' versions, as the log and the metrics say them.
    pub fn versions(&self) -> &str {
        &self.versions
    }

    /// Renders `job`, reading the repository with `files` if it must.
    pub async fn render<F, Fut>(
        &self,
        job: &Job<'_>,
        files: F,
    ) -> Result<Arc<Rendered>, RenderError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Files, String>>,
    {
        let key = self.key(job);
        let (outcome, hit) = self
            .cache
            .get_or_render(&key, || async {
                let started = Instant::now();
                let outcome = self.render_now(job, files).await;
                self.metrics.observe(outcome.is_ok(), started.elapsed());
                outcome.map(Arc::new)
            })
            .await;
        self.metrics.looked_up(hit);
        outcome
    }

    fn key(&self, job: &Job<'_>) -> String {
        let asked = serde_json::json!({
            "project": job.project,
            "commit": job.commit,
            "namespace": job.default_namespace,
            "kustomizations": job.kustomizations,
            "helm_charts": job.helm_charts,
            "kube_version": job.kube_version,
            "api_versions": job.api_versions,
            "tools": self.versions,
        });
        let d = digest::digest(&digest::SHA256, asked.to_string().as_bytes());
        d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    async fn render_now<F, Fut>(&self, job: &Job<'_>, files: F) -> Result<Rendered, RenderError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Files, String>>,
    {
        let whole = |message: String| RenderError {
            what: format!("manifest project {}", job.project),
            file: None,
            message,
        };
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| whole("kas is stopping".into()))?;
        let work =
            sandbox::workspace().map_err(|e| whole(format!("a folder to render in: {e}")))?;
        let repo = work.path().join("repo");
        let files = files().await.map_err(whole)?;
        export(&repo, files).map_err(whole)?;
        let mut rendered = Rendered::default();
        for (i, k) in job.kustomizations.iter().enumerate() {
            let home = run_home(work.path(), &format!("kustomize-{i}")).map_err(whole)?;
            let text =
                kustomize::build(&self.kustomize, &repo, &home, k, self.settings.limits).await?;
            let name = flat(&k.path);
            for (n, part) in split_yaml(&text, FILE_BYTES).into_iter().enumerate() {
                rendered.files.push(RenderedFile {
                    path: format!("kustomize/{name}-{n}.yaml"),
                    content: part.into_bytes(),
                });
            }
        }
        for (i, chart) in job.helm_charts.iter().enumerate() {
            let home = run_home(work.path(), &format!("helm-{i}")).map_err(whole)?;
            let source = self.chart_source(&repo, &home, chart).await?;
            let namespace = chart.namespace.as_deref().unwrap_or(job.default_namespace);
            let objects = helm::template(&helm::Template {
                helm: &self.helm,
                repo: &repo,
                home: &home,
                chart,
                source,
                namespace,
                kube_version: job.kube_version,
                api_versions: job.api_versions,
                secret_values: &[],
                limits: self.settings.limits,
            })
            .await?;
            for (n, items) in split_objects(objects, FILE_BYTES).into_iter().enumerate() {
                let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
                rendered.files.push(RenderedFile {
                    path: format!("helm/{}-{n}.json", chart.release_name),
                    content: serde_json::to_vec(&list).map_err(|e| whole(e.to_string()))?,
                });
            }
        }
        let total: usize = rendered.files.iter().map(|f| f.content.len()).sum();
        if total > self.settings.limits.output_bytes {
            return Err(whole(format!(
                "renders printed {total} bytes, more than the limit of {}",
                self.settings.limits.output_bytes
            )));
        }
        Ok(rendered)
    }

    /// The chart's folder in the export, or its archive fetched into the
    /// run's folder.
    async fn chart_source(
        &self,
        repo: &Path,
        home: &Path,
        chart: &HelmChart,
    ) -> Result<PathBuf, RenderError> {
        let fail = |message: String| RenderError {
            what: helm::describe(chart),
            file: None,
            message,
        };
        if let Some(path) = &chart.path {
            return Ok(repo.join(path));
        }
        let archive = self.fetch_chart(chart).await?;
        let file = home.join(format!(
            "{}-{}.tgz",
            chart.chart.as_deref().unwrap_or("chart"),
            chart.version.as_deref().unwrap_or("0")
        ));
        std::fs::write(&file, archive.as_slice())
            .map_err(|e| fail(format!("writing the archive: {e}")))?;
        Ok(file)
    }

    /// The archive of a chart from a chart repository or OCI registry,
    /// digest-checked (for a chart rendered on kas, or sent to an agent
    /// that renders it).
    pub async fn fetch_chart(&self, chart: &HelmChart) -> Result<Arc<Vec<u8>>, RenderError> {
        let fail = |message: String| RenderError {
            what: helm::describe(chart),
            file: None,
            message,
        };
        let (Some(repository), Some(name), Some(version)) =
            (&chart.repository, &chart.chart, &chart.version)
        else {
            return Err(fail("the chart has neither path nor repository".into()));
        };
        self.fetcher
            .archive(repository, name, version)
            .await
            .map_err(fail)
    }
}

/// Rendered files are cut to about this size: an agent takes files up to
/// 5 MiB, and a chart's output (CRDs above all) can be larger.
pub const FILE_BYTES: usize = 1 << 20;

/// Objects in groups whose JSON is about `limit` bytes at most (an object
/// larger than that alone); no group is empty, and there is at least one.
pub fn split_objects(objects: Vec<serde_json::Value>, limit: usize) -> Vec<Vec<serde_json::Value>> {
    let mut groups = vec![Vec::new()];
    let mut size = 0;
    for object in objects {
        let bytes = object.to_string().len();
        if size > 0 && size + bytes > limit {
            groups.push(Vec::new());
            size = 0;
        }
        size += bytes;
        if let Some(group) = groups.last_mut() {
            group.push(object);
        }
    }
    groups
}

/// Multi-document YAML cut at document boundaries into parts of about
/// `limit` bytes at most.
fn split_yaml(text: &str, limit: usize) -> Vec<String> {
    let mut parts = vec![String::new()];
    for doc in text.split("\n---\n") {
        let current = parts.last().map_or(0, String::len);
        if current > 0 && current + doc.len() > limit {
            parts.push(String::new());
        }
        if let Some(part) = parts.last_mut() {
            if !part.is_empty() {
                part.push_str("\n---\n");
            }
            part.push_str(doc);
        }
    }
    parts
}

/// A path as one file name: `overlays/prod` → `overlays-prod`.
fn flat(path: &str) -> String {
    if path == "." {
        return "root".into();
    }
    path.replace('/', "-")
}

fn run_home(work: &Path, name: &str) -> Result<PathBuf, String> {
    let home = work.join(name);
    std::fs::create_dir_all(&home).map_err(|e| format!("a folder to render in: {e}"))?;
    Ok(home)
}

/// Writes the repository's files under `repo`. Paths come from git trees,
/// but are checked again: nothing is written outside the folder.
fn export(repo: &Path, files: Files) -> Result<(), String> {
    for (path, bytes) in files {
        let relative = Path::new(&path);
        let safe = relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !safe {
            return Err(format!("refusing to export {path:?}"));
        }
        let target = repo.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("exporting {path}: {e}"))?;
        }
        std::fs::write(&target, bytes).map_err(|e| format!("exporting {path}: {e}"))?;
    }
    std::fs::create_dir_all(repo).map_err(|e| format!("exporting: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_outputs_are_cut_between_objects() {
        let objects: Vec<serde_json::Value> = (0..10)
            .map(|i| serde_json::json!({"kind": "ConfigMap", "data": {"x": "a".repeat(400), "i": i}}))
            .collect();
        let groups = split_objects(objects, 1000);
        assert!(groups.len() >= 4, "{}", groups.len());
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 10);
        assert_eq!(split_objects(Vec::new(), 1000).len(), 1);
        let yaml = (0..10)
            .map(|i| {
                format!(
                    "kind: ConfigMap\nmetadata: {{name: c{i}}}\ndata: {{x: {}}}",
                    "a".repeat(400)
                )
            })
            .collect::<Vec<_>>()
            .join("\n---\n");
        let parts = split_yaml(&yaml, 1000);
        assert!(parts.len() >= 4);
        assert_eq!(parts.join("\n---\n"), yaml, "nothing lost or added");
    }
}
