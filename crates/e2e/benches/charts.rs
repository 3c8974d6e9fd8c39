//! Push-to-applied for a Helm chart: a chart in git (its 50 templates
//! rendered on kas), then 20 commits that each change a value in its values
//! file; the time from `kas project refresh` to the changed ConfigMap in
//! the cluster. Every commit is a new render (the cache is keyed by
//! commit), so each measurement includes one `helm template`; the tools
//! and the chart's export path are warm.
//!
//! Run: `cargo build --release --bins && cargo bench -p tether-e2e --bench
//! charts`. Prints figures; asserts nothing.

use std::time::{Duration, Instant};

use tether_e2e::bench::{ms, percentile};
use tether_e2e::{Setup, commit, new_repo, wait};

const COMMITS: usize = 20;
const TEMPLATES: usize = 50;

fn main() -> anyhow::Result<()> {
    let cluster = tether_testenv::shared();
    let (runtime, client) = tether_e2e::bench::runtime_and_client()?;
    let ns = runtime.block_on(async {
        let ns = cluster.namespace("bench-charts").await?;
        anyhow::Ok(ns.name().to_owned())
    })?;
    let mut setup = Setup::start_with(&["--poll-interval", "60s"]);
    setup.pod_namespace = ns.clone();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    helm_charts:\n    - path: chart\n      release_name: app\n      values_files: [chart/values-prod.yaml]\n"
    );
    let mut files: Vec<(String, String)> = vec![
        (".gitlab/agents/prod/config.yaml".into(), config),
        ("chart/Chart.yaml".into(), "apiVersion: v2\nname: app\nversion: 1.0.0\n".into()),
        ("chart/values.yaml".into(), "rev: '0'\n".into()),
        ("chart/values-prod.yaml".into(), "rev: '0'\n".into()),
        (
            "chart/templates/pushed.yaml".into(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: pushed}\ndata: {rev: {{ .Values.rev | quote }}}\n".into(),
        ),
    ];
    for i in 0..TEMPLATES {
        files.push((
            format!("chart/templates/cm-{i:02}.yaml"),
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {{{{ .Release.Name }}}}-{i:02}}}\ndata: {{index: '{i}'}}\n"),
        ));
    }
    let changes: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), Some(t.as_str())))
        .collect();
    let first = commit(&repo, &changes);
    let token = setup.register_agent_in("prod", repo.to_str().unwrap_or_default());
    let _agentk = setup.agentk(&token);
    wait("the chart's first sync", Duration::from_secs(120), || {
        setup
            .cli(&["agent", "gitops", "prod", "-o", "json"])
            .is_some_and(|t| t.contains(&first) && t.contains("\"synced\""))
    });
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, &ns);
    let mut latencies = Vec::with_capacity(COMMITS);
    for i in 1..=COMMITS {
        let values = format!("rev: '{i}'\n");
        commit(&repo, &[("chart/values-prod.yaml", Some(&values))]);
        let started = Instant::now();
        setup
            .cli(&["project", "refresh", "team/config"])
            .expect("refresh");
        let want = i.to_string();
        runtime.block_on(tether_e2e::bench::pushed_rev(&api, &want));
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let (_, metrics) = tether_e2e::http_get(setup.admin, "/metrics").unwrap_or_default();
    let renders: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("tether_kas_render"))
        .filter(|l| !l.contains("_bucket"))
        .collect();
    println!(
        "chart push-to-applied (values change, commit + refresh → ConfigMap changed), {COMMITS} commits, {} objects in the chart: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        TEMPLATES + 1,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.95)),
        latencies.last().map(|d| ms(*d)).unwrap_or_default()
    );
    for line in renders {
        println!("  {line}");
    }
    Ok(())
}
