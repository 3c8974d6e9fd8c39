//! Helm charts and kustomizations rendered on kas, end to end: real helm
//! and kustomize (the pinned ones), real kas and agentk processes, the real
//! cluster. A chart in git with values files, a CRD in `crds/` and a custom
//! resource of it, hooks; a kustomize overlay with a base, a patch, a
//! generator and substitution; a chart from a chart repository served over
//! HTTP by the test, and one from an OCI registry the test runs (distribution's,
//! built from its Go module); renders that fail (broken values, `lookup`, a
//! loop, a timeout, an undefined variable, a remote base) each say so and
//! change nothing; an object a new chart version drops is pruned; a hundred
//! agents at one commit cost one render; and a kas given no `--helm` or
//! `--kustomize` finds both on its `PATH`, renders with them, and names
//! their absolute paths in `/readyz?verbose`.

use tether_e2e as support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use support::{Setup, ToolsGiven, commit, kubectl_get, new_repo, raw, wait};
use tether_proto::v1::server_message;

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";

fn kind_of(ns: &str) -> String {
    ns.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

/// The chart `web` at `version`: a CRD in `crds/`, a ConfigMap from its
/// values and the cluster's version, a custom resource (left out when
/// `widget` is false), a pre-install hook and a test hook.
fn chart(ns: &str, version: &str, widget: bool) -> Vec<(String, String)> {
    let kind = kind_of(ns);
    let mut files = vec![
        (
            "charts/web/Chart.yaml".to_owned(),
            format!("apiVersion: v2\nname: web\nversion: {version}\n"),
        ),
        (
            "charts/web/values.yaml".to_owned(),
            "colour: blue\ngreeting: hi\n".to_owned(),
        ),
        (
            "charts/web/values-prod.yaml".to_owned(),
            "colour: green\n".to_owned(),
        ),
        (
            "charts/web/crds/widgets.yaml".to_owned(),
            format!(
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: widgets{kind}.tether.test}}\nspec:\n  group: tether.test\n  scope: Namespaced\n  names: {{plural: widgets{kind}, singular: widget{kind}, kind: Widget{kind}}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n"
            ),
        ),
        (
            "charts/web/templates/configmap.yaml".to_owned(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\ndata:\n  colour: {{ .Values.colour | quote }}\n  greeting: {{ .Values.greeting | quote }}\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n  namespace: {{ .Release.Namespace | quote }}\n  gadgets: {{ .Capabilities.APIVersions.Has \"tether.test/v1/Gadget".to_owned() + &kind + "\" | quote }}\n  unserved: {{ .Capabilities.APIVersions.Has \"tether.test/v9\" | quote }}\n",
        ),
        (
            "charts/web/templates/hooks.yaml".to_owned(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-schema\n  annotations: {helm.sh/hook: pre-install}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {{ .Release.Name }}-test\n  annotations: {helm.sh/hook: test}\nspec: {containers: [{name: t, image: busybox}]}\n".to_owned(),
        ),
    ];
    if widget {
        files.push((
            "charts/web/templates/widget.yaml".to_owned(),
            format!("apiVersion: tether.test/v1\nkind: Widget{kind}\nmetadata: {{name: w1}}\nspec: {{size: 3}}\n"),
        ));
    }
    files
}

fn kustomize_files() -> Vec<(String, String)> {
    [
        (
            "deploy/base/kustomization.yaml",
            "resources: [settings.yaml]\nconfigMapGenerator:\n- name: generated\n  literals: [source=generator]\ngeneratorOptions: {disableNameSuffixHash: true}\n",
        ),
        (
            "deploy/base/settings.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: base-settings}\ndata:\n  cluster: ${CLUSTER}\n  tier: ${TIER:=gold}\n",
        ),
        (
            "deploy/overlays/prod/kustomization.yaml",
            "resources: [../../base]\nnamePrefix: prod-\npatches:\n- path: patch.yaml\n",
        ),
        (
            "deploy/overlays/prod/patch.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: base-settings}\ndata: {patched: 'yes'}\n",
        ),
    ]
    .iter()
    .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
    .collect()
}

fn config(ns: &str) -> String {
    format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    helm_charts:\n    - path: charts/web\n      release_name: web\n      values_files: [charts/web/values-prod.yaml]\n      values: {{greeting: hello}}\n    kustomizations:\n    - path: deploy/overlays/prod\n      substitute: {{CLUSTER: eu-1}}\n"
    )
}

fn commit_files(repo: &Path, files: &[(String, String)], deleted: &[&str]) -> String {
    let mut changes: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), Some(t.as_str())))
        .collect();
    changes.extend(deleted.iter().map(|p| (*p, None)));
    commit(repo, &changes)
}

#[tokio::test(flavor = "multi_thread")]
async fn charts_and_kustomizations_render_on_kas_and_reach_the_cluster() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-render").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || render(&ns))
        .await
        .expect("test body");
}

/// A kind only the test cluster serves (helm's built-in API versions do
/// not have it): a chart sees it only if the agent reported it.
fn install_gadget_crd(dir: &Path, ns: &str) {
    let kind = kind_of(ns);
    let file = dir.join("gadgets.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: gadgets{kind}.tether.test}}\nspec:\n  group: tether.test\n  scope: Namespaced\n  names: {{plural: gadgets{kind}, singular: gadget{kind}, kind: Gadget{kind}}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n"
        ),
    )
    .expect("write");
    let cluster = tether_testenv::shared();
    cluster.kubectl_ok(&["apply", "-f", file.to_str().expect("utf-8")]);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        &format!("crd/gadgets{kind}.tether.test"),
    ]);
}

fn render(ns: &str) {
    let mut setup = Setup::start_with(&["--poll-interval", "60s", "--render-timeout", "3s"]);
    install_gadget_crd(setup.dir.path(), ns);
    setup.pod_namespace = ns.to_owned();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let mut files = vec![(CONFIG.to_owned(), config(ns))];
    files.extend(chart(ns, "1.0.0", true));
    files.extend(kustomize_files());
    // A YAML file outside any glob-less render: not applied as such.
    files.push((
        "manifests/loose.yaml".to_owned(),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: loose}\n".to_owned(),
    ));
    let good = commit_files(&repo, &files, &[]);
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let _agentk = setup.agentk(&token);
    wait("the rendered sync", Duration::from_secs(90), || {
        setup.sync_of(&good).is_some_and(|s| s["state"] == "synced")
    });

    // The chart: values file over the chart's values, inline values over
    // both, the agent's cluster version, the release namespace.
    let settings = kubectl_get(&["configmap", "web-settings", "-n", ns]).expect("web-settings");
    assert_eq!(settings["data"]["colour"], "green");
    assert_eq!(settings["data"]["greeting"], "hello");
    assert_eq!(settings["data"]["kube"], "v1.35.4");
    assert_eq!(settings["data"]["namespace"], ns);
    assert_eq!(
        settings["data"]["gadgets"], "true",
        "the agent's cluster's API versions reach .Capabilities.APIVersions"
    );
    assert_eq!(settings["data"]["unserved"], "false");
    let kind = kind_of(ns);
    assert!(kubectl_get(&["crd", &format!("widgets{kind}.tether.test")]).is_some());
    assert!(
        kubectl_get(&[&format!("widgets{kind}.tether.test"), "w1", "-n", ns]).is_some(),
        "the CR of the chart's CRD, in one sync"
    );
    let hook = kubectl_get(&["configmap", "web-schema", "-n", ns]).expect("the pre-install hook");
    assert!(hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-install");
    assert!(
        kubectl_get(&["pod", "web-test", "-n", ns]).is_none(),
        "test hooks are left out"
    );
    let deps = settings["metadata"]["annotations"]["config.kubernetes.io/depends-on"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        deps.contains(&format!("/namespaces/{ns}/ConfigMap/web-schema")),
        "the release waits for its pre-install hook: {deps:?}"
    );
    // The overlay: base, patch, generator, substitution with a default.
    let base = kubectl_get(&["configmap", "prod-base-settings", "-n", ns]).expect("overlay");
    assert_eq!(base["data"]["cluster"], "eu-1");
    assert_eq!(base["data"]["tier"], "gold");
    assert_eq!(base["data"]["patched"], "yes");
    let generated = kubectl_get(&["configmap", "prod-generated", "-n", ns]).expect("generated");
    assert_eq!(generated["data"]["source"], "generator");
    assert!(
        kubectl_get(&["configmap", "loose", "-n", ns]).is_none(),
        "a project that renders and names no paths applies only its renders"
    );

    // Renders that fail: each commit breaks one thing (and mends the one
    // before); each is reported with what failed, and nothing changes.
    let refresh = || {
        setup
            .cli(&["project", "refresh", "team/config"])
            .expect("refresh");
    };
    let failed_with = |commit: &str, needles: &[&str]| {
        let reported = setup.wait_sync_failed(commit, needles);
        eprintln!("reported: {reported}");
        let still = kubectl_get(&["configmap", "web-settings", "-n", ns]).expect("still there");
        assert_eq!(still["data"]["colour"], "green", "unchanged");
        assert!(kubectl_get(&[&format!("widgets{kind}.tether.test"), "w1", "-n", ns]).is_some());
    };
    let values = "charts/web/values-prod.yaml";
    let broken = commit(&repo, &[(values, Some("colour: [green\n"))]);
    refresh();
    failed_with(
        &broken,
        &["helm chart web (charts/web)", "values-prod.yaml"],
    );

    let lookup = commit(
        &repo,
        &[
            (values, Some("colour: red\n")),
            (
                "charts/web/templates/secret-check.yaml",
                Some("{{ $s := lookup \"v1\" \"Secret\" .Release.Namespace \"db\" }}\n"),
            ),
        ],
    );
    refresh();
    failed_with(
        &lookup,
        &[
            "charts/web/templates/secret-check.yaml",
            "lookup",
            "not supported",
        ],
    );

    let looping = commit(
        &repo,
        &[
            ("charts/web/templates/secret-check.yaml", None),
            (
                "charts/web/templates/loop.yaml",
                Some(
                    "{{- define \"loop\" }}{{ include \"loop\" . }}{{- end }}\n{{ include \"loop\" . }}\n",
                ),
            ),
        ],
    );
    refresh();
    failed_with(&looping, &["helm chart web", "loop"]);

    let slow = commit(
        &repo,
        &[(
            "charts/web/templates/loop.yaml",
            Some(
                "{{- range $i := until 20000 }}{{- range $j := until 20000 }}{{- end }}{{- end }}\n",
            ),
        )],
    );
    refresh();
    failed_with(&slow, &["helm chart web", "did not finish within 3s"]);

    let undefined = commit(
        &repo,
        &[
            ("charts/web/templates/loop.yaml", None),
            (
                "deploy/base/settings.yaml",
                Some(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: base-settings}\ndata: {cluster: '${REGION}'}\n",
                ),
            ),
        ],
    );
    refresh();
    failed_with(
        &undefined,
        &["kustomization deploy/overlays/prod", "REGION"],
    );

    let remote = commit(
        &repo,
        &[
            ("deploy/base/settings.yaml", Some(&kustomize_files()[1].1)),
            (
                "deploy/overlays/prod/kustomization.yaml",
                Some("resources: [../../base, 'https://github.com/example/deploy//base?ref=v1']\n"),
            ),
        ],
    );
    refresh();
    failed_with(
        &remote,
        &[
            "deploy/overlays/prod/kustomization.yaml",
            "allow_remote_bases: true",
        ],
    );

    // A new chart version without the widget: the widget is pruned, the
    // rest stays and changes.
    let mut next = chart(ns, "1.1.0", false);
    next.extend(kustomize_files());
    next.retain(|(p, _)| p != values);
    next.push((values.to_owned(), "colour: purple\n".to_owned()));
    let pruned = commit_files(&repo, &next, &["charts/web/templates/widget.yaml"]);
    refresh();
    wait(
        "the chart without its widget",
        Duration::from_secs(60),
        || {
            setup
                .sync_of(&pruned)
                .is_some_and(|s| s["state"] == "synced")
        },
    );
    assert!(
        kubectl_get(&[&format!("widgets{kind}.tether.test"), "w1", "-n", ns]).is_none(),
        "dropped by the new chart version, so pruned"
    );
    let settings = kubectl_get(&["configmap", "web-settings", "-n", ns]).expect("web-settings");
    assert_eq!(settings["data"]["colour"], "purple");
}

/// Serves the files of `dir` over HTTP on a loopback port, one thread per
/// request, for as long as the test runs.
fn serve_folder(dir: std::path::PathBuf) -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).map_or(true, |n| n == 0) || header == "\r\n" {
                        break;
                    }
                }
                let file = dir.join(path.trim_start_matches('/'));
                let mut stream = &stream;
                match std::fs::read(&file) {
                    Ok(body) if !path.contains("..") => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(&body);
                    }
                    _ => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chart_from_a_chart_repository_renders_and_a_missing_version_is_named() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-chartrepo").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || chart_repository(&ns))
        .await
        .expect("test body");
}

fn chart_repository(ns: &str) {
    let mut setup = Setup::start_with(&[
        "--poll-interval",
        "60s",
        // The test's repository is on loopback: allowed, as an
        // administrator allows an internal one.
        "--egress-allow",
        "127.0.0.1",
    ]);
    setup.pod_namespace = ns.to_owned();
    // A chart, packaged and indexed with the real helm, served over HTTP.
    let source = setup.dir.path().join("remote-chart");
    for (path, text) in [
        (
            "Chart.yaml",
            "apiVersion: v2\nname: remote\nversion: 0.3.0\n",
        ),
        ("values.yaml", "size: small\n"),
        (
            "templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Release.Name }}-remote}\ndata: {size: {{ .Values.size | quote }}}\n",
        ),
    ] {
        let file = source.join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("folder");
        std::fs::write(file, text).expect("write");
    }
    let served = setup.dir.path().join("served");
    std::fs::create_dir_all(&served).expect("folder");
    let run = |args: &[&str]| helm(&setup, args);
    run(&[
        "package",
        source.to_str().expect("utf-8"),
        "-d",
        served.to_str().expect("utf-8"),
    ]);
    let addr = serve_folder(served.clone());
    let url = format!("http://{addr}");
    run(&[
        "repo",
        "index",
        served.to_str().expect("utf-8"),
        "--url",
        &url,
    ]);

    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = |version: &str| {
        format!(
            "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    helm_charts:\n    - repository: {url}\n      chart: remote\n      version: {version}\n      release_name: fetched\n      values: {{size: large}}\n"
        )
    };
    let good = commit(&repo, &[(CONFIG, Some(&config("0.3.0")))]);
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let _agentk = setup.agentk(&token);
    wait(
        "the chart from the repository",
        Duration::from_secs(90),
        || setup.sync_of(&good).is_some_and(|s| s["state"] == "synced"),
    );
    let cm = kubectl_get(&["configmap", "fetched-remote", "-n", ns]).expect("rendered");
    assert_eq!(cm["data"]["size"], "large");

    let missing = commit(&repo, &[(CONFIG, Some(&config("0.4.0")))]);
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait(
        "the missing version to be named",
        Duration::from_secs(60),
        || {
            setup.sync_of(&missing).is_some_and(|s| {
                let error = s["error"].as_str().unwrap_or_default();
                s["state"] == "failed"
                    && error.contains("has no version 0.4.0")
                    && error.contains("0.3.0")
            })
        },
    );
    assert!(kubectl_get(&["configmap", "fetched-remote", "-n", ns]).is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_only_on_path_are_resolved_at_start_and_render() {
    let cluster = tether_testenv::shared();
    let ns = cluster
        .namespace("e2e-render-path")
        .await
        .expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || tools_on_path(&ns))
        .await
        .expect("test body");
}

fn tools_on_path(ns: &str) {
    let mut setup = Setup::start_with_tools(&["--poll-interval", "60s"], ToolsGiven::OnPath);
    setup.pod_namespace = ns.to_owned();
    let bin = tether_testenv::render_tools().expect("render tools");
    let bin = std::fs::canonicalize(bin).expect("canonical folder");

    // Resolved before the admin listener opened: absolute paths, the
    // folder kas found them in on its PATH, and their versions.
    let (status, details) = support::http_get(setup.admin, "/readyz?verbose").expect("readyz");
    assert_eq!(status, 200, "{details}");
    let tools = details
        .lines()
        .find_map(|l| l.strip_prefix("[+]render-tools "))
        .unwrap_or_else(|| panic!("no render-tools line in {details:?}"));
    let helm = format!("helm={} ", bin.join("helm").display());
    let kustomize = format!("kustomize={} v", bin.join("kustomize").display());
    assert!(tools.starts_with(&helm), "{helm:?} in {tools:?}");
    assert!(tools.contains(&kustomize), "{kustomize:?} in {tools:?}");
    assert!(!tools.contains("missing"), "{tools:?}");
    assert_eq!(
        support::http_get(setup.admin, "/readyz"),
        Some((200, "ok\n".to_owned())),
        "the plain answer is unchanged"
    );

    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    helm_charts:\n    - path: charts/hello\n      release_name: hello\n    kustomizations:\n    - path: deploy\n"
    );
    let files = [
        (CONFIG, config.as_str()),
        (
            "charts/hello/Chart.yaml",
            "apiVersion: v2\nname: hello\nversion: 0.1.0\n",
        ),
        (
            "charts/hello/templates/configmap.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: '{{ .Release.Name }}-from-helm'}\ndata: {rendered: 'yes'}\n",
        ),
        ("deploy/kustomization.yaml", "resources: [settings.yaml]\n"),
        (
            "deploy/settings.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-kustomize}\ndata: {rendered: 'yes'}\n",
        ),
    ];
    let changes: Vec<(&str, Option<&str>)> = files.iter().map(|(p, t)| (*p, Some(*t))).collect();
    let head = commit(&repo, &changes);
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let _agentk = setup.agentk(&token);
    wait("the rendered sync", Duration::from_secs(90), || {
        setup.sync_of(&head).is_some_and(|s| s["state"] == "synced")
    });
    for name in ["hello-from-helm", "from-kustomize"] {
        let object = kubectl_get(&["configmap", name, "-n", ns]).expect(name);
        assert_eq!(object["data"]["rendered"], "yes", "{name}");
    }
}

/// The `kas_…` metrics as name (with labels) → value.
fn metrics(setup: &Setup) -> BTreeMap<String, f64> {
    let (_, text) = support::http_get(setup.admin, "/metrics").expect("metrics");
    text.lines()
        .filter(|l| l.starts_with("tether_kas_"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_agents_at_one_commit_cost_one_render() {
    const AGENTS: usize = 100;
    const TEMPLATES: usize = 200;
    let (setup, tokens) = tokio::task::spawn_blocking(|| {
        let setup = Setup::start_with(&["--poll-interval", "60s"]);
        let repo = setup.dir.path().join("repo");
        new_repo(&repo);
        let config = "gitops:\n  manifest_projects:\n  - default_namespace: fleet\n    helm_charts:\n    - path: charts/big\n      release_name: big\n";
        let mut files: Vec<(String, String)> = vec![(
            "charts/big/Chart.yaml".into(),
            "apiVersion: v2\nname: big\nversion: 1.0.0\n".into(),
        )];
        for i in 0..TEMPLATES {
            files.push((
                format!("charts/big/templates/cm-{i:03}.yaml"),
                format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big-{i:03}}}\ndata: {{release: {{{{ .Release.Name | quote }}}}}}\n"),
            ));
        }
        for a in 0..AGENTS {
            files.push((format!(".gitlab/agents/a{a:03}/config.yaml"), config.into()));
        }
        commit_files(&repo, &files, &[]);
        let url = repo.to_str().expect("utf-8");
        setup
            .cli(&["project", "add", "team/config", "--url", url])
            .expect("project");
        let tokens: Vec<String> = (0..AGENTS)
            .map(|a| {
                let name = format!("a{a:03}");
                setup
                    .cli(&["agent", "create", &name, "--project", "team/config"])
                    .expect("agent");
                support::last_line(setup.cli(&["token", "create", &name, "--name", "t"]))
            })
            .collect();
        (setup, tokens)
    })
    .await
    .expect("registered");
    let before = metrics(&setup);
    let mut sessions = tokio::task::JoinSet::new();
    for (a, token) in tokens.into_iter().enumerate() {
        let channel = raw::connect(&setup).await;
        sessions.spawn(async move {
            let mut session =
                raw::session(channel, &token, Some(raw::hello(&format!("a{a:03}-0"))))
                    .await
                    .expect("session");
            // Every agent receives the rendered objects: 200 ConfigMaps.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            let mut objects = 0;
            loop {
                let next = tokio::time::timeout_at(deadline, session.inbound.message())
                    .await
                    .expect("manifests in time")
                    .expect("stream")
                    .expect("message");
                if let Some(server_message::Message::Manifests(m)) = next.message {
                    assert!(m.error.is_empty(), "{}", m.error);
                    for file in &m.files {
                        let list: serde_json::Value =
                            serde_json::from_slice(&file.content).expect("JSON");
                        objects += list["items"].as_array().map_or(0, Vec::len);
                    }
                    if m.last {
                        return objects;
                    }
                }
            }
        });
    }
    while let Some(done) = sessions.join_next().await {
        assert_eq!(done.expect("agent"), TEMPLATES);
    }
    let after = metrics(&setup);
    let delta = |name: &str| {
        after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
    };
    assert_eq!(
        delta("tether_kas_renders_total{result=\"ok\"}"),
        1.0,
        "{after:#?}"
    );
    assert_eq!(
        delta("tether_kas_render_cache_hits_total"),
        (AGENTS - 1) as f64
    );
    drop(setup);
}

/// The real helm (the pinned one), with folders of the test's own.
fn helm(setup: &Setup, args: &[&str]) {
    let helm = tether_testenv::render_tools().expect("tools").join("helm");
    let out = std::process::Command::new(helm)
        .args(args)
        .env("HELM_CACHE_HOME", setup.dir.path().join("helm-cache"))
        .env("HELM_CONFIG_HOME", setup.dir.path().join("helm-config"))
        .env("HELM_DATA_HOME", setup.dir.path().join("helm-data"))
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real OCI registry (distribution's) on a loopback port, its storage in
/// `dir`; killed with the returned process.
fn start_registry(dir: &Path) -> (support::Proc, std::net::SocketAddr) {
    let addr = support::free_port();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\nlog:\n  level: error\n",
            dir.join("registry-data").display()
        ),
    )
    .expect("registry config");
    let bin = tether_testenv::oci_registry()
        .expect("registry")
        .join("registry");
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("serve").arg(&config);
    let registry = support::Proc::spawn(cmd, dir.join("registry.log"));
    wait("the registry", Duration::from_secs(30), || {
        support::probe(addr, "/v2/") == Some(200)
    });
    (registry, addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chart_from_an_oci_registry_renders_and_a_missing_tag_is_named() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-oci").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || oci_chart(&ns))
        .await
        .expect("test body");
}

fn oci_chart(ns: &str) {
    let mut setup = Setup::start_with(&[
        "--poll-interval",
        "60s",
        // The test's repository is on loopback: allowed, as an
        // administrator allows an internal one.
        "--egress-allow",
        "127.0.0.1",
    ]);
    setup.pod_namespace = ns.to_owned();
    let (_registry, addr) = start_registry(setup.dir.path());
    // A chart, packaged and pushed with the real helm.
    let source = setup.dir.path().join("oci-chart");
    for (path, text) in [
        (
            "Chart.yaml",
            "apiVersion: v2\nname: podinfo\nversion: 6.7.1\n",
        ),
        (
            "templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Release.Name }}-oci}\ndata: {from: registry}\n",
        ),
    ] {
        let file = source.join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("folder");
        std::fs::write(file, text).expect("write");
    }
    let packaged = setup.dir.path().join("packaged");
    let run = |args: &[&str]| helm(&setup, args);
    run(&[
        "package",
        source.to_str().expect("utf-8"),
        "-d",
        packaged.to_str().expect("utf-8"),
    ]);
    let archive = packaged.join("podinfo-6.7.1.tgz");
    run(&[
        "push",
        archive.to_str().expect("utf-8"),
        &format!("oci://{addr}/charts"),
        "--plain-http",
    ]);

    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = |version: &str| {
        format!(
            "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    helm_charts:\n    - repository: oci://{addr}/charts\n      chart: podinfo\n      version: {version}\n      release_name: pulled\n"
        )
    };
    let good = commit(&repo, &[(CONFIG, Some(&config("6.7.1")))]);
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let _agentk = setup.agentk(&token);
    wait(
        "the chart from the registry",
        Duration::from_secs(90),
        || setup.sync_of(&good).is_some_and(|s| s["state"] == "synced"),
    );
    let cm = kubectl_get(&["configmap", "pulled-oci", "-n", ns]).expect("rendered");
    assert_eq!(cm["data"]["from"], "registry");

    let missing = commit(&repo, &[(CONFIG, Some(&config("6.8.0")))]);
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait(
        "the missing tag to be named",
        Duration::from_secs(60),
        || {
            setup.sync_of(&missing).is_some_and(|s| {
                let error = s["error"].as_str().unwrap_or_default();
                s["state"] == "failed" && error.contains("manifests/6.8.0") && error.contains("404")
            })
        },
    );
    assert!(kubectl_get(&["configmap", "pulled-oci", "-n", ns]).is_some());
}

/// A chart rendered by agentk itself (`render_on: agent`) with values from
/// a Secret of its cluster: the value reaches the object, and neither the
/// sync report nor the plan kas shows carries it; a new value is picked
/// up by the next render; a missing Secret fails the sync with its name
/// and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_chart_rendered_on_the_agent_reads_values_from_a_secret() {
    let cluster = tether_testenv::shared();
    let ns = cluster
        .namespace("e2e-render-agent")
        .await
        .expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || rendered_on_the_agent(&ns))
        .await
        .expect("test body");
}

fn set_secret(ns: &str, password: &str) {
    let cluster = tether_testenv::shared();
    let manifest = cluster.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "db-values",
        "-n",
        ns,
        &format!("--from-literal=values.yaml=password: {password}\n"),
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let file = tempfile::NamedTempFile::new().expect("file");
    std::fs::write(file.path(), manifest).expect("write");
    cluster.kubectl_ok(&["apply", "-f", file.path().to_str().expect("utf-8")]);
}

fn rendered_on_the_agent(ns: &str) {
    let mut setup = Setup::start_with(&["--poll-interval", "60s"]);
    setup.pod_namespace = ns.to_owned();
    set_secret(ns, "s3cret-42");
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    helm_charts:\n    - path: charts/db\n      release_name: db\n      render_on: agent\n      values_files: [charts/db/values-prod.yaml]\n      values_from: [{{secret: db-values}}]\n"
    );
    let first = commit(
        &repo,
        &[
            (CONFIG, Some(config.as_str())),
            (
                "charts/db/Chart.yaml",
                Some("apiVersion: v2\nname: db\nversion: 1.0.0\n"),
            ),
            (
                "charts/db/values.yaml",
                Some("password: unset\ntier: bronze\n"),
            ),
            ("charts/db/values-prod.yaml", Some("tier: gold\n")),
            (
                "charts/db/templates/cm.yaml",
                Some(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: db-settings}\ndata:\n  password: {{ .Values.password | quote }}\n  tier: {{ .Values.tier | quote }}\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n",
                ),
            ),
        ],
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let _agentk = setup.agentk(&token);
    wait(
        "the sync rendered on the agent",
        Duration::from_secs(90),
        || {
            setup
                .sync_of(&first)
                .is_some_and(|s| s["state"] == "synced")
        },
    );
    let settings = kubectl_get(&["configmap", "db-settings", "-n", ns]).expect("db-settings");
    assert_eq!(settings["data"]["password"], "s3cret-42", "from the Secret");
    assert_eq!(settings["data"]["tier"], "gold", "values files still apply");
    assert_eq!(settings["data"]["kube"], "v1.35.4");
    let report = setup
        .cli(&["agent", "gitops", "prod", "-o", "json"])
        .expect("report");
    assert!(!report.contains("s3cret"), "the report carries no value");

    // A new password in the cluster, a new tier in git: the plan names
    // both fields, and shows neither value.
    set_secret(ns, "s3cret-43");
    let second = commit(
        &repo,
        &[("charts/db/values-prod.yaml", Some("tier: platinum\n"))],
    );
    let plan = setup
        .cli(&["agent", "plan", "prod", "--commit", &second, "-o", "json"])
        .expect("plan");
    assert!(
        !plan.contains("s3cret") && !plan.contains("platinum"),
        "{plan}"
    );
    let plan: serde_json::Value = serde_json::from_str(&plan).expect("JSON");
    let fields: Vec<&str> = plan["objects"][0]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(fields, ["data.password", "data.tier"], "{plan:#}");

    // Synced, the new password and tier are in.
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait("the second sync", Duration::from_secs(60), || {
        setup
            .sync_of(&second)
            .is_some_and(|s| s["state"] == "synced")
    });
    let settings = kubectl_get(&["configmap", "db-settings", "-n", ns]).expect("db-settings");
    assert_eq!(settings["data"]["password"], "s3cret-43");
    assert_eq!(settings["data"]["tier"], "platinum");

    // The Secret is gone: the next commit fails naming it; nothing
    // changes.
    tether_testenv::shared().kubectl_ok(&["delete", "secret", "db-values", "-n", ns]);
    let third = commit(
        &repo,
        &[("charts/db/values-prod.yaml", Some("tier: diamond\n"))],
    );
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait(
        "the missing Secret to be reported",
        Duration::from_secs(60),
        || {
            setup.sync_of(&third).is_some_and(|s| {
                s["state"] == "failed"
                    && s["error"].as_str().is_some_and(|e| {
                        e.contains(&format!("Secret {ns}/db-values does not exist"))
                    })
            })
        },
    );
    let still = kubectl_get(&["configmap", "db-settings", "-n", ns]).expect("still there");
    assert_eq!(still["data"]["password"], "s3cret-43");
    assert_eq!(still["data"]["tier"], "platinum");
}
