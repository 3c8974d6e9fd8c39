//! Registry push to Deployment updated, through image automation on real
//! parts: distribution's registry, skopeo, the repository on Gitea, kas and
//! agentk from target/release. Each round pushes a new tag with skopeo and
//! times from the start of the push to the Deployment's image in the
//! cluster (read every 5 ms). The time includes skopeo's push, the
//! registry's notification (or kas's next scan), the tag listing, the
//! clone, commit and push to Gitea, kas's read of the new commit, the
//! manifest's way to agentk and its apply.
//!
//! Two ways: with the registry's push notifications, and with polling only
//! (`--image-scan-interval 10s`, kas's shortest; its jitter is ±10 %).
//!
//! Run: `cargo build --release --bins && cargo bench -p tether-e2e --bench
//! images`. Prints figures; asserts nothing.

use std::time::{Duration, Instant};

use tether_e2e::bench::{ms, percentile};
use tether_e2e::images::{World, deployment, image_of, secret_file};
use tether_testenv::gitea::GitHost;
use tether_testenv::registry::{Registry, RegistryOptions};

const WITH_NOTIFICATIONS: usize = 15;
const POLLING: usize = 6;

fn main() -> anyhow::Result<()> {
    let cluster = tether_testenv::shared();
    let (runtime, client) = tether_e2e::bench::runtime_and_client()?;
    for (mode, rounds) in [
        ("notifications", WITH_NOTIFICATIONS),
        ("polling 10s", POLLING),
    ] {
        let (ns, host) = runtime.block_on(async {
            let ns = cluster.namespace("bench-images").await?;
            let host = GitHost::start().await?;
            anyhow::Ok((ns.name().to_owned(), host))
        })?;
        let times = rounds_of(
            &runtime,
            &client,
            &host,
            &ns,
            mode == "notifications",
            rounds,
        )?;
        let mut sorted = times.clone();
        sorted.sort();
        println!(
            "image update, {mode}: {rounds} pushes, push to Deployment updated min {:.0} ms, p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
            ms(*sorted.first().unwrap_or(&Duration::ZERO)),
            ms(percentile(&sorted, 0.5)),
            ms(percentile(&sorted, 0.95)),
            ms(*sorted.last().unwrap_or(&Duration::ZERO)),
        );
    }
    Ok(())
}

fn rounds_of(
    runtime: &tokio::runtime::Runtime,
    client: &kube::Client,
    host: &GitHost,
    ns: &str,
    notifications: bool,
    rounds: usize,
) -> anyhow::Result<Vec<Duration>> {
    let scratch = tempfile::tempdir()?;
    let (hook_file, hook_secret) = secret_file(scratch.path());
    let data = scratch.path().join("registry");
    let first = runtime.block_on(Registry::start(&data, RegistryOptions::default()))?;
    let addr = first.addr();
    first.push("team/app", "1.0.0", "v0")?;
    let image = format!("{addr}/team/app");
    let policy = format!(
        "images:\n  - name: app\n    repository: {image}\n    policy: {{semver: {{range: '^1'}}}}\n"
    );
    let manifest = deployment("app", &format!("{image}:1.0.0"), "app");
    let extra: &[&str] = match notifications {
        true => &[],
        false => &["--image-scan-interval", "10s"],
    };
    let world = World::start(
        host,
        ns,
        &[
            (".tether/image-updates.yaml", &policy),
            ("deploy/app.yaml", &manifest),
        ],
        &hook_file,
        extra,
    );
    let deadline = |what: &str, within: Duration, mut done: Box<dyn FnMut() -> bool + '_>| {
        let started = Instant::now();
        while !done() {
            anyhow::ensure!(started.elapsed() < within, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    };
    deadline(
        "the first Deployment",
        Duration::from_secs(120),
        Box::new(|| image_of(ns, "app") == Some(format!("{image}:1.0.0"))),
    )?;
    drop(first);
    let options = match notifications {
        true => RegistryOptions {
            notify: Some((
                format!("{}/api/v1/registry/hooks/distribution", world.setup.api),
                format!("Bearer {hook_secret}"),
            )),
            ..Default::default()
        },
        false => RegistryOptions::default(),
    };
    let registry = runtime.block_on(Registry::start_on(&data, addr, options))?;
    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client.clone(), ns);
    // Read with the API, not kubectl: a process per read would add its
    // start to every figure.
    let image_now = || {
        runtime
            .block_on(api.get_opt("app"))
            .ok()
            .flatten()
            .and_then(|d| d.spec?.template.spec?.containers.first()?.image.clone())
    };
    let mut times = Vec::new();
    for round in 1..=rounds {
        let tag = format!("1.{round}.0");
        let started = Instant::now();
        registry.push("team/app", &tag, &tag)?;
        let want = format!("{image}:{tag}");
        deadline(
            "the Deployment",
            Duration::from_secs(120),
            Box::new(|| image_now().as_deref() == Some(want.as_str())),
        )?;
        times.push(started.elapsed());
    }
    Ok(times)
}
