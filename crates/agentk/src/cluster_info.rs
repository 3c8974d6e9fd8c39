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

pub type ApiVersions = Arc<Vec<String>>;

/// `group/version` and `group/version/Kind` of every served resource,
/// sorted (the core group as `v1`, `v1/Pod`).
pub async fn read(client: &kube::Client) -> Result<Vec<String>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run_aggregated().await?;
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

/// Reads the API versions now, then keeps the receiver current until
/// `shutdown`. A failed read keeps the last answer.
pub async fn follow(
    client: kube::Client,
    mut shutdown: tether_runtime::Shutdown,
) -> watch::Receiver<ApiVersions> {
    let first = read(&client).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the cluster's API versions; charts see helm's defaults");
        Vec::new()
    });
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = shutdown.signalled() => return,
            }
            match read(&client).await {
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
