//! The HTTPS client connector every outgoing call of kas and its CLI uses:
//! one TLS stack (rustls with ring), a given CA or the public web roots.

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

/// Why a connector could not be built: the CA bundle given is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("invalid CA certificate PEM: {0}")]
    Pem(String),
    #[error("unusable CA certificate: {0}")]
    Certificate(rustls::Error),
    #[error("TLS versions: {0}")]
    Versions(rustls::Error),
}

/// HTTPS (and plain HTTP, which callers allow only where they mean to)
/// trusting `ca_pem`'s certificates, or the web roots without one.
pub fn connector(ca_pem: Option<&[u8]>) -> Result<HttpsConnector<HttpConnector>, ConnectorError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| ConnectorError::Pem(e.to_string()))?;
                roots.add(cert).map_err(ConnectorError::Certificate)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ConnectorError::Versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_garbled_ca_is_refused() {
        let pem = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(connector(Some(pem)).is_err());
    }

    #[test]
    fn without_a_ca_the_web_roots_are_trusted() {
        assert!(connector(None).is_ok());
    }
}
