//! Timing policy: when an entry is refreshed, how long it may be served stale, how failures back off.

use std::time::Duration;

use crate::backoff::Backoff;

/// When and how often the cache goes back to the store. Built by
/// [`SecretCacheBuilder`](crate::SecretCacheBuilder).
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) ttl: Duration,
    /// Refresh-ahead point, as fractions of the TTL: each entry picks its own point uniformly in
    /// this range so a fleet that fetched together does not refresh together.
    pub(crate) refresh_from: f64,
    pub(crate) refresh_to: f64,
    pub(crate) max_stale: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    /// Extra attempts for a fetch that has no last-known-good to fall back on.
    pub(crate) cold_retries: usize,
    pub(crate) min_refresh_interval: Duration,
    pub(crate) grace_period: Duration,
    /// How long a not-found or access-denied answer is remembered after the first such answer in
    /// a row (doubling with each further one). Zero: not remembered.
    pub(crate) negative_ttl: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            ttl: Duration::from_secs(300),
            refresh_from: 0.75,
            refresh_to: 0.9,
            max_stale: Duration::from_secs(900),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(60),
            cold_retries: 2,
            min_refresh_interval: Duration::from_secs(1),
            grace_period: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(5),
        }
    }
}

impl Policy {
    /// How long after a fetch this entry should be refreshed in the background (jittered).
    pub(crate) fn refresh_after(&self) -> Duration {
        let fraction = if self.refresh_to > self.refresh_from {
            self.refresh_from + fastrand::f64() * (self.refresh_to - self.refresh_from)
        } else {
            self.refresh_from
        };
        self.ttl.mul_f64(fraction)
    }

    /// The backoff for failures (the crate's one rule).
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_min, self.backoff_max)
    }

    /// The wait before the next call after `consecutive_failures` failures in a row (at least 1),
    /// at least what the store asked for.
    pub(crate) fn retry_delay(
        &self,
        consecutive_failures: u32,
        retry_after: Option<Duration>,
    ) -> Duration {
        let delay = self.backoff().after(consecutive_failures);
        delay.max(retry_after.unwrap_or(Duration::ZERO))
    }
}

impl Policy {
    /// How long the `consecutive_failures`-th not-found or access-denied answer in a row is
    /// remembered: `negative_ttl`, doubling, capped at the larger of `negative_ttl` and the backoff
    /// maximum, minus up to a fifth of jitter so a fleet does not ask again in step.
    pub(crate) fn negative_delay(&self, consecutive_failures: u32) -> Duration {
        if self.negative_ttl.is_zero() {
            return Duration::ZERO;
        }
        let cap = self.negative_ttl.max(self.backoff_max);
        let doublings = consecutive_failures.saturating_sub(1).min(32);
        let delay = self
            .negative_ttl
            .saturating_mul(1u32 << doublings.min(31))
            .min(cap);
        delay.mul_f64(0.8 + 0.2 * fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_point_is_jittered_inside_the_window() {
        let policy = Policy {
            ttl: Duration::from_secs(100),
            ..Policy::default()
        };
        let points: Vec<Duration> = (0..200).map(|_| policy.refresh_after()).collect();
        assert!(points.iter().all(|p| *p >= Duration::from_secs(75)));
        assert!(points.iter().all(|p| *p <= Duration::from_secs(90)));
        let distinct: std::collections::HashSet<_> = points.iter().collect();
        assert!(distinct.len() > 100, "refresh points are not spread out");
    }

    #[test]
    fn negative_answers_are_remembered_longer_each_time_up_to_a_cap() {
        let policy = Policy {
            negative_ttl: Duration::from_secs(5),
            backoff_max: Duration::from_secs(60),
            ..Policy::default()
        };
        let first = policy.negative_delay(1);
        assert!(first >= Duration::from_secs(4) && first <= Duration::from_secs(5));
        let third = policy.negative_delay(3);
        assert!(third >= Duration::from_secs(16) && third <= Duration::from_secs(20));
        for n in 1..100 {
            assert!(policy.negative_delay(n) <= Duration::from_secs(60));
        }
        let off = Policy {
            negative_ttl: Duration::ZERO,
            ..Policy::default()
        };
        assert_eq!(off.negative_delay(3), Duration::ZERO);
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let policy = Policy {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ..Policy::default()
        };
        let first = policy.retry_delay(1, None);
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200));
        let fifth = policy.retry_delay(5, None);
        assert!(fifth >= Duration::from_millis(1600), "{fifth:?}");
        for n in 1..100 {
            assert!(policy.retry_delay(n, None) <= Duration::from_secs(4));
        }
        assert_eq!(
            policy.retry_delay(1, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
    }
}
