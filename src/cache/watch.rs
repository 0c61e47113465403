//! Keeps handles current: one background task per followed key loads it at its refresh point (or
//! at once after an invalidation, and at its lease's end) and tells the key's followers what every
//! load brought: a value, or a failure.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use super::entry::Loaded;
use super::key::Key;
use crate::error::Error;

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

    /// Adds `follower` to the followers of `key`. Returns the wake-up of a new watch when the
    /// key had none: its watcher task is the caller's to start.
    pub(super) fn register(&self, key: &Key, follower: Weak<dyn Follower>) -> Option<Arc<Notify>> {
        let mut map = self.lock();
        if let Some(watch) = map.get_mut(&key.cache_key) {
            watch.followers.push(follower);
            return None;
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
        Some(wake)
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
    pub(super) fn keep_watching(&self, key: &Key) -> bool {
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
