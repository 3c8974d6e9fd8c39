//! Reconnect delays: capped exponential growth with jitter, so that a fleet of
//! agents that lost kas at the same moment does not return at the same moment.

use std::time::Duration;

use rand::Rng;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
