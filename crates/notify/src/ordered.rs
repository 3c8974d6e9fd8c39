//! One bounded queue and one task per key, for what kas sends out in order
//! without holding anything up (commit statuses per project, notifications
//! per destination): a full queue or too many keys drop the item, and a
//! task that ended after being idle is started again by the next item.
//!
//! When the program drains, a key's task takes what is queued already and
//! sends it before it ends ([`Worker`]); the drain waits for it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tether_runtime::Shutdown;
use tokio::sync::mpsc;

/// The receiving end of one key's queue, as its task reads it.
#[derive(Debug)]
pub struct Worker<T> {
    rx: mpsc::Receiver<T>,
    signal: Shutdown,
    idle: Duration,
    draining: bool,
}

impl<T> Worker<T> {
    /// A task reading `rx` that ends after `idle` without an item, or once
    /// `signal` fired and the queue is empty.
    pub fn new(rx: mpsc::Receiver<T>, signal: Shutdown, idle: Duration) -> Self {
        Worker {
            rx,
            signal,
            idle,
            draining: false,
        }
    }

    /// The next item, or `None` when the task should end. Once the drain
    /// started the queue takes nothing new, and what it holds still comes.
    pub async fn next(&mut self) -> Option<T> {
        if !self.draining {
            tokio::select! {
                biased;
                item = tokio::time::timeout(self.idle, self.rx.recv()) => return item.ok().flatten(),
                _ = self.signal.signalled() => {
                    self.draining = true;
                    self.rx.close();
                }
            }
        }
        self.rx.recv().await
    }

    /// Whether the drain started: the task sends with fewer, shorter
    /// retries, to finish within it.
    pub fn draining(&self) -> bool {
        self.draining
    }
}

/// Why an item was dropped.
#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    /// The key's queue is full.
    QueueFull,
    /// There are already `max_keys` keys with a live task.
    TooManyKeys,
}

/// One bounded queue and task per key (a project, a destination).
pub struct KeyedQueues<T> {
    queues: Mutex<HashMap<String, mpsc::Sender<T>>>,
    queue: usize,
    max_keys: usize,
}

impl<T> std::fmt::Debug for KeyedQueues<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedQueues")
            .field("queue", &self.queue)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl<T> KeyedQueues<T> {
    pub fn new(queue: usize, max_keys: usize) -> Self {
        KeyedQueues {
            queues: Mutex::default(),
            queue,
            max_keys,
        }
    }

    /// Queues `item` for `key`, starting its task with `start` (given the
    /// receiving end) when none runs. Never waits.
    pub fn push(
        &self,
        key: &str,
        item: T,
        start: impl FnOnce(mpsc::Receiver<T>),
    ) -> Result<(), Dropped> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.retain(|_, tx| !tx.is_closed());
        let tx = match queues.get(key) {
            Some(tx) => tx.clone(),
            None if queues.len() >= self.max_keys => return Err(Dropped::TooManyKeys),
            None => {
                let (tx, rx) = mpsc::channel(self.queue);
                start(rx);
                queues.insert(key.to_owned(), tx.clone());
                tx
            }
        };
        tx.try_send(item).map_err(|_| Dropped::QueueFull)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_hands_over_what_was_queued_when_the_drain_starts() {
        let (trigger, signal) = tether_runtime::shutdown::channel();
        let (tx, rx) = mpsc::channel(4);
        let mut worker = Worker::new(rx, signal, Duration::from_secs(3600));
        tx.try_send(1).expect("queued");
        assert_eq!(worker.next().await, Some(1));
        tx.try_send(2).expect("queued");
        tx.try_send(3).expect("queued");
        trigger.trigger();
        // Queued before the drain: still delivered, in order.
        assert_eq!(worker.next().await, Some(2));
        assert_eq!(worker.next().await, Some(3));
        assert_eq!(worker.next().await, None);
        assert!(worker.draining());
        // Nothing new is taken once draining.
        assert!(tx.try_send(4).is_err());
    }

    #[test]
    fn items_are_kept_per_key_and_bounded() {
        let queues = KeyedQueues::new(2, 2);
        let mut receivers = Vec::new();
        for item in 0..3 {
            let pushed = queues.push("a", item, |rx| receivers.push(rx));
            assert_eq!(pushed.is_ok(), item < 2, "{item}");
        }
        assert_eq!(receivers.len(), 1, "one task for the key");
        assert!(queues.push("b", 0, |rx| receivers.push(rx)).is_ok());
        assert_eq!(queues.push("c", 0, |_| {}), Err(Dropped::TooManyKeys));
        // A task that ended frees its key; the next item starts another.
        receivers.remove(0);
        assert!(queues.push("c", 0, |rx| receivers.push(rx)).is_ok());
    }
}
