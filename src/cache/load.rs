//! Loading and coalescing: one load per key at a time, run as its own task so that a caller that
//! gives up does not cancel it for the others; its outcome written back to the cache in the order
//! loads finish, unless an invalidation or a revocation overtook it.
//!
//! A load that panics, or whose task is cancelled (an aborted task, a runtime shutting down),
//! leaves nothing behind: the next read starts a fresh load.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};

use futures_util::FutureExt;
use tokio::sync::Notify;
use tracing::Instrument;

use super::entry::Entry;
use super::events::SecretEvent;
use super::inflight::{Fate, InFlight, LoadFuture, Seen, Ticket};
use super::key::Key;
use super::secret_cache::Inner;
use crate::error::{Error, ErrorKind, Result};
use crate::events::bump;
use crate::time::{Instant, later};
use crate::value::{SecretValue, Versioned};

/// Removes the load from the in-flight table however its task ends (finished, panicked,
/// cancelled), and lets the next refresh-ahead of the key start.
struct Cleanup {
    inner: Arc<Inner>,
    key: Key,
    ticket: Arc<Ticket>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let loads = &self.inner.loads;
        loads.lock().forget(&self.key, &self.ticket);
        if let Some(entry) = self.inner.index.get(&self.key.cache_key) {
            entry.refreshing.store(false, Ordering::Release);
        }
        let _ = loads.running.fetch_sub(1, Ordering::AcqRel);
        loads.ended.notify_waiters();
    }
}

fn ready(result: Result<Arc<Entry>>) -> LoadFuture {
    futures_util::future::ready(result).boxed().shared()
}

impl Inner {
    /// Joins the load of `key` under way, or starts one. Answers at once, without a load, when the
    /// cache is closed, when an entry newer than the one the caller saw is already there, or when
    /// the store's last answer for the key (not found, denied, failing with nothing to fall back
    /// on) is still remembered.
    pub(super) fn start_load(this: &Arc<Inner>, key: Key, seen: Seen) -> LoadFuture {
        if this.is_closed() {
            return ready(Err(this.closed_error(&key)));
        }
        let mut loads = this.loads.lock();
        if let Some(load) = loads.map.get(&key.cache_key) {
            bump(&this.counters.coalesced_waits);
            return load.load.clone();
        }
        // A load may have finished between the caller's look at the index and this lock.
        if let Some(entry) = this.index.get(&key.cache_key) {
            if seen.0.is_none_or(|seen| entry.seq > seen) {
                return ready(Ok(entry));
            }
        }
        if let Some(error) = this.negatives.check(&key.cache_key, Instant::now()) {
            bump(&this.counters.negative_hits);
            return ready(Err(error));
        }
        let ticket = Arc::new(Ticket {
            fate: AtomicU8::new(Fate::Keep as u8),
        });
        let _ = this.loads.running.fetch_add(1, Ordering::AcqRel);
        let cleanup = Cleanup {
            inner: Arc::clone(this),
            key: key.clone(),
            ticket: Arc::clone(&ticket),
        };
        let span = tracing::debug_span!("credswap.load", id = %key.id, selector = %key.selector);
        let task = tokio::spawn(
            async move {
                let cleanup = cleanup;
                let load = Inner::load_now(&cleanup.inner, &cleanup.key, &cleanup.ticket);
                match AssertUnwindSafe(load).catch_unwind().await {
                    Ok(outcome) => outcome,
                    Err(_) => cleanup.inner.panicked(&cleanup.key, &cleanup.ticket),
                }
            }
            .instrument(span),
        );
        let abort = task.abort_handle();
        let weak = Arc::downgrade(this);
        let id = Arc::clone(&key.id);
        let load = async move {
            match task.await {
                Ok(outcome) => outcome,
                Err(_) => {
                    let closed = weak.upgrade().is_none_or(|inner| inner.is_closed());
                    Err(if closed {
                        Error::new(ErrorKind::Closed).with_id(id)
                    } else {
                        Error::transient(id, "the secret load was cancelled")
                    })
                }
            }
        }
        .boxed()
        .shared();
        let _ = loads.map.insert(
            Arc::clone(&key.cache_key),
            InFlight {
                load: load.clone(),
                ticket,
                abort,
            },
        );
        load
    }

    /// Asks the store for `key` once (retrying with backoff when there is nothing to fall back
    /// on) and writes the outcome back.
    async fn load_now(this: &Arc<Inner>, key: &Key, ticket: &Arc<Ticket>) -> Result<Arc<Entry>> {
        let previous = this.index.get(&key.cache_key);
        let outcome = this.ask_store(key, previous.as_deref()).await;
        let now = Instant::now();
        let fate = match outcome {
            Ok(answer) => {
                match this.commit(
                    key,
                    ticket,
                    previous.as_ref(),
                    answer.value,
                    answer.probe_denied,
                    now,
                ) {
                    Ok(entry) => return Ok(entry),
                    Err((fate, value)) => {
                        this.discard(previous.as_deref(), &value, fate);
                        fate
                    }
                }
            }
            Err(error) => match this.commit_failure(key, ticket, previous.as_ref(), &error, now) {
                Fate::Keep => return Err(error),
                fate => fate,
            },
        };
        match fate {
            // Overtaken by an invalidation: the waiters want what the store says now.
            Fate::Invalidated => Inner::start_load(this, key.clone(), Seen(None)).await,
            Fate::Revoked => Err(Error::new(ErrorKind::Closed)
                .with_id(Arc::clone(&key.id))
                .with_message("the secret's lease was revoked while it was loading")),
            Fate::Keep | Fate::Closed => Err(this.closed_error(key)),
        }
    }

    /// Writes a value back: a new entry, numbered after every entry stored before it, in the
    /// read index; then the events and the handles. Returns the fate instead when the load was
    /// overtaken.
    #[allow(clippy::type_complexity)]
    fn commit(
        &self,
        key: &Key,
        ticket: &Arc<Ticket>,
        previous: Option<&Arc<Entry>>,
        value: Arc<Versioned<SecretValue>>,
        probe_denied: bool,
        now: Instant,
    ) -> std::result::Result<Arc<Entry>, (Fate, Arc<Versioned<SecretValue>>)> {
        let entry = {
            let mut loads = self.loads.lock();
            match ticket.fate() {
                Fate::Keep => {}
                fate => return Err((fate, value)),
            }
            let entry = Arc::new(Entry::new(
                key.clone(),
                value,
                self.loads.next_seq(),
                &self.policy,
                now,
                probe_denied,
            ));
            self.index
                .insert(Arc::clone(&key.cache_key), Arc::clone(&entry));
            self.negatives.clear(&key.cache_key);
            loads.forget(key, ticket);
            entry
        };
        // If moka refuses or evicts the entry at once, its listener removes it from the index.
        self.store
            .insert(Arc::clone(&key.cache_key), Arc::clone(&entry));
        match previous {
            Some(previous) if previous.value.version.id != entry.value.version.id => {
                bump(&self.counters.rotations);
                self.events.emit(SecretEvent::Rotated {
                    id: Arc::clone(&key.id),
                    selector: key.selector.clone(),
                    old: previous.value.version.id.clone(),
                    new: entry.value.version.id.clone(),
                });
            }
            Some(_) => {}
            None => self.events.emit(SecretEvent::Fetched {
                id: Arc::clone(&key.id),
                selector: key.selector.clone(),
                version: entry.value.version.id.clone(),
            }),
        }
        self.watchers.loaded(key, &entry.loaded());
        Ok(entry)
    }

    /// Records a failed load: backoff on the entry it started from (dropped for good when the
    /// store says the secret is gone or denied), or a remembered failure when there is none.
    fn commit_failure(
        &self,
        key: &Key,
        ticket: &Arc<Ticket>,
        previous: Option<&Arc<Entry>>,
        error: &Error,
        now: Instant,
    ) -> Fate {
        bump(&self.counters.refresh_failures);
        let (consecutive_failures, retry_in, definitive) = {
            let mut loads = self.loads.lock();
            match ticket.fate() {
                Fate::Keep => {}
                fate => return fate,
            }
            loads.forget(key, ticket);
            let current = previous
                .filter(|previous| {
                    self.index
                        .get(&key.cache_key)
                        .is_some_and(|entry| Arc::ptr_eq(&entry, previous))
                })
                .cloned();
            let definitive = !error.allows_stale();
            let counted = current.as_ref().map(|entry| {
                let delay = self.policy.retry_delay(
                    entry.failures.load(Ordering::Acquire).saturating_add(1),
                    error.retry_after(),
                );
                (entry.record_failure(now, delay, error), delay)
            });
            if definitive {
                // Gone or denied: last-known-good must not outlive this answer.
                if let Some(entry) = &current {
                    self.index.remove_if_same(&key.cache_key, entry);
                }
            }
            let remembered = if definitive || current.is_none() {
                self.negatives.record(key, error, now, &self.policy)
            } else {
                None
            };
            let (failures, delay) = counted
                .or(remembered.map(|(delay, failures)| (failures, delay)))
                .unwrap_or((1, std::time::Duration::ZERO));
            (failures, delay, definitive && current.is_some())
        };
        if definitive {
            self.store.invalidate(&key.cache_key);
        }
        self.events.emit(SecretEvent::RefreshFailed {
            id: Arc::clone(&key.id),
            kind: error.kind(),
            consecutive_failures,
            retry_in,
        });
        self.watchers.failed(key, error);
        Fate::Keep
    }

    /// A load panicked (in a provider, most likely). With a cached value it is a passing failure
    /// like any other (backed off, last-known-good served meanwhile); without one, nothing is
    /// remembered, so the next read starts a fresh load.
    fn panicked(&self, key: &Key, ticket: &Arc<Ticket>) -> Result<Arc<Entry>> {
        // The panic's message is not ours to repeat (it could quote anything).
        tracing::error!(id = %key.id, "credswap: a secret load panicked");
        let error = Error::transient(Arc::clone(&key.id), "the secret load panicked");
        match self.index.get(&key.cache_key) {
            Some(previous) => {
                let _ = self.commit_failure(key, ticket, Some(&previous), &error, Instant::now());
            }
            None => {
                bump(&self.counters.refresh_failures);
                self.events.emit(SecretEvent::RefreshFailed {
                    id: Arc::clone(&key.id),
                    kind: error.kind(),
                    consecutive_failures: 1,
                    retry_in: std::time::Duration::ZERO,
                });
                self.watchers.failed(key, &error);
            }
        }
        Err(error)
    }

    /// A value nobody will be given: revoke its lease, unless it is the lease the cache already
    /// held (a renewal, which the handles' credentials still depend on).
    fn discard(&self, previous: Option<&Entry>, value: &Versioned<SecretValue>, fate: Fate) {
        let Some(lease) = &value.version.lease else {
            return;
        };
        let renewal = previous
            .and_then(|p| p.value.version.lease.as_ref())
            .is_some_and(|held| held.id == lease.id);
        if renewal && fate == Fate::Invalidated {
            return;
        }
        self.spawn_revoke(lease.clone());
    }

    fn closed_error(&self, key: &Key) -> Error {
        Error::new(ErrorKind::Closed).with_id(Arc::clone(&key.id))
    }

    /// The watcher of one key. Holds the cache weakly: it ends when the cache, its last handle or the
    /// cache's shutdown goes.
    pub(super) async fn watch(
        cache: Weak<Inner>,
        key: Key,
        wake: Arc<Notify>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryProvider, SecretCache, Selector};

    /// A reader that saw the key missing (or an older entry) and reaches `start_load` after a load
    /// finished takes that load's entry instead of asking the store again.
    #[tokio::test]
    async fn a_load_that_finished_since_the_reader_looked_is_taken_not_repeated() {
        let store = Arc::new(MemoryProvider::new());
        let _ = store.set("db", "v1");
        let cache = SecretCache::builder(store.clone()).build().unwrap();
        let key = Key::new("db", &Selector::Current).unwrap();

        // The reader looked before anything was cached; a load finished meanwhile.
        let _ = cache.get("db").await.unwrap();
        let entry = Inner::start_load(&cache.inner, key.clone(), Seen(None))
            .await
            .unwrap();
        assert_eq!(store.fetch_calls() + store.probe_calls(), 1);

        // A reader that saw this very entry does get a new load.
        let _ = Inner::start_load(&cache.inner, key, Seen(Some(entry.seq)))
            .await
            .unwrap();
        assert_eq!(store.fetch_calls() + store.probe_calls(), 2);
    }
}
