//! Sending a proxy request to the replica that holds its agent's tunnels.
//!
//! Lookups go to the database only when this replica has no fresh answer:
//! holders are remembered for a few seconds, and forgotten when another
//! replica announces a new tunnel for the agent. A request for an agent
//! that has no tunnel anywhere waits, but not by polling: one waiter per
//! agent (however many requests wait) is woken by the announcement, with a
//! slow poll as backstop because announcements are lost while a listener
//! reconnects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::{HeaderName, Request, Response, StatusCode, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tether_agent_config::AgentName;
use tether_proxy::{Elsewhere, ROUTE_MISS, Routed};
use tether_store::{ReplicaId, Replicas};
use tether_tunnel::headers::{is_upgrade, strip_hop_by_hop};
use tether_tunnel::server::Tunnels;
use tether_tunnel::{Body, incoming};
use tokio::sync::watch;

use super::{FRESH, Secret};

pub use super::auth::ROUTE_HEADER;
use super::auth::{Refused, RouteKey};

/// On an answer to an API request forwarded by [`Router::ask_peers`]: this
/// replica holds no session of the agent either; ask the next.
pub const NO_SESSION: HeaderName = HeaderName::from_static("tether-no-session");

/// How long a lookup's answer is used before the database is asked again.
const HOLDERS_TTL: Duration = Duration::from_secs(5);
/// How long "no replica has its tunnels" is used (an announcement of a
/// new tunnel forgets it at once).
const NOWHERE_TTL: Duration = Duration::from_secs(1);
/// How long a replica that did not answer is skipped.
const DEAD_FOR: Duration = FRESH;
/// The pause before looking again after a replica's tunnels moved.
const MISS_PAUSE: Duration = Duration::from_millis(100);
/// The waiter's backstop poll, while requests wait for an agent.
const BACKSTOP_POLL: Duration = Duration::from_secs(2);
/// Agents remembered at most (the map is cleared past it).
const MAX_REMEMBERED: usize = 100_000;

/// Finds and reaches the replicas that hold agents' tunnels.
pub struct Router {
    replicas: Arc<dyn Replicas>,
    me: ReplicaId,
    key: RouteKey,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    tunnel_wait: Duration,
    holders: Mutex<HashMap<String, (Instant, Vec<String>)>>,
    dead: Mutex<HashMap<String, Instant>>,
    waiters: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Itself, for the waiter tasks it starts.
    this: Weak<Router>,
    /// Waiters and spliced upgrades run on it, ended when kas drains.
    drain: tether_runtime::Drain,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Elsewhere for Router {
    async fn route(&self, agent: &AgentName, request: Request<Body>, here: &Tunnels) -> Routed {
        Router::route(self, agent, request, here).await
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Router {
    /// `ca_pem` verifies the other replicas' certificate; without it, a
    /// replica must present kas's own certificate (`own_cert_pem`: every
    /// replica is given the same one), never merely one the web trusts:
    /// replica URLs come from the shared database, and a request forwarded
    /// there carries its caller's credentials.
    pub fn new(
        replicas: Arc<dyn Replicas>,
        me: ReplicaId,
        secret: Secret,
        tunnel_wait: Duration,
        ca_pem: Option<&[u8]>,
        own_cert_pem: &str,
        drain: tether_runtime::Drain,
    ) -> anyhow::Result<Arc<Self>> {
        let connector = match ca_pem {
            Some(ca) => tether_runtime::https::connector(Some(ca))?,
            None => pinned_connector(own_cert_pem)?,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(connector);
        Ok(Arc::new_cyclic(|this| Router {
            replicas,
            me,
            key: RouteKey::new(&secret),
            client,
            tunnel_wait,
            holders: Mutex::default(),
            dead: Mutex::default(),
            waiters: Mutex::default(),
            this: this.clone(),
            drain,
        }))
    }

    pub fn me(&self) -> &ReplicaId {
        &self.me
    }

    pub fn replicas(&self) -> &Arc<dyn Replicas> {
        &self.replicas
    }

    /// Whether `request` was forwarded by another replica: it carries a
    /// proof made with the replicas' key for its method and path, recent
    /// enough ([`super::auth`]).
    pub fn authenticate<B>(&self, request: &Request<B>) -> Result<(), Refused> {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        self.key.verify(
            request.method(),
            path,
            request.headers().get(ROUTE_HEADER),
            super::auth::now(),
        )
    }

    /// A tunnel of `agent` came up somewhere: look again, and wake the
    /// requests waiting for it.
    pub fn tunnel_up(&self, agent: &str) {
        lock(&self.holders).remove(agent);
        if let Some(waiter) = lock(&self.waiters).get(agent) {
            waiter.send_modify(|n| *n += 1);
        }
    }

    /// Replicas (private URLs) with fresh tunnels of `agent`, from memory
    /// when recent.
    async fn holders(&self, agent: &str) -> Vec<String> {
        if let Some((at, urls)) = lock(&self.holders).get(agent) {
            // "Nowhere" is remembered briefly: a flood of requests for a
            // disconnected agent costs one query a second, not one each.
            let ttl = if urls.is_empty() {
                NOWHERE_TTL
            } else {
                HOLDERS_TTL
            };
            if at.elapsed() < ttl {
                return self.alive(urls.clone());
            }
        }
        let urls = match self
            .replicas
            .tunnel_holders(agent, &self.me.id, FRESH)
            .await
        {
            Ok(urls) => urls,
            Err(e) => {
                tracing::warn!(error = ?e, agent, "cannot look up the agent's tunnels");
                return Vec::new();
            }
        };
        {
            let mut holders = lock(&self.holders);
            if holders.len() >= MAX_REMEMBERED {
                holders.clear();
            }
            holders.insert(agent.to_owned(), (Instant::now(), urls.clone()));
        }
        self.alive(urls)
    }

    fn alive(&self, urls: Vec<String>) -> Vec<String> {
        let mut dead = lock(&self.dead);
        dead.retain(|_, since| since.elapsed() < DEAD_FOR);
        urls.into_iter().filter(|u| !dead.contains_key(u)).collect()
    }

    /// Sends `request` for `agent` to a replica holding its tunnels, waiting
    /// up to the bound for one to come up (here or anywhere).
    pub async fn route(&self, agent: &AgentName, request: Request<Body>, here: &Tunnels) -> Routed {
        let deadline = tokio::time::Instant::now() + self.tunnel_wait;
        let mut woken: Option<watch::Receiver<u64>> = None;
        let mut request = request;
        let unavailable = || {
            Routed::Unavailable(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "agent {agent} is not connected: no kas replica has a tunnel to its cluster (waited {:?})",
                    self.tunnel_wait
                ),
            )
        };
        loop {
            if here.count(agent) > 0 {
                return Routed::Here(request);
            }
            if tokio::time::Instant::now() >= deadline {
                return unavailable();
            }
            if let Some(url) = self.holders(agent).await.into_iter().next() {
                match self.send(&url, request).await {
                    Ok(response) => return Routed::Answered { response, via: url },
                    Err(Failed::Missed(back)) => {
                        // Its tunnels moved on: look again, shortly.
                        lock(&self.holders).remove(agent.as_str());
                        request = *back;
                        tokio::time::sleep(MISS_PAUSE).await;
                        continue;
                    }
                    Err(Failed::Unsent(back, e)) => {
                        // Connecting failed: the replica is gone (killed,
                        // say). Skip it, and try another with the request.
                        tracing::info!(replica = %url, error = %e, "replica unreachable; skipping it");
                        lock(&self.dead).insert(url, Instant::now());
                        lock(&self.holders).remove(agent.as_str());
                        request = *back;
                        continue;
                    }
                    Err(Failed::Sent(e)) => {
                        lock(&self.dead).insert(url.clone(), Instant::now());
                        lock(&self.holders).remove(agent.as_str());
                        return Routed::Unavailable(
                            StatusCode::BAD_GATEWAY,
                            format!(
                                "agent {agent}: the kas replica holding its tunnels ({url}) failed: {e}"
                            ),
                        );
                    }
                }
            }
            let waiter = woken.get_or_insert_with(|| self.wait_for(agent));
            tokio::select! {
                changed = waiter.changed() => if changed.is_err() { woken = None },
                _ = tokio::time::sleep_until(deadline) => return unavailable(),
            }
        }
    }

    /// Tunnels the other live replicas hold, by agent (empty when the
    /// database cannot say: the UI then shows only this replica's view).
    pub async fn tunnels_elsewhere(&self) -> HashMap<String, usize> {
        match self.replicas.tunnels_elsewhere(&self.me.id, FRESH).await {
            Ok(rows) => rows.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = ?e, "cannot read the other replicas' tunnels");
                HashMap::new()
            }
        }
    }

    /// Asks the other live replicas, one after the other, to answer
    /// `request` (an API request about `agent` that only the replica
    /// holding its session can serve): those holding its tunnels first,
    /// as the agent's pod most likely opened its session there too. A
    /// replica without the session answers with the miss header and the
    /// next is asked. `None`: no replica could answer.
    pub async fn ask_peers(
        &self,
        agent: &str,
        parts: &http::request::Parts,
        body: bytes::Bytes,
    ) -> Option<Response<Body>> {
        let mut urls = self.holders(agent).await;
        match self.replicas.peers(&self.me.id, FRESH).await {
            Ok(peers) => {
                for peer in peers {
                    if !urls.contains(&peer) {
                        urls.push(peer);
                    }
                }
            }
            Err(e) => tracing::warn!(error = ?e, "cannot list the other replicas"),
        }
        for url in self.alive(urls) {
            let request = Request::from_parts(parts.clone(), tether_tunnel::full(body.clone()));
            match self.send(&url, request).await {
                Ok(response) if response.headers().contains_key(NO_SESSION) => continue,
                Ok(response) => return Some(response),
                Err(Failed::Missed(_)) => continue,
                Err(Failed::Unsent(_, e) | Failed::Sent(e)) => {
                    tracing::info!(replica = %url, error = %e, "replica did not answer; asking the next");
                    continue;
                }
            }
        }
        None
    }

    /// Joins the one waiter of `agent`, starting it if none runs. The waiter
    /// polls the database slowly while anyone waits, and stops after.
    fn wait_for(&self, agent: &str) -> watch::Receiver<u64> {
        let mut waiters = lock(&self.waiters);
        if let Some(waiter) = waiters.get(agent) {
            return waiter.subscribe();
        }
        let (tx, rx) = watch::channel(0u64);
        let Some(this) = self.this.upgrade() else {
            return rx;
        };
        waiters.insert(agent.to_owned(), tx.clone());
        let agent = agent.to_owned();
        let mut signal = this.drain.signal();
        let drain = this.drain.clone();
        drain.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(BACKSTOP_POLL) => {}
                    // Its waiters end with their requests as kas drains.
                    _ = signal.signalled() => {
                        lock(&this.waiters).remove(&agent);
                        return;
                    }
                }
                {
                    let mut waiters = lock(&this.waiters);
                    if tx.receiver_count() == 0 {
                        waiters.remove(&agent);
                        return;
                    }
                }
                lock(&this.holders).remove(&agent);
                if !this.holders(&agent).await.is_empty() {
                    tx.send_modify(|n| *n += 1);
                }
            }
        });
        rx
    }

    /// Forwards `request` to the replica at `url`, as it came (the receiving
    /// replica authenticates and authorizes it), with the shared secret.
    async fn send(&self, url: &str, mut request: Request<Body>) -> Result<Response<Body>, Failed> {
        let upgrade = is_upgrade(request.headers());
        let client_side = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let original = parts.uri.clone();
        // Replica URLs come from the shared database: only https://, so a
        // row that points elsewhere gets nothing in the clear.
        if !url.starts_with("https://") {
            return Err(Failed::Sent(format!(
                "replica URL {url} is not https://; refused"
            )));
        }
        parts.uri = match format!("{}{path}", url.trim_end_matches('/')).parse::<http::Uri>() {
            Ok(uri) => uri,
            Err(e) => {
                return Err(Failed::Sent(format!("bad replica URL {url}: {e}")));
            }
        };
        parts.version = http::Version::HTTP_11;
        parts.headers.remove(header::HOST);
        if !upgrade {
            strip_hop_by_hop(&mut parts.headers);
        }
        let signed = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let proof = self.key.sign(&parts.method, &signed, super::auth::now());
        parts.headers.insert(ROUTE_HEADER, proof);
        // A bodiless request can be rebuilt if the connection fails before
        // it is sent; one with a body cannot.
        let bodiless = !parts.headers.contains_key(header::CONTENT_LENGTH)
            && !parts.headers.contains_key(header::TRANSFER_ENCODING)
            && hyper::body::Body::is_end_stream(&body);
        let spare = bodiless.then(|| parts.clone());
        let sent = self.client.request(Request::from_parts(parts, body)).await;
        // The request as it came, for another try.
        let upgrading = client_side.is_some();
        let back = |spare: Option<http::request::Parts>| {
            spare.filter(|_| !upgrading).map(|mut parts| {
                parts.uri = original.clone();
                parts.headers.remove(ROUTE_HEADER);
                Box::new(Request::from_parts(parts, tether_tunnel::empty()))
            })
        };
        let mut response = match sent {
            Ok(response) => response,
            Err(e) if e.is_connect() => {
                return match back(spare) {
                    Some(request) => Err(Failed::Unsent(request, e.to_string())),
                    None => Err(Failed::Sent(e.to_string())),
                };
            }
            Err(e) => return Err(Failed::Sent(e.to_string())),
        };
        if response.headers().contains_key(ROUTE_MISS) {
            if let Some(request) = back(spare) {
                return Err(Failed::Missed(request));
            }
            response.headers_mut().remove(ROUTE_MISS);
        }
        if let Some(client_side) = client_side
            && response.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            let peer_side = hyper::upgrade::on(&mut response);
            let mut signal = self.drain.signal();
            self.drain.spawn(async move {
                match tokio::try_join!(client_side, peer_side) {
                    Ok((client, peer)) => {
                        let (mut client, mut peer) = (TokioIo::new(client), TokioIo::new(peer));
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut peer) => {}
                            // An exec or port-forward through this replica
                            // ends with it; its client opens another.
                            _ = signal.signalled() => {}
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "routed upgrade not completed"),
                }
            });
            let (parts, _) = response.into_parts();
            return Ok(Response::from_parts(parts, tether_tunnel::empty()));
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, incoming(body)))
    }
}

/// HTTPS to replicas that present exactly `cert_pem`'s first certificate.
fn pinned_connector(cert_pem: &str) -> anyhow::Result<HttpsConnector<HttpConnector>> {
    use anyhow::Context as _;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let leaf = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()
        .context("kas's certificate PEM holds no certificate")?
        .context("invalid certificate PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { leaf, provider }))
        .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build())
}

/// Accepts exactly one certificate (kas's own), and checks that the peer
/// holds its key.
#[derive(Debug)]
struct Pinned {
    leaf: rustls::pki_types::CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match end_entity.as_ref() == self.leaf.as_ref() {
            true => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            false => Err(rustls::Error::General(
                "the replica does not present kas's own certificate".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Why a forward failed.
enum Failed {
    /// Nothing reached the replica; here is the request back.
    Unsent(Box<Request<Body>>, String),
    /// The replica had no tunnel of the agent after all; the request back.
    Missed(Box<Request<Body>>),
    /// The replica failed after the request was sent.
    Sent(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("a key");
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("a certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A TLS server on loopback with `(cert, key)`, answering each request
    /// 200; its address.
    async fn serve((cert, key): (String, String)) -> std::net::SocketAddr {
        let acceptor = tether_runtime::tls::acceptor(&cert, &key).expect("an acceptor");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(|_request| async {
                        Ok::<_, std::convert::Infallible>(Response::new(tether_tunnel::empty()))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        address
    }

    /// Without a CA, a replica URL from the database reaches only a
    /// server presenting kas's own certificate, not one the web (or
    /// anyone) might trust.
    #[tokio::test]
    async fn without_a_ca_only_kas_own_certificate_is_accepted() {
        let own = identity("kas.internal");
        let other = identity("kas.internal");
        let (own_at, other_at) = (serve(own.clone()).await, serve(other).await);
        let client: Client<_, Body> =
            Client::builder(TokioExecutor::new()).build(pinned_connector(&own.0).expect("pinned"));
        let get = |at: std::net::SocketAddr| {
            let request = Request::get(format!("https://{at}/"))
                .body(tether_tunnel::empty())
                .expect("a request");
            client.request(request)
        };

        let ours = get(own_at).await;
        let theirs = get(other_at).await;

        assert_eq!(
            ours.expect("kas's own certificate").status(),
            StatusCode::OK
        );
        assert!(theirs.is_err(), "another certificate for the same name");
    }
}
