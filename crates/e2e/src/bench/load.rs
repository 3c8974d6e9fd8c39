//! The load client of the proxy benchmarks: HTTP/2 over TLS, like
//! client-go, from a number of workers for a while.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// An HTTP/2-only HTTPS client.
pub type Https = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// TLS trusting only the CA in the PEM file `ca`.
pub fn tls_trusting(ca: &std::path::Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA") {
        roots.add(cert.expect("cert")).expect("root");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// An HTTP/2 client over `tls` (its ALPN is set here).
pub fn h2_client(mut tls: rustls::ClientConfig) -> Https {
    tls.alpn_protocols.clear();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .build();
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector)
}

/// One kind of request to send again and again.
#[derive(Clone, Debug)]
pub struct Get {
    pub uri: String,
    pub authorization: Option<String>,
    /// Ask for a gzip-compressed response, as client-go does by default.
    pub gzip: bool,
}

/// What a load run measured.
#[derive(Debug)]
pub struct Run {
    /// Every request's latency, sorted.
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
    /// Response body bytes received.
    pub bytes: u64,
}

impl Run {
    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends `get` from `concurrency` workers for `duration`; every answer
/// must be a success.
pub async fn load(client: &Https, get: &Get, concurrency: usize, duration: Duration) -> Run {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, get) = (client.clone(), get.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut bytes = 0u64;
            while Instant::now() < deadline {
                let mut request = http::Request::get(&get.uri).header("accept", "application/json");
                if get.gzip {
                    request = request.header("accept-encoding", "gzip");
                }
                if let Some(auth) = &get.authorization {
                    request = request.header("authorization", auth);
                }
                let request = request.body(Empty::new()).expect("request");
                let sent = Instant::now();
                let response = client.request(request).await.expect("response");
                assert!(
                    response.status().is_success(),
                    "{}: {}",
                    get.uri,
                    response.status()
                );
                let body = response.into_body().collect().await.expect("body");
                bytes += body.to_bytes().len() as u64;
                latencies.push(sent.elapsed());
            }
            (latencies, bytes)
        });
    }
    let mut run = Run {
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
        bytes: 0,
    };
    while let Some(done) = workers.join_next().await {
        let (latencies, bytes) = done.expect("worker");
        run.latencies.extend(latencies);
        run.bytes += bytes;
    }
    run.elapsed = started.elapsed();
    run.latencies.sort();
    run
}
