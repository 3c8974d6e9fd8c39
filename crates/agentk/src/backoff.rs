//! The waits between attempts to reach kas (a session, or a tunnel).
//!
//! Delays grow exponentially to a cap, with jitter, so that a fleet of agents
//! that lost kas at the same moment does not return at the same moment. A
//! refused token backs off longer and never early. And after a failure of
//! the network itself ([`Ended::Unreachable`]) a cheap probe of kas's
//! address ends the wait as soon as the network is back, so that an agent
//! returns within about 2 s of a partition healing instead of sleeping out a
//! backoff that grew while the network was dead.
//!
//! Invariant: only an unreachable address is probed. A kas that answers and
//! fails, refuses, or drains is never hurried by a probe.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Delays between reconnects, growing from `min` to `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    /// Jitter covers only the upper half of each step instead of all of it:
    /// used after a refusal, where retrying early only earns another refusal.
    half_jitter: bool,
}

/// A lower bound on any delay: full jitter can draw close to zero, and an
/// agent must never spin.
const FLOOR: Duration = Duration::from_millis(500);

/// An attempt that lasted this long was healthy: back off afresh.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Probes of an unreachable address start every 0.5 to 1 s (drawn afresh
/// each time), so that probes of a fleet do not fall into step.
const PROBE_EVERY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(1));

/// Once a probe connects, the wait ends after a delay drawn from zero to
/// this. See [`wait_out`] for why.
const SPREAD: Duration = Duration::from_secs(1);

impl Backoff {
    /// For transport failures: about 1 s growing to 20 s, with full jitter.
    pub fn transport() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(20), false)
    }

    /// For a refused token: 5 s growing to 5 min, never early.
    pub fn refused() -> Self {
        Self::new(Duration::from_secs(5), Duration::from_secs(300), true)
    }

    pub fn new(min: Duration, max: Duration, half_jitter: bool) -> Self {
        Self {
            min,
            max,
            attempt: 0,
            half_jitter,
        }
    }

    /// The next delay; each call doubles the ceiling up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        let low = if self.half_jitter {
            ceiling / 2
        } else {
            Duration::ZERO
        };
        let drawn = rand::rng().random_range(low..=ceiling);
        drawn.max(FLOOR)
    }

    /// Back to the first step, after a connection proved healthy.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// How an attempt ended, as the wait before the next one sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Nothing answered at kas's address: no TCP connection could be made
    /// (timed out, refused, no route), or an open connection fell silent
    /// (its HTTP/2 keepalive went unanswered). The network or kas's host is
    /// down, and a TCP connect tells cheaply when it is back.
    Unreachable,
    /// kas's address answered, but the attempt failed or ended (TLS,
    /// HTTP/2, an error status, kas closed it): the next attempt would
    /// likely meet the same, so it waits out its backoff.
    Failed,
    /// kas refused the token.
    Refused,
    /// kas is shutting down and asked its agents to reconnect now.
    Drained,
}

/// What to do before the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Sleep this long, whatever happens meanwhile.
    Sleep(Duration),
    /// Sleep up to this long, probing kas's address meanwhile; a probe that
    /// connects ends the wait early (see [`wait_out`]).
    UntilReachable(Duration),
}

impl Wait {
    /// The longest the wait may last.
    pub fn at_most(&self) -> Duration {
        match *self {
            Wait::Sleep(d) | Wait::UntilReachable(d) => d,
        }
    }
}

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// It ran its whole length.
    Elapsed,
    /// A probe connected, and the spread after it passed.
    Reachable,
}

/// The waits of one reconnect loop (the session's, or one tunnel's): a
/// transport backoff and a refusal backoff, both reset after a healthy
/// attempt.
#[derive(Debug)]
pub struct Reconnect {
    transport: Backoff,
    refused: Backoff,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            transport: Backoff::transport(),
            refused: Backoff::refused(),
        }
    }
}

impl Reconnect {
    /// The wait after an attempt that ended as `ended` after `lasted`.
    ///
    /// An unreachable address still draws from the growing transport
    /// backoff: the probe only shortens the wait, and when the probes never
    /// connect (a link so slow that a probe cannot finish between two), the
    /// full dial after the backoff still comes.
    pub fn wait_after(&mut self, ended: Ended, lasted: Duration) -> Wait {
        if lasted >= HEALTHY_AFTER {
            self.transport.reset();
            self.refused.reset();
        }
        match ended {
            Ended::Unreachable => Wait::UntilReachable(self.transport.next_delay()),
            Ended::Failed => Wait::Sleep(self.transport.next_delay()),
            Ended::Refused => Wait::Sleep(self.refused.next_delay()),
            // Spread over a second, so a fleet does not reconnect at once.
            Ended::Drained => Wait::Sleep(spread()),
        }
    }
}

/// Waits out `wait`; for [`Wait::UntilReachable`], calls `probe` about
/// every 0.5 to 1 s and ends early once it connects.
///
/// A probe is one TCP connect, closed at once: a SYN and its answer, no TLS
/// and nothing for kas to do but accept and see the connection close. With
/// 10,000 agents cut off, each with three reconnect loops (the session and
/// two tunnels), that is about 40,000 SYNs a second toward kas's address
/// for as long as the partition lasts (a few MB/s, which a kernel or a load
/// balancer shrugs off, and which the partition mostly swallows); a TLS
/// handshake per probe would instead be real work for kas at the worst
/// moment. A probe still unanswered when the next is due is abandoned, so
/// a dead network costs one pending SYN per loop, and each new one goes out
/// at once instead of waiting for the kernel's resend.
///
/// When a probe connects, the wait goes on for a delay drawn from 0 to 1 s.
/// Probes alone would bring a whole fleet back within one probe interval
/// of a heal: 10,000 TLS handshakes and sessions for kas to authenticate
/// in under a second. The drawn delay spreads them over about 2 s, as
/// after a drain ([`Ended::Drained`]), and an agent is still back within
/// about 2 s.
pub async fn wait_out<P, F>(wait: Wait, mut probe: P) -> Waited
where
    P: FnMut() -> F,
    F: Future<Output = bool>,
{
    let deadline = Instant::now() + wait.at_most();
    if let Wait::Sleep(_) = wait {
        tokio::time::sleep_until(deadline).await;
        return Waited::Elapsed;
    }
    let probing = async {
        let mut next = Instant::now() + probe_interval();
        loop {
            tokio::time::sleep_until(next).await;
            next = Instant::now() + probe_interval();
            if let Ok(true) = tokio::time::timeout_at(next, probe()).await {
                tokio::time::sleep(spread()).await;
                return;
            }
        }
    };
    match tokio::time::timeout_at(deadline, probing).await {
        Ok(()) => Waited::Reachable,
        Err(_) => Waited::Elapsed,
    }
}

fn probe_interval() -> Duration {
    rand::rng().random_range(PROBE_EVERY.0..=PROBE_EVERY.1)
}

fn spread() -> Duration {
    rand::rng().random_range(Duration::ZERO..SPREAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn delays_stay_within_a_growing_capped_ceiling_and_above_the_floor() {
        let mut b = Backoff::transport();
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d >= FLOOR && d <= Duration::from_secs(20), "{d:?}");
            ceilings.push(d);
        }
        // Late delays may reach the cap; the first cannot exceed 1 s.
        assert!(ceilings[0] <= Duration::from_secs(1));
    }

    #[test]
    fn refusals_never_retry_early() {
        for _ in 0..200 {
            let mut b = Backoff::refused();
            let first = b.next_delay();
            assert!(
                first >= Duration::from_millis(2500) && first <= Duration::from_secs(5),
                "{first:?}"
            );
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::transport();
        for _ in 0..8 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn only_an_unreachable_address_is_probed() {
        let mut r = Reconnect::default();
        let short = Duration::from_secs(1);
        assert!(matches!(
            r.wait_after(Ended::Unreachable, short),
            Wait::UntilReachable(_)
        ));
        assert!(matches!(r.wait_after(Ended::Failed, short), Wait::Sleep(_)));
        assert!(matches!(
            r.wait_after(Ended::Refused, short),
            Wait::Sleep(_)
        ));
        assert!(matches!(
            r.wait_after(Ended::Drained, short),
            Wait::Sleep(_)
        ));
    }

    #[test]
    fn refusals_keep_their_slow_backoff_whatever_the_network_did() {
        for _ in 0..200 {
            let mut r = Reconnect::default();
            for _ in 0..6 {
                r.wait_after(Ended::Unreachable, Duration::ZERO);
            }
            let Wait::Sleep(first) = r.wait_after(Ended::Refused, Duration::ZERO) else {
                panic!("a refusal is never probed");
            };
            assert!(first >= Duration::from_millis(2500), "{first:?}");
        }
    }

    #[test]
    fn the_backoff_grows_while_the_network_is_dead_and_restarts_after_a_healthy_attempt() {
        let mut r = Reconnect::default();
        let ceilings: Vec<Duration> = (0..12)
            .map(|_| r.wait_after(Ended::Unreachable, Duration::ZERO).at_most())
            .collect();
        assert!(ceilings.iter().all(|d| *d <= Duration::from_secs(20)));
        // Full jitter: one late draw may be small, but not all of them.
        assert!(ceilings[6..].iter().any(|d| *d > Duration::from_secs(2)));
        let after_healthy = r.wait_after(Ended::Unreachable, HEALTHY_AFTER);
        assert!(after_healthy.at_most() <= Duration::from_secs(1));
    }

    #[test]
    fn drained_agents_return_within_a_second() {
        let mut r = Reconnect::default();
        for _ in 0..100 {
            assert!(r.wait_after(Ended::Drained, Duration::ZERO).at_most() < SPREAD);
        }
    }

    /// A probe that answers from `healed_at` (paused time) on, counting
    /// its calls.
    fn probe_healing_at(
        healed_at: Instant,
        calls: Arc<AtomicUsize>,
    ) -> impl FnMut() -> std::future::Ready<bool> {
        move || {
            calls.fetch_add(1, Ordering::Relaxed);
            std::future::ready(Instant::now() >= healed_at)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_connects_ends_a_long_wait_within_two_seconds_of_the_heal() {
        for heal_after in [0u64, 300, 2_700, 9_000, 17_500] {
            let start = Instant::now();
            let healed_at = start + Duration::from_millis(heal_after);
            let calls = Arc::new(AtomicUsize::new(0));
            let waited = wait_out(
                Wait::UntilReachable(Duration::from_secs(20)),
                probe_healing_at(healed_at, calls.clone()),
            )
            .await;
            assert_eq!(waited, Waited::Reachable);
            let after_heal = Instant::now().saturating_duration_since(healed_at);
            // The next probe within 1 s, then the spread of up to 1 s.
            assert!(after_heal <= Duration::from_secs(2), "{after_heal:?}");
            // A probe every 0.5 to 1 s until then, never a burst.
            let waited_for = Instant::now() - start;
            let most = waited_for.as_millis() / 500 + 1;
            assert!(calls.load(Ordering::Relaxed) as u128 <= most);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_network_lets_the_whole_wait_run_probing_about_every_second() {
        let calls = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let waited = wait_out(Wait::UntilReachable(Duration::from_secs(10)), {
            let calls = calls.clone();
            move || {
                calls.fetch_add(1, Ordering::Relaxed);
                std::future::ready(false)
            }
        })
        .await;
        assert_eq!(waited, Waited::Elapsed);
        assert_eq!(Instant::now() - start, Duration::from_secs(10));
        let calls = calls.load(Ordering::Relaxed);
        assert!((9..=20).contains(&calls), "{calls} probes in 10 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_hangs_is_abandoned_when_the_next_is_due() {
        // Each probe hangs (a SYN into a blackhole) until the network heals
        // at 5 s; fresh probes still go out about every second, and the
        // first one after the heal connects at once.
        let start = Instant::now();
        let healed_at = start + Duration::from_secs(5);
        let calls = Arc::new(AtomicUsize::new(0));
        let waited = wait_out(Wait::UntilReachable(Duration::from_secs(20)), {
            let calls = calls.clone();
            move || {
                calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    if Instant::now() < healed_at {
                        std::future::pending::<()>().await;
                    }
                    true
                }
            }
        })
        .await;
        assert_eq!(waited, Waited::Reachable);
        let after_heal = Instant::now() - healed_at;
        assert!(after_heal <= Duration::from_secs(2), "{after_heal:?}");
        assert!(calls.load(Ordering::Relaxed) >= 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_plain_wait_is_never_cut_short_and_never_probes() {
        let start = Instant::now();
        let calls = Arc::new(AtomicUsize::new(0));
        let waited = wait_out(
            Wait::Sleep(Duration::from_secs(7)),
            probe_healing_at(start, calls.clone()),
        )
        .await;
        assert_eq!(waited, Waited::Elapsed);
        assert_eq!(Instant::now() - start, Duration::from_secs(7));
        assert_eq!(calls.load(Ordering::Relaxed), 0);
    }
}
