//! The GitOps leadership race: manifests that reach agentk before it holds
//! the GitOps Lease are held, and applied as soon as the Lease is won, not
//! at the next commit.

use tether_e2e as support;

use std::time::Duration;

use support::{Setup, commit, kubectl_get, new_repo, wait};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";
/// How long the Lease another replica holds lasts after the test renews it.
const HELD_FOR: u32 = 8;

fn timestamp(v: &serde_json::Value) -> k8s_openapi::jiff::Timestamp {
    v.as_str().expect("a timestamp").parse().expect("RFC 3339")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_set_held_while_another_replica_leads_is_applied_once_the_lease_is_won() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-lease").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || run(&ns))
        .await
        .expect("test body");
}

fn run(ns: &str) {
    let cluster = tether_testenv::shared();
    let mut setup = Setup::start();
    setup.pod_namespace = ns.to_owned();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    paths: [{{glob: 'manifests/*.yaml'}}]\n"
    );
    let head = commit(
        &repo,
        &[
            (CONFIG, Some(&config)),
            (
                "manifests/app.yaml",
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held}\ndata: {a: '1'}\n"),
            ),
        ],
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));

    // Another replica holds the Lease, renewed now: agentk gets the set
    // long before the Lease can be taken.
    let now = k8s_openapi::jiff::Timestamp::now();
    let lease = format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: tether-gitops-prod, namespace: {ns}}}\nspec:\n  holderIdentity: another-replica\n  leaseDurationSeconds: {HELD_FOR}\n  acquireTime: '{t}'\n  renewTime: '{t}'\n",
        t = now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
    );
    let path = setup.dir.path().join("lease.yaml");
    std::fs::write(&path, lease).expect("write the lease");
    cluster.kubectl_ok(&["apply", "-f", path.to_str().expect("utf-8")]);
    let _agentk = setup.agentk_replica(&token, "agentk-a");

    wait("the held set to be synced", Duration::from_secs(60), || {
        setup.sync_of(&head).is_some_and(|s| s["state"] == "synced")
    });
    let lease = kubectl_get(&["lease", "tether-gitops-prod", "-n", ns]).expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "agentk-a", "{lease}");
    let won = timestamp(&lease["spec"]["acquireTime"]);
    let applied = kubectl_get(&["configmap", "held", "-n", ns]).expect("applied");
    let created = timestamp(&applied["metadata"]["creationTimestamp"]);
    // Creation times have whole seconds: one second of slack below.
    let after = created.duration_since(won);
    assert!(
        after.as_secs_f64() > -1.0,
        "applied {after:?} after the Lease was won: nothing is applied before"
    );
    assert!(
        after.as_secs_f64() < 5.0,
        "the held set is applied as soon as the Lease is won, not later: {after:?}"
    );
    assert!(
        won.duration_since(now).as_secs_f64() >= f64::from(HELD_FOR) - 1.0,
        "the Lease was taken only once it expired"
    );
}
