//! Adding durations to instants without overflow panics: durations that come from a store (lease
//! lengths, TTLs) or from a caller's settings can be absurd, and `Instant + Duration` panics on
//! overflow.

use std::time::{Duration, Instant, SystemTime};

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
    }
}
