//! The read path and its staleness rules: what a read returns at each point of an entry's life,
//! and when it makes the cache go to the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::entry::{Entry, Loaded};
use super::events::SecretEvent;
use super::inflight::Seen;
use super::key::{Key, Mode, cache_key};
use super::secret_cache::{Inner, SecretCache};
use crate::error::Result;
use crate::events::bump;
use crate::time::Instant;
use crate::value::Selector;

impl SecretCache {
    pub(crate) async fn read(&self, id: &str, selector: &Selector, mode: Mode) -> Result<Loaded> {
        let inner = &self.inner;
        let now = Instant::now();
        let found = {
            // The hot path: one lock-free map load, no allocation, no await.
            let map = inner.index.load();
            let found = map.get(cache_key(id, selector).as_ref());
            if let (Some(entry), Mode::Read) = (found, mode) {
                if now < entry.refresh_at {
                    inner.hits.add(1);
                    return Ok(entry.loaded());
                }
            }
            found.cloned()
        };
        let key = match &found {
            Some(entry) => {
                if let Some(served) = inner.serve_without_load(entry, mode, now) {
                    return served;
                }
                entry.key.clone()
            }
            None => Key::new(id, selector)?,
        };
        bump(&inner.counters.misses);
        let seen = Seen(found.as_ref().map(|entry| entry.seq));
        match Inner::start_load(inner, key, seen).await {
            Ok(entry) => Ok(entry.loaded()),
            Err(error) => {
                // The load may have taken a while (a store timing out): judge staleness now.
                let now = Instant::now();
                match &found {
                    Some(entry)
                        if error.allows_stale() && now < entry.stale_until(&inner.policy) =>
                    {
                        Ok(inner.serve_stale(entry, now))
                    }
                    _ => Err(error),
                }
            }
        }
    }
}

impl Inner {
    /// What a read of a cached entry returns without waiting for a load, if anything.
    fn serve_without_load(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        mode: Mode,
        now: Instant,
    ) -> Option<Result<Loaded>> {
        let retry_at = entry.retry_at();
        match mode {
            Mode::Read => {
                if now < entry.expires_at {
                    // Past the refresh point: serve, and let one reader start a background load.
                    self.hits.add(1);
                    if now >= retry_at && !entry.refreshing.swap(true, Ordering::AcqRel) {
                        // The load runs as its own task; nobody here needs to wait for it.
                        drop(Inner::start_load(
                            self,
                            entry.key.clone(),
                            Seen(Some(entry.seq)),
                        ));
                    }
                    return Some(Ok(entry.loaded()));
                }
                // Expired. While backing off after failures, serve last-known-good without a call.
                if now < retry_at {
                    if now < entry.stale_until(&self.policy) {
                        return Some(Ok(self.serve_stale(entry, now)));
                    }
                    if let Some(error) = entry.last_error() {
                        return Some(Err(error));
                    }
                }
                None
            }
            Mode::Force | Mode::PastLimit => {
                // Rate limit: the store was asked about this key moments ago, or we are backing off.
                let asked_moments_ago = now.saturating_duration_since(entry.checked_at)
                    < self.policy.min_refresh_interval;
                let rate_limited = (asked_moments_ago && mode == Mode::Force) || now < retry_at;
                if !rate_limited {
                    return None;
                }
                if now < entry.expires_at {
                    self.hits.add(1);
                    return Some(Ok(entry.loaded()));
                }
                if now < entry.stale_until(&self.policy) {
                    return Some(Ok(self.serve_stale(entry, now)));
                }
                None
            }
        }
    }

    /// Last-known-good, because the store failed. Every such read is counted; the event is emitted
    /// once per entry and backoff step, so an outage does not flood logs, hooks and subscribers.
    pub(super) fn serve_stale(&self, entry: &Entry, now: Instant) -> Loaded {
        bump(&self.counters.stale_serves);
        if entry.first_stale_serve_of_step() {
            self.events.emit(SecretEvent::ServedStale {
                id: Arc::clone(&entry.key.id),
                version: entry.value.version.id.clone(),
                stale_for: now.saturating_duration_since(entry.expires_at),
            });
        }
        entry.loaded()
    }
}
