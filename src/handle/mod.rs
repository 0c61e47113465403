//! Typed, atomically swapped views of one secret.

mod follow;
mod snapshot;
pub(crate) mod status;

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, Guard};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use self::follow::State;
#[cfg(any(feature = "http-server", feature = "jwt"))]
pub(crate) use self::snapshot::Matched;
pub use self::{snapshot::Snapshot, status::HandleStatus};
use crate::cache::SecretCache;
use crate::cache::key::Key;
use crate::cache::key::Mode;
use crate::cache::watch::Follower;
use crate::error::{Error, Result, describe_json_error};
use crate::time::{Instant, instant_of};
use crate::value::{SecretValue, Selector, Stage, Version};

/// Turns a secret's content into a `T`. Must not put the content into its error.
pub(crate) type Decoder<T> = fn(&str, &SecretValue) -> Result<T>;

pub(crate) fn decode_json<T: DeserializeOwned>(id: &str, value: &SecretValue) -> Result<T> {
    serde_json::from_slice(value.expose_secret())
        .map_err(|err| Error::decode(id, describe_json_error(&err)))
}

pub(crate) fn decode_raw(_id: &str, value: &SecretValue) -> Result<SecretValue> {
    Ok(value.clone())
}

/// Runs `decoder`; a decoder (a `Deserialize` impl) that panics is a decode error, not a crash of
/// the task that loaded the value.
fn decode_guarded<T>(decoder: Decoder<T>, id: &str, value: &SecretValue) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decoder(id, value)))
        .unwrap_or_else(|_| Err(Error::decode(id, "the decoder panicked")))
}

struct Shared<T> {
    key: Key,
    cache: SecretCache,
    decoder: Decoder<T>,
    grace: Duration,
    snapshot: ArcSwap<Snapshot<T>>,
    /// Serializes swaps and status changes (reads never take it).
    state: Mutex<State>,
    changes: watch::Sender<u64>,
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
///   now; [`status`](Self::status) says how far to trust what `load` serves.
///
/// # What a handle serves
///
/// `load()` never fails and never waits: it always serves the last good snapshot. A handle never
/// goes back to a version older than the one it holds, whatever order loads finish in.
///
/// - **Through a store outage** it keeps the last-known-good value; `status()` is
///   [`HandleStatus::Stale`].
/// - **After the store says the secret is gone or denied** it keeps the last value, which is no
///   longer confirmed; `status()` is [`HandleStatus::Failing`] (the cache's `get` fails instead).
/// - **After the value's lease ended** with no new credentials it keeps the expired credentials;
///   `status()` is [`HandleStatus::LeaseExpired`].
/// - **When a new version cannot be decoded** it keeps the last good value, emits
///   [`SecretEvent::DecodeFailed`](crate::SecretEvent::DecodeFailed) once per bad version;
///   `status()` is [`HandleStatus::DecodeFailed`].
///
/// Each change of status is a [`SecretEvent::HandleStatusChanged`](crate::SecretEvent::HandleStatusChanged).
///
/// # Dual-read from the start
///
/// A handle opened during a rotation's grace period (a replica starting while its peers still
/// accept the old key) also fetches the store's previous version, and accepts it until the current
/// version's creation time plus the grace period.
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
/// assert!(handle.status().is_fresh());
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
        let loaded = cache.read_key(&key, Mode::Read).await?;
        let current = decode_guarded(decoder, id, &loaded.value.value)?;
        let grace = cache.grace_period();
        let previous = if selector.is_current() {
            previous_in_grace(cache, id, &loaded.value.version, decoder, grace).await
        } else {
            None
        };
        let shared = Arc::new(Shared {
            key: key.clone(),
            cache: cache.clone(),
            decoder,
            grace,
            snapshot: ArcSwap::from_pointee(Snapshot {
                current: Arc::new(current),
                lease_end: lease_end(&loaded.value.version),
                version: loaded.value.version.clone(),
                previous,
            }),
            state: Mutex::new(State::new(loaded.seq)),
            changes: watch::Sender::new(0),
        });
        let follower: Arc<dyn Follower> = shared.clone();
        let weak: Weak<dyn Follower> = Arc::downgrade(&follower);
        drop(follower);
        // A load may have landed between our read and the registration.
        if let Some(latest) = cache.follow(&key, weak) {
            let _ = shared.take(&latest);
        }
        Ok(SecretHandle { shared })
    }

    /// The current snapshot. Lock-free and allocation-free (a few nanoseconds).
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
    /// rate-limited by the cache's `min_refresh_interval`) and returns the snapshot after it. The
    /// snapshot never goes back: if a newer version arrived meanwhile, that is what it holds.
    ///
    /// # Errors
    ///
    /// The store's error (the handle keeps its snapshot, and its [`status`](Self::status) says
    /// what happened), or [`ErrorKind::Decode`](crate::ErrorKind::Decode) when the new version
    /// cannot be decoded (the handle then keeps its previous snapshot).
    pub async fn refresh(&self) -> Result<Arc<Snapshot<T>>> {
        self.refresh_in(Mode::Force).await
    }

    async fn refresh_in(&self, mode: Mode) -> Result<Arc<Snapshot<T>>> {
        let shared = &self.shared;
        let loaded = shared.cache.read_key(&shared.key, mode).await?;
        // The load offered the value to us already; offer again in case it came from the cache.
        shared.take(&loaded)?;
        Ok(self.load_full())
    }

    /// [`refresh`](Self::refresh) past the cache's rate limit (still coalesced): for a consumer
    /// that was just refused the credential and keeps its own limit on refreshes that find
    /// nothing newer.
    #[cfg(feature = "http-client")]
    pub(crate) async fn refresh_past_limit(&self) -> Result<Arc<Snapshot<T>>> {
        self.refresh_in(Mode::PastLimit).await
    }

    /// How far to trust what [`load`](Self::load) serves: fresh, stale through an outage,
    /// failing (gone or denied), expired lease, or a new version that did not decode. See
    /// [`HandleStatus`].
    pub fn status(&self) -> HandleStatus {
        self.shared.status()
    }

    /// The error behind the current [`status`](Self::status), if it is not fresh: the store's last
    /// error, the ended lease, or the decode failure of a newer version.
    pub fn last_error(&self) -> Option<Error> {
        self.status().error()
    }

    /// The secret id.
    pub fn id(&self) -> &str {
        self.shared.key.id()
    }

    /// The cache the handle reads through.
    pub fn cache(&self) -> &SecretCache {
        &self.shared.cache
    }
}

fn lease_end(version: &Version) -> Option<Instant> {
    version
        .lease
        .as_ref()
        .map(|lease| instant_of(lease.expires_at))
}

/// The store's previous version, decoded, when `current` was created less than `grace` ago: a
/// handle that starts during a rotation's grace period accepts what its peers still accept.
async fn previous_in_grace<T>(
    cache: &SecretCache,
    id: &str,
    current: &Version,
    decoder: Decoder<T>,
    grace: Duration,
) -> Option<snapshot::Previous<T>> {
    let accept_until = crate::time::later_wall(current.created_at?, grace);
    if accept_until <= SystemTime::now() {
        return None;
    }
    // Through the cache like any read: handles opened together cost one store call, and a store
    // that keeps no previous version is asked once per negative period, not once per handle.
    let key = Key::new(id, &Selector::Stage(Stage::Previous)).ok()?;
    let previous = match cache.read_key(&key, Mode::Read).await {
        Ok(loaded) => loaded.value,
        Err(error) => {
            tracing::debug!(id, kind = %error.kind(), "credswap: no previous version to accept");
            return None;
        }
    };
    if previous.version.id == current.id {
        return None;
    }
    let value = decode_guarded(decoder, id, &previous.value).ok()?;
    Some(snapshot::Previous {
        value: Arc::new(value),
        version: previous.version.clone(),
        valid_until: instant_of(accept_until),
    })
}

impl SecretCache {
    /// A handle on the current version of `id`, decoded from JSON into `T`.
    ///
    /// Fetches (or reads from the cache) the current version now, and, when that version is
    /// younger than the grace period, the store's previous version too (see
    /// [`SecretHandle`]'s dual-read). From then on a background task refreshes the secret at its
    /// refresh point and swaps the handle when the version changes. Handles on one id share that
    /// task.
    ///
    /// Put secret fields in types that do not print them, such as [`secrecy::SecretString`].
    ///
    /// # Errors
    ///
    /// The store's error, or [`ErrorKind::Decode`](crate::ErrorKind::Decode) when the current
    /// version is not valid JSON for `T` (the message names the position or the missing field,
    /// never the content).
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

    /// A handle on `id` decoded by `decoder`, for the crate's own typed consumers (certificates,
    /// signing keys). A version the decoder refuses is a decode failure like a bad JSON one: the
    /// handle keeps its last good snapshot.
    #[cfg(any(feature = "tls", feature = "jwt", feature = "http-server"))]
    pub(crate) async fn handle_decoded<T>(
        &self,
        id: &str,
        decoder: Decoder<T>,
    ) -> Result<SecretHandle<T>>
    where
        T: Send + Sync + 'static,
    {
        SecretHandle::open(self, id, &Selector::Current, decoder).await
    }
}
