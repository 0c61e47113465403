use std::sync::Arc;
use std::time::Duration;

use super::SecretCache;
use super::events::SecretEvent;
use super::policy::Policy;
use crate::error::{Error, Result};
use crate::events::Hook;
use crate::provider::SecretProvider;

/// Builds a [`SecretCache`]. Every setting has a default suited to a service reading a handful of
/// secrets; see each method.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use credswap::{MemoryProvider, SecretCache};
///
/// let cache = SecretCache::builder(Arc::new(MemoryProvider::new()))
///     .ttl(Duration::from_secs(60))
///     .refresh_ahead(0.75, 0.9)
///     .max_stale(Duration::from_secs(600))
///     .build()
///     .unwrap();
/// # drop(cache);
/// ```
#[must_use]
pub struct SecretCacheBuilder {
    provider: Arc<dyn SecretProvider>,
    policy: Policy,
    max_entries: u64,
    event_capacity: usize,
    hooks: Vec<Hook<SecretEvent>>,
}

impl std::fmt::Debug for SecretCacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCacheBuilder")
            .field("provider", &self.provider.name())
            .field("policy", &self.policy)
            .field("max_entries", &self.max_entries)
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl SecretCacheBuilder {
    pub(super) fn new(provider: Arc<dyn SecretProvider>) -> Self {
        SecretCacheBuilder {
            provider,
            policy: Policy::default(),
            max_entries: 10_000,
            event_capacity: 1024,
            hooks: Vec::new(),
        }
    }

    /// How long a fetched value counts as fresh. Default: 5 minutes.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.policy.ttl = ttl;
        self
    }

    /// Where in the TTL the background refresh starts, as fractions: each entry picks a point
    /// uniformly in `from..=to`, so pods that fetched together spread their refreshes. Default:
    /// 0.75 to 0.9.
    pub fn refresh_ahead(mut self, from: f64, to: f64) -> Self {
        self.policy.refresh_from = from;
        self.policy.refresh_to = to;
        self
    }

    /// How long past its TTL a value may still be served while the store fails with a retryable
    /// error (last-known-good). Default: 15 minutes. Zero turns stale serving off.
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.policy.max_stale = max_stale;
        self
    }

    /// Bounds of the jittered exponential backoff after failures. Default: 250 ms to 60 s.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.policy.backoff_min = min;
        self.policy.backoff_max = max;
        self
    }

    /// Extra attempts for a fetch of a secret the cache does not hold at all (there is no
    /// last-known-good to serve meanwhile). Default: 2.
    pub fn cold_retries(mut self, retries: usize) -> Self {
        self.policy.cold_retries = retries;
        self
    }

    /// The shortest time between two store calls for one key forced by
    /// [`refresh`](SecretCache::refresh): a storm of authentication failures costs the store one
    /// call. Default: 1 second.
    pub fn min_refresh_interval(mut self, interval: Duration) -> Self {
        self.policy.min_refresh_interval = interval;
        self
    }

    /// How long after a handle swaps to a new version the previous one is still accepted by
    /// [`SecretHandle::accepts`](crate::SecretHandle::accepts). Default: 5 minutes.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.policy.grace_period = grace;
        self
    }

    /// How long a "not found" or "access denied" answer is remembered (reads of that secret get
    /// the same error without a store call), doubling with each such answer in a row up to the
    /// larger of this and the backoff maximum. Default: 5 seconds. Zero turns it off.
    /// [`invalidate`](SecretCache::invalidate) forgets it at once.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.policy.negative_ttl = ttl;
        self
    }

    /// How many secrets (id and selector pairs) the cache holds at most, and how many remembered
    /// failures ([`negative_ttl`](Self::negative_ttl)) besides: lookups of ids built from
    /// request data cannot grow memory without limit (at capacity, the failures to be forgotten
    /// soonest make room; expired ones are swept). Default: 10,000.
    pub fn max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// How many events a slow [`subscribe`](SecretCache::subscribe)r may lag behind before it
    /// misses some. Default: 1024.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Calls `hook` for every event, on the task where it happens: keep it short and non-blocking.
    pub fn on_event(mut self, hook: impl Fn(&SecretEvent) + Send + Sync + 'static) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Builds the cache.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) when a setting cannot work: a zero TTL, a
    /// refresh window outside `(0, 1]` or reversed, a backoff whose minimum exceeds its maximum,
    /// zero capacity, a duration over ten years.
    pub fn build(self) -> Result<SecretCache> {
        let p = &self.policy;
        if p.ttl.is_zero() {
            return Err(Error::config("the TTL must be longer than zero"));
        }
        let in_range = |x: f64| x > 0.0 && x <= 1.0;
        if !in_range(p.refresh_from) || !in_range(p.refresh_to) || p.refresh_from > p.refresh_to {
            return Err(Error::config(
                "the refresh-ahead window must satisfy 0 < from <= to <= 1",
            ));
        }
        if p.backoff_min.is_zero() || p.backoff_min > p.backoff_max {
            return Err(Error::config(
                "the backoff minimum must be above zero and at most the maximum",
            ));
        }
        let durations = [
            p.ttl,
            p.max_stale,
            p.backoff_max,
            p.min_refresh_interval,
            p.grace_period,
            p.negative_ttl,
        ];
        if durations.iter().any(|d| *d > crate::time::MAX_SETTING) {
            return Err(Error::config(
                "durations (TTL, max_stale, backoff, refresh interval, grace, negative TTL) must be at most ten years",
            ));
        }
        if self.max_entries == 0 || self.event_capacity == 0 {
            return Err(Error::config(
                "max_entries and event_capacity must be above zero",
            ));
        }
        Ok(SecretCache::from_parts(
            self.provider,
            self.policy,
            self.max_entries,
            self.event_capacity,
            self.hooks,
        ))
    }
}
