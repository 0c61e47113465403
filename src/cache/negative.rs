//! Remembered failures: after the store said a secret is missing or denied (or failed while the
//! cache had nothing to fall back on), reads of it get the same answer for a short, growing
//! period without asking again. A storm of reads of a missing key costs one store call per period.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::key::Key;
use super::policy::Policy;
use crate::error::{Error, ErrorKind};
use crate::time::{Instant, later};

struct Remembered {
    error: Error,
    /// Until when reads get `error` without a store call.
    until: Instant,
    /// Until when the count of failures in a row is kept (one more period after `until`, so a
    /// failure right after the period still grows the next one); the entry goes after that.
    forget_at: Instant,
    failures: u32,
}

/// How often expired entries are swept out, at most (on the next failure recorded).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The remembered failures, bounded: ids built from request data must not grow memory without
/// limit. Entries go once forgotten (swept at most once a second, when a failure is recorded);
/// at capacity, the ones to be forgotten soonest make room.
pub(crate) struct Negatives {
    map: Mutex<Map>,
    capacity: usize,
}

#[derive(Default)]
struct Map {
    entries: HashMap<Arc<str>, Remembered>,
    next_sweep: Option<Instant>,
}

impl Negatives {
    /// Remembers at most `capacity` keys (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Negatives {
            map: Mutex::new(Map::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many keys are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Drops forgotten entries (when a sweep is due or the map is full), then, while it is still
    /// full, an eighth of it: the entries to be forgotten soonest.
    fn make_room(&self, map: &mut Map, now: Instant, adding: bool) {
        let full = adding && map.entries.len() >= self.capacity;
        if full || map.next_sweep.is_none_or(|next| now >= next) {
            map.entries
                .retain(|_, remembered| now < remembered.forget_at);
            map.next_sweep = Some(later(now, SWEEP_EVERY));
        }
        if !adding || map.entries.len() < self.capacity {
            return;
        }
        let mut by_forget: Vec<(Instant, Arc<str>)> = map
            .entries
            .iter()
            .map(|(key, remembered)| (remembered.forget_at, Arc::clone(key)))
            .collect();
        let evict = (self.capacity / 8).max(1).min(by_forget.len());
        let _ = by_forget.select_nth_unstable_by_key(evict - 1, |(at, _)| *at);
        for (_, key) in by_forget.into_iter().take(evict) {
            let _ = map.entries.remove(&key);
        }
    }

    /// The remembered answer for `cache_key`, while its period lasts.
    pub(crate) fn check(&self, cache_key: &str, now: Instant) -> Option<Error> {
        let map = self.lock();
        map.entries
            .get(cache_key)
            .filter(|remembered| now < remembered.until)
            .map(|remembered| remembered.error.clone())
    }

    /// Remembers `error` for `key`, for a period that grows with each failure in a row. Returns the
    /// period and the number of failures in a row, or `None` when such errors are not remembered.
    pub(crate) fn record(
        &self,
        key: &Key,
        error: &Error,
        now: Instant,
        policy: &Policy,
    ) -> Option<(Duration, u32)> {
        let mut map = self.lock();
        let failures = map
            .entries
            .get(&key.cache_key)
            .filter(|previous| now < previous.forget_at)
            .map_or(1, |previous| previous.failures.saturating_add(1));
        let period = if error.is_retryable() {
            policy.retry_delay(failures, error.retry_after())
        } else if remembered_kind(error.kind()) {
            policy.negative_delay(failures)
        } else {
            Duration::ZERO
        };
        if period.is_zero() {
            let _ = map.entries.remove(&key.cache_key);
            return None;
        }
        let adding = !map.entries.contains_key(&key.cache_key);
        self.make_room(&mut map, now, adding);
        let until = later(now, period);
        let _ = map.entries.insert(
            Arc::clone(&key.cache_key),
            Remembered {
                error: error.clone(),
                until,
                forget_at: later(until, period),
                failures,
            },
        );
        Some((period, failures))
    }

    pub(crate) fn clear(&self, cache_key: &str) {
        let mut map = self.lock();
        if !map.entries.is_empty() {
            let _ = map.entries.remove(cache_key);
        }
    }

    pub(crate) fn clear_where(&self, remove: impl Fn(&str) -> bool) {
        self.lock().entries.retain(|key, _| !remove(key));
    }
}

/// The store's definite answers about a secret: remembered for `negative_ttl` and growing.
fn remembered_kind(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::NotFound | ErrorKind::AccessDenied | ErrorKind::InvalidRequest
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Selector;

    fn missing() -> Error {
        Error::not_found("x")
    }

    fn key(n: usize) -> Key {
        Key::new(&format!("request/{n}"), &Selector::Current).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_of_ids_from_request_data_stay_within_capacity() {
        let negatives = Negatives::new(1_000);
        let policy = Policy::default();
        for n in 0..20_000 {
            let _ = negatives.record(&key(n), &missing(), Instant::now(), &policy);
            assert!(negatives.len() <= 1_000, "{} at {n}", negatives.len());
        }
        // The newest are remembered.
        assert!(
            negatives
                .check(&key(19_999).cache_key, Instant::now())
                .is_some()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn forgotten_entries_are_swept_and_a_failure_soon_after_still_grows_the_period() {
        let negatives = Negatives::new(10_000);
        let policy = Policy::default();
        for n in 0..500 {
            let _ = negatives.record(&key(n), &missing(), Instant::now(), &policy);
        }
        assert_eq!(negatives.len(), 500);
        // Within one period after the first one ended, a failure counts as the second in a row.
        let (first, _) = negatives
            .record(&key(0), &missing(), Instant::now(), &policy)
            .unwrap();
        tokio::time::advance(first + Duration::from_millis(1)).await;
        let (_, in_a_row) = negatives
            .record(&key(0), &missing(), Instant::now(), &policy)
            .unwrap();
        assert_eq!(in_a_row, 3);
        // Long after, every one is gone at the next recorded failure.
        tokio::time::advance(Duration::from_secs(3600)).await;
        let (_, in_a_row) = negatives
            .record(&key(1), &missing(), Instant::now(), &policy)
            .unwrap();
        assert_eq!(in_a_row, 1);
        assert_eq!(negatives.len(), 1);
    }
}
