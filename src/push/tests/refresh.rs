//! What announcements cost and do, against an in-process channel and a counting store, under
//! paused time: coalescing, repeats, follow-ups and their bounds, version-less announcements, ids
//! that leave the cache meanwhile, and the subscriber's memory of them.

use std::time::Duration;

use tokio::time::Instant;

use super::super::*;
use super::{TestChannel, cache_over, eventually, idle, next, settled, store_calls, store_with};
use crate::VersionId;

#[tokio::test(start_paused = true)]
async fn unknown_and_malformed_announcements_cost_nothing_and_forged_ones_two_store_calls() {
    let (store, first) = store_with("db", "one");
    let interval = Duration::from_secs(1);
    let cache = cache_over(&store, interval);
    let handle = cache.handle_raw("db").await.unwrap();
    let channel = TestChannel::default();
    let subscriber = Subscriber::builder(channel.clone())
        .cache(cache.clone())
        .start()
        .unwrap();
    let mut events = subscriber.subscribe();
    settled(&mut events).await;
    let calls = store_calls(&store);

    for n in 0..100 {
        channel.announce("nobody-watches", &VersionId::new(format!("v{n}")));
    }
    channel.send(&b"not json"[..]);
    match next(&mut events, |e| matches!(e, PushEvent::Malformed { .. })).await {
        PushEvent::Malformed { error, bytes } => {
            assert_eq!(error.as_str(), "json");
            assert_eq!(bytes, 8);
        }
        other => unreachable!("{other:?}"),
    }
    let stats = subscriber.stats();
    assert_eq!((stats.ignored, stats.malformed), (100, 1));
    assert_eq!(store_calls(&store), calls);

    // A thousand announcements of a version the store never had, inside the rate limit of the
    // re-check's store call: the follow-up past it asks the store, which disagrees; asked once
    // more (a replica could lag), it still does, and the subscriber stops there.
    for _ in 0..1000 {
        channel.announce("db", &VersionId::new("forged"));
    }
    match next(&mut events, |e| matches!(e, PushEvent::Unconfirmed { .. })).await {
        PushEvent::Unconfirmed {
            announced, held, ..
        } => {
            assert_eq!(announced.as_str(), "forged");
            assert_eq!(held, first);
        }
        other => unreachable!("{other:?}"),
    }
    assert!(
        eventually(|| subscriber.stats().relevant == 1000 && idle(&subscriber)).await,
        "{:?}",
        subscriber.stats()
    );
    tokio::time::sleep(interval * 10).await;
    let stats = subscriber.stats();
    assert_eq!(stats.relevant, 1000);
    assert_eq!(stats.unconfirmed, 1, "{stats:?}");
    assert!(stats.follow_ups <= 2, "{stats:?}");
    assert!(stats.refreshes <= 5, "not coalesced: {stats:?}");
    assert!(store_calls(&store) - calls <= 2, "{stats:?}");
    assert_eq!(handle.load().current().expose_str(), Some("one"));
}

#[tokio::test(start_paused = true)]
async fn a_stale_announcement_costs_at_most_one_extra_store_call() {
    let store = std::sync::Arc::new(crate::MemoryProvider::new());
    let older = store.set("db", "one");
    let newer = store.set("db", "two");
    let interval = Duration::from_secs(1);
    let cache = cache_over(&store, interval);
    let handle = cache.handle_raw("db").await.unwrap();
    let channel = TestChannel::default();
    let subscriber = Subscriber::builder(channel.clone())
        .cache(cache)
        .follow_up(interval, 3)
        .start()
        .unwrap();
    let mut events = subscriber.subscribe();
    settled(&mut events).await;

    // Delivered late: the cache already holds a newer version. Once inside the rate limit of the
    // last store call, once past it.
    for wait in [Duration::ZERO, interval * 2] {
        tokio::time::sleep(wait).await;
        let calls = store_calls(&store);
        let before = subscriber.stats();
        channel.announce("db", &older);
        let _ = next(&mut events, |e| matches!(e, PushEvent::Unconfirmed { .. })).await;
        tokio::time::sleep(interval * 10).await;
        assert!(idle(&subscriber));
        let after = subscriber.stats();
        // The announcement's refresh, and one follow-up in case the store lagged.
        assert!(
            store_calls(&store) - calls <= 2,
            "{} store calls; {after:?}",
            store_calls(&store) - calls
        );
        assert!(after.follow_ups - before.follow_ups <= 2, "{after:?}");
        assert_eq!(after.unconfirmed - before.unconfirmed, 1);
        assert_eq!(after.applied, before.applied);
        assert_eq!(handle.load().version().id, newer);
    }
}

#[tokio::test(start_paused = true)]
async fn version_less_announcements_cost_one_store_call_per_interval_not_one_event_each() {
    let (store, _) = store_with("db", "one");
    let interval = Duration::from_secs(1);
    let cache = cache_over(&store, interval);
    let handle = cache.handle_raw("db").await.unwrap();
    let channel = TestChannel::default();
    let subscriber = Subscriber::builder(channel.clone())
        .cache(cache)
        .follow_up(interval, 3)
        .start()
        .unwrap();
    let mut events = subscriber.subscribe();
    settled(&mut events).await;
    let calls = store_calls(&store);
    let started = Instant::now();
    let changed = store.set("db", "two");

    // 10,000 "go and look", in 100 bursts over five seconds.
    let payload = Announcement::unversioned("db").unwrap().encode();
    for _ in 0..100 {
        for _ in 0..100 {
            channel.send(payload.clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        eventually(|| subscriber.stats().relevant == 10_000 && idle(&subscriber)).await,
        "{:?}",
        subscriber.stats()
    );
    let elapsed = started.elapsed();
    // One store call per interval, and one more right after the re-check (whose call took the
    // limit: the first announcement after it asks past the limit, once).
    let bound = (elapsed.as_millis() / interval.as_millis()) as u64 + 2;
    let stats = subscriber.stats();
    let store_calls = store_calls(&store) - calls;
    assert!(
        store_calls <= bound,
        "{store_calls} store calls in {elapsed:?}"
    );
    // An event when the store answered (applied) or the rate limit did (rate limited), a few per
    // interval: not one per announcement.
    assert!(stats.applied <= bound, "{stats:?}");
    assert!(stats.rate_limited <= bound, "{stats:?}");
    assert!(stats.refreshes <= 2 * bound, "{stats:?}");
    assert!(stats.applied >= 1, "{stats:?}");
    assert_eq!(handle.load().version().id, changed);
}

#[tokio::test(start_paused = true)]
async fn a_version_less_announcement_inside_the_rate_limit_is_followed_up_past_it() {
    let (store, _) = store_with("db", "one");
    let interval = Duration::from_secs(1);
    let cache = cache_over(&store, interval);
    let handle = cache.handle_raw("db").await.unwrap();
    let channel = TestChannel::default();
    let subscriber = Subscriber::builder(channel.clone())
        .cache(cache)
        .start()
        .unwrap();
    let mut events = subscriber.subscribe();
    settled(&mut events).await;
    // Changed just after the re-check's store call, which took the cache's rate limit: the
    // announcement asks past it (once per re-check), so it is not kept waiting for a follow-up.
    let started = Instant::now();
    let changed = store.set("db", "two");
    channel.send(Announcement::unversioned("db").unwrap().encode());
    match next(&mut events, |e| matches!(e, PushEvent::Applied { .. })).await {
        PushEvent::Applied {
            version,
            follow_ups,
            ..
        } => {
            assert_eq!(version, changed);
            assert_eq!(follow_ups, 0);
        }
        other => unreachable!("{other:?}"),
    }
    assert!(started.elapsed() < interval, "{:?}", started.elapsed());
    // Then the limit holds again: a change right after the announcement's own store call is
    // answered by the rate limit, reported instead of an application, and asked again past it.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let third = store.set("db", "three");
    channel.send(Announcement::unversioned("db").unwrap().encode());
    match next(&mut events, |e| matches!(e, PushEvent::RateLimited { .. })).await {
        PushEvent::RateLimited { retry_in, .. } => assert!(retry_in >= Some(interval)),
        other => unreachable!("{other:?}"),
    }
    match next(&mut events, |e| matches!(e, PushEvent::Applied { .. })).await {
        PushEvent::Applied {
            version,
            announced,
            follow_ups,
            ..
        } => {
            assert_eq!(version, third);
            assert_eq!(announced, None);
            assert_eq!(follow_ups, 1);
        }
        other => unreachable!("{other:?}"),
    }
    assert_eq!(handle.load().version().id, third);
    assert_eq!(subscriber.stats().applied, 2);
}

#[tokio::test(start_paused = true)]
async fn an_id_invalidated_while_its_refresh_waits_is_not_fetched_back() {
    let (store, first) = store_with("db", "one");
    let cache = cache_over(&store, Duration::from_secs(1));
    let _ = cache.get("db").await.unwrap();
    let channel = TestChannel::default();
    let subscriber = Subscriber::builder(channel.clone())
        .cache(cache.clone())
        .spread(Duration::from_secs(10))
        .start()
        .unwrap();
    let mut events = subscriber.subscribe();
    settled(&mut events).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = store_calls(&store);

    channel.announce("db", &first);
    // Let the loop take the announcement: its refresh task now waits out the spread.
    for _ in 0..100 {
        if subscriber.stats().relevant == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(subscriber.stats().relevant, 1);
    assert!(!idle(&subscriber));
    cache.invalidate("db");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(idle(&subscriber));
    assert_eq!(store_calls(&store), calls);
    assert!(!cache.is_cached("db"));
    assert_eq!(subscriber.stats().applied, 0);
}

#[tokio::test(start_paused = true)]
async fn what_the_subscriber_remembers_goes_when_its_window_passed_or_its_secret_left() {
    let store = std::sync::Arc::new(crate::MemoryProvider::new());
    let cache = cache_over(&store, Duration::from_secs(1));
    let mut versions = Vec::new();
    for n in 0..100 {
        let id = format!("s{n}");
        versions.push((id.clone(), store.set(&id, "v")));
        let _ = cache.get(&id).await.unwrap();
    }
    let channel = TestChannel::default();
    let subscriber = Subscriber::builder(channel.clone())
        .cache(cache.clone())
        .start()
        .unwrap();
    let mut events = subscriber.subscribe();
    settled(&mut events).await;
    let remembered = || subscriber.shared.pending.lock().unwrap().len();
    for (id, version) in &versions {
        channel.announce(id, version);
    }
    assert!(eventually(|| subscriber.stats().applied == 100 && idle(&subscriber)).await);
    assert_eq!(remembered(), 100);

    // Past the repeat window, the next announcement sweeps the ended ones out.
    tokio::time::sleep(Duration::from_secs(5)).await;
    channel.announce("s0", &versions[0].1);
    assert!(eventually(|| subscriber.stats().relevant == 101 && idle(&subscriber)).await);
    assert_eq!(remembered(), 1);

    // A re-check forgets secrets the cache no longer holds; of the others it remembers only that
    // it asked the store (for one announcement's sake), and only for the window.
    cache.invalidate("s0");
    channel.kill();
    settled(&mut events).await;
    let keys = || subscriber.shared.pending.lock().unwrap().keys();
    assert!(!keys().iter().any(|(_, id)| &**id == "s0"));
    assert_eq!(remembered(), 99);
    tokio::time::sleep(Duration::from_secs(5)).await;
    channel.announce("s1", &versions[1].1);
    assert!(eventually(|| subscriber.stats().relevant == 102 && idle(&subscriber)).await);
    assert_eq!(remembered(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cache_behind_the_announced_version_is_followed_up_until_it_catches_up() {
    let (store, _) = store_with("db", "one");
    let interval = Duration::from_secs(1);
    let cache = cache_over(&store, interval);
    let handle = cache.handle_raw("db").await.unwrap();
    let channel = TestChannel::default();
    let subscriber = Subscriber::builder(channel.clone())
        .cache(cache)
        .follow_up(interval, 3)
        .start()
        .unwrap();
    let mut events = subscriber.subscribe();
    settled(&mut events).await;

    // Force the rate limit: past the window of the re-check's store call, a refresh asks the
    // store, and for a whole interval after it the announcement's refresh is answered from the
    // cache; only the follow-up reaches the store.
    tokio::time::sleep(interval).await;
    let probes = store.probe_calls();
    let _ = handle.cache().refresh("db").await.unwrap();
    assert_eq!(store.probe_calls(), probes + 1);
    let version = store.set("db", "two");
    channel.announce("db", &version);
    let behind = next(&mut events, |e| matches!(e, PushEvent::Behind { .. })).await;
    assert!(
        matches!(
            behind,
            PushEvent::Behind {
                retry_in: Some(_),
                ..
            }
        ),
        "{behind:?}"
    );
    match next(&mut events, |e| matches!(e, PushEvent::Applied { .. })).await {
        PushEvent::Applied {
            id,
            version: held,
            announced,
            follow_ups,
            since_sent,
            since_received,
        } => {
            assert_eq!(&*id, "db");
            assert_eq!(held, version);
            assert_eq!(announced, Some(version.clone()));
            assert_eq!(follow_ups, 1);
            assert!(since_received >= interval, "{since_received:?}");
            assert!(since_sent.is_some());
        }
        other => unreachable!("{other:?}"),
    }
    assert_eq!(handle.load().version().id, version);
}
