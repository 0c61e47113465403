//! The re-check after a (re)connect: every secret the caches hold or follow, refreshed once,
//! and the ones their cache's rate limit answered asked again once it passed.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::events::{PushEvent, RecheckPass};
use super::pending::PendingKey;
use super::refresh::rechecked;
use super::shared::Shared;
use crate::cache::SecretCache;
use crate::events::bump;

/// After a (re)connect, from `starts` on: refreshes every secret every cache holds or follows,
/// once, a few at a time ([`RecheckPass::Immediate`]); then, one follow-up delay later, the ones
/// the cache's rate limit answered ([`RecheckPass::Confirming`]): deferred, never skipped.
/// Forgets what the subscriber remembered of secrets no cache holds any more.
pub(super) async fn recheck(shared: Arc<Shared>, starts: Instant) {
    let settings = &shared.settings;
    tokio::time::sleep_until(starts).await;
    if !settings.spread.is_zero() {
        tokio::time::sleep(settings.spread_delay()).await;
    }
    *shared
        .recheck_began
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    let mut jobs: Vec<(usize, SecretCache, Arc<str>)> = Vec::new();
    let mut cached: HashSet<PendingKey> = HashSet::new();
    for (index, cache) in shared.caches().into_iter().enumerate() {
        for id in cache.cached_ids() {
            let _ = cached.insert((index, Arc::clone(&id)));
            jobs.push((index, cache.clone(), id));
        }
    }
    shared
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .forget_uncached(&cached);
    let ids = jobs.len();
    let (failed, deferred) = recheck_pass(&shared, jobs).await;
    shared.emit(PushEvent::Rechecked {
        pass: RecheckPass::Immediate,
        ids,
        failed,
    });
    let ids = deferred.len();
    let failed = if deferred.is_empty() {
        0
    } else {
        tokio::time::sleep(shared.jittered_follow_up()).await;
        recheck_pass(&shared, deferred).await.0
    };
    shared.emit(PushEvent::Rechecked {
        pass: RecheckPass::Confirming,
        ids,
        failed,
    });
}

type RecheckJob = (usize, SecretCache, Arc<str>);

/// Refreshes each job's secret (an id evicted or invalidated since it was listed is not fetched
/// back): how many failed, and the jobs the cache's rate limit answered.
async fn recheck_pass(shared: &Arc<Shared>, jobs: Vec<RecheckJob>) -> (usize, Vec<RecheckJob>) {
    enum Answer {
        NotCached,
        Store,
        RateLimit,
        Failed,
    }
    let counters = &shared.counters;
    let results: Vec<(RecheckJob, Answer)> = futures_util::stream::iter(jobs)
        .map(|(index, cache, id)| async move {
            bump(&counters.refreshes);
            let answer = match cache.refresh_if_cached(&id).await {
                None => Answer::NotCached,
                Some(Ok(refreshed)) if refreshed.store_answered => Answer::Store,
                Some(Ok(_)) => Answer::RateLimit,
                Some(Err(_)) => Answer::Failed,
            };
            ((index, cache, id), answer)
        })
        .buffer_unordered(shared.settings.recheck_concurrency)
        .collect()
        .await;
    let mut failed = 0;
    let mut deferred = Vec::new();
    for ((index, cache, id), answer) in results {
        match answer {
            Answer::NotCached => {}
            Answer::Store => rechecked(shared, (index, id)),
            Answer::RateLimit => deferred.push((index, cache, id)),
            Answer::Failed => failed += 1,
        }
    }
    (failed, deferred)
}
