//! agentk's tunnels: a small pool of connections to kas on which kas sends
//! Kubernetes API requests (see `tether_tunnel`). Each is redialed with
//! backoff when it ends. HTTP/2 multiplexes any number of requests on one
//! tunnel, so the pool does not grow with load: its size is about surviving
//! the loss of one connection without a gap, and spreading load over kas's
//! connections.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_runtime::Shutdown;
use tether_tunnel::agent::Upstream;

use crate::backoff::Backoff;
use crate::connection::TokenSource;
use crate::transport::{KasAddress, TunnelDialError, read_ca};

/// A tunnel that lasted this long was healthy: back off afresh.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// What the tunnels need.
#[derive(Clone)]
pub struct TunnelOptions {
    pub kas_address: KasAddress,
    pub token: TokenSource,
    pub ca_cert: Option<PathBuf>,
    /// Tunnels to keep open.
    pub count: usize,
    pub upstream: Arc<dyn Upstream>,
}

/// Keeps `options.count` tunnels open until shutdown.
pub async fn run(options: TunnelOptions, shutdown: Shutdown) {
    let workers: Vec<_> = (0..options.count)
        .map(|i| tokio::spawn(keep_open(i, options.clone(), shutdown.clone())))
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
}

async fn keep_open(index: usize, options: TunnelOptions, mut shutdown: Shutdown) {
    let mut transport = Backoff::transport();
    let mut refused = Backoff::refused();
    loop {
        let started = Instant::now();
        let delay = match open(&options, shutdown.clone()).await {
            Ok(()) if shutdown.is_signalled() => return,
            Ok(()) => {
                tracing::info!(tunnel = index, "tunnel closed by kas");
                transport.next_delay()
            }
            Err(TunnelDialError::Refused(reason)) => {
                let delay = refused.next_delay();
                tracing::error!(tunnel = index, reason = %reason, retry_in = ?delay, "kas refused the tunnel");
                delay
            }
            Err(TunnelDialError::Failed(e)) => {
                let delay = transport.next_delay();
                tracing::warn!(tunnel = index, error = format!("{e:#}"), retry_in = ?delay, "tunnel failed");
                delay
            }
        };
        if started.elapsed() >= HEALTHY_AFTER {
            transport.reset();
            refused.reset();
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.signalled() => return,
        }
    }
}

/// Opens one tunnel and serves it until it ends.
async fn open(options: &TunnelOptions, mut shutdown: Shutdown) -> Result<(), TunnelDialError> {
    let token = options.token.read()?;
    let ca = read_ca(options.ca_cert.as_deref())?;
    let io = tokio::select! {
        io = options.kas_address.dial_tunnel(ca.as_deref(), &token) => io?,
        _ = shutdown.signalled() => return Ok(()),
    };
    tracing::debug!("tunnel open");
    let mut stop = shutdown.clone();
    tether_tunnel::agent::serve(io, options.upstream.clone(), async move {
        stop.signalled().await
    })
    .await
    .map_err(|e| TunnelDialError::Failed(anyhow::Error::from(e).context("tunnel connection")))
}
