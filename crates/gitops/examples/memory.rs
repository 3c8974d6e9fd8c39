//! Where agentk's memory goes in a 1,000-object sync: RSS after each phase.
use std::time::Duration;

use tether_gitops::inventory::Inventory;
use tether_gitops::manifest::{Limits, ManifestFile};
use tether_gitops::sync::{AppliedState, InventoryPolicy, SyncOptions, sync, wait_for_health};

fn rss() -> String {
    let before = raw();
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe { libc::malloc_trim(0) };
    format!("{before}; after malloc_trim {}", raw())
}

fn raw() -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let f = |n: &str| {
        s.lines()
            .find(|l| l.starts_with(n))
            .unwrap_or("")
            .split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .parse::<f64>()
            .unwrap_or(0.0)
            / 1024.0
    };
    format!("RSS {:.1} MiB (peak {:.1})", f("VmRSS:"), f("VmHWM:"))
}

fn main() {
    let cluster = tether_testenv::shared();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let client = cluster.client().expect("client");
        let ns = cluster.namespace("mem").await.expect("ns");
        let ns = ns.name().to_owned();
        let mut text = String::new();
        for i in 0..1000 {
            text.push_str(&match i % 5 {
                0 | 1 => format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}}}\ndata: {{i: \"{i}\"}}\n---\n"),
                2 => format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: s-{i}}}\nstringData: {{t: \"v\"}}\n---\n"),
                3 => format!("apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec: {{selector: {{app: a{i}}}, ports: [{{port: 80}}]}}\n---\n"),
                _ => format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d-{i}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: a{i}}}}}\n  template:\n    metadata: {{labels: {{app: a{i}}}}}\n    spec: {{containers: [{{name: a, image: nginx}}]}}\n---\n"),
            });
        }
        let files = vec![ManifestFile { path: "all.yaml".into(), bytes: text.into_bytes() }];
        let options = SyncOptions {
            default_namespace: ns.clone(),
            inventory: Inventory::for_project("mem", "p", &ns),
            inventory_policy: InventoryPolicy::MustMatch,
            prune: true,
            prune_timeout: Duration::from_secs(30),
            prune_propagation: kube::api::PropagationPolicy::Foreground,
            server_dry_run: false,
            client_dry_run: false,
            reconcile_timeout: Duration::from_secs(300),
            hook_timeout: Duration::from_secs(300),
            limits: Limits::default(),
        };
        println!("start: {}", rss());
        let mut state = AppliedState::default();
        let mut outcome = sync(&client, &options, &files, &mut state).await;
        println!("after sync ({:?}): {}", outcome.error, rss());
        wait_for_health(&client, &mut outcome, Duration::from_secs(300)).await;
        println!("after health: {}", rss());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(tether_gitops::drift::watch(
            client.clone(),
            state.records.clone(),
            tx,
            std::sync::Arc::new(|_, _, _| {}),
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        println!("with drift watches: {}", rss());
        let again = sync(&client, &options, &files, &mut state).await;
        println!("after re-sync ({} unchanged): {}", again.count(tether_gitops::sync::Action::Unchanged), rss());
        task.abort();
        while rx.try_recv().is_ok() {}
    });
}
