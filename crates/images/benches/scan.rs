//! The cost of scanning many repositories with many tags: 1,000
//! repositories of 500 tags each (10 projects, 100 policies each, the most
//! one file may hold), from a registry on loopback that serves the
//! distribution API's tag listing page by page. It is a stand-in written
//! for this bench (a real registry holding 500,000 tags cannot be filled
//! in a bench run); what is measured is kas's side: requests, time, and
//! what the store keeps. The policies and markers are read from real git
//! repositories, and the store is SQLite on disk, as one kas runs it.
//!
//! Run: `cargo bench -p tether-images --bench scan`. Prints figures;
//! asserts nothing.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tether_git::{CommitId, Source};
use tether_images::registry::Registries;
use tether_images::service::{Projects, Service, Settings};
use tether_render::egress::Egress;
use tether_store::{Project, SqliteStore, Store, StoreError};

const PROJECTS: usize = 10;
const PER_PROJECT: usize = 100;
const TAGS: usize = 500;

/// Serves `/v2/<repository>/tags/list?n=&last=`: TAGS tags per repository,
/// sorted, paginated with a `Link` header as distribution does.
async fn registry(requests: Arc<AtomicU64>) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let tags: Arc<Vec<String>> = Arc::new(
        (0..TAGS)
            .map(|i| format!("1.{}.{}", i / 100, i % 100))
            .collect(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (requests, tags) = (requests.clone(), tags.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        requests.fetch_add(1, Ordering::Relaxed);
                        let response = page(&request, &tags);
                        async move { Ok::<_, Infallible>(response) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn page(request: &Request<hyper::body::Incoming>, tags: &[String]) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    let n: usize = param("n").and_then(|n| n.parse().ok()).unwrap_or(100);
    let start = match param("last") {
        Some(last) => tags
            .iter()
            .position(|t| *t == last)
            .map_or(tags.len(), |i| i + 1),
        None => 0,
    };
    let end = (start + n).min(tags.len());
    let name = path
        .trim_start_matches("/v2/")
        .trim_end_matches("/tags/list")
        .to_owned();
    let body = serde_json::json!({ "name": name, "tags": &tags[start..end] }).to_string();
    let mut response = Response::builder().header("content-type", "application/json");
    if end < tags.len() {
        response = response.header(
            "link",
            format!("<{path}?n={n}&last={}>; rel=\"next\"", tags[end - 1]),
        );
    }
    response
        .body(Full::new(Bytes::from(body)))
        .expect("a response")
}

struct Repos {
    projects: Vec<(Project, PathBuf)>,
}

#[async_trait]
impl Projects for Repos {
    async fn list(&self) -> Result<Vec<Project>, StoreError> {
        Ok(self.projects.iter().map(|(p, _)| p.clone()).collect())
    }

    async fn head(&self, project: &str) -> Option<(CommitId, Source)> {
        let (_, path) = self.projects.iter().find(|(p, _)| p.id == project)?;
        let source = Source::new(path.to_str()?, Path::new("/nonexistent"));
        let commit = source.resolve(None).ok()?;
        Some((commit, source))
    }

    async fn refresh(&self, _project: &str) {}
}

fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let requests = Arc::new(AtomicU64::new(0));
    let addr = runtime.block_on(registry(requests.clone()))?;
    let dir = tempfile::tempdir()?;
    let latest = format!("1.{}.{}", (TAGS - 1) / 100, (TAGS - 1) % 100);
    let mut projects = Vec::new();
    for p in 0..PROJECTS {
        let repo = dir.path().join(format!("project-{p}"));
        std::fs::create_dir_all(repo.join(".tether"))?;
        std::fs::create_dir_all(repo.join("deploy"))?;
        let mut file = String::from("images:\n");
        let mut deploy = String::new();
        for i in 0..PER_PROJECT {
            let n = p * PER_PROJECT + i;
            file.push_str(&format!(
                "  - name: app-{i}\n    repository: {addr}/team/repo-{n}\n    policy: {{semver: {{range: '>=1.0.0'}}}}\n"
            ));
            deploy.push_str(&format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app-{i}}}\ndata:\n  image: {addr}/team/repo-{n}:{latest} # {{\"$imagepolicy\": \"app-{i}\"}}\n"
            ));
        }
        std::fs::write(repo.join(".tether/image-updates.yaml"), file)?;
        std::fs::write(repo.join("deploy/images.yaml"), deploy)?;
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "images"]);
        projects.push((
            Project {
                id: format!("team/project-{p}"),
                url: repo.display().to_string(),
                credentials_ref: None,
                created_at: 0,
                git_ref: None,
                allow_remote_bases: false,
                verify: None,
                verification: Default::default(),
            },
            repo,
        ));
    }
    let db = dir.path().join("kas.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db)?);
    let service = Arc::new(Service::new(
        store.clone(),
        Arc::new(Repos { projects }),
        Registries::new(Egress::parse(&["127.0.0.1".to_owned()])?),
        Settings {
            interval: std::time::Duration::from_secs(3600),
            work: dir.path().join("work"),
            git_timeout: std::time::Duration::from_secs(60),
        },
    ));
    // The loop's ticks, until the listings they started are in.
    let settle = |service: &Arc<Service>| {
        runtime.block_on(async {
            service.tick().await;
            while service.busy().await {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                service.tick().await;
            }
            service.tick().await;
        })
    };

    let started = Instant::now();
    settle(&service);
    let full = started.elapsed();
    let full_requests = requests.swap(0, Ordering::Relaxed);
    let statuses = runtime.block_on(service.statuses())?;
    let up_to_date = statuses
        .iter()
        .flat_map(|p| p.policies.iter())
        .filter(|p| p.state == "up_to_date")
        .count();
    let records = runtime.block_on(store.image_records(""))?;
    let kept: usize = records.iter().map(|r| r.key.len() + r.value.len()).sum();
    let on_disk: u64 = ["kas.db", "kas.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();

    let started = Instant::now();
    runtime.block_on(service.tick());
    let idle = started.elapsed();
    let idle_requests = requests.swap(0, Ordering::Relaxed);

    runtime.block_on(service.request_scan(&[format!("{addr}/team/repo-7")]))?;
    let started = Instant::now();
    settle(&service);
    let one = started.elapsed();
    let one_requests = requests.swap(0, Ordering::Relaxed);

    let repositories = PROJECTS * PER_PROJECT;
    println!(
        "image scan: {repositories} repositories x {TAGS} tags ({} tags): full scan {:.2} s, {full_requests} registry requests ({:.1} per repository), {up_to_date} policies up to date",
        repositories * TAGS,
        full.as_secs_f64(),
        full_requests as f64 / repositories as f64,
    );
    println!(
        "image scan: store keeps {} records, {:.1} MiB of keys and values ({:.1} bytes per tag); SQLite files {:.1} MiB",
        records.len(),
        kept as f64 / (1 << 20) as f64,
        kept as f64 / (repositories * TAGS) as f64,
        on_disk as f64 / (1 << 20) as f64,
    );
    println!(
        "image scan: a tick with nothing due {:.1} ms and {idle_requests} requests; one repository on request {:.1} ms and {one_requests} requests",
        idle.as_secs_f64() * 1e3,
        one.as_secs_f64() * 1e3,
    );
    Ok(())
}
