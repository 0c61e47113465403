//! What a subscriber does, as events and counters: connection state, announcements applied (with
//! their latency), ignored and malformed.

use std::sync::Arc;
use std::time::Duration;

use super::announcement::AnnouncementError;
use crate::error::ErrorKind;
use crate::value::VersionId;

/// Which pass of the re-check after a (re)connect an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecheckPass {
    /// Right after connecting: catches every change announced while the subscriber was away.
    Immediate,
    /// The end of the re-check: the secrets the immediate pass found inside their cache's rate
    /// limit (the store was asked moments before, and a change may have landed just after),
    /// asked again once it passed. Deferred, never skipped; `ids` is 0 when there were none.
    Confirming,
}

/// Why a subscriber that [verifies signatures](crate::push::SubscriberBuilder::verify_with)
/// refused an announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// It carried no signature.
    Unsigned,
    /// Its signature checks with neither the current nor the previous key, also after the key
    /// was refreshed.
    Forged,
}

impl Rejection {
    /// A short, stable, lower-case name, for metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Rejection::Unsigned => "unsigned",
            Rejection::Forged => "forged",
        }
    }
}

/// Something a [`Subscriber`](crate::push::Subscriber) did or saw.
///
/// Events carry secret ids, version ids, error kinds and durations, never values. Each is also
/// logged as a `tracing` event (target `credswap::push`) at a level fitting it: malformed payloads,
/// lost connections and failed refreshes at `warn`, ignored and rate-limited announcements at
/// `debug`, the rest at `info`. Malformed payloads (per error kind) and ignored announcements,
/// which a flood can repeat, are logged at most once a minute each, with the number left out
/// since (`left_out`); they are still counted and reported as events one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushEvent {
    /// Subscribed to the broker; announcements from now on will arrive.
    Connected {
        /// The channel, as [`Channel::describe`](crate::push::Channel::describe) puts it.
        channel: Arc<str>,
        /// Connection attempts this took (1: the first try).
        attempts: u32,
    },
    /// The connection was lost (an error, the broker closing it, or no answer to a keepalive).
    Disconnected {
        /// What failed.
        kind: ErrorKind,
        /// Why, in the words of our error (ids and codes, no values).
        reason: Arc<str>,
        /// How long the connection had been up.
        connected_for: Duration,
    },
    /// The next connection attempt is due after `delay` (jittered exponential backoff).
    Reconnecting {
        /// Which attempt this is, counting from 1 since the last stable connection.
        attempt: u32,
        /// How long the subscriber waits before it.
        delay: Duration,
        /// What made the last attempt or connection fail.
        kind: ErrorKind,
    },
    /// Every secret the caches hold or follow was refreshed after a (re)connect, because
    /// announcements sent while the subscriber was away are lost by the brokers.
    Rechecked {
        /// Which pass.
        pass: RecheckPass,
        /// How many (cache, secret) pairs were refreshed.
        ids: usize,
        /// How many of those refreshes failed (the caches report why in their own events).
        failed: usize,
    },
    /// A cache holds the announced version now (every handle on it has swapped), or, for an
    /// announcement without a version, the store answered a refresh asked after it arrived.
    Applied {
        /// The secret id.
        id: Arc<str>,
        /// The version the cache holds now.
        version: VersionId,
        /// The version the announcement named, if it named one.
        announced: Option<VersionId>,
        /// From the announcement's send time (the publisher's clock) to now (ours); `None` when
        /// the send time is unknown or the clocks disagree by more than the latency.
        since_sent: Option<Duration>,
        /// From receiving the announcement to now: our own share of the latency.
        since_received: Duration,
        /// Follow-up refreshes it took (0: the first refresh found the version).
        follow_ups: u32,
    },
    /// After a refresh, the cache still holds another version than the one announced, and the
    /// subscriber asks again: the refresh was answered by the cache's rate limit (the store was
    /// asked moments before), or the store answered with another version once (a replica may
    /// lag). With `retry_in: None` the rate limit answered and the follow-ups are spent.
    Behind {
        /// The secret id.
        id: Arc<str>,
        /// The version the announcement named.
        announced: VersionId,
        /// The version the cache holds.
        held: VersionId,
        /// When the subscriber asks again; `None` when its follow-ups are spent (the cache's TTL
        /// will still pick the change up).
        retry_in: Option<Duration>,
    },
    /// The store, asked after the announcement and once more a follow-up delay later, reports
    /// another version than the announced one: the announcement was late (a newer version is
    /// current), forged, or the store lags by more than the follow-up delay. The subscriber stops
    /// there; the cache's TTL remains the backstop.
    Unconfirmed {
        /// The secret id.
        id: Arc<str>,
        /// The version the announcement named.
        announced: VersionId,
        /// The version the store reports and the cache holds.
        held: VersionId,
    },
    /// An announcement without a version was answered by the cache's rate limit (the store was
    /// asked about the secret moments before it arrived): the subscriber asks again once the
    /// limit has passed, so a change made since is found.
    RateLimited {
        /// The secret id.
        id: Arc<str>,
        /// The version the cache holds.
        held: VersionId,
        /// When the subscriber asks again; `None` when its follow-ups are spent.
        retry_in: Option<Duration>,
    },
    /// Refreshing a secret after an announcement failed.
    RefreshFailed {
        /// The secret id.
        id: Arc<str>,
        /// What failed.
        kind: ErrorKind,
        /// When the subscriber asks again; `None` when it does not (the error is not passing, or
        /// its follow-ups are spent).
        retry_in: Option<Duration>,
    },
    /// An announcement named a secret none of the caches holds or follows: it cost nothing.
    Ignored {
        /// The secret id.
        id: Arc<str>,
    },
    /// A payload was not a valid announcement and was dropped.
    Malformed {
        /// What is wrong with it (never its content).
        error: AnnouncementError,
        /// Its size in bytes.
        bytes: usize,
    },
    /// Announcements arrived faster than the subscriber handled them and `count` were dropped
    /// unread (reported at most once a second); the connection stayed up. A real announcement
    /// among them is caught by the caches' TTL.
    Shed {
        /// How many since the last report.
        count: u64,
    },
    /// An announcement was not signed with the key the subscriber verifies with: ignored.
    Rejected {
        /// Why.
        reason: Rejection,
        /// The secret it named (which a forger chose).
        id: Arc<str>,
    },
    /// The subscriber stopped (an explicit shutdown): no more connections, no more store calls.
    Stopped,
}

impl PushEvent {
    /// A short stable name for the event (`"connected"`, `"applied"`, …).
    pub fn name(&self) -> &'static str {
        match self {
            PushEvent::Connected { .. } => "connected",
            PushEvent::Disconnected { .. } => "disconnected",
            PushEvent::Reconnecting { .. } => "reconnecting",
            PushEvent::Rechecked { .. } => "rechecked",
            PushEvent::Applied { .. } => "applied",
            PushEvent::Behind { .. } => "behind",
            PushEvent::Unconfirmed { .. } => "unconfirmed",
            PushEvent::RateLimited { .. } => "rate_limited",
            PushEvent::RefreshFailed { .. } => "refresh_failed",
            PushEvent::Ignored { .. } => "ignored",
            PushEvent::Malformed { .. } => "malformed",
            PushEvent::Shed { .. } => "shed",
            PushEvent::Rejected { .. } => "rejected",
            PushEvent::Stopped => "stopped",
        }
    }

    /// The secret the event concerns, when it concerns one.
    pub fn id(&self) -> Option<&str> {
        match self {
            PushEvent::Applied { id, .. }
            | PushEvent::Behind { id, .. }
            | PushEvent::Unconfirmed { id, .. }
            | PushEvent::RateLimited { id, .. }
            | PushEvent::RefreshFailed { id, .. }
            | PushEvent::Ignored { id }
            | PushEvent::Rejected { id, .. } => Some(id),
            _ => None,
        }
    }

    /// What a flood can repeat, as a kind for [`LogThrottle`](super::throttle::LogThrottle):
    /// malformed payloads (per error kind) and announcements nobody watches.
    pub(super) fn flood_kind(&self) -> Option<(&'static str, &'static str)> {
        match self {
            PushEvent::Malformed { error, .. } => Some((self.name(), error.as_str())),
            PushEvent::Ignored { .. } => Some((self.name(), "")),
            PushEvent::Rejected { reason, .. } => Some((self.name(), reason.as_str())),
            _ => None,
        }
    }

    /// Logs the event through `tracing`; `left_out` counts the like events not logged before it
    /// (see [`flood_kind`](Self::flood_kind)).
    pub(super) fn trace(&self, left_out: u64) {
        let name = self.name();
        let id = self.id().unwrap_or("");
        match self {
            PushEvent::Malformed { .. } | PushEvent::Rejected { .. } => {
                tracing::warn!(target: "credswap::push", event = name, id, left_out, details = ?self, "push event");
            }
            PushEvent::Shed { .. } => {
                tracing::warn!(target: "credswap::push", event = name, details = ?self, "push event");
            }
            PushEvent::Disconnected { .. } | PushEvent::RefreshFailed { .. } => {
                tracing::warn!(target: "credswap::push", event = name, id, details = ?self, "push event");
            }
            PushEvent::Ignored { .. } => {
                tracing::debug!(target: "credswap::push", event = name, id, left_out, details = ?self, "push event");
            }
            PushEvent::RateLimited { .. } => {
                tracing::debug!(target: "credswap::push", event = name, id, details = ?self, "push event");
            }
            _ => {
                tracing::info!(target: "credswap::push", event = name, id, details = ?self, "push event");
            }
        }
    }
}

impl crate::events::Event for PushEvent {
    fn log(&self) {
        self.trace(0);
    }

    fn name(&self) -> &'static str {
        PushEvent::name(self)
    }

    fn id(&self) -> Option<&str> {
        PushEvent::id(self)
    }
}

/// Counters of a subscriber since it started. See
/// [`Subscriber::stats`](crate::push::Subscriber::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushStats {
    /// Whether it is subscribed right now.
    pub connected: bool,
    /// Successful connections after the first.
    pub reconnects: u64,
    /// Payloads received.
    pub received: u64,
    /// Of those, announcements for a secret some cache watches.
    pub relevant: u64,
    /// Of those, announcements for secrets no cache watches.
    pub ignored: u64,
    /// Of those, payloads that were not valid announcements.
    pub malformed: u64,
    /// Refreshes the subscriber asked its caches for (announcements, follow-ups and re-checks
    /// together; each is rate-limited by its cache, so store calls are at most this many).
    pub refreshes: u64,
    /// Of those, follow-ups: the rate limit answered, the store answered with another version
    /// than announced (once), or a refresh failed with a passing error.
    pub follow_ups: u64,
    /// Announcements applied: a cache reached the announced version, or (without a version) the
    /// store answered a refresh asked after it arrived.
    pub applied: u64,
    /// Announcements the store contradicted: asked twice, it reported another version
    /// ([`PushEvent::Unconfirmed`]).
    pub unconfirmed: u64,
    /// Refreshes for announcements without a version that the cache's rate limit answered
    /// ([`PushEvent::RateLimited`]).
    pub rate_limited: u64,
    /// Refreshes that failed.
    pub refresh_failures: u64,
    /// Payloads dropped unread because they arrived faster than they were handled
    /// ([`PushEvent::Shed`]); not counted in `received`.
    pub shed: u64,
    /// Announcements refused for their signature ([`PushEvent::Rejected`]); counted in
    /// `received`, not in `relevant` or `ignored`.
    pub rejected: u64,
}
