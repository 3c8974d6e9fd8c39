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

/// The client for what a tenant names: charts here, image registries in
/// tether-images.
pub type Https = Client<hyper_rustls::HttpsConnector<Connector>, Empty<Bytes>>;

/// Why a GET of a chart repository's or a registry's URL failed; each
/// names the URL.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("{url}: {source}")]
    Uri {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("{url}: {source}")]
    Request {
        url: String,
        #[source]
        source: http::Error,
    },
    /// No connection: the network, TLS, or the egress policy (then the
    /// chain holds an [`crate::egress::Refusal`]). The message is the whole
    /// chain, since hyper's own says only "client error (Connect)".
    #[error("{url}: {}", crate::egress::error_chain(source))]
    Connect {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{url} answered {status}")]
    Status {
        url: String,
        status: http::StatusCode,
    },
    #[error("{url}: {source} (more than {limit} bytes?)")]
    Body {
        url: String,
        limit: usize,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{url} did not answer within {after:?}")]
    Timeout { url: String, after: Duration },
}

/// HTTP/1.1 and HTTP/2, TLS with the web's roots, every connection (a
/// redirect's and a token realm's too) decided by `egress` on the address
/// it goes to; plain HTTP only where the policy allows the address.
pub fn https(egress: Egress) -> Https {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(Connector::new(egress));
    Client::builder(TokioExecutor::new()).build(connector)
}
