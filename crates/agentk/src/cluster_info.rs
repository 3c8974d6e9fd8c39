//! What the cluster serves, for kas to render charts as `helm install`
//! would against this cluster (`.Capabilities.APIVersions`): read with
//! aggregated discovery (two requests) at start and every minute after, so
//! a CRD installed by a sync reaches kas's next render.

use std::sync::Arc;
use std::time::Duration;

use kube::discovery::Discovery;
use tokio::sync::watch;

/// Entries sent at most: a cluster with thousands of CRD versions still
/// sends a bounded Hello.
pub const MAX_API_VERSIONS: usize = 8192;
const REFRESH: Duration = Duration::from_secs(60);
/// How long agentk waits for the first read before it connects to kas
/// without it (an aggregated API that does not answer must not keep the
/// agent from starting), and how long any later read may take.
const FIRST_READ: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(20);

pub type ApiVersions = Arc<Vec<String>>;

/// `group/version` and `group/version/Kind` of every served resource,
/// sorted (the core group as `v1`, `v1/Pod`).
pub async fn read(client: &kube::Client, within: Duration) -> Result<Vec<String>, String> {
    let discovery = tokio::time::timeout(within, Discovery::new(client.clone()).run_aggregated())
        .await
        .map_err(|_| format!("API discovery took longer than {within:?}"))?
        .map_err(|e| e.to_string())?;
    let mut versions = std::collections::BTreeSet::new();
    for group in discovery.groups() {
        for version in group.versions() {
            let gv = match group.name() {
                "" => version.to_owned(),
                name => format!("{name}/{version}"),
            };
            for (resource, _) in group.versioned_resources(version) {
                versions.insert(format!("{gv}/{}", resource.kind));
            }
            versions.insert(gv);
        }
    }
    Ok(versions.into_iter().take(MAX_API_VERSIONS).collect())
}

/// Reads the API versions now (waiting at most a few seconds), then keeps
/// the receiver current until `shutdown`. A failed read keeps the last
/// answer; the first success after a failed start goes to kas as a change.
pub async fn follow(
    client: kube::Client,
    mut shutdown: tether_runtime::Shutdown,
) -> watch::Receiver<ApiVersions> {
    let first = read(&client, FIRST_READ).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the cluster's API versions yet; charts see helm's defaults until they are read");
        Vec::new()
    });
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        loop {
            // Until a first read succeeds, try again soon.
            let wait = match read_once(&tx) {
                true => REFRESH,
                false => FIRST_READ,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.signalled() => return,
            }
            match read(&client, READ_TIMEOUT).await {
                Ok(now) => {
                    tx.send_if_modified(|last| {
                        let changed = **last != now;
                        if changed {
                            *last = Arc::new(now);
                        }
                        changed
                    });
                }
                Err(e) => tracing::debug!(error = %e, "cannot read the cluster's API versions"),
            }
        }
    });
    rx
}

/// Whether a read has succeeded (a cluster always serves some versions).
fn read_once(tx: &watch::Sender<ApiVersions>) -> bool {
    !tx.borrow().is_empty()
}
