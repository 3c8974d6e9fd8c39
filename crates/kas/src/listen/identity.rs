//! TLS for the agent endpoint. Production passes a certificate and key; with
//! neither, kas generates a CA and a serving certificate for development,
//! writes the CA to its data folder for agentk's `--ca-cert`, and says so
//! loudly: such a certificate proves nothing to anyone else. The generated
//! files are kept and reused, so agents that trust the CA reconnect after a
//! restart; delete them to generate new ones.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A serving certificate chain and its key, in PEM.
#[derive(Clone)]
pub struct ServingIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ServingIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingIdentity").finish_non_exhaustive()
    }
}

impl ServingIdentity {
    /// The TLS settings of kas's listeners with this identity.
    pub fn acceptor(&self) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        crate::listen::acceptor(&self.cert_pem, &self.key_pem)
    }
}

/// Loads `cert` and `key`, or generates a development identity valid for
/// `hostnames` and writes its CA to `<data_dir>/agent-ca.crt`.
pub fn load_or_generate(
    cert: Option<&Path>,
    key: Option<&Path>,
    hostnames: &[String],
    data_dir: &Path,
) -> anyhow::Result<ServingIdentity> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(ServingIdentity {
            cert_pem: std::fs::read_to_string(cert)
                .with_context(|| format!("cannot read {}", cert.display()))?,
            key_pem: std::fs::read_to_string(key)
                .with_context(|| format!("cannot read {}", key.display()))?,
        }),
        (None, None) => {
            let (cert, key, ca) = dev_paths(data_dir);
            let identity = if cert.exists() && key.exists() && ca.exists() {
                ServingIdentity {
                    cert_pem: std::fs::read_to_string(&cert)
                        .with_context(|| format!("cannot read {}", cert.display()))?,
                    key_pem: std::fs::read_to_string(&key)
                        .with_context(|| format!("cannot read {}", key.display()))?,
                }
            } else {
                generate(hostnames, data_dir)?
            };
            tracing::warn!(
                ca = %ca.display(),
                "NO TLS CERTIFICATE CONFIGURED: using a self-signed one for development; \
                 agents must trust this CA (agentk --ca-cert); pass --tls-cert and --tls-key in production"
            );
            Ok(identity)
        }
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    }
}

/// The development certificate, its key and its CA, in the data folder.
fn dev_paths(data_dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        data_dir.join("agent-tls.crt"),
        data_dir.join("agent-tls.key"),
        data_dir.join("agent-ca.crt"),
    )
}

fn generate(hostnames: &[String], data_dir: &Path) -> anyhow::Result<ServingIdentity> {
    let ca_key = KeyPair::generate().context("cannot generate a CA key")?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "tether kas development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).context("cannot self-sign the CA")?;
    let issuer = Issuer::new(ca, ca_key);

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(hostnames.iter().cloned());
    let mut leaf = CertificateParams::new(names).context("invalid --hostname")?;
    leaf.distinguished_name.push(DnType::CommonName, "kas");
    let key = KeyPair::generate().context("cannot generate a serving key")?;
    let cert = leaf
        .signed_by(&key, &issuer)
        .context("cannot sign the serving certificate")?;

    let identity = ServingIdentity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    let (cert_path, key_path, ca_path) = dev_paths(data_dir);
    tether_runtime::files::write_private(&key_path, &identity.key_pem)?;
    std::fs::write(&cert_path, &identity.cert_pem)
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    // Written last: its presence means the set is complete.
    std::fs::write(&ca_path, ca_cert.pem())
        .with_context(|| format!("cannot write {}", ca_path.display()))?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_development_identity_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_generate(None, None, &[], dir.path()).expect("generated");
        let ca = std::fs::read_to_string(dir.path().join("agent-ca.crt")).expect("CA written");
        let mode = std::fs::metadata(dir.path().join("agent-tls.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_or_generate(None, None, &[], dir.path()).expect("reused");
        assert_eq!(first.cert_pem, second.cert_pem);
        assert_eq!(
            ca,
            std::fs::read_to_string(dir.path().join("agent-ca.crt")).expect("CA kept")
        );
    }
}
