//! A real Kubernetes cluster for Tether's tests, demo and benchmarks.
//!
//! The cluster is made of the official programs — etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler — built from their Go modules by
//! `scripts/cluster-binaries.sh`, plus the kwok controller simulating nodes so
//! that pods become Running and Deployments Available without a kubelet.
//!
//! - [`shared()`] starts one cluster per test process, on first use;
//!   [`Cluster::namespace`] gives each test a namespace of its own.
//! - [`Cluster::start`] starts a cluster owned by the caller (the
//!   `tether-cluster` program behind `make cluster` uses it).
//! - [`git`] makes repositories with the real git CLI.
//! - [`Cluster::get_json`] reads objects back with the real kubectl.
//! - [`wait_until`] waits for a condition with a deadline; tests never sleep.
//! - [`shared_postgres`] starts a real PostgreSQL server per test process;
//!   [`Postgres::create_database`] gives each test a database of its own.
//! - [`haproxy::LoadBalancer`] puts a real HAProxy (TCP mode) in front of
//!   kas replicas.
//! - [`gitea::GitHost`] runs a real git host (Gitea) with signed push
//!   webhooks and commit statuses.
//! - [`registry::Registry`] runs a real OCI registry (distribution) and
//!   pushes images to it with skopeo.
//!
//! Architecture invariant: no cluster process outlives its owner. Every child
//! is forked by a supervisor thread with `PR_SET_PDEATHSIG`, so they die with
//! the test process whether it returns, panics, or is killed (see
//! [`supervisor`]).

mod binaries;
mod cluster;
pub mod counting;
mod error;
pub mod git;
pub mod gitea;
pub mod haproxy;
pub mod jaeger;
mod kubeconfig;
mod namespace;
pub mod pki;
pub mod ports;
pub mod postgres;
pub mod registry;
pub mod signing;
pub mod supervisor;
mod wait;

use std::sync::OnceLock;

pub use binaries::{
    BIN_ENV, Binaries, GITEA_BIN_ENV, OBSERVABILITY_BIN_ENV, REGISTRY_BIN_ENV, RENDER_BIN_ENV,
    SIGNING_BIN_ENV, gitea, observability_tools, oci_registry, pinned_kube_version, render_tools,
    signing_tools,
};
pub use cluster::{
    Cluster, ClusterOptions, SIMULATED_LOG_LINES, SIMULATED_NODE_ANNOTATION, StartTimings,
};
pub use error::{Error, Result};
pub use namespace::{TEST_NAMESPACE_LABEL, TestNamespace};
pub use postgres::{Postgres, shared_postgres};
pub use wait::wait_until;

/// The cluster shared by every test of this process, started on first use.
///
/// Blocking: the first caller waits for the start (about 10 s warm). It is
/// started on a thread of its own with its own runtime, because the caller's
/// runtime belongs to one test and ends with it.
///
/// # Panics
/// If the cluster cannot start; the message carries the failing component's
/// log. Every later caller panics with the same message.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<std::result::Result<Cluster, String>> = OnceLock::new();
    let started = SHARED.get_or_init(|| {
        start_detached("the cluster", || Cluster::start(ClusterOptions::default()))
    });
    match started {
        Ok(cluster) => cluster,
        Err(e) => panic!("test cluster failed to start: {e}"),
    }
}

/// Runs `start` to completion on a thread and runtime of its own, for
/// something shared by every test of the process: the calling test's
/// runtime ends with that test, and what is shared must not.
pub(crate) fn start_detached<T, F, Fut>(what: &str, start: F) -> std::result::Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    let name = what.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot build a runtime to start {name}: {e}"))?;
        rt.block_on(start()).map_err(|e| e.to_string())
    })
    .join()
    .unwrap_or_else(|_| Err(format!("the start-up thread of {what} panicked")))
}
