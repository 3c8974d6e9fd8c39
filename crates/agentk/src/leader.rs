//! Which agentk replica runs GitOps: the holder of a `coordination.k8s.io`
//! Lease named after the agent, in the agent's namespace. Every replica
//! keeps its session and tunnels (proxy capacity); exactly one applies.
//!
//! The holder renews every [`RENEW_EVERY`]; a lease not renewed for
//! [`LEASE_DURATION`] is taken over by another replica. A holder that cannot
//! renew stops considering itself leader [`SAFETY_MARGIN`] before its lease
//! could expire, so two replicas never apply at once; every write is a
//! replace carrying the lease's resourceVersion, so two replicas racing for
//! an expired lease cannot both win. A replica that stops hands the lease
//! back, and another takes over at its next attempt.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tether_runtime::Shutdown;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a lease holds without renewal: a dead leader is replaced
/// within this plus one [`RENEW_EVERY`].
pub const LEASE_DURATION: Duration = Duration::from_secs(10);
/// How often the holder renews, and others try to take over.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// A holder that could not renew steps down this long before its lease
/// could have expired.
pub const SAFETY_MARGIN: Duration = Duration::from_secs(3);

/// Whether this replica leads; follows the lease.
#[derive(Clone, Debug)]
pub struct Leadership {
    leading: watch::Receiver<bool>,
}

impl Leadership {
    /// Competes for the lease `name` in `namespace` as `identity` (the pod's
    /// name) until `shutdown`.
    pub fn start(
        client: kube::Client,
        namespace: &str,
        name: String,
        identity: String,
        shutdown: Shutdown,
    ) -> Self {
        let (tx, leading) = watch::channel(false);
        let api: Api<Lease> = Api::namespaced(client, namespace);
        let span = tracing::info_span!("leader", lease = %name, identity = %identity);
        tokio::spawn(tracing::Instrument::instrument(
            compete(api, name, identity, tx, shutdown),
            span,
        ));
        Leadership { leading }
    }

    /// Follows leadership changes.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }
}

async fn compete(
    api: Api<Lease>,
    name: String,
    identity: String,
    tx: watch::Sender<bool>,
    mut shutdown: Shutdown,
) {
    // Until when this replica may act as leader without another renewal.
    let mut valid_until: Option<Instant> = None;
    loop {
        let attempt = tokio::time::timeout(RENEW_EVERY, acquire_or_renew(&api, &name, &identity));
        match attempt.await {
            Ok(Ok(true)) => {
                valid_until = Some(Instant::now() + LEASE_DURATION - SAFETY_MARGIN);
                if tx.send_if_modified(|l| !std::mem::replace(l, true)) {
                    tracing::info!("leading GitOps");
                }
            }
            Ok(Ok(false)) => {
                valid_until = None;
                if tx.send_if_modified(|l| std::mem::replace(l, false)) {
                    tracing::info!("another replica leads GitOps");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew the GitOps lease"),
            Err(_) => tracing::warn!("renewing the GitOps lease timed out"),
        }
        if valid_until.is_some_and(|until| Instant::now() >= until)
            && tx.send_if_modified(|l| std::mem::replace(l, false))
        {
            tracing::warn!("GitOps lease not renewed in time: stepped down");
        }
        tokio::select! {
            _ = tokio::time::sleep(RENEW_EVERY) => {}
            _ = shutdown.signalled() => {
                if *tx.borrow() {
                    tx.send_replace(false);
                    release(&api, &name, &identity).await;
                }
                return;
            }
        }
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Takes the lease if it is free or expired, renews it if this replica
/// holds it; `Ok(true)` when this replica holds it now.
async fn acquire_or_renew(api: &Api<Lease>, name: &str, identity: &str) -> kube::Result<bool> {
    let duration = i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(10);
    let Some(mut lease) = api.get_opt(name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.to_owned()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(seconds)) => {
            let until =
                renewed.0 + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(seconds));
            until < Timestamp::now()
        }
        _ => true,
    };
    if holder != identity && !holder.is_empty() && !expired {
        return Ok(false);
    }
    if holder != identity {
        spec.holder_identity = Some(identity.to_owned());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(duration);
    // The fetched resourceVersion makes this a compare-and-swap.
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Hands the lease back (no holder), so that another replica takes over
/// at its next attempt instead of waiting for expiry.
async fn release(api: &Api<Lease>, name: &str, identity: &str) {
    let Ok(Some(mut lease)) = api.get_opt(name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(identity) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!("GitOps lease handed back"),
        Err(e) => tracing::warn!(error = %e, "cannot hand the GitOps lease back"),
    }
}
