//! [`Proxy`]: one request's way from the client to a tunnel of its agent.

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tether_agent_config::AgentName;
use tether_store::time::now;
use tether_tunnel::Body;
use tether_tunnel::server::Tunnels;

use crate::access::{self, AgentRef, Grant};
use crate::admissions::{self, Admissions};
use crate::credentials::{Credential, Refused};
use crate::metrics::{ProxyLabels, ProxyMetrics};
use crate::needs::{ConfigsInUse, Credentials, Elsewhere, Routed};
use crate::oidc::Oidc;
use crate::principal::Principal;
use crate::rejection::Rejection;
use crate::streams::{self, LiveStreams};
use crate::target::{is_watch, target};

/// Where a request to the proxy came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// A client (kubectl, a CI job) on the proxy's own listener.
    Client,
    /// Another replica, on the private listener, which routed it here.
    Peer,
}

/// The proxy and what it needs.
pub struct Proxy {
    /// Access tokens, users and agents, as credentials are checked.
    pub credentials: Arc<dyn Credentials>,
    /// The agents' tunnels that end in this process.
    pub tunnels: Arc<Tunnels>,
    /// The configs agents run with.
    pub configs: Arc<dyn ConfigsInUse>,
    pub oidc: Oidc,
    /// The proxy's URL as clients reach it, for kubeconfigs.
    pub external_url: String,
    /// The CA that signed the proxy's certificate, for kubeconfigs; `None`
    /// when the certificate is publicly trusted.
    pub ca_pem: Option<String>,
    /// Recently admitted credentials.
    pub admissions: Admissions,
    /// Exchanges in flight, ended when their credential is revoked.
    pub streams: Arc<LiveStreams>,
    /// With replicas: reaches the one holding an agent's tunnels.
    pub elsewhere: Option<Arc<dyn Elsewhere>>,
    /// kas's drain signal: watches end cleanly when it fires, so their
    /// clients re-watch through another replica.
    pub drain: tether_runtime::Shutdown,
    pub metrics: ProxyMetrics,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("external_url", &self.external_url)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Authenticates and authorizes a credential for its agent: who it is,
    /// and what it may do. Shared by the proxy and the kubeconfig endpoint.
    pub async fn admit(
        &self,
        credential: &Credential,
    ) -> Result<(Principal, Grant), (StatusCode, String)> {
        self.admit_inner(credential)
            .await
            .map_err(|r| (r.status, r.message))
    }

    async fn admit_inner(&self, credential: &Credential) -> Result<(Principal, Grant), Rejection> {
        let principal = credential
            .authenticate(self.credentials.as_ref(), &self.oidc, now())
            .await
            .map_err(|refused| match refused {
                Refused::Unauthorized(reason) => Rejection::new(StatusCode::UNAUTHORIZED, reason),
                Refused::Unavailable => Rejection::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "kas cannot check credentials right now",
                ),
            })?;
        let agent = self
            .credentials
            .agent(&credential.agent)
            .await
            .map_err(|_| {
                Rejection::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "kas cannot read its agents right now",
                )
            })?
            .ok_or_else(|| {
                Rejection::new(
                    StatusCode::NOT_FOUND,
                    format!("agent {} does not exist", credential.agent),
                )
            })?;
        let config = self.access_config(&credential.agent).await.ok_or_else(|| {
            Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "kas has not read agent {}'s configuration yet: is the agent connected?",
                    agent.name
                ),
            )
        })?;
        let agent_ref = AgentRef {
            name: &credential.agent,
            config_project: &agent.config_project,
        };
        let grant = access::authorize(&principal, agent_ref, &config)
            .map_err(|denied| Rejection::new(StatusCode::FORBIDDEN, denied.to_string()))?;
        if let Some(identity) = &grant.identity
            && let Err(e) = identity.validate()
        {
            return Err(Rejection::new(
                StatusCode::FORBIDDEN,
                format!("the identity to impersonate is unusable: {e}"),
            ));
        }
        Ok((principal, grant))
    }

    /// The config `agent` runs with: the one its session here read, or the
    /// one stored by the replica that holds its session.
    async fn access_config(
        &self,
        agent: &AgentName,
    ) -> Option<Arc<tether_agent_config::AgentConfig>> {
        self.configs.in_use(agent).await
    }

    /// Forgets remembered admissions: after a revocation, or a change to a
    /// user, membership or agent, the next request is checked afresh.
    pub fn forget_admissions(&self) {
        self.admissions.clear();
    }

    /// Handles one request, from a client or forwarded by another replica
    /// (which is served from this replica's tunnels or not at all).
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        from: Arrival,
    ) -> Response<Body> {
        let routed = from == Arrival::Peer;
        let started = Instant::now();
        // A client's `traceparent` is not followed: an unauthenticated
        // caller would choose the sampling and the trace its spans join.
        // The replica that routed a request here sets the parent of the
        // private listener's span (kas's `proxy::private`).
        let method = request.method().clone();
        let path = request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let outcome = match self
            .route(request.map(tether_tunnel::incoming), routed)
            .await
        {
            Ok(Ok(request)) => self
                .forward(request, routed)
                .await
                .map(|(r, p)| (r, p.describe(), p.kind())),
            Ok(Err((response, via))) => Ok((response, format!("routed to {via}"), "routed")),
            Err(rejection) => Err((rejection, None)),
        };
        let (response, who, caller) = match outcome {
            Ok(done) => done,
            Err((rejection, who)) => {
                let caller = who.as_ref().map_or("none", |p| p.kind());
                (
                    rejection.response(),
                    who.map(|p| p.describe()).unwrap_or_default(),
                    caller,
                )
            }
        };
        // A watch ends cleanly when kas drains, served here or routed: its
        // client re-watches from its resourceVersion through another
        // replica.
        let response = match is_watch(&path) {
            true => {
                let mut drain = self.drain.clone();
                response.map(|body| {
                    tether_tunnel::stop::ends_when(body, async move { drain.signalled().await })
                })
            }
            false => response,
        };
        let route = match (from, caller) {
            (Arrival::Peer, _) => "from_peer",
            (Arrival::Client, "routed") => "forwarded",
            (Arrival::Client, _) => "local",
        };
        let status = response.status();
        let elapsed = started.elapsed();
        self.metrics
            .requests
            .get_or_create(&ProxyLabels {
                caller,
                code: status.as_u16(),
                route,
            })
            .inc();
        self.metrics
            .request_seconds
            .get_or_create(&crate::metrics::RouteLabel { route })
            .observe(elapsed.as_secs_f64());
        // The path without its query: an exec's command and its arguments
        // are there, and this line reaches the logs and the trace back end.
        let shown = path.split('?').next().unwrap_or_default();
        tracing::info!(
            who = %who,
            verb = %method,
            path = %shown,
            status = status.as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "proxied"
        );
        response
    }

    /// With replicas, sends a request for an agent whose tunnels are
    /// elsewhere to the replica that has them: `Ok(Err(…))` is its answer.
    /// `Ok(Ok(request))` is to be served here.
    async fn route(
        &self,
        request: Request<Body>,
        routed: bool,
    ) -> Result<Result<Request<Body>, (Response<Body>, String)>, Rejection> {
        let Some(elsewhere) = self.elsewhere.as_ref().filter(|_| !routed) else {
            return Ok(Ok(request));
        };
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        // A request kas will refuse anyway is refused here, without a hop.
        let Ok(credential) = Credential::from_header(header) else {
            return Ok(Ok(request));
        };
        let tunnels = &self.tunnels;
        if tunnels.count(&credential.agent) > 0 {
            return Ok(Ok(request));
        }
        tracing::Span::current().record("agent", credential.agent.as_str());
        // Authenticated and authorized before it is routed: a forged,
        // revoked or unauthorized credential costs this lookup, never a
        // hop to another replica or a waiter for the agent's tunnels. (The
        // replica that serves it checks again: it trusts no replica's
        // word for who the caller is.)
        let key = admissions::key(header.unwrap_or_default());
        let config = self.access_config(&credential.agent).await;
        if config
            .as_ref()
            .and_then(|c| self.admissions.get(&key, c))
            .is_none()
        {
            self.admit_inner(&credential).await?;
        }
        let mut request = request;
        traced(&mut request);
        match elsewhere.route(&credential.agent, request, tunnels).await {
            Routed::Here(request) => Ok(Ok(request)),
            Routed::Answered { response, via } => Ok(Err((response, via))),
            Routed::Unavailable(status, message) => Err(Rejection::new(status, message)),
        }
    }

    async fn forward(
        &self,
        mut request: Request<Body>,
        routed: bool,
    ) -> Result<(Response<Body>, Principal), (Rejection, Option<Principal>)> {
        let target = match target(request.uri()) {
            Ok(target) => target,
            Err(rejection) => return Err((rejection, None)),
        };
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let credential = Credential::from_header(header).map_err(|reason| {
            (
                Rejection::new(StatusCode::UNAUTHORIZED, reason.to_string()),
                None,
            )
        })?;
        let key = admissions::key(header.unwrap_or_default());
        let config = self.access_config(&credential.agent).await;
        let remembered = config.as_ref().and_then(|c| self.admissions.get(&key, c));
        let generation = self.admissions.generation();
        let (principal, grant) = match remembered {
            Some(admitted) => admitted,
            None => {
                let (principal, grant) =
                    self.admit_inner(&credential).await.map_err(|r| (r, None))?;
                if let Some(config) = config {
                    let expires_at = principal.expires_at();
                    self.admissions.put(
                        generation,
                        key,
                        &principal,
                        &grant,
                        config,
                        expires_at,
                        now(),
                    );
                }
                (principal, grant)
            }
        };
        // Registered before the last check: a revocation from now on stops
        // this exchange; one that ran since the admission is caught here.
        let stop = self
            .streams
            .open(&credential.agent, streams::Opener::of(&principal));
        if self.admissions.generation() != generation {
            self.admit_inner(&credential)
                .await
                .map_err(|r| (r, Some(principal.clone())))?;
        }
        tracing::Span::current().record("agent", credential.agent.as_str());
        let tunnels = &self.tunnels;
        let no_tunnel = || {
            format!(
                "agent {} is not connected: no tunnel to its cluster",
                credential.agent
            )
        };
        let lease = match tunnels.pick(&credential.agent, tether_tunnel::KUBERNETES_API) {
            Some(lease) => lease,
            // Its tunnels went between routing and now: another replica
            // may have them (an agent moving off a draining replica).
            None => match self.elsewhere.as_ref().filter(|_| !routed) {
                Some(elsewhere) => match elsewhere.route(&credential.agent, request, tunnels).await
                {
                    Routed::Answered { response, .. } => return Ok((response, principal)),
                    Routed::Unavailable(status, message) => {
                        return Err((Rejection::new(status, message), Some(principal)));
                    }
                    Routed::Here(back) => {
                        request = back;
                        tunnels
                            .pick(&credential.agent, tether_tunnel::KUBERNETES_API)
                            .ok_or_else(|| {
                                (
                                    Rejection::new(StatusCode::SERVICE_UNAVAILABLE, no_tunnel()),
                                    Some(principal.clone()),
                                )
                            })?
                    }
                },
                None => {
                    let mut rejection =
                        Rejection::new(StatusCode::SERVICE_UNAVAILABLE, no_tunnel());
                    rejection.route_miss = routed;
                    return Err((rejection, Some(principal)));
                }
            },
        };
        traced(&mut request);
        match lease
            .forward(request, &target, grant.identity.as_ref(), stop)
            .await
        {
            Ok(response) => Ok((response, principal)),
            Err(e) => Err((
                Rejection::new(
                    StatusCode::BAD_GATEWAY,
                    format!("agent {}: {e}", credential.agent),
                ),
                Some(principal),
            )),
        }
    }
}

/// Sets the request's `traceparent` to this request's span, so that the
/// replica it is routed to and the agent it goes through continue its
/// trace (and a caller's own value goes no further than this span).
fn traced<B>(request: &mut Request<B>) {
    let traceparent = tether_runtime::telemetry::inject(&tracing::Span::current());
    match http::HeaderValue::from_str(&traceparent) {
        Ok(value) if !traceparent.is_empty() => {
            request.headers_mut().insert("traceparent", value);
        }
        _ => {
            request.headers_mut().remove("traceparent");
        }
    }
}
