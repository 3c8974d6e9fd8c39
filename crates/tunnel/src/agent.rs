//! agentk's side of a tunnel: serve HTTP/2 on the connection agentk dialed,
//! and send each request to the cluster's API server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::headers::{self, strip_hop_by_hop, strip_impersonation, strip_tunnel_headers};
use crate::identity::Identity;
use crate::{Body, BoxError, empty, incoming, status_response};

/// Boxed future of an upstream call.
pub type UpstreamFuture =
    Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

/// The API server as agentk reaches it: with its own credentials, which the
/// implementation adds. Requests come with the path and query only.
pub trait Upstream: Send + Sync + 'static {
    /// Sends an ordinary request, on a pooled connection.
    fn send(&self, request: Request<Body>) -> UpstreamFuture;
    /// Sends an HTTP/1.1 upgrade request on a connection of its own, whose
    /// `101` response can be upgraded with `hyper::upgrade::on`.
    fn upgrade(&self, request: Request<Body>) -> UpstreamFuture;
}

/// How long requests in flight may take to finish once agentk stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one tunnel until kas or the network closes it, or `stop`
/// resolves: then kas is told to send no more (GOAWAY) and requests in
/// flight get [`DRAIN_TIMEOUT`] to finish.
pub async fn serve<I>(
    io: I,
    upstream: Arc<dyn Upstream>,
    stop: impl Future<Output = ()>,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let upstream = upstream.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(request, upstream).await) }
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        // Flow-control windows follow the measured bandwidth-delay product,
        // so a big LIST is not throttled by 64 KiB windows on a far link.
        .adaptive_window(true)
        .max_concurrent_streams(1024)
        // The identity header of a user in many groups is large; kas caps
        // it at a quarter of this.
        .max_header_list_size(
            u32::try_from(4 * crate::identity::MAX_IDENTITY_BYTES).unwrap_or(u32::MAX),
        )
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection, stop);
    tokio::select! {
        result = connection.as_mut() => return result,
        _ = &mut stop => connection.as_mut().graceful_shutdown(),
    }
    match tokio::time::timeout(DRAIN_TIMEOUT, connection).await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

async fn handle(mut request: Request<Incoming>, upstream: Arc<dyn Upstream>) -> Response<Body> {
    // Only kas speaks on the tunnel, and it already removed these; remove
    // them again so that no path lets a client choose its identity.
    let identity = match request.headers().get(headers::IMPERSONATE) {
        None => None,
        Some(value) => match Identity::from_header(value) {
            Ok(identity) => Some(identity),
            Err(e) => {
                return status_response(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string());
            }
        },
    };
    let upgrade = request.method() == Method::CONNECT;
    let (path, method, upgrade_token) = {
        let h = request.headers();
        let text = |name| {
            h.get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        (
            text(headers::PATH),
            text(headers::METHOD),
            h.get(headers::UPGRADE).cloned(),
        )
    };
    let h = request.headers_mut();
    strip_impersonation(h);
    strip_tunnel_headers(h);
    strip_hop_by_hop(h);
    h.remove(header::AUTHORIZATION);
    h.remove(header::HOST);
    if let Some(identity) = &identity
        && let Err(e) = identity.apply(h)
    {
        return status_response(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string());
    }
    if upgrade {
        let (Some(path), Some(token)) = (path, upgrade_token) else {
            return status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "a tunnel CONNECT needs tether-path and tether-upgrade",
            );
        };
        return splice(request, path, method.as_deref(), token, upstream).await;
    }
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let (mut parts, body) = request.into_parts();
    parts.uri = match Uri::try_from(path_and_query) {
        Ok(uri) => uri,
        Err(e) => return status_response(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    parts.version = http::Version::HTTP_11;
    match upstream
        .send(Request::from_parts(parts, incoming(body)))
        .await
    {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, incoming(body))
        }
        Err(e) => bad_gateway(&e),
    }
}

/// Makes the upgrade request to the API server and, when it switches
/// protocols, answers kas's CONNECT and splices the two byte streams.
async fn splice(
    mut request: Request<Incoming>,
    path: String,
    method: Option<&str>,
    token: http::HeaderValue,
    upstream: Arc<dyn Upstream>,
) -> Response<Body> {
    let tunnel_side = hyper::upgrade::on(&mut request);
    let mut builder = Request::builder()
        .method(method.unwrap_or("GET"))
        .uri(path)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, token);
    if let Some(h) = builder.headers_mut() {
        h.extend(request.headers().clone());
    }
    let upgrade_request = match builder.body(empty()) {
        Ok(r) => r,
        Err(e) => return status_response(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let mut response = match upstream.upgrade(upgrade_request).await {
        Ok(r) => r,
        Err(e) => return bad_gateway(&e),
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        if response.status().is_success() {
            // A 2xx would read as an accepted CONNECT with nothing behind it.
            return status_response(
                StatusCode::BAD_GATEWAY,
                "BadGateway",
                &format!(
                    "the API server answered {} to an upgrade",
                    response.status()
                ),
            );
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Response::from_parts(parts, incoming(body));
    }
    let upstream_side = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (tunnel, api) = match tokio::try_join!(tunnel_side, upstream_side) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade not completed");
                return;
            }
        };
        let (mut tunnel, mut api) = (TokioIo::new(tunnel), TokioIo::new(api));
        if let Err(e) = tokio::io::copy_bidirectional(&mut tunnel, &mut api).await {
            tracing::debug!(error = %e, "upgraded stream ended");
        }
    });
    let mut answer = Response::new(empty());
    let h = answer.headers_mut();
    h.extend(response.headers().clone());
    strip_hop_by_hop(h);
    h.remove(header::CONTENT_LENGTH);
    h.insert(
        headers::UPSTREAM_STATUS,
        http::HeaderValue::from_static("101"),
    );
    answer
}

fn bad_gateway(e: &BoxError) -> Response<Body> {
    tracing::warn!(error = %e, "cannot reach the API server");
    status_response(
        StatusCode::BAD_GATEWAY,
        "BadGateway",
        &format!("agentk cannot reach its API server: {e}"),
    )
}
