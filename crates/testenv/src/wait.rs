//! Waiting for a condition with a deadline, never for a fixed time.
//!
//! Tests and the cluster start-up poll a cheap check at a short interval until
//! it holds or the deadline passes; the error then says what was awaited and
//! what was last seen, which is what a failing CI log needs.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

/// Interval between two checks. Short, because every check here is a cheap
/// local API call and start-up time is what tests wait on most.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Calls `check` until it returns `Ok(Some(value))`, and returns that value.
///
/// `Ok(None)` means "not yet"; `Err(e)` also means "not yet" (an API server
/// that is still starting answers with errors), and the last such error is
/// reported if the deadline passes.
pub async fn wait_until<T, E, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<Option<T>, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("no check completed");
    loop {
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(Ok(Some(value))) => return Ok(value),
            Ok(Ok(None)) => last = "condition not met yet".into(),
            Ok(Err(e)) => last = e.to_string(),
            Err(_elapsed) => {}
        }
        if tokio::time::Instant::now() + POLL_INTERVAL > deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let calls = AtomicU32::new(0);
        let got = wait_until("third call", Duration::from_secs(5), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, String>((n == 3).then_some(n))
        })
        .await
        .expect("condition holds on the third call");
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn times_out_with_the_last_error() {
        let err = wait_until("never", Duration::from_millis(300), || async {
            Err::<Option<()>, _>("still broken")
        })
        .await
        .expect_err("condition never holds");
        let msg = err.to_string();
        assert!(
            msg.contains("never") && msg.contains("still broken"),
            "{msg}"
        );
    }
}
