//! The private listener: where the other replicas send the proxy requests
//! for agents whose tunnels this replica holds. TLS with kas's certificate;
//! every request must carry the replicas' shared secret, and is then served
//! like a proxy request from this replica's tunnels only.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use tether_runtime::Shutdown;
use tether_tunnel::status_response;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use tether_proxy::Proxy;

use crate::replicas::router::{ROUTE_HEADER, Router};

/// Serves the private listener until the drain signal.
pub async fn serve(
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    proxy: Arc<Proxy>,
    router: Arc<Router>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    crate::listen::http::serve("private", addr, Some(acceptor), shutdown, move |peer| {
        let (proxy, router) = (proxy.clone(), router.clone());
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let (proxy, router) = (proxy.clone(), router.clone());
            let span = tracing::info_span!("routed", peer = %peer, agent = tracing::field::Empty);
            async move {
                if !router.is_routed(&request) {
                    tracing::warn!(
                        "private listener: request without the replicas' secret refused"
                    );
                    return Ok::<_, std::convert::Infallible>(status_response(
                        StatusCode::UNAUTHORIZED,
                        "Unauthorized",
                        "this is kas's private listener: requests from other replicas only",
                    ));
                }
                let mut request = request;
                request.headers_mut().remove(ROUTE_HEADER);
                Ok(proxy.handle(request, true).await)
            }
            .instrument(span)
        })
    })
    .await
}
