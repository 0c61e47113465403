//! One cached value and the timing around it: when it is refreshed, until when it is served,
//! how its failures back off.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::key::Key;
use super::policy::Policy;
use crate::error::Error;
use crate::time::{Instant, later};
use crate::value::{SecretValue, Versioned};

/// A value the store gave, with its place in the order of everything the cache stored: a handle
/// never takes a value older than the one it holds.
#[derive(Clone)]
pub(crate) struct Loaded {
    pub(crate) value: Arc<Versioned<SecretValue>>,
    pub(crate) seq: u64,
}

pub(crate) struct Entry {
    pub(crate) key: Key,
    pub(crate) value: Arc<Versioned<SecretValue>>,
    /// Stored entries are numbered in the order they were stored (across all keys).
    pub(crate) seq: u64,
    /// When the store last confirmed this version (a fetch, or a probe that found it unchanged).
    pub(crate) checked_at: Instant,
    pub(crate) refresh_at: Instant,
    pub(crate) expires_at: Instant,
    /// When the value's lease ends: never served after it, stale or not.
    pub(crate) lease_end: Option<Instant>,
    /// The store refused our cheap version probe for this key: fetch instead. Carried over to the
    /// entries that replace this one.
    pub(crate) probe_denied: bool,
    /// Set while a background refresh of this entry runs, so only one starts.
    pub(crate) refreshing: AtomicBool,
    pub(crate) failures: AtomicU32,
    /// No store call before `checked_at` + this many nanoseconds (0: no wait).
    retry_after_nanos: AtomicU64,
    /// 1 + the failure count at which a stale serve was last reported (0: never).
    stale_reported: AtomicU32,
    pub(crate) last_error: Mutex<Option<Error>>,
}

impl Entry {
    pub(crate) fn new(
        key: Key,
        value: Arc<Versioned<SecretValue>>,
        seq: u64,
        policy: &Policy,
        now: Instant,
        probe_denied: bool,
    ) -> Entry {
        let (refresh_at, expires_at, lease_end) = timing(policy, now, &value);
        Entry {
            key,
            value,
            seq,
            checked_at: now,
            refresh_at,
            expires_at,
            lease_end,
            probe_denied,
            refreshing: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            retry_after_nanos: AtomicU64::new(0),
            stale_reported: AtomicU32::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn loaded(&self) -> Loaded {
        Loaded {
            value: Arc::clone(&self.value),
            seq: self.seq,
        }
    }

    /// Until when this value may be served as last-known-good: `max_stale` past its TTL, never
    /// past its lease.
    pub(crate) fn stale_until(&self, policy: &Policy) -> Instant {
        let until = later(self.expires_at, policy.max_stale);
        self.lease_end.map_or(until, |end| until.min(end))
    }

    /// No store call for this entry before this instant (backoff after failures).
    pub(crate) fn retry_at(&self) -> Instant {
        let nanos = self.retry_after_nanos.load(Ordering::Acquire);
        later(self.checked_at, Duration::from_nanos(nanos))
    }

    /// Records a failed store call at `now`: one more failure, the next call not before
    /// `now + delay`, and the error. Returns the number of failures in a row.
    pub(crate) fn record_failure(&self, now: Instant, delay: Duration, error: &Error) -> u32 {
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        let at = later(now, delay);
        let nanos = u64::try_from(at.saturating_duration_since(self.checked_at).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        self.retry_after_nanos.store(nanos, Ordering::Release);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.clone());
        failures
    }

    pub(crate) fn last_error(&self) -> Option<Error> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether this stale serve is the first since the last failure (one report per backoff step).
    pub(crate) fn first_stale_serve_of_step(&self) -> bool {
        let step = self.failures.load(Ordering::Acquire).saturating_add(1);
        self.stale_reported.swap(step, Ordering::AcqRel) != step
    }
}

/// When to refresh and until when to serve a value fetched at `now`: the TTL policy, tightened by a
/// lease (renewed at about two thirds of what remains, never served past its end) and by a rotation
/// the store announced (asked again just after it).
fn timing(
    policy: &Policy,
    now: Instant,
    value: &Versioned<SecretValue>,
) -> (Instant, Instant, Option<Instant>) {
    let mut refresh_at = later(now, policy.refresh_after());
    let mut expires_at = later(now, policy.ttl);
    let mut lease_end = None;
    let wall_now = SystemTime::now();
    if let Some(lease) = &value.version.lease {
        let remaining = lease
            .expires_at
            .duration_since(wall_now)
            .unwrap_or(Duration::ZERO);
        let renew_in = remaining.mul_f64(0.6 + 0.1 * fastrand::f64());
        refresh_at = refresh_at.min(later(now, renew_in));
        expires_at = expires_at.min(later(now, remaining));
        lease_end = Some(later(now, remaining));
    }
    if let Some(next) = value.version.next_rotation {
        let until = next.duration_since(wall_now).unwrap_or(Duration::ZERO);
        let jitter = Duration::from_millis(200 + fastrand::u64(..500));
        refresh_at = refresh_at.min(later(now, until.saturating_add(jitter)));
        expires_at = expires_at.max(refresh_at + Duration::from_millis(1));
    }
    (refresh_at, expires_at, lease_end)
}
