//! Turning payloads into cache refreshes: decode, skip what no cache watches, coalesce
//! announcements per cache and secret into one refresh task, follow up when a cache is behind, and
//! re-check everything after a (re)connect.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::announcement::Announcement;
use super::events::{PushEvent, RecheckPass};
use super::subscriber::Shared;
use crate::cache::SecretCache;
use crate::events::bump;
use crate::value::VersionId;

/// A cache (by its position in the subscriber) and a secret id.
pub(super) type PendingKey = (usize, Arc<str>);

/// What the subscriber knows about one cache and secret: announcements its refresh task has not
/// taken yet, whether that task runs, and what the last refresh found.
#[derive(Default)]
pub(super) struct PendingNews {
    news: Option<News>,
    running: bool,
    /// The version the last refresh found, and when.
    seen: Option<(VersionId, Instant)>,
}

impl PendingNews {
    /// Whether a refresh task runs (or waits to follow up) for this cache and secret.
    #[cfg(test)]
    pub(super) fn is_running(&self) -> bool {
        self.running
    }

    /// Whether an announcement of `target` is already applied: a refresh of ours found that version
    /// within the follow-up delay (so within the cache's rate limit, where another refresh would
    /// be answered from the cache anyway). Repeats of an announcement then cost no refresh and no
    /// event. Outside that window an announcement is always acted on, so a rollback to an earlier
    /// version is never mistaken for a repeat.
    fn already_applied(&self, target: Option<&VersionId>, window: Duration) -> bool {
        match (target, &self.seen) {
            (Some(target), Some((seen, at))) => target == seen && at.elapsed() < window,
            _ => false,
        }
    }
}

/// What a batch of announcements for one secret asks for.
#[derive(Clone)]
struct News {
    /// The version the latest announcement named (`None`: it named none).
    target: Option<VersionId>,
    /// The earliest send time of the batch, for the latency.
    sent_at: Option<SystemTime>,
    /// When the earliest announcement of the batch arrived.
    received_at: Instant,
}

impl News {
    /// Adds a later announcement: its target wins, the latency counts from the earliest.
    fn absorb(&mut self, later: News) {
        self.target = later.target;
        self.sent_at = match (self.sent_at, later.sent_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.received_at = self.received_at.min(later.received_at);
    }
}

/// Handles one payload: decode it, find the caches that watch its secret, and hand it to (or start)
/// their refresh tasks.
pub(super) fn receive(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    payload: &[u8],
    received_at: Instant,
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
    };
    let id: Arc<str> = Arc::from(announcement.id());
    let mut relevant = false;
    for (index, cache) in shared.caches().into_iter().enumerate() {
        // Lock-free for the cache's entries; no store call.
        if !cache.is_cached(&id) {
            continue;
        }
        relevant = true;
        let key: PendingKey = (index, Arc::clone(&id));
        let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pending.entry(key.clone()).or_default();
        if entry.running {
            match &mut entry.news {
                Some(waiting) => waiting.absorb(news.clone()),
                None => entry.news = Some(news.clone()),
            }
            continue;
        }
        if entry.already_applied(news.target.as_ref(), shared.settings.follow_up_delay) {
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
    pending.get_mut(key).and_then(|entry| entry.news.take())
}

/// Notes that a refresh for `key` found `version`.
fn saw(shared: &Shared, key: &PendingKey, version: &VersionId) {
    let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(entry) = pending.get_mut(key) {
        entry.seen = Some((version.clone(), Instant::now()));
    }
}

/// The task is done with what it took: returns what arrived meanwhile, or marks the task as ended
/// (so the next announcement starts a new one) when nothing did or what did is already applied.
fn finish_or_take(shared: &Shared, key: &PendingKey) -> Option<News> {
    let window = shared.settings.follow_up_delay;
    let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
    let entry = pending.get_mut(key)?;
    match entry.news.take() {
        Some(news) if !entry.already_applied(news.target.as_ref(), window) => Some(news),
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
        if let Some(entry) = pending.get_mut(&self.key) {
            entry.running = false;
        }
    }
}

/// Refreshes secret `key.1` in `cache` for the announcements waiting under `key`, following up
/// while the cache is behind the announced version, until no announcement is left.
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
    let mut follow_ups = 0u32;
    let mut applied: Option<VersionId> = None;
    loop {
        bump(&shared.counters.refreshes);
        // Through the cache: coalesced with its other loads of `id`, and at most one store call
        // per `min_refresh_interval` however many announcements arrive.
        let retry_in = match cache.refresh(id).await {
            Ok(value) => {
                let held = &value.version.id;
                saw(&shared, &key, held);
                match &news.target {
                    Some(announced) if announced != held => {
                        let retry_in = (follow_ups < settings.max_follow_ups)
                            .then(|| settings.jittered_follow_up());
                        shared.emit(PushEvent::Behind {
                            id: Arc::clone(id),
                            announced: announced.clone(),
                            held: held.clone(),
                            retry_in,
                        });
                        retry_in
                    }
                    _ => {
                        if applied.as_ref() != Some(held) {
                            bump(&shared.counters.applied);
                            shared.emit(PushEvent::Applied {
                                id: Arc::clone(id),
                                version: held.clone(),
                                announced: news.target.clone(),
                                since_sent: news
                                    .sent_at
                                    .and_then(|sent| SystemTime::now().duration_since(sent).ok()),
                                since_received: news.received_at.elapsed(),
                                follow_ups,
                            });
                            applied = Some(held.clone());
                        }
                        None
                    }
                }
            }
            Err(error) => {
                bump(&shared.counters.refresh_failures);
                let retry_in = (error.is_retryable() && follow_ups < settings.max_follow_ups)
                    .then(|| settings.jittered_follow_up());
                shared.emit(PushEvent::RefreshFailed {
                    id: Arc::clone(id),
                    kind: error.kind(),
                    retry_in,
                });
                retry_in
            }
        };
        if let Some(delay) = retry_in {
            follow_ups += 1;
            bump(&shared.counters.follow_ups);
            tokio::time::sleep(delay).await;
            if let Some(later) = take(&shared, &key) {
                news.absorb(later);
            }
            continue;
        }
        match finish_or_take(&shared, &key) {
            Some(later) => news = later,
            None => {
                running.finished = true;
                return;
            }
        }
    }
}

/// After a (re)connect: refreshes every secret every cache holds or follows, at once and again one
/// follow-up delay later (see [`RecheckPass`]), a few at a time.
pub(super) async fn recheck(shared: Arc<Shared>) {
    let settings = &shared.settings;
    if !settings.spread.is_zero() {
        tokio::time::sleep(settings.spread_delay()).await;
    }
    let mut found_any = false;
    for pass in [RecheckPass::Immediate, RecheckPass::Confirming] {
        if pass == RecheckPass::Confirming && found_any {
            tokio::time::sleep(settings.jittered_follow_up()).await;
        }
        let mut jobs: Vec<(SecretCache, Arc<str>)> = Vec::new();
        for cache in shared.caches() {
            for id in cache.cached_ids() {
                jobs.push((cache.clone(), id));
            }
        }
        let ids = jobs.len();
        found_any |= ids > 0;
        let counters = &shared.counters;
        let failed = futures_util::stream::iter(jobs)
            .map(|(cache, id)| async move {
                bump(&counters.refreshes);
                cache.refresh(&id).await.is_err()
            })
            .buffer_unordered(settings.recheck_concurrency)
            .filter(|failed| std::future::ready(*failed))
            .count()
            .await;
        shared.emit(PushEvent::Rechecked { pass, ids, failed });
    }
}
