//! Serving HTTP on one of kas's listeners, plain or over TLS, with the
//! limits every listener needs: a TLS handshake and a request's headers
//! must arrive within a bound (a client that opens connections and stalls,
//! slowloris, would otherwise hold file descriptors forever), idle HTTP/2
//! connections are pinged and dropped when dead, and SIGTERM drains.
//!
//! The REST API, the admin listener and the Kubernetes API proxy share this
//! loop; the agent endpoint has its own (it tells gRPC from WebSocket
//! upgrades by ALPN) with the same bounds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tether_runtime::Shutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Time a client has for its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's headers, from its first byte on a
/// new connection or its keep-alive wait on an old one.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may run on after the drain signal.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// How long a connection is served as usual after the drain signal, before
/// it is asked to finish: one accepted just before the listener closed
/// (a load balancer's, say) has not sent its request yet, and closing it
/// as idle would fail that request.
const DRAIN_SETTLE: Duration = Duration::from_millis(1000);

/// Serves `service_for(peer)` on every connection to `addr` until the drain
/// signal; over TLS when `tls` is given.
pub async fn serve<F, S, B>(
    name: &'static str,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    shutdown: Shutdown,
    service_for: F,
) -> anyhow::Result<()>
where
    F: Fn(SocketAddr) -> S + Send + Sync + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {name} address {addr}"))?;
    let local = listener
        .local_addr()
        .context("listener has no local address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(listener = name, addr = %local, scheme, "listening");
    let service_for = std::sync::Arc::new(service_for);
    let mut stop = shutdown.clone();
    // Every connection's task, so that a stop waits for in-flight requests
    // (each connection drains itself within DRAIN_GRACE) before returning.
    let mut connections = tokio::task::JoinSet::new();
    // After the drain signal, the connections already in the backlog are
    // still accepted and served (the load balancer counts them as
    // connected); then the listener closes.
    let mut stopping = false;
    loop {
        let accepted = if stopping {
            match tokio::time::timeout(Duration::ZERO, listener.accept()).await {
                Ok(accepted) => accepted,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                _ = stop.signalled() => {
                    stopping = true;
                    continue;
                }
                // Reap finished connections as they end: the set stays as
                // large as what is open.
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = listener.accept() => accepted,
            }
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(_) if stopping => break,
            Err(e) => {
                // Out of file descriptors, usually: wait, do not spin.
                tracing::warn!(listener = name, error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (tls, service_for, mut drain) = (tls.clone(), service_for.clone(), shutdown.clone());
        connections.spawn(async move {
            let _ = tcp.set_nodelay(true);
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10));
            let service = service_for(peer);
            let result = match tls {
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(stream)) => stream,
                        _ => {
                            tracing::debug!(listener = name, peer = %peer, "TLS handshake failed or timed out");
                            return;
                        }
                    };
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    drive(connection, &mut drain).await
                }
                None => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                    drive(connection, &mut drain).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(listener = name, peer = %peer, error = %e, "connection ended");
            }
        });
    }
    // Closed first: a load balancer's next connection is refused at once
    // and goes to another replica, instead of waiting in the backlog of a
    // process that will never accept it.
    drop(listener);
    let in_flight = connections.len();
    let finished =
        tokio::time::timeout(DRAIN_SETTLE + DRAIN_GRACE + Duration::from_secs(1), async {
            while connections.join_next().await.is_some() {}
        })
        .await;
    tracing::info!(
        listener = name,
        connections = in_flight,
        drained = finished.is_ok(),
        "stopped"
    );
    Ok(())
}

/// Runs a connection to its end, or drains it gracefully on shutdown.
async fn drive<C, E>(connection: C, drain: &mut Shutdown) -> Result<(), E>
where
    C: std::future::Future<Output = Result<(), E>> + GracefulConnection,
{
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        _ = drain.signalled() => {
            if let Ok(result) = tokio::time::timeout(DRAIN_SETTLE, connection.as_mut()).await {
                return result;
            }
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_GRACE, connection).await;
            Ok(())
        }
    }
}

/// A hyper connection that can be asked to finish gracefully.
pub trait GracefulConnection {
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E> GracefulConnection
    for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: http_body::Body + Send + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        hyper_util::server::conn::auto::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// An axum router as the per-connection service of [`serve`].
pub fn router_service(
    router: axum::Router,
) -> impl Fn(SocketAddr) -> hyper_util::service::TowerToHyperService<axum::Router> + Send + Sync + 'static
{
    move |_peer| hyper_util::service::TowerToHyperService::new(router.clone())
}
