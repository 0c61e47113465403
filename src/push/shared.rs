//! What a subscriber's connection loop, its refresh tasks and its public handle share: settings,
//! caches, counters, the event emitter and what waits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::events::{PushEvent, PushStats};
use super::pending::{KeyRetry, Pending};
use super::settings::Settings;
use super::throttle::LogThrottle;
use crate::cache::SecretCache;
use crate::events::Emitter;

/// What the connection loop, the applier's tasks and the public handle share.
pub(super) struct Shared {
    pub(super) settings: Settings,
    pub(super) channel: Arc<str>,
    pub(super) caches: RwLock<Vec<SecretCache>>,
    pub(super) events: Emitter<PushEvent>,
    pub(super) connected: AtomicBool,
    pub(super) counters: Counters,
    /// Keeps floods of malformed or ignored payloads out of the logs.
    pub(super) log_throttle: LogThrottle,
    /// Announcements waiting for (or being handled by) the refresh task of one cache and secret.
    pub(super) pending: Mutex<Pending>,
    /// The follow-up delay in nanoseconds: the one set (or the default), raised to the longest
    /// `min_refresh_interval` of the caches, also of caches added later.
    pub(super) follow_up_nanos: AtomicU64,
    /// Announcements whose signature checked with no key held, waiting for a refresh of the key.
    pub(super) key_retry: Mutex<KeyRetry>,
    /// When the last re-check pass began (not when one was planned: a re-check superseded before
    /// it began must not defer the next one).
    pub(super) recheck_began: Mutex<Option<tokio::time::Instant>>,
}

crate::events::counters! {
    pub(super) struct Counters => PushStats {
        reconnects, received, relevant, ignored, malformed, refreshes, follow_ups, applied,
        unconfirmed, rate_limited, refresh_failures, shed, rejected,
    }
}

impl Shared {
    pub(super) fn emit(&self, event: PushEvent) {
        // A flood repeats some kinds: those are logged at most once a minute each (with how many
        // were left out); every event still reaches the hooks and subscribers.
        match event.flood_kind() {
            Some(kind) => {
                if let Some(left_out) = self.log_throttle.admit(kind) {
                    event.trace(left_out);
                }
            }
            None => event.trace(0),
        }
        self.events.deliver(event);
    }

    /// How long a follow-up waits (before jitter): never inside a cache's rate limit, where the
    /// follow-up would be answered from the cache. Also the window in which a repeated
    /// announcement of a version just found is not acted on.
    pub(super) fn follow_up_delay(&self) -> Duration {
        Duration::from_nanos(self.follow_up_nanos.load(Ordering::Relaxed))
    }

    /// The follow-up delay with up to a quarter added at random, so a fleet that received one
    /// announcement together does not follow up together.
    pub(super) fn jittered_follow_up(&self) -> Duration {
        let delay = self.follow_up_delay();
        delay.saturating_add(delay.mul_f64(0.25 * fastrand::f64()))
    }

    /// Raises the follow-up delay to `at_least`.
    pub(super) fn raise_follow_up(&self, at_least: Duration) {
        let nanos = u64::try_from(at_least.as_nanos()).unwrap_or(u64::MAX);
        let _ = self.follow_up_nanos.fetch_max(nanos, Ordering::Relaxed);
    }

    /// The caches, cloned out of the lock (clones are reference counts).
    pub(super) fn caches(&self) -> Vec<SecretCache> {
        self.caches
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
