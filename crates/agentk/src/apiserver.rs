//! The cluster's API server as the tunnel reaches it: agentk's own
//! credentials (in-cluster service account or kubeconfig) and TLS settings,
//! from the same `kube::Config` as agentk's client.
//!
//! Ordinary requests share a pool of connections; upgrade requests (`exec`,
//! `port-forward`) get a connection each, since it becomes theirs.

use std::sync::Arc;
use tracing::Instrument;

use anyhow::Context;
use http::{Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use tether_tunnel::agent::{Upstream, UpstreamFuture};
use tether_tunnel::{Body, BoxError};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

type Send = BoxCloneSyncService<Request<Body>, Response<Incoming>, BoxError>;

/// Idle pooled connections kept to the API server; enough for the
/// concurrency one tunnel sees in practice.
const POOL_IDLE: usize = 64;

/// The API server, with agentk's credentials added to every request.
pub struct ApiServer {
    /// `cluster_url` without a trailing slash; it may carry a path prefix.
    base: String,
    pooled: Send,
    upgrades: Send,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    pub fn new(config: &kube::Config) -> anyhow::Result<Arc<Self>> {
        // No Nagle: a request's headers and body are separate writes, and
        // the second must not wait for the API server's delayed ACK.
        let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let connector = config
            .rustls_https_connector_with_connector(tcp)
            .context("cannot set up TLS to the API server")?;
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(POOL_IDLE)
            .build::<_, Body>(connector.clone());
        let pooled = ServiceBuilder::new()
            .option_layer(config.auth_layer().context("unusable credentials")?)
            .service(client.map_err(BoxError::from));
        let dial = tower::service_fn(move |request: Request<Body>| {
            let mut connector = connector.clone();
            async move {
                let (mut parts, body) = request.into_parts();
                let stream = connector.call(parts.uri.clone()).await?;
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(stream).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.with_upgrades().await {
                        tracing::debug!(error = %e, "upgraded API server connection ended");
                    }
                });
                // Origin form on the wire, the authority as Host.
                if let Some(authority) = parts.uri.authority() {
                    let host = http::HeaderValue::from_str(authority.as_str())?;
                    parts.headers.insert(header::HOST, host);
                }
                parts.uri = parts
                    .uri
                    .path_and_query()
                    .map(|p| Uri::try_from(p.as_str()))
                    .transpose()?
                    .unwrap_or_else(|| Uri::from_static("/"));
                Ok::<_, BoxError>(
                    sender
                        .send_request(Request::from_parts(parts, body))
                        .await?,
                )
            }
        });
        let upgrades = ServiceBuilder::new()
            .option_layer(config.auth_layer().context("unusable credentials")?)
            .service(dial);
        Ok(Arc::new(ApiServer {
            base: config
                .cluster_url
                .to_string()
                .trim_end_matches('/')
                .to_owned(),
            pooled: BoxCloneSyncService::new(pooled),
            upgrades: BoxCloneSyncService::new(upgrades),
        }))
    }

    fn call(&self, service: &Send, request: Request<Body>) -> UpstreamFuture {
        let service = service.clone();
        let (mut parts, body) = request.into_parts();
        // kas's proxy span goes on here; the API server (with its tracing
        // on) continues from this one.
        let span = tracing::info_span!(
            "kubernetes api",
            http.request.method = %parts.method,
        );
        if let Some(traceparent) = parts
            .headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
        {
            tether_runtime::telemetry::extract(&span, traceparent);
        }
        match http::HeaderValue::from_str(&tether_runtime::telemetry::inject(&span)) {
            Ok(value) if !value.is_empty() => {
                parts.headers.insert("traceparent", value);
            }
            _ => {
                parts.headers.remove("traceparent");
            }
        }
        let uri = format!(
            "{}{}",
            self.base,
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        match Uri::try_from(uri) {
            Ok(uri) => {
                parts.uri = uri;
                Box::pin(
                    service
                        .oneshot(Request::from_parts(parts, body))
                        .instrument(span),
                )
            }
            Err(e) => Box::pin(std::future::ready(Err(e.into()))),
        }
    }
}

impl Upstream for ApiServer {
    fn send(&self, request: Request<Body>) -> UpstreamFuture {
        self.call(&self.pooled, request)
    }

    fn upgrade(&self, request: Request<Body>) -> UpstreamFuture {
        self.call(&self.upgrades, request)
    }
}
