//! A hostile tenant's repository, end to end: every way out of a render
//! that an audit of helm's and kustomize's sources found (each kustomize
//! field that loads a file by URL, a values schema's `$ref` over http and
//! file, a chart named to climb out of the render folder, an index that
//! points at a forbidden address, charts from forbidden repositories and
//! registries, rendered on kas and on the agent, a symlink) against a real
//! kas, agentk and cluster. The forbidden address is a server on
//! 127.0.0.2 that counts connections: kas allows only 127.0.0.1 (the
//! test's honest chart repository), as an administrator allows an
//! internal one. No connection may reach the counter, no file may appear
//! outside the render folder, each sync must fail naming the chart or
//! kustomization and the rule, and nothing of it may be applied (nor the
//! running objects pruned).

use tether_e2e as support;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use support::{Setup, commit, kubectl_get, new_repo, wait};
use tether_testenv::counting::Counter;

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";

/// An honest chart repository on 127.0.0.1 (allowed) whose index points
/// the chart's archive at `archive_url`.
fn index_server(archive_url: String) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let digest = "ab".repeat(32);
            let body = format!(
                "apiVersion: v1\nentries:\n  web:\n  - version: 1.0.0\n    digest: \"{digest}\"\n    urls: [{archive_url:?}]\n"
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    address
}

fn config(ns: &str, kustomization: &str, charts: &str) -> String {
    format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    paths: [{{glob: 'manifests/*.yaml'}}]\n    kustomizations:\n    - path: apps/base\n{kustomization}{charts}"
    )
}

const BASE: &str = "resources: [cm.yaml]\n";

/// Every file under `root` whose name starts with `prefix`.
fn named_under(root: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![root.to_owned()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                folders.push(path);
            } else if entry.file_name().to_string_lossy().starts_with(prefix) {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_repository_reaches_nothing_but_itself() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-hostile").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || hostile(&ns))
        .await
        .expect("test body");
}

fn hostile(ns: &str) {
    let forbidden = Counter::start("127.0.0.2:0");
    let at = format!("http://{}", forbidden.address);
    let mut setup = Setup::start_with(&["--poll-interval", "60s", "--egress-allow", "127.0.0.1"]);
    setup.pod_namespace = ns.to_owned();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let baseline = config(ns, "", "");
    let good = commit(
        &repo,
        &[
            (CONFIG, Some(&baseline)),
            ("apps/base/kustomization.yaml", Some(BASE)),
            (
                "apps/base/cm.yaml",
                Some(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: running}\ndata: {a: '1'}\n",
                ),
            ),
            (
                "charts/web/Chart.yaml",
                Some("apiVersion: v2\nname: web\nversion: 1.0.0\n"),
            ),
            (
                "charts/web/templates/cm.yaml",
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-hostile}\n"),
            ),
        ],
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let _agentk = setup.agentk(&token);
    wait("the baseline sync", Duration::from_secs(90), || {
        setup.sync_of(&good).is_some_and(|s| s["state"] == "synced")
    });
    assert!(kubectl_get(&["configmap", "running", "-n", ns]).is_some());

    let secret = setup.dir.path().join("kas/admin-token");
    assert!(secret.is_file(), "kas's own file, to aim at");
    let secret = secret.display().to_string();
    let metadata = format!("{at}/latest/meta-data/iam/security-credentials/role");
    let index = index_server(format!("{at}/web-1.0.0.tgz"));

    let kustomizations: Vec<(&str, String, &str)> = vec![
        (
            "configMapGenerator[].files",
            format!("configMapGenerator: [{{name: leak, files: [{metadata}]}}]\n"),
            "",
        ),
        (
            "configMapGenerator[].files",
            format!("configMapGenerator: [{{name: leak, files: [key={metadata}]}}]\n"),
            "",
        ),
        (
            "configMapGenerator[].envs",
            format!("configMapGenerator: [{{name: leak, envs: [{metadata}]}}]\n"),
            "",
        ),
        (
            "secretGenerator[].files",
            format!("secretGenerator: [{{name: leak, files: [{metadata}]}}]\n"),
            "",
        ),
        (
            "secretGenerator[].env",
            format!("secretGenerator: [{{name: leak, env: {metadata}}}]\n"),
            "",
        ),
        (
            "patches[].path",
            format!("patches: [{{path: {at}/patch.yaml}}]\n"),
            "",
        ),
        (
            "patchesStrategicMerge",
            format!("patchesStrategicMerge: [{at}/patch.yaml]\n"),
            "",
        ),
        (
            "patchesJson6902[].path",
            format!(
                "patchesJson6902: [{{path: {at}/p.json, target: {{kind: ConfigMap, name: running}}}}]\n"
            ),
            "",
        ),
        (
            "openapi.path",
            format!("openapi: {{path: {at}/openapi.json}}\n"),
            "",
        ),
        ("crds", format!("crds: [{at}/crd.json]\n"), ""),
        (
            "configurations",
            format!("configurations: [{at}/config.yaml]\n"),
            "",
        ),
        (
            "replacements[].path",
            format!("replacements: [{{path: {at}/r.yaml}}]\n"),
            "",
        ),
        ("transformers", format!("transformers: [{at}/t.yaml]\n"), ""),
        ("generators", format!("generators: [{at}/g.yaml]\n"), ""),
        ("validators", format!("validators: [{at}/v.yaml]\n"), ""),
        (
            "an administrator's consent",
            format!("resources: [cm.yaml, '{at}/org/repo//base?ref=v1']\n"),
            "      allow_remote_bases: true\n",
        ),
        (
            "not in or below",
            format!("resources: [cm.yaml, {secret}]\n"),
            "",
        ),
    ];

    let refresh = || {
        setup
            .cli(&["project", "refresh", "team/config"])
            .expect("refresh");
    };
    let mut tried = 0;
    let mut failed_with = |commit: &str, needles: &[&str]| {
        tried += 1;
        refresh();
        let reported = setup.wait_sync_failed(commit, needles);
        eprintln!("reported: {reported}");
        assert!(
            kubectl_get(&["configmap", "running", "-n", ns]).is_some(),
            "what runs is never pruned by a refused commit"
        );
        for name in ["leak", "hostile-marker", "web-hostile"] {
            assert!(
                kubectl_get(&["configmap", name, "-n", ns]).is_none(),
                "{name}: nothing of a refused commit is applied"
            );
        }
        assert_eq!(forbidden.count(), 0, "connections to the forbidden address");
    };

    // A plain manifest rides along with each: applied only if the whole
    // set rendered.
    let marker = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hostile-marker}\n";
    for (rule, kustomization, flag) in &kustomizations {
        let text = match kustomization.starts_with("resources:") {
            true => kustomization.clone(),
            false => format!("{BASE}{kustomization}"),
        };
        let bad = commit(
            &repo,
            &[
                (CONFIG, Some(&config(ns, flag, ""))),
                ("apps/base/kustomization.yaml", Some(&text)),
                ("manifests/marker.yaml", Some(marker)),
            ],
        );
        failed_with(&bad, &["kustomization apps/base", rule]);
    }

    // A symlink in the repository to kas's own file: git keeps it as a
    // link, the export leaves it out, and the build that names it fails.
    std::os::unix::fs::symlink(&secret, repo.join("apps/base/linked.txt")).expect("a symlink");
    let linked = commit(
        &repo,
        &[
            (CONFIG, Some(&config(ns, "", ""))),
            (
                "apps/base/kustomization.yaml",
                Some(
                    "resources: [cm.yaml]\nconfigMapGenerator: [{name: leak, files: [linked.txt]}]\n",
                ),
            ),
        ],
    );
    failed_with(&linked, &["kustomization apps/base", "linked.txt"]);
    std::fs::remove_file(repo.join("apps/base/linked.txt")).expect("removed");
    commit(
        &repo,
        &[
            ("apps/base/kustomization.yaml", Some(BASE)),
            ("manifests/marker.yaml", None),
        ],
    );

    // A chart name that climbs out is refused with the config (the
    // config keeps its last good version): nothing is fetched or written.
    let climbing = commit(
        &repo,
        &[(
            CONFIG,
            Some(&config(
                ns,
                "",
                &format!(
                    "    helm_charts:\n    - repository: {at}\n      chart: ../../../escaped\n      version: 1.0.0\n      release_name: web\n"
                ),
            )),
        )],
    );
    refresh();
    wait(
        "the chart name to be refused",
        Duration::from_secs(30),
        || {
            let error = &setup.agent("prod")["config"]["error"];
            error["commit"] == climbing.as_str()
                && error["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("is not a chart name"))
        },
    );

    let chart = |repository: &str, on_agent: bool| {
        format!(
            "    helm_charts:\n    - repository: {repository}\n      chart: web\n      version: 1.0.0\n      release_name: web\n{}",
            if on_agent {
                "      render_on: agent\n"
            } else {
                ""
            }
        )
    };
    let in_repository =
        "    helm_charts:\n    - path: charts/web\n      release_name: web\n".to_owned();
    let charts: Vec<(&str, &str, String, Option<String>)> = vec![
        (
            "a values schema's $ref over http",
            "$ref",
            in_repository.clone(),
            Some(format!("{{\"$ref\": \"{at}/schema.json\"}}")),
        ),
        (
            "a values schema's $ref to a file of kas",
            "$ref",
            in_repository.clone(),
            Some(format!(
                "{{\"properties\": {{\"a\": {{\"$ref\": \"file://{secret}\"}}}}}}"
            )),
        ),
        (
            "a repository at a forbidden address",
            "loopback",
            chart(&at, false),
            None,
        ),
        (
            "an index pointing at a forbidden address",
            "127.0.0.2",
            chart(&format!("http://{index}"), false),
            None,
        ),
        (
            "the agent's chart at a forbidden address",
            "loopback",
            chart(&at, true),
            None,
        ),
        (
            "the agent's index pointing at a forbidden address",
            "127.0.0.2",
            chart(&format!("http://{index}"), true),
            None,
        ),
        (
            "an OCI registry at a forbidden address",
            "loopback",
            chart(&format!("oci://{}/charts", forbidden.address), false),
            None,
        ),
    ];
    for (what, rule, charts, schema) in &charts {
        eprintln!("trying {what}");
        let schema_file = "charts/web/values.schema.json";
        let mut changes = vec![
            (CONFIG, Some(config(ns, "", charts))),
            ("manifests/marker.yaml", Some(marker.to_owned())),
        ];
        if schema.is_some() || repo.join(schema_file).exists() {
            changes.push((schema_file, schema.clone()));
        }
        let changes: Vec<(&str, Option<&str>)> =
            changes.iter().map(|(p, t)| (*p, t.as_deref())).collect();
        let bad = commit(&repo, &changes);
        failed_with(&bad, &["helm chart web", rule]);
    }

    let escaped: Vec<_> = named_under(setup.dir.path(), "escaped")
        .into_iter()
        .chain(named_under(&std::env::temp_dir(), "escaped"))
        .collect();
    assert_eq!(
        escaped,
        Vec::<std::path::PathBuf>::new(),
        "files outside the render folder"
    );
    assert_eq!(forbidden.count(), 0, "connections to the forbidden address");
    assert_eq!(
        tried,
        kustomizations.len() + 1 + charts.len(),
        "every escape was tried"
    );
}
