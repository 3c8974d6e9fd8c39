//! How agentk reaches kas: gRPC over TLS (`grpcs://host:port`), or the same
//! gRPC carried in a WebSocket (`wss://host[:port]/path`) for networks where
//! only HTTP/1.1 passes proxies. Either way the result is a tonic channel,
//! so the session code above it is the same.
//!
//! Every dial starts with [`connect_tcp`], the one place that tells "nothing
//! answers at kas's address" ([`DialError::Unreachable`]) from "kas answered
//! and the rest failed": the reconnect loops wait differently after each
//! (see [`crate::backoff`]). Every connection to kas, session or tunnel,
//! pings kas over HTTP/2 and ends within 10 s when kas falls silent
//! ([`tether_tunnel::KEEPALIVE_INTERVAL`]).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use tether_tunnel::websocket::{self, IntoClientRequest, WsIo};
use tokio::net::TcpStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// How long a dial may take: the TCP connection, and then each of TLS, the
/// HTTP/2 or WebSocket handshake and a tunnel's upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// While a TCP connection attempt goes unanswered, another starts this
/// often (see [`connect_tcp`]).
const CONNECT_ATTEMPT_EVERY: Duration = Duration::from_secs(1);

/// A parsed `--kas-address`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KasAddress {
    transport: Transport,
    host: String,
    port: u16,
    tls: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Transport {
    /// HTTP/2 straight on the connection; the URI tonic dials.
    Grpc { uri: String },
    /// A WebSocket at this URL.
    WebSocket { url: String },
}

impl KasAddress {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let (scheme, rest) = text.split_once("://").with_context(|| {
            format!("kas address {text:?} needs a scheme: grpcs://host:port or wss://host/path")
        })?;
        let (tls, websocket) = match scheme {
            "grpcs" => (true, false),
            "grpc" => (false, false),
            "wss" => (true, true),
            "ws" => (false, true),
            other => bail!(
                "kas address {text:?}: unknown scheme {other:?}; use grpcs://host:port or wss://host/path"
            ),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty() {
            bail!("kas address {text:?} has no host");
        }
        if !websocket && !path.trim_end_matches('/').is_empty() {
            bail!("kas address {text:?}: a gRPC address has no path; use grpcs://host:port");
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, port)) if !h.ends_with(':') => match port.parse::<u16>() {
                Ok(port) => (h, port),
                Err(_) => bail!("kas address {text:?} has an invalid port"),
            },
            _ if websocket => (authority, if tls { 443 } else { 80 }),
            _ => bail!("kas address {text:?} needs a port"),
        };
        let host = host.trim_matches(['[', ']']).to_owned();
        let transport = if websocket {
            Transport::WebSocket {
                url: format!(
                    "{scheme}://{authority}{}",
                    if path.is_empty() { "/" } else { path }
                ),
            }
        } else {
            Transport::Grpc {
                uri: format!("{}://{authority}", if tls { "https" } else { "http" }),
            }
        };
        Ok(KasAddress {
            transport,
            host,
            port,
            tls,
        })
    }

    /// Where kas is, for logs.
    pub fn display(&self) -> &str {
        match &self.transport {
            Transport::Grpc { uri } => uri,
            Transport::WebSocket { url } => url,
        }
    }

    /// Dials kas and returns the channel the session runs on.
    pub async fn connect(&self, ca_cert: Option<&Path>) -> Result<Channel, DialError> {
        let ca_pem = read_ca(ca_cert)?;
        let tcp = connect_tcp(&self.host, self.port).await?;
        let channel = match &self.transport {
            Transport::Grpc { uri } => {
                let mut endpoint = endpoint(uri.clone())?;
                if self.tls {
                    let tls = ClientTlsConfig::new().domain_name(self.host.clone());
                    let tls = match ca_pem {
                        Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
                        None => tls.with_webpki_roots(),
                    };
                    endpoint = endpoint.tls_config(tls).context("invalid TLS settings")?;
                }
                // tonic runs TLS (bounded by the connect timeout) and HTTP/2
                // on the connection already made.
                endpoint
                    .connect_with_connector(handed_over(TokioIo::new(tcp)))
                    .await
                    .with_context(|| format!("cannot connect to kas at {uri}"))?
            }
            Transport::WebSocket { url } => {
                let tls = match self.tls {
                    true => Some(tls_connector(ca_pem.as_deref())?),
                    false => None,
                };
                let stream = secure(tcp, &self.host, tls.as_ref()).await?;
                let ws = upgrade_to_websocket(url, stream)
                    .await
                    .with_context(|| format!("cannot connect to kas at {url}"))?;
                // The URI is only a label: the connection is made.
                endpoint("http://kas".to_owned())?
                    .connect_with_connector(handed_over(TokioIo::new(ws)))
                    .await
                    .with_context(|| format!("cannot connect to kas at {url}"))?
            }
        };
        Ok(channel)
    }

    /// Whether kas's address accepts a TCP connection now: the cheap probe
    /// that ends a reconnect wait early once a partition heals (see
    /// [`crate::backoff::wait_out`]). The connection is closed at once; the
    /// caller bounds how long it may take.
    pub async fn probe(&self) -> bool {
        TcpStream::connect((self.host.as_str(), self.port))
            .await
            .is_ok()
    }
}

/// Why kas could not be dialed.
#[derive(Debug)]
pub enum DialError {
    /// Nothing answered at kas's address: no TCP connection within the
    /// connect timeout, or refused, or no route, or the name did not
    /// resolve. The network or kas's host is down; a probe tells when it is
    /// back.
    Unreachable(anyhow::Error),
    /// kas refused the token (a tunnel's upgrade answered 401), with its
    /// reason. A session's refusal comes on its stream instead.
    Refused(String),
    /// kas's address answered, and then TLS, HTTP or the upgrade failed.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for DialError {
    fn from(e: anyhow::Error) -> Self {
        DialError::Failed(e)
    }
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialError::Unreachable(e) | DialError::Failed(e) => write!(f, "{e:#}"),
            DialError::Refused(reason) => write!(f, "kas refused the token: {reason}"),
        }
    }
}

impl std::error::Error for DialError {}

/// Whether `error` says the connection fell silent: its HTTP/2 keepalive
/// PING went unanswered (or TCP itself timed out). Like a dial that found
/// nothing at kas's address, this is the network, not kas's answer.
pub fn went_silent(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
            || error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// A connection of any transport.
pub type BoxedIo = Box<dyn IoStream>;

impl KasAddress {
    /// Dials kas and turns the connection into a tunnel (see
    /// `tether_tunnel`): an HTTP/1.1 upgrade to the tunnel protocol on the
    /// agent endpoint, or, for `wss://`, a WebSocket with the tunnel's
    /// subprotocol. On return the connection carries HTTP/2, agentk serving.
    pub async fn dial_tunnel(
        &self,
        ca_pem: Option<&[u8]>,
        token: &tether_credentials::Token,
    ) -> Result<BoxedIo, DialError> {
        let tls = match self.tls {
            true => Some(tls_connector(ca_pem)?),
            false => None,
        };
        let tcp = connect_tcp(&self.host, self.port).await?;
        let stream = secure(tcp, &self.host, tls.as_ref()).await?;
        let bearer = http::HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| anyhow::anyhow!("the token is not a valid header value"))?;
        match &self.transport {
            Transport::Grpc { uri } => {
                let authority = uri.split_once("://").map_or(uri.as_str(), |(_, a)| a);
                let request = http::Request::get(tether_tunnel::TUNNEL_PATH)
                    .header(http::header::HOST, authority)
                    .header(http::header::CONNECTION, "Upgrade")
                    .header(http::header::UPGRADE, tether_tunnel::UPGRADE_PROTOCOL)
                    .header(http::header::AUTHORIZATION, bearer)
                    .header(tether_tunnel::SERVES_HEADER, tether_tunnel::KUBERNETES_API)
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .map_err(anyhow::Error::from)?;
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .context("HTTP/1.1 handshake failed")?;
                tokio::spawn(connection.with_upgrades());
                let mut response =
                    tokio::time::timeout(CONNECT_TIMEOUT, sender.send_request(request))
                        .await
                        .context("tunnel upgrade timed out")?
                        .context("tunnel upgrade failed")?;
                match response.status() {
                    http::StatusCode::SWITCHING_PROTOCOLS => {
                        let upgraded = hyper::upgrade::on(&mut response)
                            .await
                            .context("tunnel upgrade failed")?;
                        Ok(Box::new(TokioIo::new(upgraded)))
                    }
                    status => {
                        use http_body_util::BodyExt;
                        let body = response.into_body().collect().await.map(|b| b.to_bytes());
                        let text = body
                            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                            .unwrap_or_default();
                        if status == http::StatusCode::UNAUTHORIZED {
                            Err(DialError::Refused(text))
                        } else {
                            Err(anyhow::anyhow!(
                                "kas answered {status} to the tunnel upgrade: {text}"
                            )
                            .into())
                        }
                    }
                }
            }
            Transport::WebSocket { url } => {
                let mut request = url
                    .as_str()
                    .into_client_request()
                    .context("invalid WebSocket URL")?;
                let h = request.headers_mut();
                h.insert(
                    "sec-websocket-protocol",
                    http::HeaderValue::from_static(tether_tunnel::WS_SUBPROTOCOL),
                );
                h.insert(http::header::AUTHORIZATION, bearer);
                h.insert(
                    tether_tunnel::SERVES_HEADER,
                    http::HeaderValue::from_static(tether_tunnel::KUBERNETES_API),
                );
                let result = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    websocket::client_async_with_config(request, stream, Some(websocket::config())),
                )
                .await
                .context("WebSocket upgrade timed out")?;
                match result {
                    Ok((ws, _)) => Ok(Box::new(WsIo::new(ws))),
                    Err(websocket::WsError::Http(response))
                        if response.status() == http::StatusCode::UNAUTHORIZED =>
                    {
                        let text = response
                            .body()
                            .as_deref()
                            .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                            .unwrap_or_default();
                        Err(DialError::Refused(text))
                    }
                    Err(e) => Err(anyhow::Error::from(e)
                        .context("WebSocket upgrade failed")
                        .into()),
                }
            }
        }
    }
}

/// A TCP connection to `host:port` within [`CONNECT_TIMEOUT`].
///
/// While an attempt goes unanswered, another starts every
/// [`CONNECT_ATTEMPT_EVERY`], and the first to connect wins. The kernel
/// resends a SYN lost to a partition only 1, 3 and 7 s after the first, so
/// an attempt begun while the network was dead would find it healed up to
/// 4 s late; a fresh one finds it at once. An attempt that fails outright
/// (refused, no route) ends the dial as soon as no other is pending.
async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, DialError> {
    let unreachable = |e: anyhow::Error| {
        DialError::Unreachable(e.context(format!("cannot reach kas at {host}:{port}")))
    };
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    let mut next_attempt = tokio::time::Instant::now();
    // Dropped on return, which aborts the attempts still pending.
    let mut attempts = tokio::task::JoinSet::new();
    loop {
        if next_attempt <= tokio::time::Instant::now() {
            let host = host.to_owned();
            attempts.spawn(async move { TcpStream::connect((host.as_str(), port)).await });
            next_attempt += CONNECT_ATTEMPT_EVERY;
        }
        tokio::select! {
            Some(done) = attempts.join_next() => match done {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    return Ok(tcp);
                }
                Ok(Err(e)) if attempts.is_empty() => {
                    return Err(unreachable(anyhow::Error::new(e).context("TCP connect failed")));
                }
                Ok(Err(_)) => {}
                Err(e) => return Err(unreachable(anyhow::Error::new(e).context("TCP connect failed"))),
            },
            _ = tokio::time::sleep_until(next_attempt), if next_attempt < deadline => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Err(unreachable(anyhow::anyhow!("TCP connect timed out after {CONNECT_TIMEOUT:?}")));
            }
        }
    }
}

/// TLS on `tcp` when a connector is given, within [`CONNECT_TIMEOUT`]: a
/// kas whose port accepts and then says nothing must not hold the dial.
async fn secure(
    tcp: TcpStream,
    host: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> anyhow::Result<BoxedIo> {
    Ok(match tls {
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .context("invalid server name")?;
            Box::new(
                tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .context("TLS handshake timed out")?
                    .context("TLS handshake failed")?,
            )
        }
        None => Box::new(tcp),
    })
}

/// A connector for tonic that hands over a connection already made, once:
/// each session dials its own, and a dropped connection ends the session
/// rather than being redialed under it.
fn handed_over<T>(
    io: T,
) -> impl tower::Service<
    http::Uri,
    Response = T,
    Error = std::io::Error,
    Future = std::future::Ready<Result<T, std::io::Error>>,
> + Send
+ 'static
where
    T: Send + 'static,
{
    let slot = Arc::new(Mutex::new(Some(io)));
    tower::service_fn(move |_: http::Uri| {
        let io = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        std::future::ready(io.ok_or_else(|| std::io::Error::other("the connection to kas ended")))
    })
}

fn endpoint(uri: String) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(uri)
        .context("invalid kas address")?
        .connect_timeout(CONNECT_TIMEOUT)
        // A kas behind a silent partition sends no FIN: a PING after 5 s
        // without a frame, unanswered for 5 s more, ends the session within
        // 10 s. Adaptive windows keep the manifests queued ahead of kas's
        // own PINGs to about a round trip, so a slow link busy with a big
        // set is not taken for a dead one.
        .http2_keep_alive_interval(tether_tunnel::KEEPALIVE_INTERVAL)
        .keep_alive_timeout(tether_tunnel::KEEPALIVE_TIMEOUT)
        .http2_adaptive_window(true))
}

/// The PEM of the CA file, if one is given.
pub fn read_ca(ca_cert: Option<&Path>) -> anyhow::Result<Option<Vec<u8>>> {
    ca_cert
        .map(|path| {
            std::fs::read(path).with_context(|| format!("cannot read CA file {}", path.display()))
        })
        .transpose()
}

/// rustls for the WebSocket: the private CA when given, else the public
/// roots; ALPN http/1.1, since the upgrade is an HTTP/1.1 request.
fn tls_connector(ca_pem: Option<&[u8]>) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.context("invalid CA certificate PEM")?)
                    .context("unusable CA certificate")?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

pub trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> IoStream for T {}

/// The session's WebSocket on `stream`, within [`CONNECT_TIMEOUT`].
async fn upgrade_to_websocket(url: &str, stream: BoxedIo) -> anyhow::Result<WsIo<BoxedIo>> {
    let mut request = url.into_client_request().context("invalid WebSocket URL")?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_static(websocket::SUBPROTOCOL),
    );
    let (ws, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        websocket::client_async_with_config(request, stream, Some(websocket::config())),
    )
    .await
    .context("WebSocket upgrade timed out")?
    .context("WebSocket upgrade failed")?;
    Ok(WsIo::new(ws))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::fd::AsRawFd;
    use std::time::Instant;

    #[tokio::test]
    async fn a_port_that_refuses_fails_the_dial_at_once_as_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let started = Instant::now();
        let error = connect_tcp("127.0.0.1", port)
            .await
            .expect_err("nothing listens there");
        assert!(matches!(error, DialError::Unreachable(_)), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_dial_begun_while_syns_go_unanswered_connects_soon_after_the_heal() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        // An accept queue shrunk to nothing and filled: Linux drops every
        // new SYN unanswered, as a blackhole route does.
        // SAFETY: listen(2) on a socket this test owns.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let _filler = std::net::TcpStream::connect(addr).expect("filler");
        let dial = tokio::spawn(async move { connect_tcp("127.0.0.1", addr.port()).await });
        // The partition's length.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!dial.is_finished(), "connected across a dead network");
        // SAFETY: as above.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 128) }, 0);
        let healed = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), dial)
            .await
            .expect("the dial ends")
            .expect("task")
            .expect("connected after the heal");
        let after = healed.elapsed();
        assert!(
            after < Duration::from_millis(1500),
            "{after:?} after the heal"
        );
    }

    #[test]
    fn parses_kas_addresses() {
        let a = KasAddress::parse("grpcs://kas.example.com:8152").expect("valid");
        assert_eq!(a.display(), "https://kas.example.com:8152");
        assert_eq!(
            (a.host.as_str(), a.port, a.tls),
            ("kas.example.com", 8152, true)
        );
        let b = KasAddress::parse("grpc://127.0.0.1:8152/").expect("valid");
        assert_eq!((b.display(), b.tls), ("http://127.0.0.1:8152", false));
        let v6 = KasAddress::parse("grpcs://[::1]:8152").expect("valid");
        assert_eq!(v6.host, "::1");
        let w = KasAddress::parse("wss://kas.example.com/-/kubernetes-agent/").expect("valid");
        assert_eq!(w.display(), "wss://kas.example.com/-/kubernetes-agent/");
        assert_eq!((w.port, w.tls), (443, true));
        let w = KasAddress::parse("wss://127.0.0.1:8152").expect("valid");
        assert_eq!((w.display(), w.port), ("wss://127.0.0.1:8152/", 8152));
        for bad in [
            "kas:8152",
            "https://kas:8152",
            "grpcs://kas",
            "grpcs://kas:8152/path",
            "wss://",
            "wss://kas:x/",
        ] {
            assert!(KasAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
