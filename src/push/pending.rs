//! What waits in a subscriber: announcements for each cache and secret until their refresh task
//! takes them (and what recent refreshes found), and announcements waiting for a fresh key.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::announcement::Announcement;
use crate::value::VersionId;

/// A cache (by its position in the subscriber) and a secret id.
pub(super) type PendingKey = (usize, Arc<str>);

/// What the subscriber remembers per cache and secret: the announcements waiting for a refresh
/// task, and what recent refreshes found. Entries go once their task has ended and what they
/// remember no longer suppresses repeats (swept at most once per follow-up delay), and when a
/// re-check finds their secret no longer cached.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) entries: HashMap<PendingKey, PendingNews>,
    next_sweep: Option<Instant>,
}

impl Pending {
    /// How many cache and secret pairs are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The cache and secret pairs remembered.
    #[cfg(test)]
    pub(super) fn keys(&self) -> Vec<PendingKey> {
        self.entries.keys().cloned().collect()
    }

    /// Whether no refresh task runs (or waits to follow up).
    #[cfg(test)]
    pub(super) fn is_idle(&self) -> bool {
        self.entries.values().all(|entry| !entry.running)
    }

    /// Drops the entries of ended tasks whose memory no longer matters, once per `window`.
    pub(super) fn sweep(&mut self, window: Duration) {
        let now = Instant::now();
        if self.next_sweep.is_some_and(|next| now < next) {
            return;
        }
        self.next_sweep = Some(now + window);
        self.entries
            .retain(|_, entry| entry.running || entry.news.is_some() || entry.remembers(window));
    }

    /// Drops the entries of ended tasks for secrets their cache no longer holds.
    pub(super) fn forget_uncached(&mut self, cached: &HashSet<PendingKey>) {
        self.entries
            .retain(|key, entry| entry.running || entry.news.is_some() || cached.contains(key));
    }
}

/// What the subscriber knows about one cache and secret: announcements its refresh task has not
/// taken yet, whether that task runs, and what the last refreshes found.
#[derive(Default)]
pub(super) struct PendingNews {
    pub(super) news: Option<News>,
    pub(super) running: bool,
    /// The version the last refresh found, and when.
    pub(super) held: Option<(VersionId, Instant)>,
    /// When the last refresh that the store answered (not the cache's rate limit) started.
    pub(super) store_asked: Option<Instant>,
    /// When a re-check's refresh was answered by the store: that call took the cache's rate
    /// limit, so the next announcement within the follow-up delay asks past it (once), rather
    /// than wait for a follow-up.
    pub(super) rechecked: Option<Instant>,
}

impl PendingNews {
    /// Whether `news` is already applied, so that a repeat costs no refresh and no event:
    ///
    /// - naming a version: a refresh of ours found that version within `window` (the follow-up
    ///   delay, at least the cache's rate limit, inside which another refresh would be answered
    ///   from the cache anyway). Outside it an announcement is always acted on, so a rollback to
    ///   an earlier version is never mistaken for a repeat.
    /// - naming none ("go and look"): the store was asked after the latest of them arrived.
    pub(super) fn already_applied(&self, news: &News, window: Duration) -> bool {
        match &news.target {
            Some(target) => self
                .held
                .as_ref()
                .is_some_and(|(held, at)| held == target && at.elapsed() < window),
            None => self
                .store_asked
                .is_some_and(|asked| asked >= news.last_received_at),
        }
    }

    /// Whether what this entry remembers can still suppress a repeat (or let one announcement
    /// past a re-check's rate limit).
    fn remembers(&self, window: Duration) -> bool {
        self.held
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < window)
            || self.rechecked.is_some_and(|at| at.elapsed() < window)
    }
}

/// What a batch of announcements for one secret asks for.
#[derive(Clone)]
pub(super) struct News {
    /// The version the latest announcement named (`None`: it named none).
    pub(super) target: Option<VersionId>,
    /// The earliest send time of the batch, for the latency.
    pub(super) sent_at: Option<SystemTime>,
    /// When the earliest announcement of the batch arrived.
    pub(super) received_at: Instant,
    /// When the latest one arrived.
    pub(super) last_received_at: Instant,
}

impl News {
    /// Adds a later announcement: its target wins, the latency counts from the earliest.
    pub(super) fn absorb(&mut self, later: News) {
        self.target = later.target;
        self.sent_at = match (self.sent_at, later.sent_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.received_at = self.received_at.min(later.received_at);
        self.last_received_at = self.last_received_at.max(later.last_received_at);
    }
}

/// How many announcements may wait for a refresh of the key they did not verify with; more
/// arriving meanwhile are rejected at once.
pub(super) const KEY_RETRY_HOLD: usize = 16;

/// An announcement that verified once the key was refreshed, on its way back to be applied.
pub(super) struct Verified {
    pub(super) announcement: Announcement,
    pub(super) received_at: Instant,
}

/// Announcements whose signature checked with no key the subscriber holds, while the key is
/// refreshed (at most once per follow-up delay).
#[derive(Default)]
pub(super) struct KeyRetry {
    pub(super) running: bool,
    pub(super) last: Option<Instant>,
    pub(super) held: Vec<(Announcement, Instant)>,
}
