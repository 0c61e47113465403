//! The client side: a `reqwest-middleware` middleware that authenticates each request from a
//! handle and, when the server rejects the credential, refreshes once and replays the request.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::{Extensions, StatusCode};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use super::scheme::AuthScheme;
use crate::handle::{SecretHandle, Snapshot};
use crate::time::Instant;
use crate::value::VersionId;

/// A `reqwest-middleware` middleware that puts the current credential of a [`SecretHandle`] on
/// every request, and follows a rotation the server saw before the handle did.
///
/// When the server answers 401 or 403 (see [`rejected_on`](Self::rejected_on)):
///
/// 1. If the handle already holds a newer version than the one the request carried (another
///    request refreshed, or the background refresh swapped), the request is replayed with it,
///    with no store call.
/// 2. Otherwise the middleware refreshes the handle: **one** refresh at a time for this
///    middleware and its clones (share one middleware for every client of an API), coalesced by
///    the cache with every other load of the secret in the process.
///    Rejections that wait for it then find the newer version and replay without a call of their
///    own: concurrent 401s cost one store call.
/// 3. If the store has nothing newer (or does not answer), the 401 is the answer and is returned
///    as it is; for
///    [`min_refresh_interval`](crate::SecretCacheBuilder::min_refresh_interval) after that,
///    further rejections are returned without asking the store again, so a key the server
///    refuses for good costs one store call per interval, not one per request. (A refresh that
///    finds a newer version is not held back by the interval: a rotation right after a routine
///    refresh is followed at once.)
/// 4. A request is replayed **once**, always with the newest credential: the previous one is
///    never sent again after a refresh produced a newer one. A request whose body cannot be
///    cloned (a stream) cannot be replayed: the call fails with [`NotReplayed`], which carries
///    the server's response.
///
/// Clones share their counters ([`stats`](Self::stats)); keep one to read them after handing
/// the middleware to [`ClientBuilder::with`](reqwest_middleware::ClientBuilder::with).
///
/// # Example
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run(cache: credswap::SecretCache) -> Result<(), Box<dyn std::error::Error>> {
/// use credswap::http::{AuthMiddleware, Bearer};
///
/// let key = cache.handle_raw("payments/api-key").await?;
/// let auth = AuthMiddleware::new(key, Bearer::new());
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(auth.clone())
///     .build();
/// let response = client.get("https://payments.example.com/v1/balance").send().await?;
/// tracing::info!(status = %response.status(), replays = auth.stats().replays, "balance");
/// # Ok(())
/// # }
/// ```
pub struct AuthMiddleware<T, S> {
    inner: Arc<Inner<T, S>>,
    rejected_on: Arc<[StatusCode]>,
}

struct Inner<T, S> {
    handle: SecretHandle<T>,
    scheme: S,
    /// One refresh at a time: rejections that arrive meanwhile wait and reuse its result. Holds
    /// until when a refresh that found nothing newer keeps the next one from asking the store.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
    counters: Arc<Counters>,
}

#[derive(Default)]
pub(crate) struct Counters {
    rejections: AtomicU64,
    refreshes: AtomicU64,
    replays: AtomicU64,
    not_replayed: AtomicU64,
    nothing_newer: AtomicU64,
    refresh_failures: AtomicU64,
}

/// What an [`AuthMiddleware`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthStats {
    /// Responses whose status said the credential was rejected.
    pub rejections: u64,
    /// Handle refreshes the middleware asked for (each coalesced with every other load of the
    /// secret; a rate-limited one makes no store call).
    pub refreshes: u64,
    /// Requests sent again with a newer credential.
    pub replays: u64,
    /// Rejected requests that a newer credential could not be tried on: their body could not be
    /// cloned.
    pub not_replayed: u64,
    /// Rejections for which the store had nothing newer (returned as they were).
    pub nothing_newer: u64,
    /// Rejections returned as they were because the refresh failed (the store unreachable,
    /// throttling, denied).
    pub refresh_failures: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> AuthStats {
        AuthStats {
            rejections: self.rejections.load(Ordering::Relaxed),
            refreshes: self.refreshes.load(Ordering::Relaxed),
            replays: self.replays.load(Ordering::Relaxed),
            not_replayed: self.not_replayed.load(Ordering::Relaxed),
            nothing_newer: self.nothing_newer.load(Ordering::Relaxed),
            refresh_failures: self.refresh_failures.load(Ordering::Relaxed),
        }
    }
}

impl<T, S> Clone for AuthMiddleware<T, S> {
    fn clone(&self) -> Self {
        AuthMiddleware {
            inner: Arc::clone(&self.inner),
            rejected_on: Arc::clone(&self.rejected_on),
        }
    }
}

impl<T, S> fmt::Debug for AuthMiddleware<T, S>
where
    T: Send + Sync + 'static,
    S: AuthScheme<T>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthMiddleware")
            .field("secret", &self.inner.handle.id())
            .field("rejected_on", &self.rejected_on)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<T, S> AuthMiddleware<T, S>
where
    T: Send + Sync + 'static,
    S: AuthScheme<T>,
{
    /// A middleware putting `handle`'s credential on each request the way `scheme` says.
    pub fn new(handle: SecretHandle<T>, scheme: S) -> Self {
        AuthMiddleware {
            inner: Arc::new(Inner {
                handle,
                scheme,
                refreshing: tokio::sync::Mutex::new(None),
                counters: Arc::default(),
            }),
            rejected_on: Arc::new([StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN]),
        }
    }

    /// The statuses that mean "this credential is rejected" (401 and 403 by default; some APIs
    /// answer 403 for a missing permission, which a new key does not fix: leave it out for them).
    #[must_use]
    pub fn rejected_on(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.rejected_on = statuses.into_iter().collect();
        self
    }

    /// The handle the credential comes from.
    pub fn handle(&self) -> &SecretHandle<T> {
        &self.inner.handle
    }

    /// What the middleware has done so far (shared by its clones).
    pub fn stats(&self) -> AuthStats {
        self.inner.counters.snapshot()
    }

    /// The counters, for a metrics source that must not keep the middleware alive.
    #[cfg(feature = "metrics")]
    pub(crate) fn counters(&self) -> std::sync::Weak<Counters> {
        Arc::downgrade(&self.inner.counters)
    }
}

impl<T, S> Inner<T, S>
where
    T: Send + Sync + 'static,
    S: AuthScheme<T>,
{
    fn authorize(
        &self,
        snapshot: &Snapshot<T>,
        request: &mut Request,
    ) -> reqwest_middleware::Result<()> {
        self.scheme
            .apply(self.handle.id(), snapshot.current(), request.headers_mut())
            .map_err(reqwest_middleware::Error::middleware)
    }

    /// A snapshot newer than `sent`, from the handle or, failing that, from one refresh.
    async fn newer_than(&self, sent: &VersionId) -> Newer<T> {
        let newer =
            |snapshot: Arc<Snapshot<T>>| (snapshot.version().id != *sent).then_some(snapshot);
        if let Some(snapshot) = newer(self.handle.load_full()) {
            return Newer::Found(snapshot);
        }
        let mut quiet_until = self.refreshing.lock().await;
        // A refresh that finished while we waited may have brought it.
        if let Some(snapshot) = newer(self.handle.load_full()) {
            return Newer::Found(snapshot);
        }
        // The store answered "nothing newer" (or failed) moments ago: a storm of rejections
        // costs one call per `min_refresh_interval`.
        if quiet_until.is_some_and(|until| Instant::now() < until) {
            return Newer::Nothing;
        }
        let _ = self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
        // Past the cache's own rate limit: a rotation right after a routine refresh must not
        // leave callers with 401s until the limit lapses. Ours above applies instead (and the
        // cache's backoff after failures still does).
        let outcome = match self.handle.refresh_past_limit().await {
            Ok(snapshot) => newer(snapshot).map_or(Newer::Nothing, Newer::Found),
            Err(error) => {
                tracing::warn!(
                    id = self.handle.id(),
                    kind = %error.kind(),
                    "credswap: refreshing a rejected HTTP credential failed"
                );
                Newer::RefreshFailed
            }
        };
        if !matches!(outcome, Newer::Found(_)) {
            *quiet_until = Some(crate::time::later(
                Instant::now(),
                self.handle.cache().min_refresh_interval(),
            ));
        }
        outcome
    }
}

/// What a rejection found: a newer credential, nothing newer, or a store that did not answer.
enum Newer<T> {
    Found(Arc<Snapshot<T>>),
    Nothing,
    RefreshFailed,
}

#[async_trait::async_trait]
impl<T, S> Middleware for AuthMiddleware<T, S>
where
    T: Send + Sync + 'static,
    S: AuthScheme<T>,
{
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let inner = &*self.inner;
        let sent = inner.handle.load_full();
        // The copy for a replay is taken before the credential goes on, so that a replay carries
        // the new credential only, whatever the scheme does with headers.
        let replay = request.try_clone();
        inner.authorize(&sent, &mut request)?;
        let response = next.clone().run(request, extensions).await?;
        if !self.rejected_on.contains(&response.status()) {
            return Ok(response);
        }
        let _ = inner.counters.rejections.fetch_add(1, Ordering::Relaxed);
        let fresh = match inner.newer_than(&sent.version().id).await {
            Newer::Found(fresh) => fresh,
            Newer::Nothing => {
                let _ = inner.counters.nothing_newer.fetch_add(1, Ordering::Relaxed);
                return Ok(response);
            }
            Newer::RefreshFailed => {
                let _ = inner
                    .counters
                    .refresh_failures
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(response);
            }
        };
        let Some(mut replay) = replay else {
            let _ = inner.counters.not_replayed.fetch_add(1, Ordering::Relaxed);
            return Err(reqwest_middleware::Error::middleware(NotReplayed {
                id: inner.handle.id().into(),
                status: response.status(),
                response: Mutex::new(Some(response)),
            }));
        };
        inner.authorize(&fresh, &mut replay)?;
        let _ = inner.counters.replays.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            id = inner.handle.id(),
            version = %fresh.version().id,
            "credswap: replaying a rejected request with a newer credential"
        );
        next.run(replay, extensions).await
    }
}

/// The server rejected a request's credential, a newer credential exists, but the request could
/// not be sent again: its body cannot be cloned (a stream). Send it again yourself (the next
/// request carries the newer credential), or give it a body that can be cloned.
///
/// Found in a [`reqwest_middleware::Error::Middleware`]; [`NotReplayed::from_error`] finds it,
/// and [`take_response`](Self::take_response) hands over the server's response.
pub struct NotReplayed {
    id: Box<str>,
    status: StatusCode,
    response: Mutex<Option<Response>>,
}

impl NotReplayed {
    /// The `NotReplayed` inside `error`, if that is what it is.
    pub fn from_error(error: &reqwest_middleware::Error) -> Option<&NotReplayed> {
        match error {
            reqwest_middleware::Error::Middleware(error) => error.downcast_ref::<NotReplayed>(),
            reqwest_middleware::Error::Reqwest(_) => None,
        }
    }

    /// The status the server answered (401 or 403).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The secret whose credential was rejected.
    pub fn secret_id(&self) -> &str {
        &self.id
    }

    /// The server's response, the first time this is called.
    pub fn take_response(&self) -> Option<Response> {
        self.response
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl fmt::Debug for NotReplayed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotReplayed")
            .field("secret", &self.id)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for NotReplayed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server answered {} to the credential of secret `{}`; a newer credential exists, \
             but the request was not sent again because its body cannot be cloned (a stream)",
            self.status, self.id
        )
    }
}

impl std::error::Error for NotReplayed {}
