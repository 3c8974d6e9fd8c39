//! kas's listeners: the agent endpoint (gRPC and WebSocket on one TLS
//! port), and the check that each accepts connections.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tether_channel::AgentChannelService;
use tokio::net::TcpListener;

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

/// kas's sockets, bound before anything else starts: a listen address
/// with port 0 gets its port from the kernel here, and what was bound is
/// written to [`LISTENING_FILE`] in the data folder, so a supervisor or a
/// test learns it with no window between picking a port and binding it;
/// the settings derived from an address (the proxy's external URL) are
/// made from the bound one.
#[derive(Debug)]
pub struct Bound {
    api: TcpListener,
    admin: TcpListener,
    agent: TcpListener,
    proxy: TcpListener,
    private: Option<TcpListener>,
}

/// The file in the data folder naming the bound addresses, one JSON
/// object: `{"api": "127.0.0.1:8153", "agent": …}`.
pub const LISTENING_FILE: &str = "listening.json";

impl Bound {
    /// Binds every listener `settings` names, then writes
    /// [`LISTENING_FILE`] in `data`.
    pub async fn bind(settings: &Settings, data: &std::path::Path) -> anyhow::Result<Self> {
        let listening = data.join(LISTENING_FILE);
        match std::fs::remove_file(&listening) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("cannot remove the last run's listening.json"),
        }
        let private = match &settings.replication {
            Some(replication) => Some(listen::bind("private", replication.listen).await?),
            None => None,
        };
        let bound = Bound {
            api: listen::bind("api", settings.api_listen).await?,
            admin: listen::bind("admin", settings.admin_listen).await?,
            agent: listen::bind("agent", settings.agent_listen).await?,
            proxy: listen::bind("k8s-proxy", settings.k8s_proxy_listen).await?,
            private,
        };
        write_listening(&listening, &bound.addresses()?)?;
        Ok(bound)
    }

    /// Each listener's name and the address it is bound to.
    pub fn addresses(&self) -> std::io::Result<Vec<(&'static str, SocketAddr)>> {
        let mut addresses = vec![
            ("api", self.api.local_addr()?),
            ("admin", self.admin.local_addr()?),
            ("agent", self.agent.local_addr()?),
            ("k8s-proxy", self.proxy.local_addr()?),
        ];
        if let Some(private) = &self.private {
            addresses.push(("private", private.local_addr()?));
        }
        Ok(addresses)
    }
}

impl Listeners {
    /// Serves every listener of `bound` until the drain signal; each
    /// finishes what is in flight within its grace.
    pub async fn serve(
        self,
        settings: &Settings,
        bound: Bound,
        drain: tether_runtime::Drain,
    ) -> anyhow::Result<()> {
        let Bound {
            api: api_listener,
            admin: admin_listener,
            agent: agent_listener,
            proxy: proxy_listener,
            private: private_listener,
        } = bound;
        let shutdown = drain.signal();
        let private = {
            let serving = match (private_listener, self.private) {
                (Some(listener), Some((router, api))) => Some(proxy::private::serve(
                    listener,
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
            proxy_listener,
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
            api_listener,
            api_tls,
            listen::caps::API,
            shutdown.clone(),
            listen::http::router_service(self.api),
        );
        let health = listen::http::serve(
            "admin",
            admin_listener,
            None,
            listen::caps::ADMIN,
            shutdown,
            listen::http::router_service(self.admin),
        );
        let api = async move {
            api.await;
            anyhow::Ok(())
        };
        let health = async move {
            health.await;
            anyhow::Ok(())
        };
        let agents = serve_agents(agent_listener, self.identity, self.agents, drain);
        tokio::try_join!(api, health, agents, k8s_proxy, private).map(|_| ())
    }
}

/// Writes the bound addresses as one JSON object, by a rename, so a reader
/// never sees half of it.
fn write_listening(path: &std::path::Path, addresses: &[(&str, SocketAddr)]) -> anyhow::Result<()> {
    let object: serde_json::Map<String, serde_json::Value> = addresses
        .iter()
        .map(|(name, addr)| (name.to_string(), addr.to_string().into()))
        .collect();
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, serde_json::Value::Object(object).to_string())
        .and_then(|()| std::fs::rename(&partial, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Serves the agent endpoint, gRPC over TLS and over WebSocket on the same
/// port, until the drain signal.
pub async fn serve_agents(
    listener: tokio::net::TcpListener,
    identity: crate::listen::identity::ServingIdentity,
    service: AgentChannelService,
    drain: tether_runtime::Drain,
) -> anyhow::Result<()> {
    use tonic::transport::Server;
    let acceptor = identity.acceptor()?;
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
/// each bound address (the loopback address of its family when it listens
/// on all).
pub fn listeners_check(bound: Vec<(&'static str, SocketAddr)>) -> admin::Check {
    // The admin listener serves this check: it needs no connection test.
    let listeners: Vec<(&'static str, SocketAddr)> = bound
        .into_iter()
        .filter(|(name, _)| *name != "admin")
        .map(|(name, mut addr)| {
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            (name, addr)
        })
        .collect();
    let listeners = Arc::new(listeners);
    Arc::new(move || {
        let listeners = listeners.clone();
        Box::pin(async move {
            for (name, addr) in listeners.iter().copied() {
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
