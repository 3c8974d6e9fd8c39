//! When kas's TLS certificate and the agents' tokens expire, as metrics
//! an alert can fire on days before (`tether_kas_tls_certificate_expiry_…`,
//! `tether_kas_agent_token_expiry_…`): a Unix time, so that the alert says
//! `… - time() < 7 * 86400` and the dashboard shows a date.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tether_store::Store;

/// How often the agents' tokens are read again.
const EVERY: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabel {
    pub agent: String,
}

/// Cheap to clone: the handles share their series.
#[derive(Clone, Debug, Default)]
pub struct ExpiryMetrics {
    /// The earliest expiry among each agent's active tokens that expire.
    pub tokens: Family<AgentLabel, Gauge<f64, AtomicU64>>,
    /// When the serving certificate expires; absent when unknown.
    pub certificate: Arc<std::sync::OnceLock<f64>>,
}

impl ExpiryMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "agent_token_expiry_timestamp_seconds",
            "When the first of an agent's active tokens that expire does (Unix time)",
            self.tokens.clone(),
        );
        if let Some(at) = self.certificate.get() {
            let gauge: Gauge<f64, AtomicU64> = Gauge::default();
            gauge.set(*at);
            registry.register(
                "tls_certificate_expiry_timestamp_seconds",
                "When the certificate of kas's TLS listeners expires (Unix time)",
                gauge,
            );
        }
    }

    /// Reads the agents' tokens now and then, until `stop`.
    pub async fn follow_tokens(self, store: Arc<dyn Store>, mut stop: tether_runtime::Shutdown) {
        loop {
            self.read_tokens(store.as_ref()).await;
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = stop.signalled() => return,
            }
        }
    }

    async fn read_tokens(&self, store: &dyn Store) {
        let now = tether_store::time::now();
        let Ok(agents) = store.list_agents().await else {
            return;
        };
        self.tokens.clear();
        for agent in agents {
            let Ok(tokens) = store.list_tokens(&agent.name).await else {
                continue;
            };
            let first = tokens
                .iter()
                .filter(|t| t.is_active(now))
                .filter_map(|t| t.expires_at)
                .min();
            if let Some(at) = first {
                self.tokens
                    .get_or_create(&AgentLabel {
                        agent: agent.name.clone(),
                    })
                    .set(at as f64);
            }
        }
    }
}

/// The expiry (Unix time) of the first certificate in `pem`.
pub fn not_after(pem: &str) -> Option<f64> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = block.parse_x509().ok()?;
    Some(cert.validity().not_after.timestamp() as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_generated_certificate_says_when_it_expires() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["kas".to_owned()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2031, 1, 2);
        let cert = params.self_signed(&key).expect("certificate");
        assert_eq!(super::not_after(&cert.pem()), Some(1_925_078_400.0));
        assert_eq!(super::not_after("not a certificate"), None);
    }
}
