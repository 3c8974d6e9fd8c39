//! A limit on failed authentications per source address, so that guessing
//! tokens over the agent endpoint is slow and visible. Successful agents are
//! never limited: success clears the address's record.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures an address may have within [`WINDOW`] before it is refused.
pub const MAX_FAILURES: u32 = 10;
/// How long failures count against an address.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Above this many tracked addresses, expired records are swept on insert, so
/// that a scan from many addresses cannot grow memory without bound.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Default)]
pub struct FailedAuthLimiter {
    entries: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl std::fmt::Debug for FailedAuthLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailedAuthLimiter").finish_non_exhaustive()
    }
}

impl FailedAuthLimiter {
    /// `Err(retry_after)` while `ip` is over the limit.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        match self.lock().get(&ip) {
            Some(&(count, since))
                if count >= MAX_FAILURES && now.duration_since(since) < WINDOW =>
            {
                Err(WINDOW - now.duration_since(since))
            }
            _ => Ok(()),
        }
    }

    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut entries = self.lock();
        if entries.len() > SWEEP_ABOVE {
            entries.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
        }
        let entry = entries.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    pub fn record_success(&self, ip: IpAddr) {
        self.lock().remove(&ip);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_limit_until_the_window_passes() {
        let limiter = FailedAuthLimiter::default();
        let (ip, other) = (
            "10.1.2.3".parse().expect("ip"),
            "10.9.9.9".parse().expect("ip"),
        );
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(limiter.check(ip, t0).is_ok());
            limiter.record_failure(ip, t0);
        }
        let retry = limiter
            .check(ip, t0 + Duration::from_secs(10))
            .expect_err("over the limit");
        assert_eq!(retry, Duration::from_secs(50));
        assert!(
            limiter.check(other, t0).is_ok(),
            "other addresses are not affected"
        );
        assert!(limiter.check(ip, t0 + WINDOW).is_ok(), "the window passed");
    }

    #[test]
    fn success_clears_the_record() {
        let limiter = FailedAuthLimiter::default();
        let ip = "10.1.2.3".parse().expect("ip");
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            limiter.record_failure(ip, t0);
        }
        limiter.record_success(ip);
        assert!(limiter.check(ip, t0).is_ok());
    }
}
