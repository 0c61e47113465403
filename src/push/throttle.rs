//! Logging of what a flood can repeat: malformed payloads and announcements nobody watches are
//! counted and reported as events in full, but logged at most once a period per kind, with the
//! number of lines left out since, as the cache reports stale serves once per backoff step.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How often one kind of flood-prone line is logged at most.
pub(super) const LOG_EVERY: Duration = Duration::from_secs(60);

/// Which lines are logged, per kind (an event name and a detail such as the error kind).
#[derive(Default)]
pub(super) struct LogThrottle {
    kinds: Mutex<HashMap<(&'static str, &'static str), Period>>,
}

/// One kind's current period: when the next line may be logged, and how many were left out.
struct Period {
    next: Instant,
    left_out: u64,
}

impl LogThrottle {
    /// Whether a line of `kind` is logged now: `Some(left_out)`, the lines of that kind left out
    /// since the last one logged, or `None` to leave this one out.
    pub(super) fn admit(&self, kind: (&'static str, &'static str)) -> Option<u64> {
        let now = Instant::now();
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        match kinds.get_mut(&kind) {
            Some(period) if now < period.next => {
                period.left_out += 1;
                None
            }
            Some(period) => {
                period.next = now + LOG_EVERY;
                Some(std::mem::take(&mut period.left_out))
            }
            None => {
                let _ = kinds.insert(
                    kind,
                    Period {
                        next: now + LOG_EVERY,
                        left_out: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_logged_once_a_period_per_kind_with_the_lines_left_out() {
        let throttle = LogThrottle::default();
        let json = ("malformed", "json");
        assert_eq!(throttle.admit(json), Some(0));
        for _ in 0..9_999 {
            assert_eq!(throttle.admit(json), None);
        }
        // Another kind has a period of its own.
        assert_eq!(throttle.admit(("malformed", "too_large")), Some(0));
        assert_eq!(throttle.admit(("ignored", "")), Some(0));
        tokio::time::advance(LOG_EVERY - Duration::from_millis(1)).await;
        assert_eq!(throttle.admit(json), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(throttle.admit(json), Some(10_000));
        assert_eq!(throttle.admit(json), None);
    }
}
