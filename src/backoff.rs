//! The one backoff of the crate: exponential, with jitter, from `backon`. The cache's failed
//! loads, the pools' retries after a rejected login, the rotation schedule's failed attempts, the
//! push subscriber's reconnects and the Vault session's keep-alive all wait by this rule.
//!
//! The n-th delay in a row is `min · 2^(n−1)`, capped at `max`, plus a random part of up to as
//! much again: never zero, never more than twice `max`, and never in step across a fleet.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Exponential backoff with jitter between `min` and `max` (see the module docs for the rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max }
    }

    /// The rule as a `backon` builder (for `backon`'s `retry`).
    pub(crate) fn builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_jitter()
            .without_max_times()
    }

    /// The delays in a row, from the first (for a caller that keeps its place in them).
    pub(crate) fn delays(&self) -> ExponentialBackoff {
        self.builder().build()
    }

    /// The delay after `failures` failures in a row (at least one).
    pub(crate) fn after(&self, failures: u32) -> Duration {
        let step = failures.saturating_sub(1).min(64) as usize;
        self.delays()
            .nth(step)
            .unwrap_or(self.max)
            .min(self.max.saturating_mul(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_minimum_with_up_to_as_much_again_and_stay_capped() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..100 {
            let first = backoff.after(1);
            assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200));
            let fourth = backoff.after(4);
            assert!(fourth >= Duration::from_millis(800) && fourth <= Duration::from_millis(1600));
            for failures in [0, 10, 64, u32::MAX] {
                let delay = backoff.after(failures);
                assert!(delay >= Duration::from_millis(100), "{failures}: {delay:?}");
                assert!(delay <= Duration::from_secs(4), "{failures}: {delay:?}");
            }
        }
        let mut delays = backoff.delays();
        let (a, b) = (delays.next().unwrap(), delays.next().unwrap());
        assert!(a <= Duration::from_millis(200) && b >= Duration::from_millis(200));
    }
}
