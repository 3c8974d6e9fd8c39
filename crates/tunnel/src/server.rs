//! kas's side of the tunnels: which agent has which live tunnels, and
//! forwarding a client's request through one of them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tether_agent_config::AgentName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::headers::{
    self, is_upgrade, strip_hop_by_hop, strip_impersonation, strip_tunnel_headers,
};
use crate::identity::Identity;
use crate::stop::{Stop, stoppable};
use crate::{Body, empty, incoming};

/// What kas knows about a tunnel's owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelInfo {
    /// Checked where the tunnel's token was: nothing here parses it again.
    pub agent: AgentName,
    /// The agent token it authenticated with, so revoking it closes the
    /// tunnel.
    pub token_id: i64,
    /// What agentk said the tunnel serves ([`crate::KUBERNETES_API`], …).
    pub serves: Vec<String>,
    /// When the token it authenticated with expires: the tunnel closes
    /// then, whatever else happens.
    pub expires_in: Option<Duration>,
}

struct Tunnel {
    id: u64,
    info: TunnelInfo,
    sender: SendRequest<Body>,
    /// Requests waiting for their response headers: the load to balance.
    in_flight: AtomicUsize,
    close: watch::Sender<bool>,
}

/// Every live tunnel, by agent.
#[derive(Default)]
pub struct Tunnels {
    next_id: AtomicU64,
    agents: Mutex<HashMap<AgentName, Vec<Arc<Tunnel>>>>,
    /// Agents whose tunnel count changed since [`Tunnels::take_changed`]
    /// (bounded by the agents that had tunnels), for kas's replica tracker.
    changed: Mutex<HashSet<AgentName>>,
    changes: tokio::sync::Notify,
}

impl std::fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnels").finish_non_exhaustive()
    }
}

/// Why a request could not go through a tunnel.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("the tunnel failed: {0}")]
    Tunnel(#[from] hyper::Error),
    #[error("invalid request: {0}")]
    Request(#[from] http::Error),
}

impl Tunnels {
    /// Makes `io`, a connection agentk dialed, a tunnel of `info.agent`, and
    /// keeps it until either side closes it. Returns once the HTTP/2
    /// handshake is done.
    pub async fn attach<I>(self: &Arc<Self>, info: TunnelInfo, io: I) -> Result<(), hyper::Error>
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(io))
            .await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (close, mut closed) = watch::channel(false);
        let tunnel = Arc::new(Tunnel {
            id,
            info: info.clone(),
            sender,
            in_flight: AtomicUsize::new(0),
            close,
        });
        self.lock()
            .entry(info.agent.clone())
            .or_default()
            .push(tunnel);
        self.mark_changed(&info.agent);
        tracing::info!(agent = %info.agent, tunnel = id, "tunnel up");
        let this = self.clone();
        let tunnel_info = info.clone();
        let expiry = async move {
            match info.expires_in {
                Some(left) => tokio::time::sleep(left).await,
                None => std::future::pending().await,
            }
        };
        let info = tunnel_info;
        tokio::spawn(async move {
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(agent = %info.agent, tunnel = id, error = %e, "tunnel failed");
                    }
                }
                _ = closed.wait_for(|c| *c) => {}
                _ = expiry => tracing::info!(agent = %info.agent, tunnel = id, "tunnel closed: its token expired"),
            }
            this.remove(&info.agent, id);
            tracing::info!(agent = %info.agent, tunnel = id, "tunnel down");
        });
        Ok(())
    }

    /// The least busy open tunnel of `agent` that serves `service`.
    pub fn pick(&self, agent: &AgentName, service: &str) -> Option<Lease> {
        let agents = self.lock();
        let tunnel = agents
            .get(agent)?
            .iter()
            .filter(|t| !t.sender.is_closed() && t.info.serves.iter().any(|s| s == service))
            .min_by_key(|t| t.in_flight.load(Ordering::Relaxed))?
            .clone();
        tunnel.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Lease { tunnel })
    }

    /// Waits until some agent's tunnel count changes (returns at once if
    /// one changed since the last [`Self::take_changed`]).
    pub async fn changed(&self) {
        self.changes.notified().await;
    }

    /// The agents whose tunnel count changed since the last call, with
    /// their count now.
    pub fn take_changed(&self) -> Vec<(AgentName, usize)> {
        let agents: Vec<AgentName> =
            std::mem::take(&mut *self.changed.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        agents
            .into_iter()
            .map(|agent| {
                let count = self.count(&agent);
                (agent, count)
            })
            .collect()
    }

    fn mark_changed(&self, agent: &AgentName) {
        self.changed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(agent.clone());
        self.changes.notify_one();
    }

    /// Tunnels open now, of every agent.
    pub fn total(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Live tunnels of `agent`.
    pub fn count(&self, agent: &AgentName) -> usize {
        self.lock().get(agent).map_or(0, Vec::len)
    }

    /// Closes the tunnels whose owner matches; returns how many.
    pub fn close_where(&self, matches: impl Fn(&TunnelInfo) -> bool) -> usize {
        let agents = self.lock();
        let mut n = 0;
        for tunnel in agents.values().flatten().filter(|t| matches(&t.info)) {
            let _ = tunnel.close.send(true);
            n += 1;
        }
        n
    }

    fn remove(&self, agent: &AgentName, id: u64) {
        {
            let mut agents = self.lock();
            if let Some(list) = agents.get_mut(agent) {
                list.retain(|t| t.id != id);
                if list.is_empty() {
                    agents.remove(agent);
                }
            }
        }
        self.mark_changed(agent);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentName, Vec<Arc<Tunnel>>>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One request's use of a tunnel.
pub struct Lease {
    tunnel: Arc<Tunnel>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("tunnel", &self.tunnel.id)
            .finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.tunnel.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lease {
    async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, hyper::Error> {
        let mut sender = self.tunnel.sender.clone();
        sender.ready().await?;
        sender.send_request(request).await
    }

    /// Sends a client's request through the tunnel, to run as `identity`
    /// (`None`: as the agent itself). `path_and_query` is the request's
    /// target at the API server. The client's credentials, impersonation
    /// headers and hop-by-hop headers never cross.
    ///
    /// `stop` ends the exchange from outside (a revoked credential): the
    /// response body ends with an error, a spliced upgrade closes.
    pub async fn forward(
        self,
        mut request: Request<Body>,
        path_and_query: &str,
        identity: Option<&Identity>,
        mut stop: Stop,
    ) -> Result<Response<Body>, ForwardError> {
        let upgrade = is_upgrade(request.headers()).then(|| {
            let token = request.headers().get(header::UPGRADE).cloned();
            (hyper::upgrade::on(&mut request), token)
        });
        let (mut parts, body) = request.into_parts();
        let h = &mut parts.headers;
        strip_hop_by_hop(h);
        strip_impersonation(h);
        strip_tunnel_headers(h);
        h.remove(header::AUTHORIZATION);
        h.remove(header::HOST);
        if let Some(identity) = identity {
            h.insert(headers::IMPERSONATE, identity.to_header());
        }
        let Some((client_side, Some(token))) = upgrade else {
            parts.uri = Uri::try_from(format!("http://kubernetes.tunnel{path_and_query}"))
                .map_err(http::Error::from)?;
            parts.version = http::Version::HTTP_2;
            let response = self.send(Request::from_parts(parts, body)).await?;
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            return Ok(Response::from_parts(parts, stoppable(incoming(body), stop)));
        };
        let mut connect = Request::builder()
            .method(Method::CONNECT)
            .uri("kubernetes.tunnel:443")
            .version(http::Version::HTTP_2)
            .header(
                headers::PATH,
                HeaderValue::from_str(path_and_query).map_err(http::Error::from)?,
            )
            .header(
                headers::METHOD,
                HeaderValue::from_str(parts.method.as_str()).map_err(http::Error::from)?,
            )
            .header(headers::UPGRADE, token.clone())
            .body(empty())?;
        connect.headers_mut().extend(parts.headers);
        let mut response = self.send(connect).await?;
        let switched = response.status() == StatusCode::OK
            && response
                .headers()
                .get(headers::UPSTREAM_STATUS)
                .is_some_and(|v| v == "101");
        if !switched {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            strip_tunnel_headers(&mut parts.headers);
            return Ok(Response::from_parts(parts, incoming(body)));
        }
        let tunnel_side = hyper::upgrade::on(&mut response);
        let mut answer = Response::new(empty());
        *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = answer.headers_mut();
        h.extend(response.headers().clone());
        strip_tunnel_headers(h);
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, token);
        // The lease ends with this function; the spliced stream keeps its
        // HTTP/2 stream, not a place in the balance.
        tokio::spawn(async move {
            let (client, tunnel) = match tokio::try_join!(client_side, tunnel_side) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade not completed");
                    return;
                }
            };
            let (mut client, mut tunnel) = (TokioIo::new(client), TokioIo::new(tunnel));
            tokio::select! {
                ended = tokio::io::copy_bidirectional(&mut client, &mut tunnel) => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "upgraded stream ended");
                    }
                }
                _ = stop.stopped() => tracing::info!("upgraded stream ended by kas: its credential is no longer valid"),
            }
        });
        Ok(answer)
    }
}
