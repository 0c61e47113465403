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
    until: Instant,
    failures: u32,
}

#[derive(Default)]
pub(crate) struct Negatives {
    map: Mutex<HashMap<Arc<str>, Remembered>>,
}

impl Negatives {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Remembered>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The remembered answer for `cache_key`, while its period lasts.
    pub(crate) fn check(&self, cache_key: &str, now: Instant) -> Option<Error> {
        let map = self.lock();
        map.get(cache_key)
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
            .get(&key.cache_key)
            .map_or(1, |previous| previous.failures.saturating_add(1));
        let period = if error.is_retryable() {
            policy.retry_delay(failures, error.retry_after())
        } else if remembered_kind(error.kind()) {
            policy.negative_delay(failures)
        } else {
            Duration::ZERO
        };
        if period.is_zero() {
            let _ = map.remove(&key.cache_key);
            return None;
        }
        let _ = map.insert(
            Arc::clone(&key.cache_key),
            Remembered {
                error: error.clone(),
                until: later(now, period),
                failures,
            },
        );
        Some((period, failures))
    }

    pub(crate) fn clear(&self, cache_key: &str) {
        let mut map = self.lock();
        if !map.is_empty() {
            let _ = map.remove(cache_key);
        }
    }

    pub(crate) fn clear_where(&self, remove: impl Fn(&str) -> bool) {
        self.lock().retain(|key, _| !remove(key));
    }
}

/// The store's definite answers about a secret: remembered for `negative_ttl` and growing.
fn remembered_kind(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::NotFound | ErrorKind::AccessDenied | ErrorKind::InvalidRequest
    )
}
