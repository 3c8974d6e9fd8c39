//! Failed authentications, counted per source address and per token prefix,
//! so that guessing tokens over the agent endpoint is slow and visible.
//!
//! The counts never refuse a valid token: kas checks the token first (one
//! hash lookup) and consults these only for a failure, which it then
//! delays. Agents behind one NAT or ingress share an address; one of them
//! retrying a revoked token must not lock the others out.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures a key may have within [`WINDOW`] before its failures are slowed.
pub const MAX_FAILURES: u32 = 10;
/// How long failures count against a key.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Above this many tracked keys, expired records are swept on insert, so
/// that a scan from many addresses cannot grow memory without bound; if
/// that is not enough, the oldest half goes.
const SWEEP_ABOVE: usize = 10_000;

/// Counts of recent failures by key.
#[derive(Debug)]
struct Counts<K> {
    entries: HashMap<K, (u32, Instant)>,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    fn new() -> Self {
        Counts {
            entries: HashMap::new(),
        }
    }

    /// Counts one failure; returns whether `key` is now over the limit.
    fn record(&mut self, key: K, now: Instant) -> bool {
        if self.entries.len() > SWEEP_ABOVE {
            self.entries
                .retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
            if self.entries.len() > SWEEP_ABOVE {
                let mut ages: Vec<Instant> = self.entries.values().map(|(_, t)| *t).collect();
                ages.sort();
                let cut = ages[ages.len() / 2];
                self.entries.retain(|_, (_, since)| *since > cut);
            }
        }
        let entry = self.entries.entry(key).or_insert((0, now));
        if now.duration_since(entry.1) >= WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
        entry.0 > MAX_FAILURES
    }
}

/// Failures by source address and by token prefix.
pub struct FailedAuthLimiter {
    by_address: Mutex<Counts<IpAddr>>,
    by_prefix: Mutex<Counts<String>>,
}

impl Default for FailedAuthLimiter {
    fn default() -> Self {
        FailedAuthLimiter {
            by_address: Mutex::new(Counts::new()),
            by_prefix: Mutex::new(Counts::new()),
        }
    }
}

impl std::fmt::Debug for FailedAuthLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailedAuthLimiter").finish_non_exhaustive()
    }
}

impl FailedAuthLimiter {
    /// Counts a failed authentication from `ip` with a token beginning
    /// `prefix` (if one was presented); returns whether either is over the
    /// limit, so the failure should be slowed down.
    pub fn record_failure(&self, ip: Option<IpAddr>, prefix: Option<&str>, now: Instant) -> bool {
        let by_address = ip.is_some_and(|ip| lock(&self.by_address).record(ip, now));
        let by_prefix = prefix.is_some_and(|p| lock(&self.by_prefix).record(p.to_owned(), now));
        by_address || by_prefix
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_limit_are_flagged_until_the_window_passes() {
        let limiter = FailedAuthLimiter::default();
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        let other: IpAddr = "10.9.9.9".parse().expect("ip");
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert!(!limiter.record_failure(Some(ip), None, t0), "failure {i}");
        }
        assert!(limiter.record_failure(Some(ip), None, t0 + Duration::from_secs(10)));
        assert!(
            !limiter.record_failure(Some(other), None, t0),
            "other addresses are not affected"
        );
        assert!(
            !limiter.record_failure(Some(ip), None, t0 + WINDOW + Duration::from_secs(10)),
            "the window passed"
        );
    }

    #[test]
    fn one_token_prefix_from_many_addresses_is_flagged() {
        let limiter = FailedAuthLimiter::default();
        let t0 = Instant::now();
        let mut flagged = false;
        for i in 0..=MAX_FAILURES {
            let ip: IpAddr = format!("10.0.0.{i}").parse().expect("ip");
            flagged = limiter.record_failure(Some(ip), Some("tthr_agent_AbCd"), t0);
        }
        assert!(flagged);
    }

    #[test]
    fn memory_stays_bounded_under_a_scan() {
        let limiter = FailedAuthLimiter::default();
        let t0 = Instant::now();
        for i in 0..(3 * SWEEP_ABOVE as u32) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            limiter.record_failure(Some(ip), None, t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(lock(&limiter.by_address).entries.len() <= SWEEP_ABOVE + 1);
    }
}
