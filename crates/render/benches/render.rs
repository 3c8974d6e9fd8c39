//! Rendering a 200-template chart: `helm template` alone against Tether's
//! render of the same chart from an exported repository (cold: a new key;
//! warm: answered by the cache), the same pinned helm, in the same run.
//! Memory is the peak RSS of the helm processes (getrusage of children).
//!
//! Run: `cargo bench -p tether-render --bench render` (the tools from
//! scripts/render-tools.sh, or TETHER_RENDER_BIN). Prints figures; asserts
//! nothing about them.

use std::path::Path;
use std::time::{Duration, Instant};

use tether_agent_config::HelmChart;
use tether_render::{Files, Job, RenderMetrics, RenderTools, Renderer, Settings};

const TEMPLATES: usize = 200;
const RUNS: usize = 20;

fn chart_files() -> Files {
    let mut files = vec![(
        "charts/big/Chart.yaml".to_owned(),
        b"apiVersion: v2\nname: big\nversion: 1.0.0\n".to_vec(),
    )];
    files.push((
        "charts/big/values.yaml".to_owned(),
        b"replicas: 2\nimage: {repository: nginx, tag: '1.27'}\nlabels: {team: platform}\n"
            .to_vec(),
    ));
    for i in 0..TEMPLATES {
        let template = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{{{ .Release.Name }}}}-{i:03}\n  labels:\n{{{{ toYaml .Values.labels | indent 4 }}}}\nspec:\n  replicas: {{{{ .Values.replicas }}}}\n  selector: {{matchLabels: {{app: app-{i:03}}}}}\n  template:\n    metadata: {{labels: {{app: app-{i:03}}}}}\n    spec:\n      containers:\n      - name: app\n        image: \"{{{{ .Values.image.repository }}}}:{{{{ .Values.image.tag }}}}\"\n        env:\n{{{{- range $k, $v := .Values.labels }}}}\n        - {{name: {{{{ $k | upper }}}}, value: {{{{ $v | quote }}}}}}\n{{{{- end }}}}\n"
        );
        files.push((
            format!("charts/big/templates/deploy-{i:03}.yaml"),
            template.into_bytes(),
        ));
    }
    files
}

fn peak_children_rss_mib() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bin = tether_testenv::render_tools()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let files = chart_files();

    // helm template alone, on the same chart written once.
    let dir = tempfile::tempdir()?;
    for (path, bytes) in &files {
        let file = dir.path().join(path);
        std::fs::create_dir_all(file.parent().unwrap_or(Path::new(".")))?;
        std::fs::write(file, bytes)?;
    }
    let helm = bin.join("helm");
    let mut alone = Vec::new();
    let mut bytes = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        let out = std::process::Command::new(&helm)
            .args(["template", "big"])
            .arg(dir.path().join("charts/big"))
            .args(["--namespace", "apps"])
            .env("HELM_CACHE_HOME", dir.path().join("cache"))
            .env("HELM_CONFIG_HOME", dir.path().join("config"))
            .env("HELM_DATA_HOME", dir.path().join("data"))
            .output()?;
        alone.push(started.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        bytes = out.stdout.len();
    }
    let helm_rss = peak_children_rss_mib();

    let settings = Settings::new(Some(helm.clone()), Some(bin.join("kustomize")));
    let (want_helm, want_kustomize) = settings.wanted();
    let tools = runtime.block_on(RenderTools::resolve(want_helm, want_kustomize, None));
    let renderer = Renderer::new(settings, &tools, RenderMetrics::default())?;
    let chart = HelmChart {
        path: Some("charts/big".into()),
        release_name: "big".into(),
        ..HelmChart::default()
    };
    let charts = [chart];
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut rendered_bytes = 0;
    for run in 0..RUNS {
        // A new commit id each run: a new key, a render.
        let commit = format!("{run:040x}");
        let job = Job {
            project: "team/platform",
            commit: &commit,
            default_namespace: "apps",
            kustomizations: &[],
            helm_charts: &charts,
            kube_version: Some("v1.35.4"),
            api_versions: &[],
            remote_bases: false,
        };
        let started = Instant::now();
        let rendered = runtime
            .block_on(renderer.render(&job, || async { Ok(files.clone()) }))
            .map_err(|e| e.to_string())?;
        cold.push(started.elapsed());
        rendered_bytes = rendered.files.iter().map(|f| f.content.len()).sum();
        let started = Instant::now();
        runtime
            .block_on(renderer.render(&job, || async { Ok(files.clone()) }))
            .map_err(|e| e.to_string())?;
        warm.push(started.elapsed());
    }
    println!(
        "{} ({TEMPLATES} Deployments, {RUNS} runs each)\n",
        renderer.versions()
    );
    println!("| | p50 | output | peak RSS of helm |");
    println!("|---|---|---|---|");
    println!(
        "| `helm template` alone | {:.1} ms | {:.0} KiB YAML | {helm_rss:.0} MiB |",
        ms(p50(alone.clone())),
        bytes as f64 / 1024.0
    );
    println!(
        "| Tether render, new commit (export + sandboxed helm + objects, hooks, namespaces) | {:.1} ms ({:.2}×) | {:.0} KiB JSON | {:.0} MiB |",
        ms(p50(cold.clone())),
        p50(cold).as_secs_f64() / p50(alone).as_secs_f64(),
        rendered_bytes as f64 / 1024.0,
        peak_children_rss_mib()
    );
    println!(
        "| Tether render, same commit again (cache) | {:.3} ms | | |",
        ms(p50(warm))
    );

    // The kernel's sandbox (Landlock + seccomp) against none, same tools,
    // same chart, renders interleaved so that both see the same machine.
    let mut unconfined = Settings::new(Some(helm.clone()), Some(bin.join("kustomize")));
    unconfined.limits.sandbox = tether_render::SandboxMode::Off;
    let unconfined = Renderer::new(unconfined, &tools, RenderMetrics::default())?;
    let mut confined_runs = Vec::new();
    let mut unconfined_runs = Vec::new();
    for run in 0..RUNS {
        let commit = format!("{:040x}", 1_000 + run);
        let job = Job {
            project: "team/platform",
            commit: &commit,
            default_namespace: "apps",
            kustomizations: &[],
            helm_charts: &charts,
            kube_version: Some("v1.35.4"),
            api_versions: &[],
            remote_bases: false,
        };
        for (renderer, runs) in [
            (&renderer, &mut confined_runs),
            (&unconfined, &mut unconfined_runs),
        ] {
            let started = Instant::now();
            runtime
                .block_on(renderer.render(&job, || async { Ok(files.clone()) }))
                .map_err(|e| e.to_string())?;
            runs.push(started.elapsed());
        }
    }
    let (confined, open) = (p50(confined_runs), p50(unconfined_runs));
    println!("\n| render, new commit | p50 |");
    println!("|---|---|");
    println!(
        "| unconfined (`--render-sandbox=off`) | {:.1} ms |",
        ms(open)
    );
    println!(
        "| in the kernel's sandbox (default) | {:.1} ms ({:.3}×, {:+.2} ms) |",
        ms(confined),
        confined.as_secs_f64() / open.as_secs_f64(),
        ms(confined) - ms(open)
    );
    Ok(())
}
