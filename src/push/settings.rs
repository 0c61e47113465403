//! A subscriber's settings: how it connects, follows up and spreads its work.

use std::sync::Arc;
use std::time::Duration;

use super::events::PushEvent;
use super::signing::AnnouncementKey;

pub(super) type PushHook = Arc<dyn Fn(&PushEvent) + Send + Sync + 'static>;

/// How a subscriber connects, follows up and spreads its work. Built by [`SubscriberBuilder`](super::SubscriberBuilder).
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) backoff_min: Duration,
    pub(super) backoff_max: Duration,
    pub(super) broker_timeout: Duration,
    pub(super) keepalive: Duration,
    pub(super) follow_up_delay: Duration,
    /// Whether the follow-up delay was set by hand (otherwise it follows the caches).
    pub(super) follow_up_set: bool,
    pub(super) max_follow_ups: u32,
    pub(super) spread: Duration,
    pub(super) recheck_concurrency: usize,
    /// Announcements must be signed with this key (see [`SubscriberBuilder::verify_with`](super::SubscriberBuilder::verify_with)).
    pub(super) key: Option<AnnouncementKey>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            broker_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(30),
            follow_up_delay: Duration::from_secs(1),
            follow_up_set: false,
            max_follow_ups: 3,
            spread: Duration::ZERO,
            recheck_concurrency: 8,
            key: None,
        }
    }
}

impl Settings {
    /// A random delay in `0..spread`.
    pub(super) fn spread_delay(&self) -> Duration {
        self.spread.mul_f64(fastrand::f64())
    }
}
