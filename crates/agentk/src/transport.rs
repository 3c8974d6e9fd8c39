//! How agentk reaches kas: gRPC over TLS (`grpcs://host:port`), or the same
//! gRPC carried in a WebSocket (`wss://host[:port]/path`) for networks where
//! only HTTP/1.1 passes proxies. Either way the result is a tonic channel,
//! so the session code above it is the same.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use tether_proto::websocket::{self, IntoClientRequest, WsIo};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    pub async fn connect(&self, ca_cert: Option<&Path>) -> anyhow::Result<Channel> {
        let ca_pem = read_ca(ca_cert)?;
        match &self.transport {
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
                endpoint
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to kas at {uri}"))
            }
            Transport::WebSocket { url } => {
                let tls = match self.tls {
                    true => Some(tls_connector(ca_pem.as_deref())?),
                    false => None,
                };
                let dial = Arc::new(WsDial {
                    url: url.clone(),
                    host: self.host.clone(),
                    port: self.port,
                    tls,
                });
                // The URI is only a label: the connector dials the WebSocket.
                endpoint("http://kas".to_owned())?
                    .connect_with_connector(tower::service_fn(move |_| {
                        let dial = dial.clone();
                        async move {
                            dial.connect()
                                .await
                                .map_err(|e| std::io::Error::other(format!("{e:#}")))
                        }
                    }))
                    .await
                    .with_context(|| format!("cannot connect to kas at {url}"))
            }
        }
    }
}

/// Why a tunnel could not be opened.
#[derive(Debug)]
pub enum TunnelDialError {
    /// kas refused the token (401), with its reason.
    Refused(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for TunnelDialError {
    fn from(e: anyhow::Error) -> Self {
        TunnelDialError::Failed(e)
    }
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
    ) -> Result<BoxedIo, TunnelDialError> {
        let tls = match self.tls {
            true => Some(tls_connector(ca_pem)?),
            false => None,
        };
        let stream = dial(&self.host, self.port, tls.as_ref()).await?;
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
                            Err(TunnelDialError::Refused(text))
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
                        Err(TunnelDialError::Refused(text))
                    }
                    Err(e) => Err(anyhow::Error::from(e)
                        .context("WebSocket upgrade failed")
                        .into()),
                }
            }
        }
    }
}

/// TCP, then TLS when a connector is given.
async fn dial(
    host: &str,
    port: u16,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> anyhow::Result<BoxedIo> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .context("TCP connect timed out")?
    .context("TCP connect failed")?;
    let _ = tcp.set_nodelay(true);
    Ok(match tls {
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .context("invalid server name")?;
            Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .context("TLS handshake failed")?,
            )
        }
        None => Box::new(tcp),
    })
}

fn endpoint(uri: String) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(uri)
        .context("invalid kas address")?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10)))
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

struct WsDial {
    url: String,
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
}

type WsStream = WsIo<Box<dyn IoStream>>;

pub trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> IoStream for T {}

impl WsDial {
    async fn connect(&self) -> anyhow::Result<TokioIo<WsStream>> {
        let stream = dial(&self.host, self.port, self.tls.as_ref()).await?;
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .context("invalid WebSocket URL")?;
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
        Ok(TokioIo::new(WsIo::new(ws)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
