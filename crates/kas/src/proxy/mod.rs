//! The Kubernetes API proxy's place in kas: its listener, the private
//! listener other replicas route through ([`private`]), and what it reads
//! from kas, [`SessionConfigs`]. The proxy itself is `tether_proxy`.

pub mod private;

use std::sync::Arc;

use async_trait::async_trait;
use http::Request;
use hyper::body::Incoming;
use tether_agent_config::{AgentConfig, AgentName};
use tether_proxy::{ConfigsInUse, Proxy};
use tether_runtime::Shutdown;
use tether_store::Store;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use tether_channel::configs::AgentConfigs;
use tether_tunnel::server::Tunnels;

/// The configs the proxy authorizes against: the one an agent's session
/// here read, or the one its session's replica stored.
pub struct SessionConfigs {
    pub configs: Arc<AgentConfigs>,
    pub store: Arc<dyn Store>,
}

impl std::fmt::Debug for SessionConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfigs").finish_non_exhaustive()
    }
}

#[async_trait]
impl ConfigsInUse for SessionConfigs {
    async fn in_use(&self, agent: &AgentName) -> Option<Arc<AgentConfig>> {
        self.configs
            .in_use_anywhere(self.store.as_ref(), agent)
            .await
    }
}

/// The proxy over this kas's sessions and tunnels, ending its watches when
/// `drain` fires, with nothing else: no OIDC issuer, no other replica. The
/// server sets those.
pub fn over(
    tunnels: Arc<Tunnels>,
    configs: Arc<AgentConfigs>,
    store: Arc<dyn Store>,
    external_url: String,
    metrics: tether_proxy::ProxyMetrics,
    drain: Shutdown,
) -> Proxy {
    Proxy {
        credentials: Arc::new(tether_proxy::FromStore(store.clone())),
        tunnels,
        configs: Arc::new(SessionConfigs { configs, store }),
        oidc: Default::default(),
        external_url,
        ca_pem: None,
        admissions: Default::default(),
        streams: Default::default(),
        elsewhere: None,
        drain,
        metrics,
    }
}

/// Serves the proxy on `addr` over TLS (HTTP/2 and HTTP/1.1 with upgrades)
/// until the drain signal.
pub async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    proxy: Arc<Proxy>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    crate::listen::http::serve(
        "k8s-proxy",
        listener,
        Some(acceptor),
        crate::listen::caps::PROXY,
        shutdown,
        move |peer| {
            let proxy = proxy.clone();
            hyper::service::service_fn(move |request: Request<Incoming>| {
                let proxy = proxy.clone();
                let span =
                    tracing::info_span!("proxy", peer = %peer, agent = tracing::field::Empty);
                async move {
                    Ok::<_, std::convert::Infallible>(
                        proxy.handle(request, tether_proxy::Arrival::Client).await,
                    )
                }
                .instrument(span)
            })
        },
    )
    .await;
    Ok(())
}
