//! agentk's tunnels: a small pool of connections to kas on which kas sends
//! Kubernetes API requests (see `tether_tunnel`). Each is redialed with
//! backoff when it ends, as the session is (sooner once a partition heals;
//! see [`crate::backoff`]). HTTP/2 multiplexes any number of requests on one
//! tunnel, so the pool does not grow with load: its size is about surviving
//! the loss of one connection without a gap, and spreading load over kas's
//! connections.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tether_runtime::Shutdown;
use tether_tunnel::agent::Upstream;

use crate::backoff::{self, Ended, Reconnect};
use crate::connection::TokenSource;
use crate::transport::{DialError, KasAddress, read_ca, went_silent};

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
    let mut reconnect = Reconnect::default();
    loop {
        let started = Instant::now();
        let result = open(&options, shutdown.clone()).await;
        let lasted = started.elapsed();
        let wait = match result {
            Ok(()) if shutdown.is_signalled() => return,
            Ok(()) => {
                let wait = reconnect.wait_after(Ended::Failed, lasted);
                tracing::info!(tunnel = index, retry_in = ?wait.at_most(), "tunnel closed by kas");
                wait
            }
            Err(DialError::Refused(reason)) => {
                let wait = reconnect.wait_after(Ended::Refused, lasted);
                tracing::error!(tunnel = index, reason = %reason, retry_in = ?wait.at_most(), "kas refused the tunnel");
                wait
            }
            Err(DialError::Unreachable(e)) => {
                let wait = reconnect.wait_after(Ended::Unreachable, lasted);
                tracing::warn!(tunnel = index, error = format!("{e:#}"), retry_in = ?wait.at_most(), "kas is unreachable; retrying the tunnel as soon as its address answers");
                wait
            }
            Err(DialError::Failed(e)) => {
                let wait = reconnect.wait_after(Ended::Failed, lasted);
                tracing::warn!(tunnel = index, error = format!("{e:#}"), retry_in = ?wait.at_most(), "tunnel failed");
                wait
            }
        };
        tokio::select! {
            _ = backoff::wait_out(wait, || options.kas_address.probe()) => {}
            _ = shutdown.signalled() => return,
        }
    }
}

/// Opens one tunnel and serves it until it ends.
async fn open(options: &TunnelOptions, mut shutdown: Shutdown) -> Result<(), DialError> {
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
    .map_err(|e| {
        // A kas gone silent (its PINGs unanswered) is the network.
        let silent = went_silent(&e);
        let e = anyhow::Error::from(e).context("tunnel connection");
        match silent {
            true => DialError::Unreachable(e.context("kas went silent")),
            false => DialError::Failed(e),
        }
    })
}
