//! kas's listeners: the agent endpoint (gRPC and WebSocket on one TLS
//! port), and the check that each accepts connections.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tether_channel::AgentChannelService;

use crate::settings::Settings;
use crate::{admin, listen, proxy};

/// What kas serves, each on its own listener.
pub struct Listeners {
    /// kas's certificate, for every TLS listener.
    pub identity: crate::listen::identity::ServingIdentity,
    /// The REST API and the web UI.
    pub api: axum::Router,
    /// With replicas: the private listener's router and its API.
    pub private: Option<(Arc<tether_replicas::router::Router>, axum::Router)>,
    pub proxy: Arc<tether_proxy::Proxy>,
    /// Health and metrics.
    pub admin: axum::Router,
    /// The agent endpoint.
    pub agents: AgentChannelService,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners").finish_non_exhaustive()
    }
}

impl Listeners {
    /// Serves every listener until the drain signal; each finishes what is
    /// in flight within its grace.
    pub async fn serve(
        self,
        settings: &Settings,
        drain: tether_runtime::Drain,
    ) -> anyhow::Result<()> {
        let shutdown = drain.signal();
        let private = {
            let serving = match (&settings.replication, self.private) {
                (Some(replication), Some((router, api))) => Some(proxy::private::serve(
                    replication.listen,
                    self.identity.acceptor()?,
                    self.proxy.clone(),
                    router,
                    api,
                    shutdown.clone(),
                )),
                _ => None,
            };
            async move {
                match serving {
                    Some(serving) => serving.await,
                    None => Ok(()),
                }
            }
        };
        let k8s_proxy = proxy::serve(
            settings.k8s_proxy_listen,
            self.identity.acceptor()?,
            self.proxy,
            shutdown.clone(),
        );
        // The REST API carries the admin token: beyond loopback it is
        // served over TLS only, with the agent endpoint's certificate.
        let api_tls = match settings.api_listen.ip().is_loopback() {
            true => None,
            false => Some(self.identity.acceptor()?),
        };
        let api = listen::http::serve(
            "api",
            settings.api_listen,
            api_tls,
            listen::caps::API,
            shutdown.clone(),
            listen::http::router_service(self.api),
        );
        let health = listen::http::serve(
            "admin",
            settings.admin_listen,
            None,
            listen::caps::ADMIN,
            shutdown,
            listen::http::router_service(self.admin),
        );
        let agents = serve_agents(settings.agent_listen, self.identity, self.agents, drain);
        tokio::try_join!(api, health, agents, k8s_proxy, private).map(|_| ())
    }
}

/// Serves the agent endpoint, gRPC over TLS and over WebSocket on the same
/// port, until the drain signal.
pub async fn serve_agents(
    addr: SocketAddr,
    identity: crate::listen::identity::ServingIdentity,
    service: AgentChannelService,
    drain: tether_runtime::Drain,
) -> anyhow::Result<()> {
    use tonic::transport::Server;
    let acceptor = identity.acceptor()?;
    let listener = listen::bind("agent", addr).await?;
    let incoming =
        listen::agent::incoming(listener, acceptor, service.tunnel_gate(), drain.clone());
    let mut signal = drain.signal();
    Server::builder()
        // An agent behind a silent partition sends no FIN: a PING after
        // 5 s without a frame, unanswered for 5 s more, ends its connection,
        // and with it the session, within 10 s (not the 30 s of the
        // session's own silence deadline). The same figures as agentk's
        // and the tunnels'. Adaptive windows keep the data queued ahead of
        // a PING to about one round trip, so a slow link streaming a big
        // report is not taken for a dead one.
        .http2_keepalive_interval(Some(tether_tunnel::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(tether_tunnel::KEEPALIVE_TIMEOUT))
        .http2_adaptive_window(Some(true))
        // agentk opens one session per connection; more is a client
        // pinning kas's memory.
        .max_concurrent_streams(Some(tether_channel::service::MAX_STREAMS_PER_CONNECTION))
        .add_service(tether_proto::v1::agent_channel_server::AgentChannelServer::new(service))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(incoming),
            async move { signal.signalled().await },
        )
        .await
        .context("agent listener failed")
}

/// A live check that every listener accepts connections: a TCP connect to
/// each configured address (the loopback address of its family when it
/// listens on all; one with port 0 is not checked).
pub fn listeners_check(settings: &Settings) -> admin::Check {
    let mut listeners = vec![
        ("api", settings.api_listen),
        ("agent", settings.agent_listen),
        ("k8s-proxy", settings.k8s_proxy_listen),
    ];
    if let Some(replication) = &settings.replication {
        listeners.push(("private", replication.listen));
    }
    let listeners: Vec<(&'static str, std::net::SocketAddr)> = listeners
        .into_iter()
        .filter(|(_, addr)| addr.port() != 0)
        .map(|(name, mut addr)| {
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            (name, addr)
        })
        .collect();
    let listeners = Arc::new(listeners);
    Arc::new(move || {
        let listeners = listeners.clone();
        Box::pin(async move {
            for (name, addr) in listeners.iter() {
                if tokio::net::TcpStream::connect(addr).await.is_err() {
                    return Err(format!(
                        "the {name} listener ({addr}) accepts no connection"
                    ));
                }
            }
            let names: Vec<&str> = listeners.iter().map(|(name, _)| *name).collect();
            Ok(names.join(", "))
        })
    })
}
