//! An axum router as a per-connection service of
//! `tether_runtime::serve::http::serve`, which serves every HTTP listener of
//! kas (plain or over TLS, headers bounded in time, drained gracefully).

use std::convert::Infallible;
use std::net::SocketAddr;

use http::Request;

pub use tether_runtime::serve::http::{HEADER_READ_TIMEOUT, serve};

/// An axum router as the per-connection service of [`serve`]; each
/// request carries its connection's peer as axum's `ConnectInfo`.
pub fn router_service(
    router: axum::Router,
) -> impl Fn(SocketAddr) -> hyper_util::service::TowerToHyperService<WithPeer> + Send + Sync + 'static
{
    move |peer| {
        hyper_util::service::TowerToHyperService::new(WithPeer {
            router: router.clone(),
            peer,
        })
    }
}

/// A router that puts the connection's peer on every request.
#[derive(Clone, Debug)]
pub struct WithPeer {
    router: axum::Router,
    peer: SocketAddr,
}

impl<B> tower::Service<Request<B>> for WithPeer
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = <axum::Router as tower::Service<Request<axum::body::Body>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        tower::Service::<Request<axum::body::Body>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let mut request = request.map(axum::body::Body::new);
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        self.router.call(request)
    }
}
