//! Renders by content: a key covers everything a render reads (commit,
//! what the config asks, tool versions, the cluster's version), so one
//! render serves every agent at that commit. Concurrent asks for one key
//! wait for the one render under way. A failure is kept briefly (a fix
//! needs a new commit anyway, but a fetch that failed may work soon), a
//! success until evicted by newer keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::output::{RenderError, Rendered};

type Outcome = Result<Arc<Rendered>, RenderError>;

struct Entry {
    cell: Arc<OnceCell<Outcome>>,
    used: Instant,
    finished: Option<Instant>,
}

/// Renders by key.
pub struct Cache {
    entries: Mutex<HashMap<String, Entry>>,
    capacity: usize,
    failure_ttl: Duration,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cache {
    pub fn new(capacity: usize, failure_ttl: Duration) -> Self {
        Cache {
            entries: Mutex::default(),
            capacity: capacity.max(1),
            failure_ttl,
        }
    }

    /// The outcome for `key`, rendering with `render` if no fresh one is
    /// kept or under way; and whether it was kept (a hit).
    pub async fn get_or_render<F, Fut>(&self, key: &str, render: F) -> (Outcome, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let cell = {
            let mut entries = lock(&self.entries);
            let expired = entries.get(key).is_some_and(|e| {
                matches!(e.cell.get(), Some(Err(_)))
                    && e.finished
                        .is_some_and(|at| at.elapsed() >= self.failure_ttl)
            });
            if expired {
                entries.remove(key);
            }
            if !entries.contains_key(key) && entries.len() >= self.capacity {
                // The least recently used goes; one under way stays.
                if let Some(oldest) = entries
                    .iter()
                    .filter(|(_, e)| e.cell.initialized())
                    .min_by_key(|(_, e)| e.used)
                    .map(|(k, _)| k.clone())
                {
                    entries.remove(&oldest);
                }
            }
            let entry = entries.entry(key.to_owned()).or_insert_with(|| Entry {
                cell: Arc::new(OnceCell::new()),
                used: Instant::now(),
                finished: None,
            });
            entry.used = Instant::now();
            entry.cell.clone()
        };
        let mut rendered_here = false;
        let outcome = cell
            .get_or_init(|| async {
                rendered_here = true;
                render().await
            })
            .await
            .clone();
        if rendered_here && let Some(entry) = lock(&self.entries).get_mut(key) {
            entry.finished = Some(Instant::now());
        }
        (outcome, !rendered_here)
    }

    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ok() -> Outcome {
        Ok(Arc::new(Rendered::default()))
    }

    #[tokio::test]
    async fn one_render_serves_concurrent_asks_and_failures_expire() {
        let cache = Arc::new(Cache::new(8, Duration::from_millis(100)));
        let renders = Arc::new(AtomicUsize::new(0));
        let mut asks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (cache, renders) = (cache.clone(), renders.clone());
            asks.spawn(async move {
                cache
                    .get_or_render("k", || async {
                        renders.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        ok()
                    })
                    .await
            });
        }
        let mut hits = 0;
        while let Some(done) = asks.join_next().await {
            let (outcome, hit) = done.expect("task");
            assert!(outcome.is_ok());
            hits += usize::from(hit);
        }
        assert_eq!(renders.load(Ordering::SeqCst), 1);
        assert_eq!(hits, 49);

        let failing = || async {
            Err(RenderError {
                what: "helm chart x".into(),
                file: None,
                message: "boom".into(),
            })
        };
        assert!(cache.get_or_render("bad", failing).await.0.is_err());
        let (again, hit) = cache.get_or_render("bad", || async { ok() }).await;
        assert!(again.is_err() && hit, "remembered for a while");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (later, hit) = cache.get_or_render("bad", || async { ok() }).await;
        assert!(later.is_ok() && !hit, "then rendered again");
    }

    #[tokio::test]
    async fn the_least_recently_used_goes_past_capacity() {
        let cache = Cache::new(2, Duration::from_secs(60));
        for key in ["a", "b", "a", "c"] {
            let _ = cache.get_or_render(key, || async { ok() }).await;
        }
        assert_eq!(cache.len(), 2);
        assert!(
            cache.get_or_render("a", || async { ok() }).await.1,
            "a was used last"
        );
        assert!(
            !cache.get_or_render("b", || async { ok() }).await.1,
            "b was evicted"
        );
    }
}
