//! The push scenarios, written once and run against each real broker through [`Broker`]:
//! fan-out to fifty caches, a killed listener, a broker restart, floods and garbage, and a
//! stopped subscriber.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use credswap::push::{MAX_ANNOUNCEMENT_BYTES, Publisher, PushEvent, RecheckPass};
use credswap::{ErrorKind, MemoryProvider, SecretCache, SecretEvent, VersionId};
use futures_util::StreamExt;

use super::{
    Broker, EventLog, GatedProvider, Reader, eventually, is_confirming, subscriber, wait_listeners,
};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Fifty caches with one-hour TTLs, each with its own subscriber connection, one store: after a
/// store change and one announcement, every handle holds the new version, for one store probe and
/// one fetch per cache.
pub async fn fifty_caches_follow_one_announcement(broker: &dyn Broker, name: &str) {
    const CACHES: usize = 50;
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("db", r#"{"password": "first"}"#);
    let log = EventLog::default();
    let swaps: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let interval = Duration::from_secs(1);
    let mut fleet = Vec::new();
    for _ in 0..CACHES {
        let cache = SecretCache::builder(store.clone())
            .ttl(Duration::from_secs(3600))
            .min_refresh_interval(interval)
            .build()
            .unwrap();
        let recorded = swaps.clone();
        cache.on_event(move |event| {
            if let SecretEvent::HandleSwapped { .. } = event {
                recorded.lock().unwrap().push(Instant::now());
            }
        });
        let handle = cache.handle_raw("db").await.unwrap();
        let subscriber = subscriber(broker.listener(), &cache, &log, interval);
        fleet.push((cache, handle, subscriber));
    }
    let settled = log
        .wait_for(CACHES, "confirming re-checks", is_confirming)
        .await;
    assert!(wait_listeners(broker, CACHES).await);
    // The confirming re-check has just asked the store: let the caches' rate-limit window pass, so
    // that what follows measures the announcement and not a follow-up.
    tokio::time::sleep_until((settled + interval).into()).await;

    let publisher = broker.publisher().await;
    let (fetches, probes) = (store.fetch_calls(), store.probe_calls());
    let version = store.set("db", r#"{"password": "second"}"#);
    let sent = Instant::now();
    let published = publisher.announce("db", &version).await.unwrap();
    if let Some(receivers) = published.receivers {
        assert_eq!(receivers, CACHES as u64);
    }
    let all_swapped = eventually(Duration::from_secs(30), || {
        fleet
            .iter()
            .all(|(_, handle, _)| handle.load().version().id == version)
    })
    .await;
    let on_new = fleet
        .iter()
        .filter(|(_, handle, _)| handle.load().version().id == version)
        .count();
    assert!(
        all_swapped,
        "{on_new} of {CACHES} handles hold the new version"
    );
    assert_eq!(on_new, CACHES);
    // A handle's swap event follows its swap by a moment.
    let recorded = eventually(Duration::from_secs(10), || {
        swaps.lock().unwrap().len() >= CACHES
    })
    .await;
    assert!(recorded, "swap events missing");
    let mut latencies: Vec<Duration> = swaps
        .lock()
        .unwrap()
        .iter()
        .map(|at| at.saturating_duration_since(sent))
        .collect();
    assert_eq!(latencies.len(), CACHES, "one swap per handle");
    // One announcement: one probe (changed) and one fetch per cache, no follow-up, no re-check.
    assert_eq!(store.probe_calls() - probes, CACHES as u64);
    assert_eq!(store.fetch_calls() - fetches, CACHES as u64);
    // Each subscriber reports after its refresh returned, a moment after its handle swapped.
    let _ = log
        .wait_for(CACHES, "announcements applied", |e| {
            matches!(e, PushEvent::Applied { follow_ups: 0, .. })
        })
        .await;
    assert_eq!(
        log.count(|e| matches!(e, PushEvent::Applied { .. })),
        CACHES
    );
    latencies.sort();
    println!(
        "{name}: {CACHES} caches, announcement to handle swap: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[CACHES - 1]
    );
    for (_, _, subscriber) in fleet {
        subscriber.shutdown().await;
    }
}

/// The listener's connection is killed twice: once it simply reconnects and hears the next
/// announcement; once it is kept out while a change is announced (and lost), and the re-check
/// after it gets back picks the change up. Callers never see an error.
pub async fn a_killed_listener_reconnects_and_catches_up(broker: &dyn Broker, name: &str) {
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("db", "v-one");
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_secs(3600))
        .min_refresh_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let handle = cache.handle_raw("db").await.unwrap();
    let reader = Reader::start(&cache, &handle);
    let log = EventLog::default();
    let subscriber = subscriber(broker.listener(), &cache, &log, Duration::from_millis(200));
    let _ = log
        .wait_for(1, "a confirming re-check", is_confirming)
        .await;
    let publisher = broker.publisher().await;

    // Killed: it reconnects, and the next announcement arrives.
    assert_eq!(broker.kill_listeners().await, 1);
    let _ = log
        .wait_for(1, "a disconnect", |e| {
            matches!(e, PushEvent::Disconnected { .. })
        })
        .await;
    let _ = log
        .wait_for(2, "a reconnect", |e| {
            matches!(e, PushEvent::Connected { .. })
        })
        .await;
    assert!(eventually(Duration::from_secs(10), || subscriber.is_connected()).await);
    let second = store.set("db", "v-two");
    let _ = publisher.announce("db", &second).await.unwrap();
    let _ = log
        .wait_for(
            1,
            "the announcement applied",
            |e| matches!(e, PushEvent::Applied { version, .. } if *version == second),
        )
        .await;
    assert_eq!(handle.load().version().id, second);

    // Kept out: the change is announced while nobody listens, and lost.
    let is_reconnecting = |e: &PushEvent| matches!(e, PushEvent::Reconnecting { .. });
    let reconnecting_before = log.count(is_reconnecting);
    broker.lock_out_listeners().await;
    let _ = log
        .wait_for(2, "a second disconnect", |e| {
            matches!(e, PushEvent::Disconnected { .. })
        })
        .await;
    // A second reconnect delay is announced only after a refused attempt: the subscriber is
    // certainly away.
    let _ = log
        .wait_for(
            reconnecting_before + 2,
            "a refused reconnect",
            is_reconnecting,
        )
        .await;
    let third = store.set("db", "v-three");
    let published = publisher.announce("db", &third).await.unwrap();
    if let Some(receivers) = published.receivers {
        assert_eq!(receivers, 0, "somebody heard the announcement");
    }
    assert!(wait_listeners(broker, 0).await);
    let applied_before = subscriber.stats().applied;
    broker.let_in_listeners().await;
    let caught_up = eventually(Duration::from_secs(30), || {
        handle.load().version().id == third
    })
    .await;
    assert!(
        caught_up,
        "the change made while away was not picked up: {:#?}",
        log.all()
    );
    // The re-check after getting back in found it, not an announcement.
    assert_eq!(subscriber.stats().applied, applied_before);
    let _ = log
        .wait_for(3, "immediate re-checks", |e| {
            matches!(
                e,
                PushEvent::Rechecked {
                    pass: RecheckPass::Immediate,
                    ids: 1,
                    failed: 0
                }
            )
        })
        .await;
    assert!(subscriber.stats().reconnects >= 2);

    let (reads, errors) = reader.stop().await;
    assert!(reads > 0);
    assert!(errors.is_empty(), "callers saw errors: {errors:?}");
    println!(
        "{name}: killed twice, {} reconnects, {reads} reads, 0 caller errors",
        subscriber.stats().reconnects
    );
    subscriber.shutdown().await;
}

/// The broker stops; a change is made (and cannot be announced); the broker comes back: the
/// subscriber reconnects and picks the change up. Callers never see an error.
pub async fn a_broker_restart_is_survived(broker: &mut dyn Broker, name: &str) {
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("db", "before");
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_secs(3600))
        .min_refresh_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let handle = cache.handle_raw("db").await.unwrap();
    let reader = Reader::start(&cache, &handle);
    let log = EventLog::default();
    let subscriber = subscriber(broker.listener(), &cache, &log, Duration::from_millis(200));
    let _ = log
        .wait_for(1, "a confirming re-check", is_confirming)
        .await;
    let publisher = broker.publisher().await;

    tokio::task::block_in_place(|| broker.stop());
    let _ = log
        .wait_for(1, "a disconnect", |e| {
            matches!(e, PushEvent::Disconnected { .. })
        })
        .await;
    let changed = store.set("db", "during the outage");
    let err = publisher.announce("db", &changed).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    tokio::task::block_in_place(|| broker.start());
    let caught_up = eventually(Duration::from_secs(30), || {
        handle.load().version().id == changed
    })
    .await;
    assert!(caught_up, "{:#?}", log.all());
    assert!(subscriber.stats().reconnects >= 1);
    // The publisher is usable again (it reconnects, or the caller makes a new one).
    let publisher = broker.publisher().await;
    let after = store.set("db", "after");
    let _ = publisher.announce("db", &after).await.unwrap();
    assert!(
        eventually(Duration::from_secs(30), || handle.load().version().id
            == after)
        .await,
        "{:#?}",
        log.all()
    );

    let (reads, errors) = reader.stop().await;
    assert!(errors.is_empty(), "callers saw errors: {errors:?}");
    println!(
        "{name}: broker restarted, {} reconnect attempts, {reads} reads, 0 caller errors",
        log.count(|e| matches!(e, PushEvent::Reconnecting { .. }))
    );
    subscriber.shutdown().await;
}

/// Publishes `announcements` on `publisher`, 64 at a time.
async fn flood(publisher: &Arc<dyn Publisher>, count: usize, id: &str, version: &VersionId) {
    futures_util::stream::iter(0..count)
        .map(|_| {
            let publisher = publisher.clone();
            async move { publisher.announce(id, version).await.unwrap() }
        })
        .buffer_unordered(64)
        .for_each(|_| async {})
        .await;
}

/// 10,000 announcements for one secret cost at most one store call per `min_refresh_interval`,
/// whether they name the real new version or a forged one (which never reaches a handle); 1,000
/// for a secret nobody watches cost nothing; malformed payloads are dropped with an event.
pub async fn floods_and_garbage_cost_bounded_store_calls(broker: &dyn Broker, name: &str) {
    let store = GatedProvider::new();
    let _ = store.store.set("db", "genuine-1");
    let interval = Duration::from_millis(500);
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_secs(3600))
        .min_refresh_interval(interval)
        .build()
        .unwrap();
    let handle = cache.handle_raw("db").await.unwrap();
    let log = EventLog::default();
    let subscriber = subscriber(broker.listener(), &cache, &log, interval);
    let settled = log
        .wait_for(1, "a confirming re-check", is_confirming)
        .await;
    tokio::time::sleep_until((settled + interval).into()).await;
    let publisher = broker.publisher().await;

    // Nobody watches this one: no store call.
    let calls = store.calls();
    flood(&publisher, 1_000, "nobody/watches", &VersionId::new("v9")).await;
    let _ = log
        .wait_for(1_000, "ignored announcements", |e| {
            matches!(e, PushEvent::Ignored { .. })
        })
        .await;
    assert_eq!(store.calls(), calls);

    // Malformed payloads: dropped with an event, no store call, the subscriber carries on.
    let mut garbage = vec![
        ("not json at all".to_owned(), "json"),
        (r#"{"version": "v2"}"#.to_owned(), "missing_field"),
        (r#"{"id": ""}"#.to_owned(), "empty_field"),
        (r#"{"id": 17}"#.to_owned(), "json"),
        (
            r#"{"id": "db\nforged log line"}"#.to_owned(),
            "control_character",
        ),
    ];
    if broker.max_payload() > MAX_ANNOUNCEMENT_BYTES {
        let pad = "x".repeat(MAX_ANNOUNCEMENT_BYTES);
        garbage.push((format!(r#"{{"id": "db", "pad": "{pad}"}}"#), "too_large"));
    }
    for (payload, _) in &garbage {
        broker.publish_raw(payload).await;
    }
    let _ = log
        .wait_for(garbage.len(), "malformed payloads", |e| {
            matches!(e, PushEvent::Malformed { .. })
        })
        .await;
    let kinds: Vec<&str> = log
        .all()
        .iter()
        .filter_map(|e| match e {
            PushEvent::Malformed { error, .. } => Some(error.as_str()),
            _ => None,
        })
        .collect();
    let expected: Vec<&str> = garbage.iter().map(|(_, kind)| *kind).collect();
    assert_eq!(kinds, expected);
    assert_eq!(store.calls(), calls);
    assert!(subscriber.is_connected());

    // The real rotation, announced 10,000 times.
    let before = subscriber.stats();
    let version = store.store.set("db", "genuine-2");
    let started = Instant::now();
    flood(&publisher, 10_000, "db", &version).await;
    assert!(
        eventually(Duration::from_secs(60), || subscriber.stats().relevant
            == 10_000)
        .await,
        "{:?}",
        subscriber.stats()
    );
    assert!(
        eventually(Duration::from_secs(30), || handle.load().version().id
            == version)
        .await
    );
    let genuine_stats = subscriber.stats();
    let genuine_elapsed = started.elapsed();
    // Repeats of an applied announcement cost no refresh while the cache would rate-limit one.
    let refresh_bound = (genuine_elapsed.as_millis() / interval.as_millis()) as u64 + 3;
    assert!(
        genuine_stats.refreshes - before.refreshes <= refresh_bound,
        "{} refreshes for one announcement repeated over {genuine_elapsed:?}",
        genuine_stats.refreshes - before.refreshes
    );

    // A forger repeats 10,000 times that a version the store never had is current.
    flood(&publisher, 10_000, "db", &VersionId::new("forged")).await;
    assert!(
        eventually(Duration::from_secs(60), || subscriber.stats().relevant
            == 20_000)
        .await,
        "{:?}",
        subscriber.stats()
    );
    // Let the store contradict the forged version (asked after the announcement and once more a
    // follow-up later), then stop the subscriber: whatever it did is counted.
    let _ = log
        .wait_for(1, "the forged version contradicted", |e| {
            matches!(e, PushEvent::Unconfirmed { announced, .. } if announced.as_str() == "forged")
        })
        .await;
    let final_stats = subscriber.stats();
    subscriber.shutdown().await;
    let elapsed = started.elapsed();
    let store_calls = store.calls() - calls;
    let allowed = (elapsed.as_millis() / interval.as_millis()) as u64 + 1;
    assert!(store_calls >= 1);
    assert!(
        store_calls <= allowed,
        "{store_calls} store calls in {elapsed:?} (at most {allowed} allowed)"
    );
    assert_eq!(handle.load().version().id, version);
    assert_eq!(handle.load().current().expose_str(), Some("genuine-2"));
    println!(
        "{name}: 20,000 announcements (10,000 genuine, 10,000 forged) in {elapsed:.1?}: \
         {store_calls} store calls (bound {allowed}), {} refreshes asked of the cache \
         ({} for the genuine flood), {} follow-ups; 1,000 unknown and {} malformed: 0 store calls",
        final_stats.refreshes - before.refreshes,
        genuine_stats.refreshes - before.refreshes,
        final_stats.follow_ups,
        garbage.len()
    );
}

/// After `shutdown` (or a drop) the subscriber holds no connection, so an announcement reaches
/// nobody and costs no store call.
pub async fn a_stopped_subscriber_costs_nothing(broker: &dyn Broker) {
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("db", "one");
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_secs(3600))
        .min_refresh_interval(Duration::ZERO)
        .build()
        .unwrap();
    let handle = cache.handle_raw("db").await.unwrap();
    let publisher = broker.publisher().await;
    for stop_by_drop in [false, true] {
        let log = EventLog::default();
        let subscriber = subscriber(broker.listener(), &cache, &log, Duration::from_millis(50));
        let _ = log
            .wait_for(1, "a confirming re-check", is_confirming)
            .await;
        assert!(wait_listeners(broker, 1).await);
        if stop_by_drop {
            drop(subscriber);
        } else {
            subscriber.shutdown().await;
            assert_eq!(log.count(|e| matches!(e, PushEvent::Stopped)), 1);
        }
        assert!(
            wait_listeners(broker, 0).await,
            "the listener connection outlived the subscriber"
        );
        let calls = (store.fetch_calls(), store.probe_calls());
        let version = store.set("db", "changed");
        let published = publisher.announce("db", &version).await.unwrap();
        if let Some(receivers) = published.receivers {
            assert_eq!(receivers, 0);
        }
        assert_eq!((store.fetch_calls(), store.probe_calls()), calls);
        assert_ne!(handle.load().version().id, version);
        let _ = cache.refresh("db").await.unwrap();
    }
}
