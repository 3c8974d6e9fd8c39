//! The HTTP client kas fetches charts with (from chart repositories and
//! OCI registries), and the bounds on what it fetches.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::egress::{Connector, Egress};

/// A chart archive larger than this is refused.
pub(crate) const MAX_CHART_BYTES: usize = 16 << 20;
/// One request's deadline.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) type Https = Client<hyper_rustls::HttpsConnector<Connector>, Empty<Bytes>>;

/// HTTP/1.1 and HTTP/2, TLS with the web's roots, every connection (a
/// redirect's and a token realm's too) decided by `egress` on the address
/// it goes to; plain HTTP only where the policy allows the address.
pub(crate) fn https(egress: Egress) -> Https {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(Connector::new(egress));
    Client::builder(TokioExecutor::new()).build(connector)
}
