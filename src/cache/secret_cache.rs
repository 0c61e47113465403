use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::builder::SecretCacheBuilder;
use super::entry::{Entry, Loaded};
use super::events::{CacheStats, SecretEvent, StoreCall};
use super::index::Index;
use super::inflight::{Fate, Loads, Seen};
use super::key::{Key, Mode, cache_key};
use super::negative::Negatives;
use super::policy::Policy;
use super::watch::{Follower, Watchers};
use crate::error::Result;
use crate::events::{Emitter, Hook};
use crate::provider::SecretProvider;
use crate::sharded::ShardedCounter;
use crate::value::{SecretValue, Selector, Versioned};

/// A TTL-cached, version-aware view of one [`SecretProvider`].
///
/// - A **fresh hit** makes no provider call and costs an `Arc` clone.
/// - Past its **refresh-ahead point** (jittered per entry), a hit still returns at once and starts
///   exactly one background refresh.
/// - An **expired or missing** key is fetched once however many tasks wait for it.
/// - When the store fails with a retryable error (throttled, unreachable, 5xx), the last-known-good
///   value is served for up to `max_stale` past its TTL, and the store is asked again only after a
///   jittered, growing backoff. A missing or denied secret is never served stale; the answer is
///   remembered for a short, growing period ([`negative_ttl`](SecretCacheBuilder::negative_ttl)), so
///   a storm of reads of a missing key costs one store call per period.
/// - When the store has a cheap version probe (AWS `DescribeSecret`, Vault KV metadata), a refresh
///   that finds the version unchanged extends the entry without fetching the value; where the
///   store's policy denies the probe, the cache fetches instead.
///
/// Cloning a cache is cheap; clones share everything. It needs a Tokio runtime: loads run as
/// spawned tasks, so a caller that gives up waiting does not cancel the fetch for the others. All
/// its deadlines are on Tokio's clock, so under `tokio::time::pause()` TTLs, refreshes and backoff
/// follow virtual time.
///
/// ```
/// use std::sync::Arc;
/// use credswap::{MemoryProvider, SecretCache};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = Arc::new(MemoryProvider::new());
/// store.set("api-key", "k-1");
/// let cache = SecretCache::builder(store.clone()).build().unwrap();
///
/// let value = cache.get("api-key").await.unwrap();
/// assert_eq!(value.value.expose_str(), Some("k-1"));
/// let _ = cache.get("api-key").await.unwrap(); // a hit: no provider call
/// assert_eq!(store.fetch_calls(), 1);
/// # });
/// ```
#[derive(Clone)]
pub struct SecretCache {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCache")
            .field("provider", &self.inner.provider.name())
            .field("entries", &self.inner.index.len())
            .field("closed", &self.inner.is_closed())
            .field("stats", &self.stats())
            .finish()
    }
}

crate::events::counters! {
    pub(super) struct Counters => CacheStats {
        misses, fetches, probes, refresh_failures, stale_serves, negative_hits, rotations,
        lease_renewals, coalesced_waits, lease_replacements,
    }
}

/// A [`SecretCache`] that may be gone.
#[cfg(feature = "metrics")]
pub(crate) struct WeakCache(std::sync::Weak<Inner>);

#[cfg(feature = "metrics")]
impl WeakCache {
    /// The cache, while it lives.
    pub(crate) fn upgrade(&self) -> Option<SecretCache> {
        self.0.upgrade().map(|inner| SecretCache { inner })
    }
}

/// What [`SecretCache::held`] reports of one secret.
#[cfg(feature = "metrics")]
pub(crate) struct Held {
    pub(crate) id: Arc<str>,
    pub(crate) since_created: Option<Duration>,
    pub(crate) lease_remaining: Option<Duration>,
    /// Past its TTL while the store fails, by this much.
    pub(crate) stale_for: Option<Duration>,
}

pub(crate) struct Inner {
    pub(super) provider: Arc<dyn SecretProvider>,
    pub(super) policy: Policy,
    /// Decides what the cache keeps (capacity, expiry); tells `index` what it drops.
    pub(super) store: moka::sync::Cache<Arc<str>, Arc<Entry>>,
    /// What reads look at.
    pub(super) index: Arc<Index>,
    pub(super) loads: Loads,
    pub(super) negatives: Negatives,
    pub(super) counters: Counters,
    /// Hits, bumped by every reader: sharded so readers on different threads write different lines.
    pub(super) hits: ShardedCounter,
    pub(super) events: Emitter<SecretEvent>,
    /// Every store call, for metrics.
    pub(super) calls: Emitter<StoreCall>,
    /// The provider's name, for store-call reports.
    pub(super) provider_name: Arc<str>,
    pub(super) watchers: Watchers,
    closed: AtomicBool,
    /// Flips to true at shutdown: watchers stop.
    shutdown: watch::Sender<bool>,
}

impl Inner {
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl SecretCache {
    /// Starts building a cache over `provider`.
    pub fn builder(provider: Arc<dyn SecretProvider>) -> SecretCacheBuilder {
        SecretCacheBuilder::new(provider)
    }

    pub(super) fn from_parts(
        provider: Arc<dyn SecretProvider>,
        policy: Policy,
        max_entries: u64,
        event_capacity: usize,
        hooks: Vec<Hook<SecretEvent>>,
    ) -> Self {
        // moka only bounds memory here; freshness is ours. An entry is useless once it can no
        // longer be served stale, so let moka drop it a little after that.
        let provider_name = Arc::from(provider.name());
        let index = Arc::new(Index::default());
        let evicted_from = Arc::clone(&index);
        let store = moka::sync::Cache::builder()
            .max_capacity(max_entries)
            .time_to_live(policy.ttl + policy.max_stale + Duration::from_secs(1))
            .eviction_listener(move |key: Arc<Arc<str>>, entry: Arc<Entry>, cause| {
                if cause != moka::notification::RemovalCause::Replaced {
                    evicted_from.remove_if_same(&key, &entry);
                }
            })
            .build();
        SecretCache {
            inner: Arc::new(Inner {
                provider,
                policy,
                store,
                index,
                loads: Loads::default(),
                negatives: Negatives::new(usize::try_from(max_entries).unwrap_or(usize::MAX)),
                counters: Counters::default(),
                hits: ShardedCounter::default(),
                events: Emitter::new(event_capacity, hooks),
                calls: Emitter::new(1, Vec::new()),
                provider_name,
                watchers: Watchers::default(),
                closed: AtomicBool::new(false),
                shutdown: watch::Sender::new(false),
            }),
        }
    }

    /// The current version of secret `id`.
    ///
    /// Cost: on a fresh hit, a hash lookup and an `Arc` clone, with no allocation and no await.
    ///
    /// # Concurrent calls on the same key
    ///
    /// All callers that find the key missing or expired wait for one provider call and share its
    /// result (or error). Past the refresh-ahead point, callers get the cached value at once and
    /// one of them starts a background refresh.
    ///
    /// # Cancellation
    ///
    /// Dropping the future stops this caller's wait only; the fetch goes on for the others and
    /// fills the cache. A fetch that panics or is cancelled (its runtime shutting down) fails its
    /// waiters with a transient error and leaves nothing behind: the next read starts a new one.
    ///
    /// # Errors
    ///
    /// The provider's error when there is no value to serve: not found, access denied (also while
    /// such an answer is remembered), or a retryable error when the last-known-good value is older
    /// than `max_stale` past its TTL; [`ErrorKind::Closed`](crate::ErrorKind::Closed) after
    /// [`shutdown`](Self::shutdown).
    pub async fn get(&self, id: &str) -> Result<Arc<Versioned<SecretValue>>> {
        self.read(id, &Selector::Current, Mode::Read)
            .await
            .map(|loaded| loaded.value)
    }

    /// The version of secret `id` that `selector` picks (a stage such as previous or pending, or
    /// a version id), cached like [`get`](Self::get).
    pub async fn get_selected(
        &self,
        id: &str,
        selector: &Selector,
    ) -> Result<Arc<Versioned<SecretValue>>> {
        self.read(id, selector, Mode::Read)
            .await
            .map(|loaded| loaded.value)
    }

    /// Asks the store for the current version of `id` now, and returns it.
    ///
    /// Use it when a consumer learns the cached value is wrong, for example when a database
    /// rejects the password. Calls are rate-limited per key: within `min_refresh_interval` of the
    /// last store call for `id`, it returns the cached value without a call.
    ///
    /// # Concurrent calls on the same key
    ///
    /// Coalesced with every other load of the key: 100 tasks refreshing at once cause one call.
    pub async fn refresh(&self, id: &str) -> Result<Arc<Versioned<SecretValue>>> {
        self.read(id, &Selector::Current, Mode::Force)
            .await
            .map(|loaded| loaded.value)
    }

    /// Refreshes what the cache holds of `id`, and nothing else: the current version if the cache
    /// holds or follows it (coalesced and rate-limited like [`refresh`](Self::refresh)); versions
    /// held under other selectors (previous, pending, by id) are dropped, so their next read
    /// fetches them. Returns `None`, without any store call, when the cache holds nothing of `id`:
    /// what a push subscriber calls for each announcement.
    ///
    /// [`Refreshed::store_answered`] tells whether the value came from the store after this call
    /// (false when the refresh was rate-limited, or the store failed and last-known-good was
    /// served).
    pub async fn refresh_if_cached(&self, id: &str) -> Option<Result<Refreshed>> {
        self.refresh_cached(id, Mode::Force).await
    }

    /// [`refresh_if_cached`](Self::refresh_if_cached), with `mode` `Force` (rate-limited) or
    /// `PastLimit`.
    pub(crate) async fn refresh_cached(&self, id: &str, mode: Mode) -> Option<Result<Refreshed>> {
        let current = cache_key(id, &Selector::Current);
        let others = |key: &str| Key::is_of(key, id) && key != current;
        let (held_current, held_others, before) = {
            let map = self.inner.index.load();
            let entry = map.get(current.as_ref());
            (
                entry.is_some(),
                map.keys().any(|key| others(key)),
                entry.map(|entry| entry.seq),
            )
        };
        if held_others {
            self.inner.forget(others, Fate::Invalidated);
        }
        if !held_current && !self.inner.watchers.watches(id) {
            return None;
        }
        Some(
            self.read(id, &Selector::Current, mode)
                .await
                .map(|loaded| Refreshed {
                    store_answered: before.is_none_or(|before| loaded.seq > before),
                    value: loaded.value,
                }),
        )
    }

    /// Removes every cached version of `id`, and any remembered failure for it: the next read
    /// fetches from the store, and handles on `id` reload at once.
    ///
    /// # Concurrent loads
    ///
    /// A load of `id` already under way does not put its result in the cache: its waiters get the
    /// result of a load started after the invalidation, and leased credentials it fetched are
    /// revoked. Loads of other secrets are not affected.
    pub fn invalidate(&self, id: &str) {
        self.inner
            .forget(|key| Key::is_of(key, id), Fate::Invalidated);
        self.inner
            .events
            .emit(SecretEvent::Invalidated { id: Arc::from(id) });
        self.inner.watchers.wake(id);
    }

    /// Removes every cached secret (and every remembered failure); handles reload at once.
    pub fn invalidate_all(&self) {
        self.inner.forget(|_| true, Fate::Invalidated);
        self.inner
            .events
            .emit(SecretEvent::Invalidated { id: Arc::from("*") });
        self.inner.watchers.wake_all();
    }

    /// Stops the cache: no task of the cache calls the store after this returns. Background
    /// watchers end, loads under way are aborted, cached values are dropped, and every later
    /// read, refresh or new handle fails with [`ErrorKind::Closed`](crate::ErrorKind::Closed).
    /// Handles keep serving their last snapshot from [`load`](crate::SecretHandle::load).
    ///
    /// Leases stay as they are; see [`shutdown_revoking_leases`](Self::shutdown_revoking_leases).
    /// A [`VaultSession`](crate::provider::VaultSession) has a shutdown of its own, for its token's
    /// keep-alive: call it after the caches that use it.
    pub async fn shutdown(&self) {
        self.inner.close();
        self.inner.loads.all_ended().await;
    }

    /// [`shutdown`](Self::shutdown), then revokes the leases of the leased secrets the cache held
    /// (Vault dynamic credentials), so their database users end now. Close pools built on them
    /// first. Returns how many leases were revoked.
    ///
    /// # Errors
    ///
    /// The first revocation that failed; the others are still attempted.
    pub async fn shutdown_revoking_leases(&self) -> Result<usize> {
        let leased = self.inner.forget_leased();
        self.shutdown().await;
        self.inner.revoke_all(leased).await
    }

    /// Counters since the cache was built.
    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats::default();
        self.inner.counters.fill(&mut stats);
        stats.hits = self.inner.hits.load();
        stats.provider_calls = stats.fetches + stats.probes + stats.lease_renewals;
        stats
    }

    /// A receiver of every [`SecretEvent`] from now on. A receiver that lags more than the event
    /// capacity behind loses the oldest events (and is told so by `RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<SecretEvent> {
        self.inner.events.subscribe()
    }

    /// Calls `hook` for every event from now on, on the task where it happens: keep it short. A
    /// hook that panics is logged and skipped; it cannot fail a load.
    pub fn on_event(&self, hook: impl Fn(&SecretEvent) + Send + Sync + 'static) {
        self.inner.events.add_hook(Arc::new(hook));
    }

    /// Calls `hook` after every call this cache makes to its store (probe, fetch, lease renewal),
    /// with its outcome and duration; for metrics. As for [`on_event`](Self::on_event): keep it
    /// short, a panic is contained.
    pub fn on_store_call(&self, hook: impl Fn(&StoreCall) + Send + Sync + 'static) {
        self.inner.calls.add_hook(Arc::new(hook));
    }

    /// The shortest time between two store calls for one key that [`refresh`](Self::refresh)
    /// forces (see [`SecretCacheBuilder::min_refresh_interval`]).
    pub fn min_refresh_interval(&self) -> Duration {
        self.inner.policy.min_refresh_interval
    }

    /// The provider this cache reads from.
    pub fn provider(&self) -> &Arc<dyn SecretProvider> {
        &self.inner.provider
    }

    /// Whether the cache holds any version of secret `id`, or a handle follows it: whether news
    /// of a change to `id` concerns this cache. Makes no store call.
    pub fn is_cached(&self, id: &str) -> bool {
        self.inner
            .index
            .load()
            .keys()
            .any(|key| Key::is_of(key, id))
            || self.inner.watchers.watches(id)
    }

    /// How long past its TTL the cache serves last-known-good while the store fails
    /// ([`SecretCacheBuilder::max_stale`]).
    pub fn max_stale(&self) -> Duration {
        self.inner.policy.max_stale
    }

    /// The current version of each secret the cache holds, with its timing, for gauges.
    #[cfg(feature = "metrics")]
    pub(crate) fn held(&self) -> Vec<Held> {
        let now = crate::time::Instant::now();
        self.inner
            .index
            .load()
            .values()
            .filter(|entry| entry.key.selector == Selector::Current)
            .map(|entry| Held {
                id: Arc::clone(&entry.key.id),
                since_created: entry.value.version.since_created(),
                lease_remaining: entry
                    .lease_end
                    .map(|end| end.saturating_duration_since(now)),
                stale_for: (entry.failures.load(Ordering::Acquire) > 0 && now > entry.expires_at)
                    .then(|| now.saturating_duration_since(entry.expires_at)),
            })
            .collect()
    }

    /// The number of entries (every selector) the cache holds.
    #[cfg(feature = "metrics")]
    pub(crate) fn len(&self) -> usize {
        self.inner.index.len()
    }

    /// A reference that does not keep the cache alive.
    #[cfg(feature = "metrics")]
    pub(crate) fn downgrade(&self) -> WeakCache {
        WeakCache(Arc::downgrade(&self.inner))
    }

    /// The ids of the secrets the cache holds or follows with a handle, each once: what a push
    /// subscriber re-checks after it was disconnected.
    pub fn cached_ids(&self) -> Vec<Arc<str>> {
        let mut ids: Vec<Arc<str>> = self
            .inner
            .index
            .load()
            .values()
            .map(|entry| Arc::clone(&entry.key.id))
            .chain(self.inner.watchers.ids())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// What [`SecretCache::refresh_if_cached`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Refreshed {
    /// The current version the cache holds after the refresh.
    pub value: Arc<Versioned<SecretValue>>,
    /// Whether that value is an answer of the store given after the call (false when the refresh
    /// was rate-limited, or the store failed and last-known-good was served).
    pub store_answered: bool,
}

/// What handles use of the cache: reading their key, following it, reporting what happens to it.
impl SecretCache {
    /// Reads `key` (forcing a store call, rate-limited, when `mode` is `Force`).
    pub(crate) async fn read_key(&self, key: &Key, mode: Mode) -> Result<Loaded> {
        if mode != Mode::Read && !key.selector.is_current() {
            // Other selectors have no rate-limited refresh: load them (coalesced).
            let seen = Seen(self.inner.index.get(&key.cache_key).map(|entry| entry.seq));
            return Inner::start_load(&self.inner, key.clone(), seen)
                .await
                .map(|entry| entry.loaded());
        }
        self.read(&key.id, &key.selector, mode).await
    }

    /// Registers `follower` for every load of `key` from now on, and returns what the cache holds
    /// now (a load may have landed since the follower last read).
    pub(crate) fn follow(
        &self,
        key: &Key,
        follower: std::sync::Weak<dyn Follower>,
    ) -> Option<Loaded> {
        if let Some(wake) = self.inner.watchers.register(key, follower) {
            let shutdown = self.inner.shutdown.subscribe();
            let _task = tokio::spawn(Inner::watch(
                Arc::downgrade(&self.inner),
                key.clone(),
                wake,
                shutdown,
            ));
        }
        self.inner
            .index
            .get(&key.cache_key)
            .map(|entry| entry.loaded())
    }

    /// Emits `event` to the cache's log, hooks and subscribers.
    pub(crate) fn emit(&self, event: SecretEvent) {
        self.inner.events.emit(event);
    }

    /// How long the previous version stays acceptable after a handle swaps.
    pub(crate) fn grace_period(&self) -> Duration {
        self.inner.policy.grace_period
    }
}

impl Inner {
    /// Removes the keys `matches` selects from the cache, with their remembered failures, and
    /// gives their loads under way `fate`.
    pub(super) fn forget(&self, matches: impl Fn(&str) -> bool, fate: Fate) {
        {
            let mut loads = self.loads.lock();
            loads.discard_where(fate, &matches);
            self.index.remove_where(&matches);
            self.negatives.clear_where(&matches);
        }
        let in_store: Vec<Arc<str>> = self
            .store
            .iter()
            .filter(|(key, _)| matches(key))
            .map(|(key, _)| Arc::clone(&*key))
            .collect();
        for key in in_store {
            self.store.invalidate(&key);
        }
    }

    /// Stops everything: no store call from the cache's tasks after this.
    pub(super) fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let aborted = self.loads.lock().close_all();
        self.index.clear();
        self.store.invalidate_all();
        self.watchers.clear();
        let _ = self.shutdown.send(true);
        tracing::info!(aborted_loads = aborted, "credswap: secret cache shut down");
    }
}
