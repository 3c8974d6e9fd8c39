//! Tether's apply engine against its peers', on the same real cluster in
//! the same run, with the same 1,000 objects (400 ConfigMaps, 200 Secrets,
//! 200 Services, 200 Deployments):
//!
//! - the GitLab agent's engine, `sigs.k8s.io/cli-utils` v0.37.2 (applier
//!   with inventory, prune, status wait until Current);
//! - Flux's, `github.com/fluxcd/pkg/ssa` v0.78.0 (`ApplyAllStaged`,
//!   `WaitForSet` until Ready, `DeleteAll` of the stale set);
//! - Tether end to end: commit → `kas project refresh` → agentk's report
//!   of that commit synced with every object Current.
//!
//! Scenarios, each engine in a namespace of its own: initial sync into an
//! empty namespace; re-sync of unchanged manifests (wall time, and the API
//! server's mutating requests for the four resources); one object changed;
//! 500 objects removed (pruned). The peers run as the small commands that
//! `scripts/peer-engines.sh` builds from their Go modules; their time
//! includes their process start and API discovery, which they do on every
//! run, as a controller's reconcile does not, so each peer's own reported
//! time (without process start) is printed too.
//!
//! Tether runs twice: with `prune_propagation_policy: background`, as both
//! peers delete by default, and with GitLab's default, foreground (a
//! Deployment is gone only once its ReplicaSets and Pods are).
//!
//! Two sets: `--set mixed` (the default: 400 ConfigMaps, 200 Secrets, 200
//! Services, 200 Deployments, whose health waits for the scheduler and the
//! simulated nodes) and `--set plain` (200 ServiceAccounts in place of the
//! Deployments: health is known once applied, so the engines themselves
//! are compared). Every engine waits for the whole set to be Current.
//!
//! The peers run at their shipped client rate limits (`--peer-limits
//! shipped`: cli-utils with client-go's 5 QPS / burst 10, which a client
//! that sets none gets; Flux with kustomize-controller's 50 / 100) and with
//! client-side rate limiting off (`off`), or both (`shipped,off`, the
//! default); `--skip NAME` leaves out one peer run (e.g. `--skip
//! cliutils-apply@shipped`).
//!
//! Run: `cargo build --release --bins && cargo bench -p tether-e2e --bench
//! engines -- [--set mixed|plain] [--peer-limits shipped,off]`
//! (`--tether-only` skips the peers). Prints figures; asserts nothing about
//! them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tether_e2e::bench::objects::{delta, files_of, mutating, request_counts};
use tether_e2e::{Setup, commit, new_repo, wait};

const OBJECTS: usize = 1000;

#[derive(Debug, Default)]
struct Figures {
    initial: Duration,
    unchanged: Duration,
    unchanged_mutating: u64,
    one_change: Duration,
    prune: Duration,
    /// The peers' own measure of each run (without process start).
    reported: Vec<u64>,
    /// Tether: `kas agent plan` of each scenario's commit before it is
    /// applied: what it took, and the counts it gave.
    plans: Vec<(String, Duration, String)>,
}

/// The four manifest sets of the scenarios, in order; with Deployments or
/// without.
fn sets(deployments: bool) -> [Vec<String>; 4] {
    let files = |n, revision| files_of(n, revision, deployments);
    let all = files(OBJECTS, 0);
    let mut one = all.clone();
    one[0] = one[0].replacen(
        "metadata: {name: cm-0}\ndata: {index: \"0\", revision: \"0\"}",
        "metadata: {name: cm-0}\ndata: {index: \"0\", revision: \"1\"}",
        1,
    );
    assert_ne!(one[0], all[0], "the one change");
    let half: Vec<String> = files(OBJECTS / 2, 0)
        .into_iter()
        .zip(one.iter())
        .map(|(h, _)| h)
        .collect();
    // The smaller set keeps the changed cm-0, so that only removals differ.
    let mut half = half;
    half[0] = half[0].replacen("revision: \"0\"}", "revision: \"1\"}", 1);
    [all.clone(), all, one, half]
}

fn write_set(dir: &Path, set: &[String]) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    for (i, text) in set.iter().enumerate() {
        std::fs::write(dir.join(format!("part-{i:02}.yaml")), text)?;
    }
    Ok(())
}

fn peer_engines() -> anyhow::Result<PathBuf> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/peer-engines.sh");
    let out = std::process::Command::new("bash").arg(script).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

#[allow(clippy::too_many_arguments)]
fn peer(
    runtime: &tokio::runtime::Runtime,
    client: &kube::Client,
    program: &Path,
    limits: &[String],
    kubeconfig: &Path,
    namespace: &str,
    work: &Path,
    deployments: bool,
) -> anyhow::Result<Figures> {
    let dir = work.join("manifests");
    let inventory = work.join("inventory.json");
    let run = |set: &[String]| -> anyhow::Result<(Duration, u64)> {
        write_set(&dir, set)?;
        let started = Instant::now();
        let out = std::process::Command::new(program)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--dir={}", dir.display()))
            .arg(format!("--namespace={namespace}"))
            .arg(format!("--inventory={}", inventory.display()))
            .arg(format!("--inventory-id=bench-{namespace}"))
            .args(limits)
            .output()?;
        let took = started.elapsed();
        anyhow::ensure!(
            out.status.success(),
            "{}: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        eprintln!("  {}", String::from_utf8_lossy(&out.stdout).trim());
        Ok((took, report["ms"].as_u64().unwrap_or_default()))
    };
    let [initial, same, one, half] = sets(deployments);
    let mut figures = Figures::default();
    let (t, r) = run(&initial)?;
    figures.initial = t;
    figures.reported.push(r);
    let before = runtime.block_on(request_counts(client))?;
    let (t, r) = run(&same)?;
    let after = runtime.block_on(request_counts(client))?;
    figures.unchanged = t;
    figures.unchanged_mutating = mutating(&delta(&before, &after));
    figures.reported.push(r);
    let (t, r) = run(&one)?;
    figures.one_change = t;
    figures.reported.push(r);
    let (t, r) = run(&half)?;
    figures.prune = t;
    figures.reported.push(r);
    Ok(figures)
}

fn sync_report(setup: &Setup, commit: &str) -> Option<serde_json::Value> {
    let text = setup.cli(&["agent", "gitops", "prod", "-o", "json"])?;
    let syncs: serde_json::Value = serde_json::from_str(&text).ok()?;
    syncs
        .as_array()?
        .iter()
        .find(|s| s["commit"] == commit && s["state"] == "synced")
        .cloned()
}

fn all_current(report: &serde_json::Value) -> bool {
    report["objects"].as_array().is_some_and(|objects| {
        objects
            .iter()
            .filter(|o| o["action"] != "pruned")
            .all(|o| o["health"] == "Current")
    })
}

/// Tether with `prune_propagation_policy: propagation`.
fn tether(
    runtime: &tokio::runtime::Runtime,
    client: &kube::Client,
    namespace: &str,
    propagation: &str,
    deployments: bool,
) -> anyhow::Result<Figures> {
    let mut setup = Setup::start_with(&["--poll-interval", "60s"]);
    setup.pod_namespace = namespace.to_owned();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n    - id: team/config\n      default_namespace: {namespace}\n      paths: [{{glob: 'manifests/*.yaml'}}]\n      prune_propagation_policy: {propagation}\n"
    );
    let empty = commit(&repo, &[(".gitlab/agents/prod/config.yaml", Some(&config))]);
    let token = setup.register_agent_in("prod", repo.to_str().unwrap_or_default());
    let _agentk = setup.agentk(&token);
    wait("the empty sync", Duration::from_secs(120), || {
        sync_report(&setup, &empty).is_some()
    });
    let mut previous: Vec<String> = Vec::new();
    let mut plans = Vec::new();
    // Each run: its time, and the mutating requests of its sync (the
    // plan's dry runs before it are left out).
    let mut run = |set: &[String], marker: &str| -> anyhow::Result<(Duration, u64)> {
        let mut changes: Vec<(String, Option<String>)> = set
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("manifests/part-{i:02}.yaml"), Some(t.clone())))
            .collect();
        for gone in set.len()..previous.len() {
            changes.push((format!("manifests/part-{gone:02}.yaml"), None));
        }
        changes.push(("README.md".into(), Some(format!("{marker}\n"))));
        previous = set.to_vec();
        let changes: Vec<(&str, Option<&str>)> = changes
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_deref()))
            .collect();
        let at = commit(&repo, &changes);
        // The plan first: what the commit would do, before anything does.
        let planning = Instant::now();
        let plan = setup
            .cli(&["agent", "plan", "prod", "--commit", &at, "-o", "json"])
            .expect("plan");
        let took = planning.elapsed();
        let plan: serde_json::Value = serde_json::from_str(&plan)?;
        plans.push((
            marker.to_owned(),
            took,
            format!("{} ({} dry runs)", plan["counts"], plan["dry_runs"]),
        ));
        let before = runtime.block_on(request_counts(client))?;
        let started = Instant::now();
        setup
            .cli(&["project", "refresh", "team/config"])
            .expect("refresh");
        wait(marker, Duration::from_secs(900), || {
            sync_report(&setup, &at).is_some_and(|r| all_current(&r) && r["phase"] == "done")
        });
        let took = started.elapsed();
        let after = runtime.block_on(request_counts(client))?;
        Ok((took, mutating(&delta(&before, &after))))
    };
    let [initial, same, one, half] = sets(deployments);
    let (initial, _) = run(&initial, "initial")?;
    let (unchanged, unchanged_mutating) = run(&same, "unchanged")?;
    let (one_change, _) = run(&one, "one change")?;
    let (prune, _) = run(&half, "500 pruned")?;
    let mut figures = Figures {
        initial,
        unchanged,
        unchanged_mutating,
        one_change,
        prune,
        ..Figures::default()
    };
    figures.plans = plans;
    Ok(figures)
}

/// Deletes `name` and waits until it is gone, pods and all.
fn delete_namespace(cluster: &tether_testenv::Cluster, name: &str) -> anyhow::Result<()> {
    let out = cluster
        .kubectl()
        .args(["delete", "namespace", name, "--wait=true", "--timeout=300s"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The value after `flag` among the arguments, if given.
fn arg(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A peer's client rate flags at `limits` (`shipped` or `off`).
fn rate_flags(program: &str, limits: &str) -> Vec<String> {
    match (program, limits) {
        (_, "off") => vec!["--qps=-1".into(), "--burst=0".into()],
        ("cliutils-apply", _) => vec!["--qps=5".into(), "--burst=10".into()],
        _ => vec!["--qps=50".into(), "--burst=100".into()],
    }
}

fn main() -> anyhow::Result<()> {
    let cluster = tether_testenv::shared();
    let (runtime, client) = tether_e2e::bench::runtime_and_client()?;
    let work = tempfile::tempdir()?;
    let mut results: BTreeMap<String, Figures> = BTreeMap::new();
    let only_tether = std::env::args().any(|a| a == "--tether-only");
    let set = arg("--set").unwrap_or_else(|| "mixed".into());
    let deployments = match set.as_str() {
        "mixed" => true,
        "plain" => false,
        other => anyhow::bail!("--set {other}: mixed or plain"),
    };
    let limits = arg("--peer-limits").unwrap_or_else(|| "shipped,off".into());
    let skip: Vec<String> = std::env::args()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "--skip")
        .map(|w| w[1].clone())
        .collect();
    println!(
        "set: {set} ({OBJECTS} objects{})",
        if deployments {
            ", 200 of them Deployments"
        } else {
            ", no Deployments"
        }
    );
    let mut peers: Vec<(String, &str, String)> = Vec::new();
    if !only_tether {
        for limit in limits.split(',') {
            for (name, program) in [
                ("fluxcd/pkg/ssa v0.78.0 (Flux)", "fluxssa-apply"),
                ("cli-utils v0.37.2 (GitLab agent)", "cliutils-apply"),
            ] {
                if skip.iter().any(|s| *s == format!("{program}@{limit}")) {
                    continue;
                }
                let flags = rate_flags(program, limit);
                peers.push((
                    format!("{name}, client limits {limit} ({})", flags.join(" ")),
                    program,
                    limit.to_owned(),
                ));
            }
        }
    }
    let engines = if peers.is_empty() {
        PathBuf::new()
    } else {
        peer_engines()?
    };
    for (name, program, limit) in &peers {
        let ns = runtime.block_on(cluster.namespace(&format!("bench-{}", &program[..4])))?;
        let dir = work.path().join(format!("{program}-{limit}"));
        std::fs::create_dir_all(&dir)?;
        eprintln!("{name}");
        let figures = peer(
            &runtime,
            &client,
            &engines.join(program),
            &rate_flags(program, limit),
            cluster.kubeconfig_path(),
            ns.name(),
            &dir,
            deployments,
        )?;
        results.insert(name.clone(), figures);
        // The simulated nodes hold 220 pods: the next engine's 200 need
        // this one's gone.
        delete_namespace(cluster, ns.name())?;
    }
    for (name, propagation) in [
        (
            "Tether, prune in the background like the peers",
            "background",
        ),
        ("Tether, prune foreground (GitLab's default)", "foreground"),
    ] {
        eprintln!("{name}");
        let ns = runtime.block_on(cluster.namespace("bench-tether"))?;
        results.insert(
            name.to_owned(),
            tether(&runtime, &client, ns.name(), propagation, deployments)?,
        );
        delete_namespace(cluster, ns.name())?;
    }

    let s = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    println!(
        "| engine | initial sync | unchanged re-sync | mutating requests (unchanged) | one object changed | 500 pruned |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, f) in &results {
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            s(f.initial),
            s(f.unchanged),
            f.unchanged_mutating,
            s(f.one_change),
            s(f.prune)
        );
    }
    for (name, f) in &results {
        for (scenario, took, counts) in &f.plans {
            println!(
                "{name}: plan of the {scenario} commit (kas render + agentk dry runs) {:.2} s: {counts}",
                took.as_secs_f64()
            );
        }
        if !f.reported.is_empty() {
            println!(
                "{name}: its own measure (no process start), ms: {:?}",
                f.reported
            );
        }
    }
    Ok(())
}
