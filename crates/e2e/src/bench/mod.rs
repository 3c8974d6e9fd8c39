//! What the benchmarks share: simulated agents ([`sim`]), the load client
//! ([`load`]), and figures read from `/proc`. None of it asserts anything
//! about a figure; a bench prints what it measured.

pub mod load;
pub mod objects;
pub mod sim;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use tether_cli::client::ApiClient;

/// A multi-threaded runtime and a client of the shared test cluster
/// (made inside the runtime, which its connections need).
pub fn runtime_and_client() -> anyhow::Result<(tokio::runtime::Runtime, kube::Client)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let client = {
        let _entered = runtime.enter();
        tether_testenv::shared().client()?
    };
    Ok((runtime, client))
}

/// The `p` quantile (0..=1) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Milliseconds, for tables.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A memory figure of `pid` from `/proc/<pid>/status` (`VmRSS`, `VmHWM`,
/// …), in KiB; 0 when the process is gone.
pub fn memory_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.split(':').next() == Some(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_default()
}

/// CPU time (user + system) `pid` has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after ')';
    // utime and stime are the 14th and 15th of the line, 11 and 12 here.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / hz)
}

/// Registers agents `names` (config project `project`) through the REST
/// API, 16 requests at a time, and returns a token for each, in order.
pub async fn register_agents(
    client: &ApiClient,
    names: &[String],
    project: &str,
) -> anyhow::Result<Vec<String>> {
    let agents: Vec<(String, Labels)> = names
        .iter()
        .map(|name| (name.clone(), Labels::new()))
        .collect();
    register_labelled_agents(client, &agents, project).await
}

/// Agent labels, by key (what rollouts select agents by).
pub type Labels = BTreeMap<String, String>;

/// Registers agents with their labels, as [`register_agents`] does: one
/// request creates each agent labelled, so no agent is ever seen by a
/// rollout without its labels.
pub async fn register_labelled_agents(
    client: &ApiClient,
    agents: &[(String, Labels)],
    project: &str,
) -> anyhow::Result<Vec<String>> {
    let mut tokens = vec![String::new(); agents.len()];
    let indexed: Vec<(usize, (String, Labels))> = agents.iter().cloned().enumerate().collect();
    for chunk in indexed.chunks(16) {
        let mut batch = tokio::task::JoinSet::new();
        for (i, (name, labels)) in chunk.iter().cloned() {
            let (client, project) = (client.clone(), project.to_owned());
            batch.spawn(async move {
                let mut body = json!({ "name": name, "config_project": project });
                // Without labels the request is the one kas always took.
                if !labels.is_empty() {
                    body["labels"] = json!(labels);
                }
                client.post("/api/v1/agents", body).await?;
                let created = client
                    .post(
                        &format!("/api/v1/agents/{name}/tokens"),
                        json!({ "name": "bench" }),
                    )
                    .await?;
                let token = created["token"].as_str().unwrap_or_default().to_owned();
                anyhow::Ok((i, token))
            });
        }
        while let Some(done) = batch.join_next().await {
            let (i, token) = done??;
            tokens[i] = token;
        }
    }
    Ok(tokens)
}

/// Waits (every 5 ms) until the ConfigMap `pushed` that a bench's commits
/// change holds `rev: <want>`: a push's end, as the API server shows it.
pub async fn pushed_rev(api: &kube::Api<k8s_openapi::api::core::v1::ConfigMap>, want: &str) {
    loop {
        if let Ok(Some(cm)) = api.get_opt("pushed").await
            && cm.data.and_then(|d| d.get("rev").cloned()).as_deref() == Some(want)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
