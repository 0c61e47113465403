//! The read side of the cache: a lock-free, copy-on-write map from key to entry.
//!
//! moka decides what the cache keeps (capacity, expiry) and tells us what it drops; reads never
//! touch it. A moka lookup costs over 100 ns (hashing, recording the read for its eviction policy);
//! a load of this map costs a few. Writes (fetches, refreshes, invalidations) are rare for
//! secrets, so copying the map on each write is cheap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};

use super::entry::Entry;

type Map = HashMap<Arc<str>, Arc<Entry>, foldhash::fast::RandomState>;

#[derive(Default)]
pub(crate) struct Index {
    map: ArcSwap<Map>,
    /// Serializes writers, so a copy-on-write never loses a concurrent write.
    write: Mutex<()>,
}

impl Index {
    /// The current map. Lock-free; do not hold it across an `.await`.
    pub(crate) fn load(&self) -> Guard<Arc<Map>> {
        self.map.load()
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.map.load().get(key).cloned()
    }

    fn update(&self, change: impl FnOnce(&mut Map)) {
        let _writer = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut map = Map::clone(&self.map.load());
        change(&mut map);
        self.map.store(Arc::new(map));
    }

    pub(crate) fn insert(&self, key: Arc<str>, entry: Arc<Entry>) {
        self.update(|map| {
            let _ = map.insert(key, entry);
        });
    }

    /// Removes `key` only if it still maps to `entry` (not to a newer one).
    pub(crate) fn remove_if_same(&self, key: &str, entry: &Arc<Entry>) {
        let same = |map: &Map| map.get(key).is_some_and(|e| Arc::ptr_eq(e, entry));
        if same(&self.map.load()) {
            self.update(|map| {
                if same(map) {
                    let _ = map.remove(key);
                }
            });
        }
    }

    /// Removes the keys for which `remove` is true.
    pub(crate) fn remove_where(&self, remove: impl Fn(&str) -> bool) {
        if self.map.load().keys().any(|k| remove(k)) {
            self.update(|map| map.retain(|k, _| !remove(k)));
        }
    }

    pub(crate) fn clear(&self) {
        self.update(Map::clear);
    }

    pub(crate) fn len(&self) -> usize {
        self.map.load().len()
    }
}
