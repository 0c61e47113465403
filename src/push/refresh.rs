//! Turning payloads into cache refreshes: decode, check signatures, skip what no cache watches,
//! coalesce announcements per cache and secret into one refresh task, and follow up when a cache
//! is behind. The re-check after a (re)connect is in `recheck.rs`.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::announcement::Announcement;
use super::events::{PushEvent, Rejection};
use super::pending::{KEY_RETRY_HOLD, News, PendingKey, Verified};
use super::shared::Shared;
use crate::cache::SecretCache;
use crate::cache::key::Mode;
use crate::events::bump;
use crate::value::VersionId;

/// Handles one payload: decode it, check its signature when the subscriber verifies them, and
/// [`dispatch`] it.
pub(super) fn receive(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    payload: &[u8],
    received_at: Instant,
    verified: &mpsc::Sender<Verified>,
) {
    bump(&shared.counters.received);
    let announcement = match Announcement::decode(payload) {
        Ok(announcement) => announcement,
        Err(error) => {
            bump(&shared.counters.malformed);
            shared.emit(PushEvent::Malformed {
                error,
                bytes: payload.len(),
            });
            return;
        }
    };
    if let Some(key) = &shared.settings.key {
        if !announcement.is_signed() {
            reject(shared, &announcement, Rejection::Unsigned);
            return;
        }
        if !key.verifies(&announcement) {
            retry_with_a_fresh_key(shared, tasks, announcement, received_at, verified);
            return;
        }
    }
    dispatch(shared, tasks, announcement, received_at);
}

fn reject(shared: &Shared, announcement: &Announcement, reason: Rejection) {
    bump(&shared.counters.rejected);
    shared.emit(PushEvent::Rejected {
        reason,
        id: Arc::from(announcement.id()),
    });
}

/// A signature that checks with no key held: the key may have rotated on the store. Refresh it
/// (once per follow-up delay, whatever arrives) and check again; reject what still does not
/// check, and what arrives when the key was refreshed moments ago.
fn retry_with_a_fresh_key(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    announcement: Announcement,
    received_at: Instant,
    verified: &mpsc::Sender<Verified>,
) {
    let window = shared.follow_up_delay();
    let mut retry = shared.key_retry.lock().unwrap_or_else(|e| e.into_inner());
    let recently = retry.last.is_some_and(|last| last.elapsed() < window);
    if (retry.running && retry.held.len() < KEY_RETRY_HOLD) || (!retry.running && !recently) {
        retry.held.push((announcement, received_at));
    } else {
        drop(retry);
        reject(shared, &announcement, Rejection::Forged);
        return;
    }
    if retry.running {
        return;
    }
    retry.running = true;
    retry.last = Some(Instant::now());
    drop(retry);
    let (shared, verified) = (Arc::clone(shared), verified.clone());
    let _ = tasks.spawn(async move {
        let Some(key) = shared.settings.key.clone() else {
            return;
        };
        let _ = key.refresh().await;
        let held = {
            let mut retry = shared.key_retry.lock().unwrap_or_else(|e| e.into_inner());
            retry.running = false;
            std::mem::take(&mut retry.held)
        };
        for (announcement, received_at) in held {
            if key.verifies(&announcement) {
                let _ = verified
                    .send(Verified {
                        announcement,
                        received_at,
                    })
                    .await;
            } else {
                reject(&shared, &announcement, Rejection::Forged);
            }
        }
    });
}

/// Hands an announcement to (or starts) the refresh tasks of the caches that watch its secret.
pub(super) fn dispatch(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    announcement: Announcement,
    received_at: Instant,
) {
    tracing::trace!(
        target: "credswap::push",
        id = announcement.id(),
        version = ?announcement.version(),
        "announcement received"
    );
    let news = News {
        target: announcement.version().cloned(),
        sent_at: announcement.sent_at(),
        received_at,
        last_received_at: received_at,
    };
    let id: Arc<str> = Arc::from(announcement.id());
    let window = shared.follow_up_delay();
    let mut relevant = false;
    for (index, cache) in shared.caches().into_iter().enumerate() {
        // Lock-free for the cache's entries; no store call. Only a filter: the refresh task asks
        // the cache again, in the same call as its refresh.
        if !cache.is_cached(&id) {
            continue;
        }
        relevant = true;
        let key: PendingKey = (index, Arc::clone(&id));
        let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.sweep(window);
        let entry = pending.entries.entry(key.clone()).or_default();
        if entry.running {
            match &mut entry.news {
                Some(waiting) => waiting.absorb(news.clone()),
                None => entry.news = Some(news.clone()),
            }
            continue;
        }
        if entry.already_applied(&news, window) {
            continue;
        }
        entry.news = Some(news.clone());
        entry.running = true;
        drop(pending);
        let _ = tasks.spawn(refresh_task(Arc::clone(shared), cache, key));
    }
    if relevant {
        bump(&shared.counters.relevant);
    } else {
        bump(&shared.counters.ignored);
        shared.emit(PushEvent::Ignored { id });
    }
}

/// Takes the announcements waiting for `key`, leaving its task marked as running.
fn take(shared: &Shared, key: &PendingKey) -> Option<News> {
    let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
    pending
        .entries
        .get_mut(key)
        .and_then(|entry| entry.news.take())
}

/// Notes that a refresh for `key` found `version`, and when it started if the store answered it.
fn saw(shared: &Shared, key: &PendingKey, version: &VersionId, store_asked: Option<Instant>) {
    let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(entry) = pending.entries.get_mut(key) {
        entry.held = Some((version.clone(), Instant::now()));
        if store_asked.is_some() {
            entry.store_asked = store_asked;
        }
    }
}

/// How a refresh for `key` asks its cache: past the rate limit, once, when the limit was taken by
/// a re-check moments ago (the announcement must not wait for a follow-up); rate-limited
/// otherwise.
fn refresh_mode(shared: &Shared, key: &PendingKey) -> Mode {
    let window = shared.follow_up_delay();
    let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
    let rechecked = pending
        .entries
        .get_mut(key)
        .and_then(|entry| entry.rechecked.take());
    match rechecked {
        Some(at) if at.elapsed() < window => Mode::PastLimit,
        _ => Mode::Force,
    }
}

/// Notes that a re-check's refresh of `key` was answered by the store.
pub(super) fn rechecked(shared: &Shared, key: PendingKey) {
    let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
    pending.entries.entry(key).or_default().rechecked = Some(Instant::now());
}

/// The task is done with what it took: returns what arrived meanwhile, or marks the task as ended
/// (so the next announcement starts a new one) when nothing did or what did is already applied.
fn finish_or_take(shared: &Shared, key: &PendingKey) -> Option<News> {
    let window = shared.follow_up_delay();
    let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
    let entry = pending.entries.get_mut(key)?;
    match entry.news.take() {
        Some(news) if !entry.already_applied(&news, window) => Some(news),
        _ => {
            entry.running = false;
            None
        }
    }
}

/// Marks the task of a key as ended when it ends other than through [`finish_or_take`] (an event
/// hook that panicked, an abort): otherwise later announcements for the key would wait for it
/// forever.
struct Running {
    shared: Arc<Shared>,
    key: PendingKey,
    finished: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = pending.entries.get_mut(&self.key) {
            entry.running = false;
        }
    }
}

/// Where a refresh task stands with the batch of announcements it works on.
#[derive(Default)]
struct Progress {
    /// Follow-ups so far.
    follow_ups: u32,
    /// Whether the store (not the rate limit) already answered with another version than the
    /// announced one: asked again once, in case a replica lagged, and then believed.
    store_disagreed: bool,
}

/// Refreshes secret `key.1` in `cache` for the announcements waiting under `key`, until none is
/// left. Follows up when the cache's rate limit answered instead of the store (at most
/// `max_follow_ups` times), once when the store answered with another version than the announced
/// one (a lagging replica), and after passing failures.
async fn refresh_task(shared: Arc<Shared>, cache: SecretCache, key: PendingKey) {
    let mut running = Running {
        shared: Arc::clone(&shared),
        key: key.clone(),
        finished: false,
    };
    let settings = &shared.settings;
    if !settings.spread.is_zero() {
        tokio::time::sleep(settings.spread_delay()).await;
    }
    let id = &key.1;
    let Some(mut news) = take(&shared, &key) else {
        running.finished = finish_or_take(&shared, &key).is_none();
        return;
    };
    let mut progress = Progress::default();
    let mut applied: Option<VersionId> = None;
    loop {
        bump(&shared.counters.refreshes);
        let can_follow_up = progress.follow_ups < settings.max_follow_ups;
        let asked_at = Instant::now();
        // Through the cache, in one call with the check that it still holds `id` (one evicted or
        // invalidated while this task waited is not fetched back): coalesced with its other loads
        // of `id`, and at most one refresh of the store per `min_refresh_interval`.
        let mode = refresh_mode(&shared, &key);
        let retry_in = match cache.refresh_cached(id, mode).await {
            None => None,
            Some(Ok(refreshed)) => {
                let held = &refreshed.value.version.id;
                let store_answered = refreshed.store_answered;
                saw(&shared, &key, held, store_answered.then_some(asked_at));
                match &news.target {
                    Some(announced) if announced == held => {
                        report_applied(&shared, id, held, &news, &progress, &mut applied);
                        None
                    }
                    None if store_answered => {
                        report_applied(&shared, id, held, &news, &progress, &mut applied);
                        None
                    }
                    None => {
                        // The store was asked moments before: ask again past the rate limit, so
                        // a change made since is found.
                        let retry_in = can_follow_up.then(|| shared.jittered_follow_up());
                        bump(&shared.counters.rate_limited);
                        shared.emit(PushEvent::RateLimited {
                            id: Arc::clone(id),
                            held: held.clone(),
                            retry_in,
                        });
                        retry_in
                    }
                    Some(announced) => {
                        let retry_in = if store_answered {
                            // Once, in case the store answered from a replica that lags.
                            let once = !progress.store_disagreed && can_follow_up;
                            progress.store_disagreed = true;
                            once.then(|| shared.jittered_follow_up())
                        } else {
                            can_follow_up.then(|| shared.jittered_follow_up())
                        };
                        if retry_in.is_some() || !store_answered {
                            shared.emit(PushEvent::Behind {
                                id: Arc::clone(id),
                                announced: announced.clone(),
                                held: held.clone(),
                                retry_in,
                            });
                        } else {
                            // The store insists: the announcement was late (a newer version is
                            // current), forged, or the store lags more than a follow-up delay.
                            bump(&shared.counters.unconfirmed);
                            shared.emit(PushEvent::Unconfirmed {
                                id: Arc::clone(id),
                                announced: announced.clone(),
                                held: held.clone(),
                            });
                        }
                        retry_in
                    }
                }
            }
            Some(Err(error)) => {
                bump(&shared.counters.refresh_failures);
                let retry_in =
                    (error.is_retryable() && can_follow_up).then(|| shared.jittered_follow_up());
                shared.emit(PushEvent::RefreshFailed {
                    id: Arc::clone(id),
                    kind: error.kind(),
                    retry_in,
                });
                retry_in
            }
        };
        if let Some(delay) = retry_in {
            progress.follow_ups += 1;
            bump(&shared.counters.follow_ups);
            tokio::time::sleep(delay).await;
            if let Some(later) = take(&shared, &key) {
                if later.target != news.target {
                    // News of another version: the store has not disagreed about that one yet.
                    progress.store_disagreed = false;
                }
                news.absorb(later);
            }
            continue;
        }
        match finish_or_take(&shared, &key) {
            Some(later) => {
                news = later;
                progress = Progress::default();
            }
            None => {
                running.finished = true;
                return;
            }
        }
    }
}

/// Counts and reports an applied announcement, once per version and task.
fn report_applied(
    shared: &Shared,
    id: &Arc<str>,
    held: &VersionId,
    news: &News,
    progress: &Progress,
    applied: &mut Option<VersionId>,
) {
    if applied.as_ref() == Some(held) {
        return;
    }
    bump(&shared.counters.applied);
    shared.emit(PushEvent::Applied {
        id: Arc::clone(id),
        version: held.clone(),
        announced: news.target.clone(),
        since_sent: news
            .sent_at
            .and_then(|sent| SystemTime::now().duration_since(sent).ok()),
        since_received: news.received_at.elapsed(),
        follow_ups: progress.follow_ups,
    });
    *applied = Some(held.clone());
}
