//! Errors of the test environment. Each names the component and, when a
//! process is involved, carries the tail of its log: a cluster that fails to
//! start is only debuggable with what the failing program said.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the test cluster could not be built, started or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `scripts/cluster-binaries.sh` failed or printed no folder.
    #[error("cannot build or find the cluster binaries: {0}")]
    Binaries(String),

    /// A file-system or process operation failed.
    #[error("cannot {action}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },

    /// Certificate or key generation failed.
    #[error("cannot generate the cluster's certificates")]
    Pki(#[source] rcgen::Error),

    /// A child process exited while the cluster needed it.
    #[error("{component} exited unexpectedly ({status}); its log {log} ends with:\n{log_tail}")]
    Exited {
        component: String,
        status: String,
        log: PathBuf,
        log_tail: String,
    },

    /// A condition did not hold before its deadline.
    #[error("timed out after {timeout:?} waiting for {what}; last observation: {last}")]
    Timeout {
        what: String,
        timeout: Duration,
        last: String,
    },

    /// The Kubernetes API answered with an error.
    #[error("kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),

    /// The written kubeconfig could not be loaded back.
    #[error("cannot load the cluster's kubeconfig")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
}

impl Error {
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let action = action.into();
        move |source| Error::Io { action, source }
    }
}
