//! TLS for the agent endpoint. Production passes a certificate and key; with
//! neither, kas generates a CA and a serving certificate for development,
//! writes the CA to its data folder for agentk's `--ca-cert`, and says so
//! loudly: such a certificate proves nothing to anyone else.

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
            let (identity, ca_path) = generate(hostnames, data_dir)?;
            tracing::warn!(
                ca = %ca_path.display(),
                "NO TLS CERTIFICATE CONFIGURED: generated a self-signed one for development; \
                 agents must trust this CA (agentk --ca-cert); pass --tls-cert and --tls-key in production"
            );
            Ok(identity)
        }
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    }
}

fn generate(hostnames: &[String], data_dir: &Path) -> anyhow::Result<(ServingIdentity, PathBuf)> {
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

    let ca_path = data_dir.join("agent-ca.crt");
    std::fs::write(&ca_path, ca_cert.pem())
        .with_context(|| format!("cannot write {}", ca_path.display()))?;
    Ok((
        ServingIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
        ca_path,
    ))
}
