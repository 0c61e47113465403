//! The builder of a subscriber, which checks its settings.

use std::sync::Arc;
use std::time::Duration;

use super::channel::Channel;
use super::events::PushEvent;
use super::settings::{PushHook, Settings};
use super::signing::AnnouncementKey;
use super::subscriber::Subscriber;
use crate::cache::SecretCache;
use crate::error::{Error, Result};

/// Builds a [`Subscriber`]. Every setting has a default suited to a service; see each method.
///
/// ```
/// # use std::sync::Arc;
/// # use std::time::Duration;
/// # use credswap::push::{Channel, Inbox, Subscriber};
/// # struct Nowhere;
/// # #[async_trait::async_trait]
/// # impl Channel for Nowhere {
/// #     fn describe(&self) -> String { "nowhere".into() }
/// #     async fn listen(&self) -> credswap::Result<Box<dyn Inbox>> {
/// #         Err(credswap::Error::new(credswap::ErrorKind::Transient))
/// #     }
/// # }
/// # let channel = Nowhere;
/// # let cache = credswap::SecretCache::builder(Arc::new(credswap::MemoryProvider::new())).build().unwrap();
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let subscriber = Subscriber::builder(channel)
///     .cache(cache)
///     .backoff(Duration::from_millis(200), Duration::from_secs(60))
///     .spread(Duration::from_millis(500)) // 5,000 pods: spread their store calls over 0.5 s
///     .start()
///     .unwrap();
/// # drop(subscriber);
/// # });
/// ```
#[must_use]
pub struct SubscriberBuilder {
    channel: Arc<dyn Channel>,
    caches: Vec<SecretCache>,
    settings: Settings,
    event_capacity: usize,
    hooks: Vec<PushHook>,
}

impl std::fmt::Debug for SubscriberBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberBuilder")
            .field("channel", &self.channel.describe())
            .field("caches", &self.caches.len())
            .field("settings", &self.settings)
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl SubscriberBuilder {
    pub(super) fn new(channel: Arc<dyn Channel>) -> Self {
        SubscriberBuilder {
            channel,
            caches: Vec::new(),
            settings: Settings::default(),
            event_capacity: 1024,
            hooks: Vec::new(),
        }
    }

    /// A cache to keep current: announcements for secrets it holds or follows with a handle are
    /// refreshed in it. Call once per cache; one subscriber (one broker connection) serves any
    /// number of caches.
    pub fn cache(mut self, cache: SecretCache) -> Self {
        self.caches.push(cache);
        self
    }

    /// Bounds of the reconnect backoff: the first attempt after a loss waits `min`, each failed
    /// one doubles the wait up to `max`, and each wait gets up to as much again at random so a
    /// fleet does not reconnect in step after a broker restart. The growth resets once a
    /// connection stayed up for ten seconds. Default: 100 ms to 30 s.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.settings.backoff_min = min;
        self.settings.backoff_max = max;
        self
    }

    /// How long connecting and subscribing, or a keepalive ping, may take before the attempt
    /// counts as failed. Default: 10 s.
    pub fn broker_timeout(mut self, timeout: Duration) -> Self {
        self.settings.broker_timeout = timeout;
        self
    }

    /// After this long without a message, the subscriber pings the broker to find a connection that
    /// died silently. Default: 30 s.
    pub fn keepalive(mut self, interval: Duration) -> Self {
        self.settings.keepalive = interval;
        self
    }

    /// When a refresh for an announcement was answered by a cache's rate limit (the store was
    /// asked moments before), ask again after `delay` (plus up to a quarter at random), at most
    /// `max` times; when the store answered with another version than announced (a replica that
    /// lags), ask once more; after a passing failure, again at most `max` times. Also the wait
    /// before the confirming pass of a re-check, and the window in which repeats of an announcement
    /// just applied are not acted on.
    ///
    /// The delay is raised to the longest `min_refresh_interval` of the caches (also of caches
    /// added later with [`Subscriber::add_cache`]): a follow-up inside the rate limit would be
    /// answered from the cache. Default: that longest interval (1 s if no cache has one), 3
    /// times.
    pub fn follow_up(mut self, delay: Duration, max: u32) -> Self {
        self.settings.follow_up_delay = delay;
        self.settings.follow_up_set = true;
        self.settings.max_follow_ups = max;
        self
    }

    /// Before acting on an announcement or a re-check, wait a random delay below `spread`: a
    /// large fleet then spreads the store calls one announcement causes (AWS Secrets Manager
    /// allows 10,000 `GetSecretValue` calls a second per region) at the cost of that much latency.
    /// Default: zero.
    pub fn spread(mut self, spread: Duration) -> Self {
        self.settings.spread = spread;
        self
    }

    /// How many refreshes a re-check after a (re)connect runs at once. Default: 8.
    pub fn recheck_concurrency(mut self, concurrency: usize) -> Self {
        self.settings.recheck_concurrency = concurrency;
        self
    }

    /// How many events a slow [`subscribe`](Subscriber::subscribe)r may lag behind before it
    /// misses some. Default: 1024.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Acts only on announcements signed with `key` (by a
    /// [`SignedPublisher`](crate::push::SignedPublisher)): unsigned and forged ones are counted
    /// and reported ([`PushEvent::Rejected`]) and cost no store call, beyond one refresh of the
    /// key per `min_refresh_interval` of its cache, made when a signature checks with neither the
    /// current nor the previous key (a key rotated on the store but not yet seen here). See
    /// [`AnnouncementKey`] for rotating it.
    pub fn verify_with(mut self, key: AnnouncementKey) -> Self {
        self.settings.key = Some(key);
        self
    }

    /// Calls `hook` for every event, on the subscriber's tasks: keep it short and non-blocking. A
    /// hook that panics is logged (at `error`) and the subscriber carries on.
    pub fn on_event(mut self, hook: impl Fn(&PushEvent) + Send + Sync + 'static) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Checks the settings and starts the subscriber's task, which connects at once.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) when a setting cannot work (a zero
    /// backoff, timeout, keepalive, follow-up delay, concurrency or capacity; a backoff minimum
    /// above its maximum; a duration over ten years) or when called outside a Tokio runtime.
    pub fn start(mut self) -> Result<Subscriber> {
        if !self.settings.follow_up_set {
            // A follow-up inside the caches' rate limit would be answered from the cache.
            if let Some(longest) = self
                .caches
                .iter()
                .map(SecretCache::min_refresh_interval)
                .max()
                .filter(|interval| !interval.is_zero())
            {
                self.settings.follow_up_delay = longest;
            }
        }
        let s = &self.settings;
        if s.backoff_min.is_zero() || s.backoff_min > s.backoff_max {
            return Err(Error::config(
                "the reconnect backoff minimum must be above zero and at most the maximum",
            ));
        }
        if s.broker_timeout.is_zero() || s.keepalive.is_zero() {
            return Err(Error::config(
                "the broker timeout and the keepalive interval must be above zero",
            ));
        }
        if s.follow_up_delay.is_zero() {
            // Follow-ups at once would all be answered by the rate limit they are meant to wait out.
            return Err(Error::config("the follow-up delay must be above zero"));
        }
        if s.recheck_concurrency == 0 || self.event_capacity == 0 {
            return Err(Error::config(
                "recheck_concurrency and event_capacity must be above zero",
            ));
        }
        let durations = [
            s.backoff_max,
            s.broker_timeout,
            s.keepalive,
            s.follow_up_delay,
            s.spread,
        ];
        if durations.iter().any(|d| *d > crate::time::MAX_SETTING) {
            return Err(Error::config(
                "push durations (backoff, timeout, keepalive, follow-up, spread) must be at most ten years",
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::config("a push subscriber must be started inside a Tokio runtime")
        })?;
        Ok(Subscriber::spawn(
            &runtime,
            self.channel,
            self.caches,
            self.settings,
            self.event_capacity,
            self.hooks,
        ))
    }
}
