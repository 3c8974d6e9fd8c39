//! Kubeconfig files for the cluster's identities.
//!
//! They reference the PEM files by path rather than embedding them, so that a
//! person can read which identity a kubeconfig uses. JSON is valid YAML, so
//! kubectl, client-go and kube-rs all read these files.

use std::path::Path;

use serde_json::json;

use crate::error::{Error, Result};
use crate::pki::ClientIdentity;

/// Name of the cluster, user and context in every kubeconfig written here.
pub const CONTEXT: &str = "tether-testenv";

/// Renders a kubeconfig for `identity` against `server`.
pub fn render(server: &str, ca_cert: &Path, identity: &ClientIdentity) -> String {
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": CONTEXT,
            "cluster": { "server": server, "certificate-authority": ca_cert },
        }],
        "users": [{
            "name": CONTEXT,
            "user": { "client-certificate": identity.cert, "client-key": identity.key },
        }],
        "contexts": [{
            "name": CONTEXT,
            "context": { "cluster": CONTEXT, "user": CONTEXT },
        }],
        "current-context": CONTEXT,
    });
    serde_json::to_string_pretty(&doc).expect("a JSON value always serializes")
}

/// Writes `contents` to `path` through a temporary file and a rename, so that a
/// reader waiting for the file never sees half of it.
pub fn write_atomically(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(Error::io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(Error::io(format!("rename to {}", path.display())))
}

/// A kube-rs config for the rendered kubeconfig.
pub async fn client_config(rendered: &str) -> Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(rendered)?;
    Ok(kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?)
}
