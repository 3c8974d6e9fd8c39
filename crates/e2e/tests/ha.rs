//! Two agentk replicas of one agent: both keep a session, exactly one —
//! the holder of the GitOps Lease — applies; when it is killed mid-sync the
//! other takes over and the cluster ends equal to git. Real agentk
//! processes against the real API server.

use tether_e2e as support;

use std::time::{Duration, Instant};

use support::{Setup, commit, new_repo, wait};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";
const OBJECTS: usize = 300;

fn configmaps(prefix: &str) -> String {
    (0..OBJECTS)
        .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {prefix}-{i}}}\ndata: {{n: \"{i}\"}}\n"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn lease_holder(ns: &str) -> Option<String> {
    let lease = tether_testenv::shared().get_json(&["lease", "tether-gitops-prod", "-n", ns])?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

fn names(ns: &str) -> std::collections::BTreeSet<String> {
    let list = tether_testenv::shared()
        .get_json(&["configmaps", "-n", ns])
        .expect("list");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .filter(|n| n.starts_with("old-") || n.starts_with("new-"))
        .map(str::to_owned)
        .collect()
}

fn synced(setup: &Setup, commit: &str) -> bool {
    let Some(text) = setup.cli(&["agent", "gitops", "prod", "-o", "json"]) else {
        return false;
    };
    let syncs: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    syncs.as_array().is_some_and(|s| {
        s.iter()
            .any(|s| s["commit"] == commit && s["state"] == "synced")
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn one_replica_applies_and_the_other_takes_over_when_it_dies() {
    let ns = tether_testenv::shared()
        .namespace("ha-gitops")
        .await
        .expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || run(&ns))
        .await
        .expect("test body");
}

fn run(ns: &str) {
    let mut setup = Setup::start_with(&["--poll-interval", "1s"]);
    setup.pod_namespace = ns.to_owned();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n  - default_namespace: {ns}\n    prune_propagation_policy: background\n    paths:\n    - glob: 'manifests/*.yaml'\n"
    );
    let first = commit(
        &repo,
        &[
            (CONFIG, Some(&config)),
            ("manifests/cm.yaml", Some(&configmaps("old"))),
        ],
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let mut a = setup.agentk_replica(&token, "agentk-a");
    let mut b = setup.agentk_replica(&token, "agentk-b");
    wait("both replicas connected", Duration::from_secs(30), || {
        setup.connections("prod").len() == 2
    });
    wait("the first sync", Duration::from_secs(90), || {
        synced(&setup, &first)
    });
    let leader = lease_holder(ns).expect("a lease holder");
    let (leading, following) = match leader.as_str() {
        "agentk-a" => (&mut a, &mut b),
        "agentk-b" => (&mut b, &mut a),
        other => panic!("unexpected holder {other}"),
    };
    // Exactly one applies: the follower held the set and applied nothing
    // (each replica's own /metrics).
    assert!(leading.metric("tether_agentk_sets_applied_total") >= 1.0);
    assert_eq!(leading.metric("tether_agentk_gitops_leader"), 1.0);
    wait(
        "the follower to hold the set",
        Duration::from_secs(10),
        || following.metric("tether_agentk_sets_received_total") >= 1.0,
    );
    assert_eq!(following.metric("tether_agentk_gitops_leader"), 0.0);
    assert_eq!(following.metric("tether_agentk_sets_applied_total"), 0.0);
    let received = leading.metric("tether_agentk_sets_received_total");

    // A new commit replaces every object; the leader dies as it syncs it.
    let second = commit(&repo, &[("manifests/cm.yaml", Some(&configmaps("new")))]);
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait(
        "the leader to receive the new set",
        Duration::from_secs(30),
        || leading.metric("tether_agentk_sets_received_total") > received,
    );
    let _ = leading.child.kill();
    let killed = Instant::now();
    wait(
        "another replica to hold the lease",
        Duration::from_secs(30),
        || lease_holder(ns).is_some_and(|h| h != leader),
    );
    eprintln!(
        "lease taken over {:?} after the leader was killed",
        killed.elapsed()
    );
    wait(
        "the other replica to take over and sync",
        Duration::from_secs(60),
        || synced(&setup, &second),
    );
    let took = killed.elapsed();
    eprintln!("took over and synced {took:?} after the leader was killed");
    assert!(took < Duration::from_secs(30), "{took:?}");
    let want: std::collections::BTreeSet<String> =
        (0..OBJECTS).map(|i| format!("new-{i}")).collect();
    wait("the cluster to equal git", Duration::from_secs(30), || {
        names(ns) == want
    });
    assert_ne!(lease_holder(ns).as_deref(), Some(leader.as_str()));
}
