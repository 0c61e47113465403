use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use backon::Retryable;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio::sync::broadcast;
use tracing::Instrument;

use super::builder::SecretCacheBuilder;
use super::index::Index;
use super::policy::Policy;
use super::watch::{Sink, Watchers};
use crate::error::{Error, Result};
use crate::events::{CacheStats, Hook, SecretEvent, bump};
use crate::provider::SecretProvider;
use crate::time::later;
use crate::value::{SecretValue, Selector, Versioned};

/// A TTL-cached, version-aware view of one [`SecretProvider`].
///
/// - A **fresh hit** makes no provider call and costs an `Arc` clone.
/// - Past its **refresh-ahead point** (jittered per entry), a hit still returns at once and starts
///   exactly one background refresh.
/// - An **expired or missing** key is fetched once however many tasks wait for it.
/// - When the store fails with a retryable error (throttled, unreachable, 5xx), the last-known-good
///   value is served for up to `max_stale` past its TTL, and the store is asked again only after a
///   jittered, growing backoff. A missing or denied secret is never served stale and never retried
///   in a loop.
/// - When the store has a cheap version probe (AWS `DescribeSecret`, Vault KV metadata), a refresh
///   that finds the version unchanged extends the entry without fetching the value.
///
/// Cloning a cache is cheap; clones share everything. It needs a Tokio runtime: loads run as
/// spawned tasks, so a caller that gives up waiting does not cancel the fetch for the others.
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
            .field("stats", &self.stats())
            .finish()
    }
}

/// What a cached value is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) id: Arc<str>,
    pub(crate) selector: Selector,
    /// `id` for the current version (so a hit needs no allocation), `id` NUL selector otherwise.
    pub(crate) cache_key: Arc<str>,
}

impl Key {
    pub(crate) fn new(id: &str, selector: &Selector) -> Result<Key> {
        if id.contains('\0') {
            return Err(Error::invalid_request(
                id.replace('\0', "\\0"),
                "a secret id must not contain NUL",
            ));
        }
        let cache_key = cache_key(id, selector);
        Ok(Key {
            id: Arc::from(id),
            selector: selector.clone(),
            cache_key: Arc::from(cache_key.as_ref()),
        })
    }
}

fn cache_key<'a>(id: &'a str, selector: &Selector) -> Cow<'a, str> {
    if matches!(selector, Selector::Current) {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(format!("{id}\0{selector}"))
    }
}

/// One cached value and the timing around it.
pub(crate) struct Entry {
    pub(crate) key: Key,
    pub(crate) value: Arc<Versioned<SecretValue>>,
    /// When the store last confirmed this version (a fetch, or a probe that found it unchanged).
    pub(crate) checked_at: Instant,
    pub(crate) refresh_at: Instant,
    pub(crate) expires_at: Instant,
    /// When the value's lease ends: never served after it, stale or not.
    lease_end: Option<Instant>,
    /// Set while a background refresh of this entry runs, so only one starts.
    refreshing: AtomicBool,
    failures: AtomicU32,
    /// No store call before this instant (nanoseconds since the cache's epoch; 0: none).
    retry_at: AtomicU64,
    last_error: Mutex<Option<Error>>,
}

impl Entry {
    fn stale_until(&self, policy: &Policy) -> Instant {
        let until = self.expires_at + policy.max_stale;
        self.lease_end.map_or(until, |end| until.min(end))
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
    let mut refresh_at = now + policy.refresh_after();
    let mut expires_at = now + policy.ttl;
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

type LoadFuture = Shared<BoxFuture<'static, Result<Arc<Entry>>>>;

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fetches: AtomicU64,
    probes: AtomicU64,
    refresh_failures: AtomicU64,
    stale_serves: AtomicU64,
    rotations: AtomicU64,
    lease_renewals: AtomicU64,
}

pub(crate) struct Inner {
    pub(crate) provider: Arc<dyn SecretProvider>,
    pub(crate) policy: Policy,
    /// Decides what the cache keeps (capacity, expiry); tells `index` what it drops.
    store: moka::sync::Cache<Arc<str>, Arc<Entry>>,
    /// What reads look at.
    index: Arc<Index>,
    inflight: Mutex<HashMap<Arc<str>, LoadFuture>>,
    counters: Counters,
    events: broadcast::Sender<SecretEvent>,
    hooks: RwLock<Vec<Hook>>,
    pub(crate) watchers: Watchers,
    epoch: Instant,
    /// Bumped by every invalidation: a load that started before one does not store its result.
    generation: AtomicU64,
}

/// How a read should treat the store.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Serve from the cache when it can.
    Read,
    /// Ask the store now (rate-limited by `min_refresh_interval`).
    Force,
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
        hooks: Vec<Hook>,
    ) -> Self {
        // moka only bounds memory here; freshness is ours. An entry is useless once it can no
        // longer be served stale, so let moka drop it a little after that.
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
        let (events, _) = broadcast::channel(event_capacity);
        SecretCache {
            inner: Arc::new(Inner {
                provider,
                policy,
                store,
                index,
                inflight: Mutex::new(HashMap::new()),
                counters: Counters::default(),
                events,
                hooks: RwLock::new(hooks),
                watchers: Watchers::default(),
                epoch: Instant::now(),
                generation: AtomicU64::new(0),
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
    /// fills the cache.
    ///
    /// # Errors
    ///
    /// The provider's error when there is no value to serve: not found, access denied, or a
    /// retryable error when the last-known-good value is older than `max_stale` past its TTL.
    pub async fn get(&self, id: &str) -> Result<Arc<Versioned<SecretValue>>> {
        self.read(id, &Selector::Current, Mode::Read).await
    }

    /// The version of secret `id` that `selector` picks (a stage such as previous or pending, or
    /// a version id), cached like [`get`](Self::get).
    pub async fn get_selected(
        &self,
        id: &str,
        selector: &Selector,
    ) -> Result<Arc<Versioned<SecretValue>>> {
        self.read(id, selector, Mode::Read).await
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
        self.read(id, &Selector::Current, Mode::Force).await
    }

    /// Removes every cached version of `id`: the next read fetches from the store, and handles on
    /// `id` reload at once. A load of `id` already under way does not put its result in the cache.
    pub fn invalidate(&self, id: &str) {
        let inner = &self.inner;
        let _ = inner.generation.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{id}\0");
        let matches = |key: &str| key == id || key.starts_with(&prefix);
        inner.index.remove_where(matches);
        let in_store: Vec<Arc<str>> = inner
            .store
            .iter()
            .filter(|(key, _)| matches(key))
            .map(|(key, _)| Arc::clone(&*key))
            .collect();
        for key in in_store {
            inner.store.invalidate(&key);
        }
        inner.emit(SecretEvent::Invalidated { id: Arc::from(id) });
        inner.watchers.wake(id);
    }

    /// Removes every cached secret; handles reload at once.
    pub fn invalidate_all(&self) {
        let inner = &self.inner;
        let _ = inner.generation.fetch_add(1, Ordering::SeqCst);
        inner.index.clear();
        inner.store.invalidate_all();
        inner.emit(SecretEvent::Invalidated { id: Arc::from("*") });
        inner.watchers.wake_all();
    }

    /// Revokes the lease of every cached leased secret (Vault dynamic credentials) and forgets
    /// those secrets: call it at shutdown so the database users they created end now rather than
    /// at their max TTL. Returns how many leases were revoked.
    ///
    /// Handles keep their last snapshot, so stop using them (and close pools built on them)
    /// first: the credentials no longer work.
    ///
    /// # Errors
    ///
    /// The first revocation that failed; the others are still attempted.
    pub async fn revoke_leases(&self) -> Result<usize> {
        let leased: Vec<Arc<Entry>> = self
            .inner
            .index
            .load()
            .values()
            .filter(|entry| entry.value.version.lease.is_some())
            .cloned()
            .collect();
        let mut revoked = 0;
        let mut first_error = None;
        for entry in leased {
            let Some(lease) = &entry.value.version.lease else {
                continue;
            };
            match self.inner.provider.revoke_lease(lease).await {
                Ok(()) => {
                    revoked += 1;
                    self.inner
                        .index
                        .remove_if_same(&entry.key.cache_key, &entry);
                    self.inner.store.invalidate(&entry.key.cache_key);
                }
                Err(error) => {
                    tracing::warn!(id = %entry.key.id, kind = %error.kind(), "lease revocation failed");
                    let _ = first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(revoked),
        }
    }

    /// Counters since the cache was built.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let fetches = load(&c.fetches);
        let probes = load(&c.probes);
        CacheStats {
            hits: load(&c.hits),
            misses: load(&c.misses),
            provider_calls: fetches + probes + load(&c.lease_renewals),
            fetches,
            probes,
            refresh_failures: load(&c.refresh_failures),
            stale_serves: load(&c.stale_serves),
            rotations: load(&c.rotations),
            lease_renewals: load(&c.lease_renewals),
        }
    }

    /// A receiver of every [`SecretEvent`] from now on. A receiver that lags more than the event
    /// capacity behind loses the oldest events (and is told so by `RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<SecretEvent> {
        self.inner.events.subscribe()
    }

    /// Calls `hook` for every event from now on, on the task where it happens: keep it short.
    pub fn on_event(&self, hook: impl Fn(&SecretEvent) + Send + Sync + 'static) {
        self.inner
            .hooks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(hook));
    }

    /// The provider this cache reads from.
    pub fn provider(&self) -> &Arc<dyn SecretProvider> {
        &self.inner.provider
    }

    /// Whether the cache holds any version of secret `id`, or a handle follows it: whether news
    /// of a change to `id` concerns this cache. Lock-free; makes no store call.
    pub fn is_cached(&self, id: &str) -> bool {
        let prefix = format!("{id}\0");
        self.inner
            .index
            .load()
            .keys()
            .any(|key| &**key == id || key.starts_with(&prefix))
            || self.inner.watchers.watches(id)
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

    async fn read(
        &self,
        id: &str,
        selector: &Selector,
        mode: Mode,
    ) -> Result<Arc<Versioned<SecretValue>>> {
        let inner = &self.inner;
        let now = Instant::now();
        let found = {
            // The hot path: one lock-free map load, no allocation, no await.
            let map = inner.index.load();
            let found = map.get(cache_key(id, selector).as_ref());
            if let (Some(entry), Mode::Read) = (found, mode) {
                if now < entry.refresh_at {
                    bump(&inner.counters.hits);
                    return Ok(Arc::clone(&entry.value));
                }
            }
            found.cloned()
        };
        if let (Some(entry), Mode::Read) = (&found, mode) {
            if now < entry.expires_at {
                bump(&inner.counters.hits);
                if now >= inner.retry_at(entry) && !entry.refreshing.swap(true, Ordering::AcqRel) {
                    // The load runs as its own task; nobody here needs to wait for it.
                    drop(Inner::start_load(inner, entry.key.clone()));
                }
                return Ok(Arc::clone(&entry.value));
            }
            // Expired. While backing off after failures, serve last-known-good without a call.
            if now < inner.retry_at(entry) {
                if now < entry.stale_until(&inner.policy) {
                    return Ok(inner.serve_stale(entry, now));
                }
                let last = entry.last_error.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(error) = last.clone() {
                    return Err(error);
                }
            }
        }
        if let (Some(entry), Mode::Force) = (&found, mode) {
            // Rate limit: the store was asked about this key moments ago, or we are backing off.
            let rate_limited = now.duration_since(entry.checked_at)
                < inner.policy.min_refresh_interval
                || now < inner.retry_at(entry);
            if rate_limited && now < entry.expires_at {
                bump(&inner.counters.hits);
                return Ok(Arc::clone(&entry.value));
            }
            if rate_limited && now < entry.stale_until(&inner.policy) {
                return Ok(inner.serve_stale(entry, now));
            }
        }
        bump(&inner.counters.misses);
        let key = match &found {
            Some(entry) => entry.key.clone(),
            None => Key::new(id, selector)?,
        };
        match Inner::start_load(inner, key).await {
            Ok(entry) => Ok(Arc::clone(&entry.value)),
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

    /// The cached entry of `key`, if any (used by handles to catch up after registering).
    pub(crate) fn peek(&self, key: &Key) -> Option<Arc<Versioned<SecretValue>>> {
        self.inner
            .index
            .get(&key.cache_key)
            .map(|entry| Arc::clone(&entry.value))
    }

    /// Makes sure a load of `key` happens soon and returns when it finished.
    pub(crate) async fn load(&self, key: &Key) -> Result<Arc<Versioned<SecretValue>>> {
        Inner::start_load(&self.inner, key.clone())
            .await
            .map(|entry| Arc::clone(&entry.value))
    }

    /// When the background watcher of `key` should next load it, and whether the cache holds it.
    pub(crate) fn next_refresh(&self, key: &Key) -> Option<Instant> {
        let entry = self.inner.index.get(&key.cache_key)?;
        Some(entry.refresh_at.max(self.inner.retry_at(&entry)))
    }

    pub(crate) fn register(&self, key: &Key, sink: Weak<dyn Sink>) {
        self.inner.watchers.register(self, key, sink);
    }

    pub(crate) fn downgrade(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        SecretCache { inner }
    }
}

impl Inner {
    fn retry_at(&self, entry: &Entry) -> Instant {
        match entry.retry_at.load(Ordering::Acquire) {
            0 => self.epoch,
            nanos => self.epoch + Duration::from_nanos(nanos),
        }
    }

    fn set_retry_at(&self, entry: &Entry, at: Instant) {
        let nanos = u64::try_from(at.duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        entry.retry_at.store(nanos, Ordering::Release);
    }

    fn serve_stale(&self, entry: &Entry, now: Instant) -> Arc<Versioned<SecretValue>> {
        bump(&self.counters.stale_serves);
        self.emit(SecretEvent::ServedStale {
            id: Arc::clone(&entry.key.id),
            version: entry.value.version.id.clone(),
            stale_for: now.saturating_duration_since(entry.expires_at),
        });
        Arc::clone(&entry.value)
    }

    pub(crate) fn emit(&self, event: SecretEvent) {
        match &event {
            SecretEvent::RefreshFailed { .. } | SecretEvent::ServedStale { .. } => {
                tracing::warn!(event = event.name(), id = event.id(), details = ?event, "secret event");
            }
            SecretEvent::DecodeFailed { .. } => {
                tracing::error!(event = event.name(), id = event.id(), details = ?event, "secret event");
            }
            SecretEvent::Fetched { .. } => {
                tracing::debug!(event = event.name(), id = event.id(), details = ?event, "secret event");
            }
            _ => {
                tracing::info!(event = event.name(), id = event.id(), details = ?event, "secret event");
            }
        }
        let hooks = self.hooks.read().unwrap_or_else(|e| e.into_inner());
        for hook in hooks.iter() {
            hook(&event);
        }
        let _ = self.events.send(event);
    }

    /// Joins the load of `key` under way, or starts one.
    fn start_load(this: &Arc<Inner>, key: Key) -> LoadFuture {
        let mut inflight = this.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(load) = inflight.get(&key.cache_key) {
            return load.clone();
        }
        let task_inner = Arc::clone(this);
        let task_key = key.clone();
        let span = tracing::debug_span!("credswap.load", id = %key.id, selector = %key.selector);
        let task = tokio::spawn(
            async move {
                let result = task_inner.load_now(&task_key).await;
                let _ = task_inner
                    .inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&task_key.cache_key);
                result
            }
            .instrument(span),
        );
        let id = Arc::clone(&key.id);
        let load =
            async move {
                match task.await {
                    Ok(result) => result,
                    Err(join) => Err(Error::transient(id, "the secret load task failed")
                        .with_message(if join.is_panic() {
                            "the secret load task panicked"
                        } else {
                            "the secret load task was cancelled"
                        })),
                }
            }
            .boxed()
            .shared();
        let _ = inflight.insert(Arc::clone(&key.cache_key), load.clone());
        load
    }

    /// Asks the store for `key` once (retrying with backoff when there is nothing to fall back
    /// on), stores the outcome, notifies handles.
    async fn load_now(&self, key: &Key) -> Result<Arc<Entry>> {
        let generation = self.generation.load(Ordering::SeqCst);
        let previous = self.index.get(&key.cache_key);
        let result = self.ask_store(key, previous.as_deref()).await;
        // Let the next refresh-ahead start: on the entry we began from, and on any that replaced
        // it meanwhile (a read may have flagged it while joining this load).
        for entry in [previous.clone(), self.index.get(&key.cache_key)]
            .into_iter()
            .flatten()
        {
            entry.refreshing.store(false, Ordering::Release);
        }
        let now = Instant::now();
        let value = match result {
            Ok(value) => value,
            Err(error) => {
                bump(&self.counters.refresh_failures);
                let (consecutive_failures, retry_in) = match &previous {
                    Some(previous) => {
                        let failures = previous.failures.fetch_add(1, Ordering::AcqRel) + 1;
                        let delay = self.policy.retry_delay(failures, error.retry_after());
                        self.set_retry_at(previous, later(now, delay));
                        *previous
                            .last_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = Some(error.clone());
                        (failures, delay)
                    }
                    None => (1, Duration::ZERO),
                };
                if let (false, Some(previous)) = (error.allows_stale(), &previous) {
                    // Gone or denied: last-known-good must not outlive this answer.
                    self.index.remove_if_same(&key.cache_key, previous);
                    self.store.invalidate(&key.cache_key);
                }
                self.emit(SecretEvent::RefreshFailed {
                    id: Arc::clone(&key.id),
                    kind: error.kind(),
                    consecutive_failures,
                    retry_in,
                });
                return Err(error);
            }
        };
        let (refresh_at, expires_at, lease_end) = timing(&self.policy, now, &value);
        let entry = Arc::new(Entry {
            key: key.clone(),
            value,
            checked_at: now,
            refresh_at,
            expires_at,
            lease_end,
            refreshing: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            retry_at: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        if self.generation.load(Ordering::SeqCst) != generation {
            // Invalidated while we asked: hand the value to this load's waiters, but neither cache
            // it nor push it to handles; the invalidation already woke them to load again.
            return Ok(entry);
        }
        // Index first: if moka refuses or evicts the entry at once, its listener removes it again.
        self.index
            .insert(Arc::clone(&key.cache_key), Arc::clone(&entry));
        self.store
            .insert(Arc::clone(&key.cache_key), Arc::clone(&entry));
        match &previous {
            Some(previous) if previous.value.version.id != entry.value.version.id => {
                bump(&self.counters.rotations);
                self.emit(SecretEvent::Rotated {
                    id: Arc::clone(&key.id),
                    selector: key.selector.clone(),
                    old: previous.value.version.id.clone(),
                    new: entry.value.version.id.clone(),
                });
            }
            Some(_) => {}
            None => self.emit(SecretEvent::Fetched {
                id: Arc::clone(&key.id),
                selector: key.selector.clone(),
                version: entry.value.version.id.clone(),
            }),
        }
        self.watchers.offer(self, key, &entry.value);
        Ok(entry)
    }

    async fn ask_store(
        &self,
        key: &Key,
        previous: Option<&Entry>,
    ) -> Result<Arc<Versioned<SecretValue>>> {
        if let Some(previous) = previous {
            if let Some(lease) = &previous.value.version.lease {
                return self.renew_or_replace(key, previous, lease).await;
            }
            // A cheap probe first: an unchanged version needs no fetch. `Ok(None)` means the
            // provider cannot probe and made no call.
            match self.provider.probe(&key.id, &key.selector).await {
                Ok(Some(version)) => {
                    bump(&self.counters.probes);
                    if version == previous.value.version.id {
                        return Ok(Arc::clone(&previous.value));
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    bump(&self.counters.probes);
                    return Err(error);
                }
            }
            bump(&self.counters.fetches);
            return self
                .provider
                .fetch(&key.id, &key.selector)
                .await
                .map(Arc::new);
        }
        self.fetch_with_retries(key).await
    }

    /// A leased value: renew the lease while the store grants it in full; once a renewal comes
    /// back shortened (the max TTL is near) or is refused, fetch new credentials, before the old
    /// ones end.
    async fn renew_or_replace(
        &self,
        key: &Key,
        previous: &Entry,
        lease: &crate::value::Lease,
    ) -> Result<Arc<Versioned<SecretValue>>> {
        if lease.renewable {
            match self.provider.renew_lease(lease).await {
                Ok(Some(renewed)) if renewed.duration >= lease.duration => {
                    bump(&self.counters.lease_renewals);
                    self.emit(SecretEvent::LeaseRenewed {
                        id: Arc::clone(&key.id),
                        version: previous.value.version.id.clone(),
                        expires_in: renewed.duration,
                    });
                    let mut value = Versioned::clone(&previous.value);
                    value.version.lease = Some(renewed);
                    return Ok(Arc::new(value));
                }
                Ok(_) => {
                    tracing::info!(id = %key.id, "lease near its max TTL: fetching new credentials");
                }
                Err(error) if error.is_retryable() => return Err(error),
                Err(error) => {
                    tracing::info!(id = %key.id, kind = %error.kind(), "lease renewal refused: fetching new credentials");
                }
            }
        }
        self.fetch_with_retries(key).await
    }

    async fn fetch_with_retries(&self, key: &Key) -> Result<Arc<Versioned<SecretValue>>> {
        // Retry passing failures a few times before giving up.
        let fetch = || async {
            bump(&self.counters.fetches);
            self.provider.fetch(&key.id, &key.selector).await
        };
        fetch
            .retry(
                self.policy
                    .backoff()
                    .with_max_times(self.policy.cold_retries),
            )
            .when(Error::is_retryable)
            .adjust(|error, delay| {
                delay.map(|d| d.max(error.retry_after().unwrap_or(Duration::ZERO)))
            })
            .notify(|error, delay| {
                tracing::debug!(id = %key.id, kind = %error.kind(), ?delay, "retrying secret fetch");
            })
            .await
            .map(Arc::new)
    }
}
