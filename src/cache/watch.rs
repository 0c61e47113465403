//! Keeps handles current: one background task per followed key loads it at its refresh point (or
//! at once after an invalidation, and at its lease's end) and tells the key's followers what every
//! load brought: a value, or a failure.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Notify, watch};

use super::entry::Loaded;
use super::key::Key;
use super::load::Seen;
use super::secret_cache::Inner;
use crate::error::Error;
use crate::time::{Instant, later};

/// What a handle learns from the cache about the key it follows.
pub(crate) trait Follower: Send + Sync {
    /// A load of the key succeeded (also when the version did not change).
    fn loaded(&self, loaded: &Loaded);
    /// A load of the key failed.
    fn failed(&self, error: &Error);
}

#[derive(Default)]
pub(crate) struct Watchers {
    map: Mutex<HashMap<Arc<str>, Watch>>,
}

struct Watch {
    id: Arc<str>,
    followers: Vec<Weak<dyn Follower>>,
    wake: Arc<Notify>,
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Watch>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn register(
        &self,
        cache: &Arc<Inner>,
        key: &Key,
        follower: Weak<dyn Follower>,
        shutdown: watch::Receiver<bool>,
    ) {
        let mut map = self.lock();
        if let Some(watch) = map.get_mut(&key.cache_key) {
            watch.followers.push(follower);
            return;
        }
        let wake = Arc::new(Notify::new());
        let _ = map.insert(
            Arc::clone(&key.cache_key),
            Watch {
                id: Arc::clone(&key.id),
                followers: vec![follower],
                wake: Arc::clone(&wake),
            },
        );
        let _task = tokio::spawn(run(Arc::downgrade(cache), key.clone(), wake, shutdown));
    }

    fn live(&self, key: &Key) -> Vec<Arc<dyn Follower>> {
        match self.lock().get(&key.cache_key) {
            Some(watch) => watch.followers.iter().filter_map(Weak::upgrade).collect(),
            None => Vec::new(),
        }
    }

    /// Tells every live follower of `key` about a successful load.
    pub(super) fn loaded(&self, key: &Key, loaded: &Loaded) {
        // Outside the lock: a follower decodes, swaps and emits events. One that panics (a
        // decoder, a hook) must not keep the others from hearing.
        for follower in self.live(key) {
            let delivered = std::panic::catch_unwind(AssertUnwindSafe(|| follower.loaded(loaded)));
            if delivered.is_err() {
                tracing::error!(id = %key.id, "credswap: a handle panicked taking a new value");
            }
        }
    }

    /// Tells every live follower of `key` about a failed load.
    pub(super) fn failed(&self, key: &Key, error: &Error) {
        for follower in self.live(key) {
            let delivered = std::panic::catch_unwind(AssertUnwindSafe(|| follower.failed(error)));
            if delivered.is_err() {
                tracing::error!(id = %key.id, "credswap: a handle panicked taking a failure");
            }
        }
    }

    pub(super) fn wake(&self, id: &str) {
        for watch in self.lock().values() {
            if &*watch.id == id {
                watch.wake.notify_one();
            }
        }
    }

    pub(super) fn wake_all(&self) {
        for watch in self.lock().values() {
            watch.wake.notify_one();
        }
    }

    /// Whether a handle follows any version of `id`.
    pub(super) fn watches(&self, id: &str) -> bool {
        self.lock().values().any(|watch| &*watch.id == id)
    }

    /// The ids that handles follow.
    pub(super) fn ids(&self) -> Vec<Arc<str>> {
        self.lock()
            .values()
            .map(|watch| Arc::clone(&watch.id))
            .collect()
    }

    /// Forgets every key (at shutdown).
    pub(super) fn clear(&self) {
        self.lock().clear();
    }

    /// Drops dead handles of `key`; when none is left, forgets the key and returns false.
    fn keep_watching(&self, key: &Key) -> bool {
        let mut map = self.lock();
        let Some(watch) = map.get_mut(&key.cache_key) else {
            return false;
        };
        watch
            .followers
            .retain(|follower| follower.strong_count() > 0);
        if watch.followers.is_empty() {
            let _ = map.remove(&key.cache_key);
            return false;
        }
        true
    }
}

/// The watcher of one key. Holds the cache weakly: it ends when the cache, its last handle or the
/// cache's shutdown goes.
async fn run(cache: Weak<Inner>, key: Key, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let mut failures = 0u32;
    loop {
        let (deadline, seen) = {
            let Some(inner) = cache.upgrade() else { return };
            if inner.is_closed() || !inner.watchers.keep_watching(&key) {
                return;
            }
            let now = Instant::now();
            let entry = inner.index.get(&key.cache_key);
            let mut deadline = match &entry {
                Some(entry) => entry.refresh_at.max(entry.retry_at()),
                None => now,
            };
            if failures > 0 {
                deadline = deadline.max(later(now, inner.policy.retry_delay(failures, None)));
            }
            // Also try when the held lease ends, whatever the backoff: handles learn of it then.
            if let Some(end) = entry.as_ref().and_then(|entry| entry.lease_end) {
                if end > now {
                    deadline = deadline.min(end);
                }
            }
            (deadline, Seen(entry.map(|entry| entry.seq)))
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        let Some(inner) = cache.upgrade() else { return };
        // The last handle may have gone while we slept: no load for nobody.
        if inner.is_closed() || !inner.watchers.keep_watching(&key) {
            return;
        }
        let load = Inner::start_load(&inner, key.clone(), seen);
        drop(inner);
        match load.await {
            Ok(_) => failures = 0,
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::debug!(id = %key.id, kind = %error.kind(), failures, "watcher refresh failed");
            }
        }
    }
}
