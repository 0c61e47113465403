//! The coalescing table: the loads under way (one per key), each with its ticket (the fate of
//! its outcome), and the numbering of stored entries. Plain data the cache's `Inner` uses; how a
//! load runs is in `load.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::{BoxFuture, Shared};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::entry::Entry;
use super::key::Key;
use crate::error::Result;

pub(super) type LoadFuture = Shared<BoxFuture<'static, Result<Arc<Entry>>>>;

/// What happens to a load's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Fate {
    /// Written back to the cache and offered to handles.
    Keep = 0,
    /// The key was invalidated while the load ran: its waiters get a load started after that.
    Invalidated = 1,
    /// The key's lease was revoked while the load ran: its value is revoked too.
    Revoked = 2,
    /// The cache was shut down.
    Closed = 3,
}

/// One load's identity and fate, shared by the task and the in-flight table.
pub(super) struct Ticket {
    pub(super) fate: AtomicU8,
}

impl Ticket {
    pub(super) fn fate(&self) -> Fate {
        match self.fate.load(Ordering::Acquire) {
            0 => Fate::Keep,
            1 => Fate::Invalidated,
            2 => Fate::Revoked,
            _ => Fate::Closed,
        }
    }

    pub(super) fn decide(&self, fate: Fate) {
        let _ = self.fate.fetch_max(fate as u8, Ordering::AcqRel);
    }
}

pub(super) struct InFlight {
    pub(super) load: LoadFuture,
    pub(super) ticket: Arc<Ticket>,
    pub(super) abort: AbortHandle,
}

/// The loads under way, one per key, and the numbering of stored entries.
#[derive(Default)]
pub(super) struct Loads {
    inflight: Mutex<HashMap<Arc<str>, InFlight>>,
    next_seq: AtomicU64,
    /// Load tasks that have not ended yet (including aborted ones still being dropped).
    pub(super) running: AtomicUsize,
    pub(super) ended: Notify,
}

/// The in-flight table, locked. Writes to the read index that must be ordered with
/// invalidations (a load's write-back, an invalidation's removal) happen while holding it.
pub(super) struct LoadsGuard<'a> {
    pub(super) map: MutexGuard<'a, HashMap<Arc<str>, InFlight>>,
}

impl Loads {
    pub(super) fn lock(&self) -> LoadsGuard<'_> {
        LoadsGuard {
            map: self.inflight.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Waits until every load task has ended (after they were aborted at shutdown).
    pub(super) async fn all_ended(&self) {
        loop {
            let ended = self.ended.notified();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }
}

impl LoadsGuard<'_> {
    /// Gives the loads of keys matching `matches` the fate `fate` and forgets them, so that the
    /// next read starts a new load.
    pub(super) fn discard_where(&mut self, fate: Fate, matches: impl Fn(&str) -> bool) {
        self.map.retain(|key, load| {
            if matches(key) {
                load.ticket.decide(fate);
                false
            } else {
                true
            }
        });
    }

    /// Closes every load: aborts its task. Returns how many there were.
    pub(super) fn close_all(&mut self) -> usize {
        let count = self.map.len();
        for (_, load) in self.map.drain() {
            load.ticket.decide(Fate::Closed);
            load.abort.abort();
        }
        count
    }

    pub(super) fn forget(&mut self, key: &Key, ticket: &Arc<Ticket>) {
        if self
            .map
            .get(&key.cache_key)
            .is_some_and(|load| Arc::ptr_eq(&load.ticket, ticket))
        {
            let _ = self.map.remove(&key.cache_key);
        }
    }
}

/// Which entry a reader saw before deciding to load, so a load that finished meanwhile is
/// taken instead of asking the store again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen(pub(crate) Option<u64>);
