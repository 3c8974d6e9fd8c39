//! Shutdown on SIGINT or SIGTERM.
//!
//! The first signal starts a graceful drain: every task holding a
//! [`Shutdown`] clone sees [`Shutdown::signalled`] complete and winds down. A
//! second signal means the operator has lost patience, so the process exits at
//! once with status 130, without waiting for the drain.

use tokio::sync::watch;

/// A cloneable drain signal; each clone observes the same shutdown.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The sending side of [`Shutdown`], for programs and tests that decide to
/// stop by themselves rather than on a signal.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// Creates a linked trigger and drain signal.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

// === impl Shutdown ===

impl Shutdown {
    /// A drain signal fired by the first SIGINT or SIGTERM. A second signal
    /// exits the process. Must be called inside a tokio runtime.
    pub fn on_signal() -> Self {
        let (trigger, shutdown) = channel();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received, draining (signal again to force)");
            trigger.trigger();
            wait_for_signal().await;
            tracing::warn!("second shutdown signal, exiting now");
            std::process::exit(130);
        });
        shutdown
    }

    /// Completes once shutdown has been triggered (at once if it already was).
    pub async fn signalled(&mut self) {
        // An error means every trigger is gone, which can only happen once the
        // owner has been dropped: treat that as shutdown too.
        let _ = self.rx.wait_for(|fired| *fired).await;
    }

    /// Whether shutdown has been triggered.
    pub fn is_signalled(&self) -> bool {
        *self.rx.borrow()
    }
}

// === impl ShutdownTrigger ===

impl ShutdownTrigger {
    /// Starts the drain.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can still be stopped with
        // SIGKILL; never resolve so that nothing drains by mistake.
        tracing::error!("cannot install signal handlers; only SIGKILL will stop this process");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_observes_the_trigger() {
        let (trigger, shutdown) = channel();
        let mut a = shutdown.clone();
        let mut b = shutdown;
        assert!(!a.is_signalled());
        trigger.trigger();
        a.signalled().await;
        b.signalled().await;
        assert!(b.is_signalled());
    }

    #[tokio::test]
    async fn dropping_the_trigger_counts_as_shutdown() {
        let (trigger, mut shutdown) = channel();
        drop(trigger);
        // Must complete rather than hang.
        shutdown.signalled().await;
    }
}
