//! Keeps handles current: one background task per watched key loads it at its refresh point (or at
//! once after an invalidation) and every successful load is offered to the key's handles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio::sync::Notify;

use super::core::{Inner, Key, SecretCache};
use crate::value::{SecretValue, Versioned};

/// Something that wants every new value of a key: a handle.
pub(crate) trait Sink: Send + Sync {
    /// Called after every successful load of the key (also when the version did not change).
    fn offer(&self, inner: &Inner, value: &Arc<Versioned<SecretValue>>);
}

#[derive(Default)]
pub(crate) struct Watchers {
    map: Mutex<HashMap<Arc<str>, Watch>>,
}

struct Watch {
    id: Arc<str>,
    sinks: Vec<Weak<dyn Sink>>,
    wake: Arc<Notify>,
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Watch>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn register(&self, cache: &SecretCache, key: &Key, sink: Weak<dyn Sink>) {
        let mut map = self.lock();
        if let Some(watch) = map.get_mut(&key.cache_key) {
            watch.sinks.push(sink);
            return;
        }
        let wake = Arc::new(Notify::new());
        let _ = map.insert(
            Arc::clone(&key.cache_key),
            Watch {
                id: Arc::clone(&key.id),
                sinks: vec![sink],
                wake: Arc::clone(&wake),
            },
        );
        let _task = tokio::spawn(run(cache.downgrade(), key.clone(), wake));
    }

    /// Offers `value` to every live handle of `key`.
    pub(crate) fn offer(&self, inner: &Inner, key: &Key, value: &Arc<Versioned<SecretValue>>) {
        let live: Vec<Arc<dyn Sink>> = match self.lock().get(&key.cache_key) {
            Some(watch) => watch.sinks.iter().filter_map(Weak::upgrade).collect(),
            None => return,
        };
        // Outside the lock: a sink decodes, swaps and emits events.
        for sink in live {
            sink.offer(inner, value);
        }
    }

    pub(crate) fn wake(&self, id: &str) {
        for watch in self.lock().values() {
            if &*watch.id == id {
                watch.wake.notify_one();
            }
        }
    }

    /// Whether a handle follows any version of `id`.
    pub(crate) fn watches(&self, id: &str) -> bool {
        self.lock().values().any(|watch| &*watch.id == id)
    }

    /// The ids that handles follow.
    pub(crate) fn ids(&self) -> Vec<Arc<str>> {
        self.lock()
            .values()
            .map(|watch| Arc::clone(&watch.id))
            .collect()
    }

    pub(crate) fn wake_all(&self) {
        for watch in self.lock().values() {
            watch.wake.notify_one();
        }
    }

    /// Drops dead handles of `key`; when none is left, forgets the key and returns false.
    fn keep_watching(&self, key: &Key) -> bool {
        let mut map = self.lock();
        let Some(watch) = map.get_mut(&key.cache_key) else {
            return false;
        };
        watch.sinks.retain(|sink| sink.strong_count() > 0);
        if watch.sinks.is_empty() {
            let _ = map.remove(&key.cache_key);
            return false;
        }
        true
    }
}

/// The watcher of one key. Holds the cache weakly: it ends when the cache or the last handle goes.
async fn run(cache: Weak<Inner>, key: Key, wake: Arc<Notify>) {
    let mut failures = 0u32;
    loop {
        let deadline = {
            let Some(inner) = cache.upgrade() else { return };
            if !inner.watchers.keep_watching(&key) {
                return;
            }
            let cache = SecretCache::from_inner(inner);
            let now = Instant::now();
            match cache.next_refresh(&key) {
                _ if failures > 0 => {
                    crate::time::later(now, cache.inner.policy.retry_delay(failures, None))
                }
                Some(at) => at,
                None => now,
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {}
            () = wake.notified() => {}
        }
        let Some(inner) = cache.upgrade() else { return };
        let cache = SecretCache::from_inner(inner);
        match cache.load(&key).await {
            Ok(_) => failures = 0,
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::debug!(id = %key.id, kind = %error.kind(), failures, "watcher refresh failed");
            }
        }
    }
}
