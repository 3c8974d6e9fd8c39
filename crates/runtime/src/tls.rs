//! The server side of TLS for every listener of kas: one certificate chain
//! and key, HTTP/2 and HTTP/1.1 offered by ALPN.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

/// Why a certificate and key cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum AcceptorError {
    #[error("invalid certificate PEM: {0}")]
    Certificate(String),
    #[error("invalid private key PEM: {0}")]
    Key(String),
    #[error("TLS versions: {0}")]
    Versions(rustls::Error),
    #[error("the certificate and key do not match: {0}")]
    Mismatch(rustls::Error),
}

/// A TLS acceptor serving `cert_pem` (a chain) with `key_pem`.
pub fn acceptor(cert_pem: &str, key_pem: &str) -> Result<TlsAcceptor, AcceptorError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AcceptorError::Certificate(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| AcceptorError::Key(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(AcceptorError::Versions)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(AcceptorError::Mismatch)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_is_not_pem_is_refused_naming_the_key() {
        match acceptor("", "not a key") {
            Err(AcceptorError::Key(_)) => {}
            Err(other) => panic!("refused for another reason: {other}"),
            Ok(_) => panic!("accepted a key that is not PEM"),
        }
    }
}
