//! Serving HTTP on one of kas's listeners, plain or over TLS: a request's
//! headers must arrive within a bound, idle HTTP/2 connections are pinged
//! and dropped when dead, and at the drain signal every connection is
//! served as usual for a moment, then asked to finish.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use crate::Shutdown;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_rustls::TlsAcceptor;

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

/// Serves `service_for(peer)` on every connection to `listener` until the
/// drain signal, at most `cap` connections at once; over TLS when `tls` is
/// given.
pub async fn serve<F, S, B>(
    name: &'static str,
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    cap: usize,
    shutdown: Shutdown,
    service_for: F,
) where
    F: Fn(SocketAddr) -> S + Send + Sync + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service_for = std::sync::Arc::new(service_for);
    let linger = DRAIN_SETTLE + DRAIN_GRACE + Duration::from_secs(1);
    let drain = shutdown.clone();
    super::accept_until(name, listener, shutdown, linger, cap, move |tcp, peer| {
        let (tls, service_for, mut drain) = (tls.clone(), service_for.clone(), drain.clone());
        async move {
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
                    let stream = match super::handshake(&acceptor, tcp).await {
                        Ok(stream) => stream,
                        Err(e) => {
                            tracing::debug!(listener = name, peer = %peer, error = %e, "TLS handshake failed");
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
        }
    })
    .await;
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
