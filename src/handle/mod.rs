//! Typed, atomically swapped views of one secret.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::cache::SecretCache;
use crate::cache::core::{Inner, Key};
use crate::cache::watch::Sink;
use crate::error::{Error, ErrorKind, Result, describe_json_error};
use crate::events::SecretEvent;
use crate::value::{SecretValue, Selector, Version, VersionId, Versioned};

/// Turns a secret's content into a `T`. Must not put the content into its error.
pub(crate) type Decoder<T> = fn(&str, &SecretValue) -> Result<T>;

pub(crate) fn decode_json<T: DeserializeOwned>(id: &str, value: &SecretValue) -> Result<T> {
    serde_json::from_slice(value.expose_secret())
        .map_err(|err| Error::decode(id, describe_json_error(&err)))
}

pub(crate) fn decode_raw(_id: &str, value: &SecretValue) -> Result<SecretValue> {
    Ok(value.clone())
}

/// What a handle holds at one moment: the current value and, for a grace period after a swap, the
/// one before it.
pub struct Snapshot<T> {
    current: Arc<T>,
    version: Version,
    previous: Option<Previous<T>>,
}

struct Previous<T> {
    value: Arc<T>,
    version: Version,
    valid_until: Instant,
}

impl<T> Snapshot<T> {
    /// The current value.
    pub fn current(&self) -> &T {
        &self.current
    }

    /// The current value's version.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// The value before the last swap, while its grace period lasts.
    pub fn previous(&self) -> Option<&T> {
        self.previous
            .as_ref()
            .filter(|p| Instant::now() < p.valid_until)
            .map(|p| &*p.value)
    }

    /// The version of the value before the last swap (also after its grace period ended).
    pub fn previous_version(&self) -> Option<&Version> {
        self.previous.as_ref().map(|p| &p.version)
    }

    /// Until when [`previous`](Self::previous) is accepted.
    pub fn previous_valid_until(&self) -> Option<Instant> {
        self.previous.as_ref().map(|p| p.valid_until)
    }

    /// Whether `check` accepts the current value, or the previous one while its grace period lasts:
    /// a validator's dual-read during a rotation (an API key checked against both the new and the
    /// old key, until every client has moved on).
    pub fn accepts(&self, check: impl Fn(&T) -> bool) -> bool {
        check(&self.current) || self.previous().is_some_and(check)
    }
}

impl<T> fmt::Debug for Snapshot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values are never printed, whatever T is.
        f.debug_struct("Snapshot")
            .field("version", &self.version.id)
            .field(
                "previous_version",
                &self.previous.as_ref().map(|p| &p.version.id),
            )
            .field("previous_valid_until", &self.previous_valid_until())
            .finish_non_exhaustive()
    }
}

struct Shared<T> {
    key: Key,
    cache: SecretCache,
    decoder: Decoder<T>,
    grace: Duration,
    snapshot: ArcSwap<Snapshot<T>>,
    /// Serializes swaps (reads never take it).
    swap_lock: Mutex<()>,
    changes: watch::Sender<u64>,
    /// The last decode failure, with the version that caused it (not decoded again).
    last_error: Mutex<Option<(VersionId, Error)>>,
}

/// A typed secret that follows rotations: the value is swapped atomically when the cache sees a
/// new version, and the version before it stays available for a grace period.
///
/// Get one from [`SecretCache::handle`] (JSON into any `DeserializeOwned` type) or
/// [`SecretCache::handle_raw`] (the raw [`SecretValue`]). Clones are cheap and share one snapshot.
///
/// - [`load`](Self::load) is lock-free and allocation-free: take it for every use rather than
///   keeping a copy, and never hold its guard across an `.await`.
/// - [`accepts`](Self::accepts) checks the current value, then the previous one within grace.
/// - [`changed`](Self::changed) waits for the next swap; [`refresh`](Self::refresh) asks the store
///   now.
///
/// A new version that cannot be decoded does not replace the snapshot: the handle keeps the last
/// good value, emits [`SecretEvent::DecodeFailed`] and reports it through
/// [`last_error`](Self::last_error).
///
/// ```
/// use std::sync::Arc;
/// use credswap::{MemoryProvider, SecretCache};
///
/// #[derive(serde::Deserialize)]
/// struct ApiKey {
///     key: String,
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = Arc::new(MemoryProvider::new());
/// store.set("partner-api", r#"{"key": "k-1"}"#);
/// let cache = SecretCache::builder(store.clone())
///     // Let `refresh` reach the store at once (the default spaces forced refreshes 1 s apart).
///     .min_refresh_interval(std::time::Duration::ZERO)
///     .build()
///     .unwrap();
/// let handle = cache.handle::<ApiKey>("partner-api").await.unwrap();
///
/// store.set("partner-api", r#"{"key": "k-2"}"#);
/// handle.refresh().await.unwrap();
/// assert_eq!(handle.load().current().key, "k-2");
/// // Within the grace period both keys are accepted.
/// assert!(handle.accepts(|k| k.key == "k-1"));
/// assert!(handle.accepts(|k| k.key == "k-2"));
/// # });
/// ```
pub struct SecretHandle<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for SecretHandle<T> {
    fn clone(&self) -> Self {
        SecretHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> fmt::Debug for SecretHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretHandle")
            .field("id", &self.shared.key.id)
            .field("selector", &self.shared.key.selector)
            .field("snapshot", &**self.shared.snapshot.load())
            .finish()
    }
}

impl<T: Send + Sync + 'static> SecretHandle<T> {
    pub(crate) async fn open(
        cache: &SecretCache,
        id: &str,
        selector: &Selector,
        decoder: Decoder<T>,
    ) -> Result<Self> {
        let key = Key::new(id, selector)?;
        let value = cache.get_selected(id, selector).await?;
        let current = decoder(id, &value.value)?;
        let shared = Arc::new(Shared {
            key: key.clone(),
            cache: cache.clone(),
            decoder,
            grace: cache.inner.policy.grace_period,
            snapshot: ArcSwap::from_pointee(Snapshot {
                current: Arc::new(current),
                version: value.version.clone(),
                previous: None,
            }),
            swap_lock: Mutex::new(()),
            changes: watch::Sender::new(0),
            last_error: Mutex::new(None),
        });
        let sink: Arc<dyn Sink> = shared.clone();
        let weak: Weak<dyn Sink> = Arc::downgrade(&sink);
        drop(sink);
        cache.register(&key, weak);
        // A rotation may have landed between our read and the registration.
        if let Some(latest) = cache.peek(&key) {
            shared.offer(&cache.inner, &latest);
        }
        Ok(SecretHandle { shared })
    }

    /// The current snapshot. Lock-free and allocation-free (tens of nanoseconds).
    ///
    /// Do not hold the guard across an `.await` or for long: it pins the snapshot it points to.
    /// Use [`load_full`](Self::load_full) to keep one.
    pub fn load(&self) -> Guard<Arc<Snapshot<T>>> {
        self.shared.snapshot.load()
    }

    /// The current snapshot as an `Arc` to keep (one atomic increment more than `load`).
    pub fn load_full(&self) -> Arc<Snapshot<T>> {
        self.shared.snapshot.load_full()
    }

    /// Whether `check` accepts the current value, or the previous one within its grace period.
    /// See [`Snapshot::accepts`].
    pub fn accepts(&self, check: impl Fn(&T) -> bool) -> bool {
        self.shared.snapshot.load().accepts(check)
    }

    /// Waits for the next swap and returns the new snapshot.
    ///
    /// # Cancellation
    ///
    /// Safe to drop; a swap that happens while nobody waits is not replayed to the next call.
    pub async fn changed(&self) -> Arc<Snapshot<T>> {
        let mut receiver = self.shared.changes.subscribe();
        // The sender lives in `shared`, which we hold: `changed` cannot fail while we wait.
        let _ = receiver.changed().await;
        self.load_full()
    }

    /// Asks the store for the newest version now (coalesced with every other load of this secret,
    /// rate-limited by the cache's `min_refresh_interval`) and returns the snapshot after it.
    ///
    /// # Errors
    ///
    /// The store's error, or [`ErrorKind::Decode`] when the new version cannot be decoded (the
    /// handle then keeps its previous snapshot).
    pub async fn refresh(&self) -> Result<Arc<Snapshot<T>>> {
        let shared = &self.shared;
        let value = if shared.key.selector == Selector::Current {
            shared.cache.refresh(&shared.key.id).await?
        } else {
            shared.cache.load(&shared.key).await?
        };
        // The load offered the value to us already; offer again in case it came from the cache.
        shared.offer(&shared.cache.inner, &value);
        let snapshot = self.load_full();
        if snapshot.version.id != value.version.id {
            let error = self.last_error().filter(|e| e.kind() == ErrorKind::Decode);
            return Err(error.unwrap_or_else(|| {
                Error::decode(&*shared.key.id, "the new version was not applied")
            }));
        }
        Ok(snapshot)
    }

    /// The last error met while following this secret (a decode failure of a new version), cleared
    /// by the next successful swap.
    pub fn last_error(&self) -> Option<Error> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, error)| error.clone())
    }

    /// The secret id.
    pub fn id(&self) -> &str {
        &self.shared.key.id
    }

    /// The cache the handle reads through.
    pub fn cache(&self) -> &SecretCache {
        &self.shared.cache
    }
}

impl<T: Send + Sync + 'static> Sink for Shared<T> {
    fn offer(&self, inner: &Inner, value: &Arc<Versioned<SecretValue>>) {
        let _guard = self.swap_lock.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.snapshot.load_full();
        if old.version.id == value.version.id {
            if old.version != value.version {
                // Same version, new metadata (a renewed lease, moved stages): no swap to announce.
                self.snapshot.store(Arc::new(Snapshot {
                    current: Arc::clone(&old.current),
                    version: value.version.clone(),
                    previous: old.previous.as_ref().map(|p| Previous {
                        value: Arc::clone(&p.value),
                        version: p.version.clone(),
                        valid_until: p.valid_until,
                    }),
                }));
            }
            return;
        }
        let mut last_error = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        if last_error
            .as_ref()
            .is_some_and(|(rejected, _)| rejected == &value.version.id)
        {
            // Already refused this version and said so.
            return;
        }
        match (self.decoder)(&self.key.id, &value.value) {
            Ok(decoded) => {
                self.snapshot.store(Arc::new(Snapshot {
                    current: Arc::new(decoded),
                    version: value.version.clone(),
                    previous: Some(Previous {
                        value: Arc::clone(&old.current),
                        version: old.version.clone(),
                        valid_until: Instant::now() + self.grace,
                    }),
                }));
                *last_error = None;
                drop(last_error);
                self.changes.send_modify(|n| *n = n.wrapping_add(1));
                inner.emit(SecretEvent::HandleSwapped {
                    id: Arc::clone(&self.key.id),
                    old: old.version.id.clone(),
                    new: value.version.id.clone(),
                });
            }
            Err(error) => {
                let reason = Arc::from(error.message().unwrap_or("decode failed"));
                *last_error = Some((value.version.id.clone(), error));
                // Hooks may call back into the handle: release the lock before they run.
                drop(last_error);
                inner.emit(SecretEvent::DecodeFailed {
                    id: Arc::clone(&self.key.id),
                    version: value.version.id.clone(),
                    reason,
                });
            }
        }
    }
}

impl SecretCache {
    /// A handle on the current version of `id`, decoded from JSON into `T`.
    ///
    /// Fetches (or reads from the cache) the current version now. From then on a background task
    /// refreshes the secret at its refresh point and swaps the handle when the version changes.
    /// Handles on one id share that task.
    ///
    /// Put secret fields in types that do not print them, such as [`secrecy::SecretString`].
    ///
    /// # Errors
    ///
    /// The store's error, or [`ErrorKind::Decode`] when the current version is not valid JSON for
    /// `T` (the message names the position or the missing field, never the content).
    pub async fn handle<T>(&self, id: &str) -> Result<SecretHandle<T>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        SecretHandle::open(self, id, &Selector::Current, decode_json::<T>).await
    }

    /// A handle on the raw content of `id`, text or bytes.
    pub async fn handle_raw(&self, id: &str) -> Result<SecretHandle<SecretValue>> {
        SecretHandle::open(self, id, &Selector::Current, decode_raw).await
    }
}
