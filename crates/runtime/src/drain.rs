//! One drain for every long task a program starts.
//!
//! A task that can outlive the request or the connection that started it
//! (a git poller, a session, a queue's worker, a timer, a forwarded watch)
//! is spawned on the program's [`Drain`], never with a bare `tokio::spawn`:
//! when the signal fires each sees it and ends (or hands its work over),
//! and the program waits for all of them, within its grace period, before
//! it exits. Nothing is left running that nobody waits for.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::shutdown::{self, Shutdown, ShutdownTrigger};

/// The signal to stop and the tracker that the drain waits on: cloning
/// shares both.
#[derive(Clone, Debug)]
pub struct Drain {
    signal: Shutdown,
    tracker: TaskTracker,
}

impl Drain {
    /// A drain that starts when `signal` fires.
    pub fn new(signal: Shutdown) -> Self {
        Drain {
            signal,
            tracker: TaskTracker::new(),
        }
    }

    /// A drain started by the returned trigger (tests, embedded servers).
    pub fn manual() -> (ShutdownTrigger, Self) {
        let (trigger, signal) = shutdown::channel();
        (trigger, Drain::new(signal))
    }

    /// The signal, for a task's `select!`.
    pub fn signal(&self) -> Shutdown {
        self.signal.clone()
    }

    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        self.signal.is_signalled()
    }

    /// Runs `task` as one the drain waits for.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Tasks running now.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Waits until every task has ended, at most `within`; returns how many
    /// were still running then (0: all ended). Tasks may still be spawned
    /// while it waits (a worker handing over its last item); each is waited
    /// for too.
    pub async fn wait(&self, within: Duration) -> usize {
        self.tracker.close();
        match tokio::time::timeout(within, self.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tracker.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_drain_waits_for_tasks_that_see_the_signal_and_reports_those_that_do_not() {
        let (trigger, drain) = Drain::manual();
        let mut signal = drain.signal();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(1);
        drain.spawn(async move {
            signal.signalled().await;
            // Hands its last item over before it ends.
            let _ = done_tx.send("handed over").await;
        });
        drain.spawn(std::future::pending::<()>());
        assert_eq!(drain.running(), 2);
        trigger.trigger();
        assert!(drain.is_draining());
        assert_eq!(drain.wait(Duration::from_millis(200)).await, 1);
        assert_eq!(done_rx.recv().await, Some("handed over"));
    }

    #[tokio::test]
    async fn with_every_task_ended_the_drain_returns_at_once() {
        let (_trigger, drain) = Drain::manual();
        drain.spawn(async {});
        let started = std::time::Instant::now();
        assert_eq!(drain.wait(Duration::from_secs(10)).await, 0);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
