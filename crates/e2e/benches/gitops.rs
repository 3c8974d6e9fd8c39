//! GitOps against its peer, on the same real cluster in the same run:
//!
//! 1. Initial sync of 1,000 objects (ConfigMaps, Secrets, Services,
//!    Deployments) into an empty namespace: `kubectl apply --server-side -f
//!    dir/` vs Tether end to end (commit → refresh → kas → agentk → the sync
//!    report says synced).
//! 2. Re-sync of unchanged manifests: API requests by verb, from the API
//!    server's own metrics, for `kubectl apply --server-side` again vs a
//!    Tether sync of a new commit whose manifests did not change.
//! 3. Push-to-applied latency: commit + refresh → the changed object is
//!    visible in the cluster, over 20 commits.
//! 4. agentk's peak RSS (VmHWM) while managing the 1,000 objects.
//!
//! Run: `cargo build --release -p agentk && cargo bench -p tether-e2e --bench
//! gitops` (scripts/bench.sh does both). Prints figures; asserts nothing.

use tether_e2e as support;

use std::time::{Duration, Instant};

use support::{Setup, commit, new_repo, wait};

const OBJECTS: usize = 1000;
const COMMITS: usize = 20;

fn main() -> anyhow::Result<()> {
    let cluster = tether_testenv::shared();
    let (runtime, client) = tether_e2e::bench::runtime_and_client()?;
    let (kubectl_ns, tether_ns) = runtime.block_on(async {
        let a = cluster.namespace("bench-kubectl").await?;
        let b = cluster.namespace("bench-tether").await?;
        anyhow::Ok((a.name().to_owned(), b.name().to_owned()))
    })?;

    // The same 1,000 objects, without namespaces, in 10 files.
    let work = tempfile::tempdir()?;
    let dir = work.path().join("manifests");
    std::fs::create_dir_all(&dir)?;
    for (i, text) in tether_e2e::bench::objects::files(OBJECTS, 0)
        .into_iter()
        .enumerate()
    {
        std::fs::write(dir.join(format!("part-{i:02}.yaml")), text)?;
    }

    // 1a. kubectl apply --server-side.
    let started = Instant::now();
    kubectl_apply(cluster, &kubectl_ns, &dir)?;
    let kubectl_initial = started.elapsed();

    // 1b. Tether: an agent with an empty manifest set first, so that the
    // measurement starts with a connected, configured agent.
    let mut setup = Setup::start_with(&["--poll-interval", "60s"]);
    setup.pod_namespace = tether_ns.clone();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n    - id: team/config\n      default_namespace: {tether_ns}\n      paths: [{{glob: 'manifests/*.yaml'}}]\n"
    );
    let empty = commit(&repo, &[(".gitlab/agents/prod/config.yaml", Some(&config))]);
    let token = setup.register_agent_in("prod", repo.to_str().unwrap_or_default());
    let agentk = setup.agentk(&token);
    wait("the empty sync", Duration::from_secs(120), || {
        synced(&setup, &empty).is_some()
    });
    let baseline = rss_mib(agentk.child.id(), "VmRSS");

    let files: Vec<(String, String)> = tether_e2e::bench::objects::files(OBJECTS, 0)
        .into_iter()
        .enumerate()
        .map(|(i, t)| (format!("manifests/part-{i:02}.yaml"), t))
        .collect();
    let changes: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), Some(t.as_str())))
        .collect();
    let full = commit(&repo, &changes);
    let started = Instant::now();
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait("the 1,000-object sync", Duration::from_secs(600), || {
        synced(&setup, &full).is_some()
    });
    let tether_initial = started.elapsed();
    let report = synced(&setup, &full).unwrap_or_default();
    anyhow::ensure!(
        report["applied"] == OBJECTS,
        "applied: {}",
        report["applied"]
    );
    // Let every object become Current first, so that no health polling
    // falls into the request counts below.
    wait(
        "every object to be Current",
        Duration::from_secs(600),
        || {
            synced(&setup, &full).is_some_and(|s| {
                s["objects"]
                    .as_array()
                    .is_some_and(|o| o.iter().all(|o| o["health"] == "Current"))
            })
        },
    );

    println!("initial sync of {OBJECTS} objects into an empty namespace");
    println!(
        "  kubectl apply --server-side -f dir/  {:>8.2} s",
        kubectl_initial.as_secs_f64()
    );
    println!(
        "  tether (commit → refresh → synced)   {:>8.2} s",
        tether_initial.as_secs_f64()
    );
    println!(
        "  ratio tether / kubectl               {:>8.2}",
        tether_initial.as_secs_f64() / kubectl_initial.as_secs_f64()
    );

    // 2. Re-sync of unchanged manifests: requests by verb.
    let before = runtime.block_on(tether_e2e::bench::objects::request_counts(&client))?;
    kubectl_apply(cluster, &kubectl_ns, &dir)?;
    let after_kubectl = runtime.block_on(tether_e2e::bench::objects::request_counts(&client))?;
    let unchanged = commit(&repo, &[("README.md", Some("manifests unchanged\n"))]);
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait("the unchanged re-sync", Duration::from_secs(300), || {
        synced(&setup, &unchanged).is_some()
    });
    let after_tether = runtime.block_on(tether_e2e::bench::objects::request_counts(&client))?;
    let report = synced(&setup, &unchanged).unwrap_or_default();
    println!(
        "\nre-sync of unchanged manifests ({} unchanged, {} applied by tether): API requests on configmaps, secrets, services, deployments and agentk's inventory, by verb",
        report["unchanged"], report["applied"]
    );
    let kubectl_delta = tether_e2e::bench::objects::delta(&before, &after_kubectl);
    let tether_delta = tether_e2e::bench::objects::delta(&after_kubectl, &after_tether);
    let verbs: std::collections::BTreeSet<&String> =
        kubectl_delta.keys().chain(tether_delta.keys()).collect();
    println!("  {:<8} {:>8} {:>8}", "verb", "kubectl", "tether");
    for verb in verbs {
        println!(
            "  {:<8} {:>8} {:>8}",
            verb,
            kubectl_delta.get(verb).copied().unwrap_or(0.0),
            tether_delta.get(verb).copied().unwrap_or(0.0)
        );
    }
    let mutating = tether_e2e::bench::objects::mutating;
    println!(
        "  mutating: kubectl {}, tether {}",
        mutating(&kubectl_delta),
        mutating(&tether_delta)
    );

    // 3. Push-to-applied latency.
    let mut latencies = Vec::with_capacity(COMMITS);
    for i in 1..=COMMITS {
        let text = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: pushed}}\ndata: {{rev: \"{i}\"}}\n"
        );
        commit(&repo, &[("manifests/pushed.yaml", Some(&text))]);
        let started = Instant::now();
        setup
            .cli(&["project", "refresh", "team/config"])
            .expect("refresh");
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client.clone(), &tether_ns);
        let want = i.to_string();
        runtime.block_on(tether_e2e::bench::pushed_rev(&api, &want));
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "\npush-to-applied (commit + refresh → object visible), {COMMITS} commits, {} other objects managed: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        OBJECTS,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.95).as_secs_f64() * 1e3,
        latencies
            .last()
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or_default()
    );

    // 4. agentk's peak RSS.
    let pid = agentk.child.id();
    println!(
        "\nagentk managing {} objects: peak RSS (VmHWM) {:.1} MiB, RSS now {:.1} MiB; {:.1} MiB connected and synced with no objects",
        OBJECTS + 1,
        rss_mib(pid, "VmHWM"),
        rss_mib(pid, "VmRSS"),
        baseline
    );
    Ok(())
}

/// A memory figure of `pid` from /proc, in MiB.
fn rss_mib(pid: u32, field: &str) -> f64 {
    tether_e2e::bench::memory_kib(pid, field) / 1024.0
}

/// `kubectl apply --server-side -n <ns> -f <dir>`, the peer measured.
fn kubectl_apply(
    cluster: &tether_testenv::Cluster,
    namespace: &str,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let out = cluster
        .kubectl()
        .args(["apply", "--server-side", "-n", namespace, "-f"])
        .arg(dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The sync report of `commit`, once it says synced.
fn synced(setup: &Setup, commit: &str) -> Option<serde_json::Value> {
    let text = setup.cli(&["agent", "gitops", "prod", "-o", "json"])?;
    let syncs: serde_json::Value = serde_json::from_str(&text).ok()?;
    syncs
        .as_array()?
        .iter()
        .find(|s| s["commit"] == commit && s["state"] == "synced")
        .cloned()
}
