//! The private listener: where the other replicas send the proxy requests
//! for agents whose tunnels this replica holds, and the plans of agents
//! whose session it holds. TLS with kas's certificate; every request must
//! carry a proof made with the replicas' key for its method and path
//! (`replicas::auth`), and is then served from this replica's own tunnels
//! and sessions only (never routed again).

use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use tether_runtime::Shutdown;
use tether_tunnel::status_response;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use tether_proxy::Proxy;

use tether_replicas::router::{ROUTE_HEADER, Router};

/// Largest API answer relayed (a plan of thousands of objects with their
/// field changes).
const MAX_ANSWER_BYTES: usize = 256 << 20;

/// Serves the private listener until the drain signal.
pub async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    proxy: Arc<Proxy>,
    router: Arc<Router>,
    api: axum::Router,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    crate::listen::http::serve(
        "private",
        listener,
        Some(acceptor),
        crate::listen::caps::PRIVATE,
        shutdown,
        move |peer| {
            let (proxy, router, api) = (proxy.clone(), router.clone(), api.clone());
            hyper::service::service_fn(move |request: Request<Incoming>| {
                let (proxy, router, api) = (proxy.clone(), router.clone(), api.clone());
                let span =
                    tracing::info_span!("routed", peer = %peer, agent = tracing::field::Empty);
                // The routing replica's trace goes on here, once the
                // replicas' proof says it is one (a parent is set before the
                // span is first entered, or not at all).
                if router.authenticate(&request).is_ok()
                    && let Some(traceparent) = request
                        .headers()
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                {
                    tether_runtime::telemetry::extract(&span, traceparent);
                }
                async move {
                    if let Err(why) = router.authenticate(&request) {
                        tracing::warn!(
                            reason = %why,
                            "private listener: request without the replicas' proof refused"
                        );
                        return Ok::<_, std::convert::Infallible>(status_response(
                            StatusCode::UNAUTHORIZED,
                            "Unauthorized",
                            "this is kas's private listener: requests from other replicas only",
                        ));
                    }
                    let mut request = request;
                    request.headers_mut().remove(ROUTE_HEADER);
                    if crate::api::plan::is_plan_path(request.uri().path()) {
                        use tower::ServiceExt;
                        request
                            .extensions_mut()
                            .insert(crate::api::plan::RoutedByPeer);
                        let answer = api.oneshot(request.map(axum::body::Body::new)).await;
                        let answer = match answer {
                            Ok(answer) => answer,
                            Err(never) => match never {},
                        };
                        let (parts, body) = answer.into_parts();
                        let body = axum::body::to_bytes(body, MAX_ANSWER_BYTES)
                            .await
                            .unwrap_or_default();
                        return Ok(http::Response::from_parts(parts, tether_tunnel::full(body)));
                    }
                    Ok(proxy.handle(request, tether_proxy::Arrival::Peer).await)
                }
                .instrument(span)
            })
        },
    )
    .await;
    Ok(())
}
