//! Time, the way the crate reads it.
//!
//! Every deadline the crate keeps (TTL, refresh-ahead, backoff, leases, drains) is a
//! [`tokio::time::Instant`], so that tests under `tokio::time::pause()` — ours and our users' —
//! see the cache age, refresh and back off as virtual time advances, instead of spinning against a
//! wall clock that does not move. Wall-clock times (`SystemTime`) appear only where a store speaks
//! in them (a version's creation date, a lease's end) and are turned into instants when they arrive.
//!
//! Adding durations never panics: durations from a store (lease lengths, TTLs) or from a caller's
//! settings can be absurd, and `Instant + Duration` panics on overflow.

use std::time::{Duration, SystemTime};

pub(crate) use tokio::time::Instant;

/// Far enough to mean "never" for a secret, near enough to be representable.
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `base + by`, with `by` capped at thirty years.
pub(crate) fn later(base: Instant, by: Duration) -> Instant {
    base.checked_add(by.min(FAR)).unwrap_or(base)
}

/// `base + by` on the wall clock, with `by` capped at thirty years.
pub(crate) fn later_wall(base: SystemTime, by: Duration) -> SystemTime {
    base.checked_add(by.min(FAR)).unwrap_or(base)
}

/// The instant at which the wall-clock time `at` comes, seen from now (now, if it has passed).
pub(crate) fn instant_of(at: SystemTime) -> Instant {
    let remaining = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    later(Instant::now(), remaining)
}

/// The longest duration a setting may have.
pub(crate) const MAX_SETTING: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_durations_saturate() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now);
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        let wall = SystemTime::now();
        assert!(later_wall(wall, Duration::MAX) > wall);
        assert!(instant_of(SystemTime::UNIX_EPOCH) <= Instant::now());
    }
}
