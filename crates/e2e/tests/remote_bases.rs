//! Remote bases, end to end: a kustomization in a tenant's repository
//! names a base in another repository on a real git host (Gitea, on
//! loopback, which kas's egress policy allows here as an administrator
//! allows an internal host). The config's `allow_remote_bases: true`
//! alone fetches nothing; once an administrator consents for the project
//! (`kas project set ID --allow-remote-bases`), kustomize's git clones it
//! inside the render's sandbox, through kas's egress proxy, and the base's
//! objects reach the cluster. The same base named at a forbidden address
//! is refused by the proxy, naming the rule, with 0 connections reaching
//! it.

use tether_e2e as support;

use std::time::Duration;

use support::{Setup, commit, kubectl_get, new_repo, wait};
use tether_testenv::counting::Counter;
use tether_testenv::git::git;

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";

#[tokio::test(flavor = "multi_thread")]
async fn remote_bases_need_consent_and_go_through_the_egress_policy() {
    let cluster = tether_testenv::shared();
    let ns = cluster
        .namespace("e2e-remote-bases")
        .await
        .expect("namespace");
    let ns = ns.name().to_owned();
    let host = tether_testenv::gitea::GitHost::start()
        .await
        .expect("Gitea starts");
    tokio::task::spawn_blocking(move || remote_bases(&host, &ns))
        .await
        .expect("test body");
}

fn remote_bases(host: &tether_testenv::gitea::GitHost, ns: &str) {
    // The base, in its own repository on the git host.
    let mut setup = Setup::start_with(&["--poll-interval", "60s", "--egress-allow", "127.0.0.1"]);
    setup.pod_namespace = ns.to_owned();
    host.create_repo("base").expect("repository");
    let base = setup.dir.path().join("base");
    new_repo(&base);
    commit(
        &base,
        &[
            ("deploy/kustomization.yaml", Some("resources: [cm.yaml]\n")),
            (
                "deploy/cm.yaml",
                Some(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-remote-base}\ndata: {origin: base}\n",
                ),
            ),
        ],
    );
    git(&base, &["remote", "add", "origin", &host.push_url("base")]);
    git(&base, &["push", "-q", "-u", "origin", "main"]);
    let remote = format!("{}//deploy?ref=main", host.clone_url("base"));

    // A forbidden address that counts what reaches it.
    let forbidden = Counter::start("127.0.0.2:0");
    let forbidden_at = forbidden.address;

    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    kustomizations:\n    - path: app\n      allow_remote_bases: true\n"
    );
    let kustomization = |base: &str| format!("resources: [local.yaml, '{base}']\n");
    let asked = commit(
        &repo,
        &[
            (CONFIG, Some(&config)),
            ("app/kustomization.yaml", Some(&kustomization(&remote))),
            (
                "app/local.yaml",
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: local}\n"),
            ),
        ],
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let _agentk = setup.agentk(&token);
    let failed_with = |commit: &str, needles: &[&str]| {
        setup.wait_sync_failed(commit, needles);
    };

    // The config asks; no administrator allowed it: nothing fetched.
    failed_with(
        &asked,
        &[
            "kustomization app",
            "kas project set ID --allow-remote-bases",
        ],
    );
    assert!(kubectl_get(&["configmap", "local", "-n", ns]).is_none());

    // An administrator allows it: the base is cloned in the sandbox,
    // through the proxy, and applied with the rest.
    let shown = setup
        .cli(&[
            "project",
            "set",
            "team/config",
            "--allow-remote-bases",
            "-o",
            "json",
        ])
        .expect("consent");
    assert!(shown.contains("\"allow_remote_bases\": true"), "{shown}");
    let consented = commit(&repo, &[("app/note.txt", Some("consented\n"))]);
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait("the base applied", Duration::from_secs(90), || {
        setup
            .sync_of(&consented)
            .is_some_and(|s| s["state"] == "synced")
    });
    let from_base =
        kubectl_get(&["configmap", "from-remote-base", "-n", ns]).expect("the base's ConfigMap");
    assert_eq!(from_base["data"]["origin"], "base");

    // The same base at a forbidden address: refused by the proxy, named.
    let elsewhere = commit(
        &repo,
        &[(
            "app/kustomization.yaml",
            Some(&kustomization(&format!(
                "http://{forbidden_at}/tether/base.git//deploy?ref=main"
            ))),
        )],
    );
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    failed_with(&elsewhere, &["kustomization app", "127.0.0.2", "loopback"]);
    assert_eq!(forbidden.count(), 0, "connections to the forbidden address");
    assert!(
        kubectl_get(&["configmap", "from-remote-base", "-n", ns]).is_some(),
        "what runs stays"
    );
}
