//! The cluster's certificates and keys, generated fresh for every cluster.
//!
//! One CA signs the API server's serving certificate and a client certificate
//! per identity. Each component gets the identity Kubernetes' bootstrap RBAC
//! policy expects (`system:kube-controller-manager`, `system:kube-scheduler`),
//! so the cluster's RBAC behaves as a production one does; only the admin and
//! the node simulator are `system:masters`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// Names under which the API server's certificate is valid: loopback, and the
/// in-cluster names a pod would use.
/// The `kubernetes` Service's address; the serving certificate names it.
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

const SERVING_NAMES: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    KUBERNETES_SERVICE_IP,
];

/// A client identity: a certificate and key on disk.
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Paths of everything [`generate`] wrote.
#[derive(Clone, Debug)]
pub struct ClusterPki {
    pub ca_cert: PathBuf,
    /// Kept so that controller-manager can sign CSRs with the cluster CA.
    pub ca_key: PathBuf,
    pub serving: ClientIdentity,
    /// Signs service-account tokens (kube-apiserver, controller-manager).
    pub service_account_key: PathBuf,
    /// Verifies them; the API server reads only public keys from this file.
    pub service_account_public_key: PathBuf,
    pub admin: ClientIdentity,
    pub controller_manager: ClientIdentity,
    pub scheduler: ClientIdentity,
    pub node_simulator: ClientIdentity,
}

/// Writes a fresh CA, serving certificate, client certificates and
/// service-account key into `dir`.
pub fn generate(dir: &Path) -> Result<ClusterPki> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;

    let ca_key = KeyPair::generate().map_err(Error::Pki)?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tether-testenv-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(Error::Pki)?;
    let ca_cert_path = write(dir, "ca.crt", &ca_cert.pem())?;
    let ca_key_path = write(dir, "ca.key", &ca_key.serialize_pem())?;
    let ca = Issuer::new(ca_params, ca_key);

    let serving_names = SERVING_NAMES
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    let mut serving = CertificateParams::new(serving_names).map_err(Error::Pki)?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving = issue(dir, "apiserver", serving, &ca)?;

    let sa_key = KeyPair::generate().map_err(Error::Pki)?;
    let service_account_key = write(dir, "service-account.key", &sa_key.serialize_pem())?;
    let service_account_public_key = write(dir, "service-account.pub", &sa_key.public_key_pem())?;

    Ok(ClusterPki {
        ca_cert: ca_cert_path,
        ca_key: ca_key_path,
        serving,
        service_account_key,
        service_account_public_key,
        admin: client(dir, "admin", "tether-admin", Some("system:masters"), &ca)?,
        controller_manager: client(
            dir,
            "controller-manager",
            "system:kube-controller-manager",
            None,
            &ca,
        )?,
        scheduler: client(dir, "scheduler", "system:kube-scheduler", None, &ca)?,
        node_simulator: client(dir, "kwok", "kwok", Some("system:masters"), &ca)?,
    })
}

fn client(
    dir: &Path,
    file: &str,
    user: &str,
    group: Option<&str>,
    ca: &Issuer<'_, KeyPair>,
) -> Result<ClientIdentity> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, user);
    if let Some(group) = group {
        params
            .distinguished_name
            .push(DnType::OrganizationName, group);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue(dir, file, params, ca)
}

fn issue(
    dir: &Path,
    file: &str,
    mut params: CertificateParams,
    ca: &Issuer<'_, KeyPair>,
) -> Result<ClientIdentity> {
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate().map_err(Error::Pki)?;
    let cert = params.signed_by(&key, ca).map_err(Error::Pki)?;
    Ok(ClientIdentity {
        cert: write(dir, &format!("{file}.crt"), &cert.pem())?,
        key: write(dir, &format!("{file}.key"), &key.serialize_pem())?,
    })
}

/// Writes a PEM file readable by its owner only: these are private keys of a
/// cluster that grants `system:masters`.
fn write(dir: &Path, name: &str, pem: &str) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(Error::io(format!("create {}", path.display())))?;
    file.write_all(pem.as_bytes())
        .map_err(Error::io(format!("write {}", path.display())))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tether-pki-test-{}", std::process::id()));
        let pki = generate(&dir).expect("pki generates");
        for path in [
            &pki.ca_cert,
            &pki.ca_key,
            &pki.serving.key,
            &pki.admin.key,
            &pki.service_account_key,
        ] {
            let meta = std::fs::metadata(path).expect("file exists");
            assert_eq!(
                meta.permissions().mode() & 0o777,
                0o600,
                "{}",
                path.display()
            );
            let text = std::fs::read_to_string(path).expect("readable");
            assert!(
                text.starts_with("-----BEGIN "),
                "{} is not PEM",
                path.display()
            );
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
