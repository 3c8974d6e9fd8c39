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
//! ([`objects`]). A chart an agent renders itself is fetched under the same
//! bound on work at once, and sent only when its digest was checked and it
//! is that chart ([`chart_archive`]).
//!
//! A project's renders succeed together or not at all: an error names the
//! chart or kustomization, the file when there is one, and the tool's
//! message, and nothing of that commit is sent to the agent.

pub mod cache;
pub mod chart_archive;
pub mod charts;
mod client;
pub use client::{Https, https};
pub mod egress;
pub mod egress_proxy;
#[cfg(test)]
mod fixtures;
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
use tracing::Instrument;

use ring::digest;
use tether_agent_config::{HelmChart, Kustomization};
use tokio::sync::Semaphore;

pub use metrics::RenderMetrics;
pub use output::{RenderError, Rendered, RenderedFile};
pub use sandbox::{Limits, Mode as SandboxMode};
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
    /// An administrator's consent to remote bases for this project (`kas
    /// project set ID --allow-remote-bases`); a config's
    /// `allow_remote_bases` alone is not enough.
    pub remote_bases: bool,
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
    /// Where chart fetches may connect ([`egress`]).
    pub egress: egress::Egress,
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
            egress: egress::Egress::default(),
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

/// Why kas cannot render at all.
#[derive(Debug, thiserror::Error)]
pub enum RendererError {
    /// Each tool that cannot be used, as its [`ToolError`] says (the
    /// errors stay with the [`RenderTools`] they were resolved into).
    #[error("{}", .0.join("; "))]
    Tools(Vec<String>),
    #[error(
        "renders run in a sandbox the kernel enforces, and this one does not hold: {0}. \
         Run kas on Linux 5.13 or later with Landlock enabled (lsm=landlock,… on the kernel's \
         command line) and seccomp, or pass --render-sandbox=off to render unconfined"
    )]
    Sandbox(#[source] sandbox::kernel::ProbeFailed),
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
    /// The system's git, found on kas's `PATH` at start, for remote bases
    /// (`None`: there is none, and they fail saying so).
    git: Option<PathBuf>,
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
    ) -> Result<Self, RendererError> {
        let (helm, kustomize) = match (&tools.helm, &tools.kustomize) {
            (Ok(helm), Ok(kustomize)) => (helm, kustomize),
            (helm, kustomize) => {
                let missing = [helm.as_ref().err(), kustomize.as_ref().err()];
                return Err(RendererError::Tools(
                    missing
                        .into_iter()
                        .flatten()
                        .map(ToString::to_string)
                        .collect(),
                ));
            }
        };
        match settings.limits.sandbox {
            sandbox::Mode::Kernel => sandbox::kernel::probe().map_err(RendererError::Sandbox)?,
            sandbox::Mode::Off => {
                metrics.sandbox_off.set(1);
            }
        }
        Ok(Renderer {
            versions: format!("helm {}; kustomize {}", helm.version, kustomize.version),
            helm: helm.path.clone(),
            kustomize: kustomize.path.clone(),
            git: find_git(),
            cache: cache::Cache::new(settings.cache_entries, settings.failure_ttl),
            slots: Semaphore::new(settings.concurrency.max(1)),
            fetcher: charts::Fetcher::new(settings.egress.clone()),
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
        let span = tracing::info_span!(
            "render",
            project = %job.project,
            commit = %job.commit,
            cache_hit = tracing::field::Empty,
        );
        let (outcome, hit) = self
            .cache
            .get_or_render(&key, || async {
                let started = Instant::now();
                let outcome = self.render_now(job, files).await;
                self.metrics.observe(outcome.is_ok(), started.elapsed());
                outcome.map(Arc::new)
            })
            .instrument(span.clone())
            .await;
        span.record("cache_hit", hit);
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
            "sandbox": self.settings.limits.sandbox.as_str(),
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
        export(&repo, files).map_err(|e| whole(e.to_string()))?;
        let mut rendered = Rendered::default();
        for (i, k) in job.kustomizations.iter().enumerate() {
            let home = run_home(work.path(), &format!("kustomize-{i}"))
                .map_err(|e| whole(e.to_string()))?;
            let remote = match (&self.git, job.remote_bases) {
                (Some(git), true) => Some(kustomize::RemoteBases {
                    egress: &self.settings.egress,
                    git,
                }),
                (None, true) if k.allow_remote_bases => {
                    return Err(RenderError {
                        what: format!("kustomization {}", k.path),
                        file: None,
                        message: "remote bases are allowed for this project, but kas found no git on its PATH to fetch them with".into(),
                    });
                }
                _ => None,
            };
            let text = kustomize::build(
                &self.kustomize,
                &repo,
                &home,
                k,
                remote,
                self.settings.limits,
            )
            .await?;
            if let Some(why) = encrypted_in_output(&text) {
                return Err(RenderError {
                    what: format!("kustomization {}", k.path),
                    file: None,
                    message: why.into(),
                });
            }
            let name = flat(&k.path);
            for (n, part) in split_yaml(&text, FILE_BYTES).into_iter().enumerate() {
                rendered.files.push(RenderedFile {
                    path: format!("kustomize/{name}-{n}.yaml"),
                    content: part.into_bytes(),
                });
            }
        }
        for (i, chart) in job.helm_charts.iter().enumerate() {
            let home =
                run_home(work.path(), &format!("helm-{i}")).map_err(|e| whole(e.to_string()))?;
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
    /// run's folder (under the name and version as checked: one segment
    /// each, so the file is a child of `home`).
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
        let (repository, name, version) = fetchable(chart)?;
        let archive = self
            .fetcher
            .archive(repository, &name, &version)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let file = home.join(charts::archive_file_name(&name, &version));
        if file.parent() != Some(home) {
            return Err(fail(format!("refusing to write the archive as {file:?}")));
        }
        std::fs::write(&file, archive.as_slice())
            .map_err(|e| fail(format!("writing the archive: {e}")))?;
        Ok(file)
    }

    /// The archive of a chart from a chart repository or OCI registry, for
    /// an agent that renders it (`render_on: agent`): digest-checked (the
    /// index must give one) and checked to be the chart
    /// ([`chart_archive::check`]). A fetch takes a render slot like a
    /// render does (it may read a 32 MiB index and unpack the archive), so
    /// agents' charts never add to the renders at once; an archive already
    /// kept and checked needs none.
    pub async fn fetch_chart_for_agent(
        &self,
        chart: &HelmChart,
    ) -> Result<Arc<Vec<u8>>, RenderError> {
        let fail = |message: String| RenderError {
            what: helm::describe(chart),
            file: None,
            message,
        };
        let (repository, name, version) = fetchable(chart)?;
        if let Some(kept) = self.fetcher.kept_for_agent(repository, &name, &version) {
            return Ok(kept);
        }
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| fail("kas is stopping".into()))?;
        self.fetcher
            .archive_for_agent(repository, &name, &version)
            .await
            .map_err(|e| fail(e.to_string()))
    }
}

/// A chart's repository, name and version, the last two checked: a
/// name or version that is not one safe segment is refused here too, so
/// nothing of a config is joined to a path or a URL unchecked.
fn fetchable(
    chart: &HelmChart,
) -> Result<(&str, charts::ChartName, charts::ChartVersion), RenderError> {
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
    let name = charts::ChartName::parse(name).map_err(|e| fail(e.to_string()))?;
    let version = charts::ChartVersion::parse(version).map_err(|e| fail(e.to_string()))?;
    Ok((repository, name, version))
}

/// `git` on kas's own `PATH`, as an absolute path with its links resolved.
fn find_git() -> Option<PathBuf> {
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search)
        .map(|folder| folder.join("git"))
        .find(|path| path.is_file())
        .and_then(|path| path.canonicalize().ok())
}

/// Rendered files are cut to about this size: an agent takes files up to
/// 5 MiB, and a chart's output (CRDs above all) can be larger.
pub const FILE_BYTES: usize = 1 << 20;

/// Objects in groups whose JSON is about `limit` bytes at most (an object
/// larger than that alone); no group is empty, and there is at least one.
/// Why a kustomization's output cannot be sent: an encrypted manifest
/// among its resources (kustomize edits objects, which breaks a SOPS
/// file's MAC, and kas cannot decrypt), or an encrypted dotenv file read by
/// a generator. An encrypted file a generator takes whole (`files:`)
/// passes: it arrives as a Secret's value, which the agent decrypts.
fn encrypted_in_output(text: &str) -> Option<&'static str> {
    for line in text.lines() {
        if line.starts_with("sops:") {
            return Some(
                "a resource of the kustomization is encrypted with SOPS: kas never decrypts, and kustomize would change what the file's MAC covers; list encrypted manifests outside kustomizations, or make them a secretGenerator's files: entry",
            );
        }
        let line = line.trim_start();
        if line.starts_with("sops_mac:") || line.starts_with("sops_version:") {
            return Some(
                "a generator reads a SOPS-encrypted dotenv file, which is not supported: encrypt a YAML or JSON file and name it in the generator's files:",
            );
        }
    }
    None
}

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

fn run_home(work: &Path, name: &str) -> Result<PathBuf, helm::NoFolder> {
    let home = work.join(name);
    helm::make_folder(&home)?;
    Ok(home)
}

/// Why the repository was not written out to render from.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    /// A path that is not plain names: absolute, or with `..`.
    #[error("refusing to export {path:?}")]
    Unsafe { path: String },
    #[error("exporting {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("exporting: {0}")]
    Folder(#[source] std::io::Error),
}

/// Writes the repository's files under `repo`. Paths come from git trees,
/// but are checked again: nothing is written outside the folder.
fn export(repo: &Path, files: Files) -> Result<(), ExportError> {
    for (path, bytes) in files {
        let relative = Path::new(&path);
        let safe = relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !safe {
            return Err(ExportError::Unsafe { path });
        }
        let target = repo.join(relative);
        let written = match target.parent() {
            Some(parent) => std::fs::create_dir_all(parent),
            None => Ok(()),
        }
        .and_then(|()| std::fs::write(&target, bytes));
        if let Err(source) = written {
            return Err(ExportError::Write { path, source });
        }
    }
    std::fs::create_dir_all(repo).map_err(ExportError::Folder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ChartRepository, index, sha256};

    /// A renderer whose tools are never run: these tests only fetch.
    fn renderer(concurrency: usize) -> Renderer {
        let tool = |name: &str| {
            Ok(Tool {
                path: PathBuf::from(format!("/nonexistent/{name}")),
                target: None,
                version: "test".into(),
            })
        };
        let mut settings = Settings::new(None, None);
        settings.concurrency = concurrency;
        // The tests' chart repositories are on loopback, allowed as an
        // administrator would allow an internal one.
        settings.egress = egress::Egress::parse(&["127.0.0.1".into()]).expect("valid");
        let tools = RenderTools {
            helm: tool("helm"),
            kustomize: tool("kustomize"),
        };
        Renderer::new(settings, &tools, RenderMetrics::default()).expect("a renderer")
    }

    fn from_repository(url: &str, chart: &str, version: &str) -> HelmChart {
        HelmChart {
            repository: Some(url.to_owned()),
            chart: Some(chart.to_owned()),
            version: Some(version.to_owned()),
            release_name: "web".into(),
            ..HelmChart::default()
        }
    }

    /// A repository serving `archive` as `web.tgz` under the name `chart`.
    async fn repository(chart: &str, archive: Vec<u8>, digest: bool) -> ChartRepository {
        let digest = digest.then(|| sha256(&archive));
        ChartRepository::serve(vec![
            (
                "index.yaml".into(),
                index(chart, "1.0.0", "web.tgz", digest.as_deref()),
            ),
            ("web.tgz".into(), archive),
        ])
        .await
    }

    /// Every file under `root`, recursively.
    fn files_under(root: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut folders = vec![root.to_owned()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).expect("readable").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    folders.push(path);
                } else {
                    found.push(path);
                }
            }
        }
        found
    }

    #[tokio::test]
    async fn a_chart_name_that_climbs_out_is_refused_and_nothing_is_written_outside() {
        let name = "../../../escaped";
        let repository = repository(name, crate::fixtures::chart("web"), true).await;
        let root = tempfile::tempdir().expect("a folder");
        let home = root.path().join("kas/work/run/helm-0");
        std::fs::create_dir_all(&home).expect("a folder");
        let repo = root.path().join("kas/work/run/repo");
        let chart = from_repository(&repository.url, name, "1.0.0");

        let refused = renderer(2).chart_source(&repo, &home, &chart).await;

        let outside: Vec<PathBuf> = files_under(root.path())
            .into_iter()
            .filter(|f| !f.starts_with(&home))
            .collect();
        assert_eq!(
            outside,
            Vec::<PathBuf>::new(),
            "nothing outside the run's folder"
        );
        let error = refused.expect_err("a climbing chart name is refused");
        assert!(error.message.contains("chart name"), "{error}");
        assert_eq!(
            repository.asked(),
            Vec::<String>::new(),
            "refused before anything is fetched"
        );
    }

    #[tokio::test]
    async fn a_chart_for_the_agent_needs_the_digest_from_the_index() {
        let repository = repository("web", crate::fixtures::chart("web"), false).await;
        let chart = from_repository(&repository.url, "web", "1.0.0");

        let refused = renderer(2).fetch_chart_for_agent(&chart).await;

        let error = refused
            .expect_err("no digest, nothing forwarded")
            .to_string();
        assert!(
            error.contains("web 1.0.0") && error.contains("no digest"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_archive_that_is_not_a_chart_is_not_forwarded_to_the_agent() {
        use crate::fixtures::{Entry, archive};
        let not_charts = [
            ("not gzip", b"<html>a login page</html>".to_vec()),
            (
                "no Chart.yaml",
                archive(&[Entry::file("web/values.yaml", b"a: 1\n")]),
            ),
            (
                "another chart's Chart.yaml",
                crate::fixtures::chart("other"),
            ),
            (
                "an entry climbing out",
                archive(&[
                    Entry::file("web/Chart.yaml", b"name: web\n"),
                    Entry::file("web/../../etc/cron.d/x", b"* * * * * root id\n"),
                ]),
            ),
        ];
        let mut forwarded = Vec::new();
        for (what, bytes) in not_charts {
            let repository = repository("web", bytes, true).await;
            let chart = from_repository(&repository.url, "web", "1.0.0");

            if renderer(2).fetch_chart_for_agent(&chart).await.is_ok() {
                forwarded.push(what);
            }
        }
        assert_eq!(forwarded, Vec::<&str>::new(), "forwarded to the agent");
    }

    #[tokio::test]
    async fn an_archive_kept_for_kas_without_a_digest_is_not_sent_to_an_agent() {
        let repository = repository("web", crate::fixtures::chart("web"), false).await;
        let chart = from_repository(&repository.url, "web", "1.0.0");
        let renderer = renderer(2);
        let (name, version) = (
            charts::ChartName::parse("web").expect("a name"),
            charts::ChartVersion::parse("1.0.0").expect("a version"),
        );
        renderer
            .fetcher
            .archive(&repository.url, &name, &version)
            .await
            .expect("kas renders a chart whose index gives no digest");

        let refused = renderer.fetch_chart_for_agent(&chart).await;

        assert!(refused.is_err(), "the kept archive was sent to the agent");
    }

    #[tokio::test]
    async fn a_chart_kept_and_checked_is_sent_without_waiting_for_a_slot() {
        let repository = repository("web", crate::fixtures::chart("web"), true).await;
        let chart = from_repository(&repository.url, "web", "1.0.0");
        let renderer = renderer(1);
        renderer
            .fetch_chart_for_agent(&chart)
            .await
            .expect("fetched and checked");
        let _render = renderer.slots.acquire().await.expect("the only slot");

        let fetch = renderer.fetch_chart_for_agent(&chart);
        let mut fetch = std::pin::pin!(fetch);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());

        assert!(
            matches!(fetch.as_mut().poll(&mut cx), std::task::Poll::Ready(Ok(_))),
            "kept: ready at once"
        );
        assert_eq!(repository.asked().len(), 2, "index and archive, once");
    }

    #[tokio::test]
    async fn a_fetch_for_the_agent_waits_for_a_render_slot() {
        let repository = repository("web", crate::fixtures::chart("web"), true).await;
        let chart = from_repository(&repository.url, "web", "1.0.0");
        let renderer = renderer(1);
        let render = renderer.slots.acquire().await.expect("the only slot");

        let fetch = renderer.fetch_chart_for_agent(&chart);
        let mut fetch = std::pin::pin!(fetch);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(fetch.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            repository.asked(),
            Vec::<String>::new(),
            "nothing fetched yet"
        );
        drop(render);

        // The semaphore is fair: a released slot goes to the first waiter.
        assert!(
            renderer.slots.try_acquire().is_err(),
            "the released slot went to the waiting fetch"
        );
        let archive = fetch.await.expect("fetched once the slot was free");
        assert_eq!(*archive, crate::fixtures::chart("web"));
        assert_eq!(renderer.slots.available_permits(), 1, "and given back");
    }

    #[tokio::test]
    async fn a_repository_on_a_forbidden_address_is_never_connected_to() {
        let repository = repository("web", crate::fixtures::chart("web"), true).await;
        let mut settings = Settings::new(None, None);
        settings.egress = egress::Egress::default();
        let tools = RenderTools {
            helm: Ok(Tool {
                path: "/nonexistent/helm".into(),
                target: None,
                version: "test".into(),
            }),
            kustomize: Ok(Tool {
                path: "/nonexistent/kustomize".into(),
                target: None,
                version: "test".into(),
            }),
        };
        let renderer =
            Renderer::new(settings, &tools, RenderMetrics::default()).expect("a renderer");
        let chart = from_repository(&repository.url, "web", "1.0.0");

        let refused = renderer.fetch_chart_for_agent(&chart).await;

        let error = refused.expect_err("loopback is not allowed").to_string();
        assert!(
            error.contains(&format!("{}/index.yaml", repository.url)) && error.contains("loopback"),
            "{error}"
        );
        assert_eq!(
            repository.asked(),
            Vec::<String>::new(),
            "nothing reached it"
        );
    }

    /// An allowed repository whose index sends kas to another address:
    /// the archive's connection is decided on its own address.
    #[tokio::test]
    async fn an_index_pointing_elsewhere_is_decided_on_the_address_it_points_to() {
        let elsewhere =
            std::net::TcpListener::bind("127.0.0.2:0").expect("another loopback address");
        elsewhere.set_nonblocking(true).expect("non-blocking");
        let port = elsewhere.local_addr().expect("its address").port();
        let archive = crate::fixtures::chart("web");
        let repository = ChartRepository::serve(vec![(
            "index.yaml".into(),
            index(
                "web",
                "1.0.0",
                &format!("http://127.0.0.2:{port}/web.tgz"),
                Some(&sha256(&archive)),
            ),
        )])
        .await;
        let chart = from_repository(&repository.url, "web", "1.0.0");

        let refused = renderer(2).fetch_chart_for_agent(&chart).await;

        let error = refused.expect_err("127.0.0.2 is not allowed").to_string();
        assert!(
            error.contains("127.0.0.2") && error.contains("loopback"),
            "{error}"
        );
        assert!(elsewhere.accept().is_err(), "nothing connected to it");
    }

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
