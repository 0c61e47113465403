//! The cache's promises: coalescing, refresh-ahead, last-known-good, no retry loops, invalidation.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{GatedProvider, eventually};
use credswap::{Error, ErrorKind, MemoryProvider, SecretCache, SecretEvent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_cost_one_provider_call() {
    let provider = GatedProvider::new();
    let _ = provider.store.set("db", "v1");
    let cache = SecretCache::builder(provider.clone()).build().unwrap();

    // Hold the store shut until every task is waiting, so they all miss together.
    let gate = provider.close_gate().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(1000));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let cache = cache.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let _ = barrier.wait().await;
                cache.get("db").await
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(10), || provider.calls() >= 1).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(gate);
    for task in tasks {
        let value = task.await.unwrap().unwrap();
        assert_eq!(value.value.expose_str(), Some("v1"));
    }
    assert_eq!(provider.calls(), 1);
    let stats = cache.stats();
    assert_eq!(stats.fetches, 1);
    assert_eq!(stats.hits + stats.misses, 1000);
}

#[tokio::test]
async fn a_read_past_the_refresh_point_returns_at_once_and_refreshes_once() {
    let provider = GatedProvider::new();
    let v1 = provider.store.set("db", "v1");
    let cache = SecretCache::builder(provider.clone())
        .ttl(Duration::from_secs(3))
        .refresh_ahead(0.3, 0.3)
        .build()
        .unwrap();
    let mut events = cache.subscribe();
    assert_eq!(cache.get("db").await.unwrap().version.id, v1);
    assert_eq!(provider.calls(), 1);

    let v2 = provider.store.set("db", "v2");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The store is held shut: a read that waited for it could not return.
    let gate = provider.close_gate().await;
    for _ in 0..50 {
        let value = cache.get("db").await.unwrap();
        assert_eq!(
            value.version.id, v1,
            "served the cached value while refreshing"
        );
    }
    assert!(eventually(Duration::from_secs(5), || provider.calls() == 2).await);
    drop(gate);
    let rotated = loop {
        match tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("a rotation event")
            .unwrap()
        {
            SecretEvent::Rotated { old, new, .. } => break (old, new),
            _ => continue,
        }
    };
    assert_eq!(rotated, (v1, v2.clone()));
    assert_eq!(cache.get("db").await.unwrap().version.id, v2);
    assert_eq!(provider.calls(), 2, "exactly one background refresh");
}

#[tokio::test(start_paused = true)]
async fn an_outage_shorter_than_max_stale_is_invisible_and_a_longer_one_is_a_typed_error() {
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("db", "v1");
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_millis(300))
        .refresh_ahead(0.5, 0.5)
        .max_stale(Duration::from_millis(1200))
        .backoff(Duration::from_millis(50), Duration::from_millis(100))
        .build()
        .unwrap();
    let mut events = cache.subscribe();
    let _ = cache.get("db").await.unwrap();
    store.fail_with(Some(Error::transient("db", "connection refused")));

    // For about a second (the TTL, then most of max_stale), readers see the last good value.
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_millis(1100) {
        let value = cache.get("db").await.expect("last-known-good is served");
        assert_eq!(value.value.expose_str(), Some("v1"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = cache.stats();
    assert!(stats.stale_serves > 0);
    assert!(stats.refresh_failures > 0);
    let mut saw_stale_event = false;
    while let Ok(event) = events.try_recv() {
        saw_stale_event |= matches!(event, SecretEvent::ServedStale { .. });
    }
    assert!(saw_stale_event);
    // Backoff keeps the store from being hammered: far fewer calls than reads.
    assert!(
        store.fetch_calls() + store.probe_calls() < 30,
        "{} calls",
        store.fetch_calls() + store.probe_calls()
    );

    // Past TTL + max_stale the outage shows, as a typed, retryable error.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let err = cache.get("db").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.is_retryable());

    // And the store coming back heals the cache.
    store.fail_with(None);
    let _ = store.set("db", "v2");
    let mut healed = false;
    for _ in 0..500 {
        if let Ok(value) = cache.get("db").await {
            if value.value.expose_str() == Some("v2") {
                healed = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(healed, "the cache recovers when the store does");
}

#[tokio::test]
async fn not_found_and_access_denied_are_neither_retried_nor_served_stale() {
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("db", "v1");
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_millis(100))
        .max_stale(Duration::from_secs(60))
        .cold_retries(3)
        .build()
        .unwrap();
    let _ = cache.get("db").await.unwrap();

    // Deleted: after expiry the reader gets not-found, not the old value.
    assert!(store.remove("db"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let calls_before = store.fetch_calls() + store.probe_calls();
    let err = cache.get("db").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.id(), Some("db"));
    assert_eq!(
        store.fetch_calls() + store.probe_calls() - calls_before,
        1,
        "one call, no retry loop"
    );
    // The stale value is gone for good, not only for that read.
    let err = cache.get("db").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // Denied, on a cold key: one call despite cold_retries(3).
    store.fail_with(Some(Error::access_denied("x")));
    let before = store.fetch_calls();
    let err = cache.get("other").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied);
    assert_eq!(store.fetch_calls() - before, 1);

    // Throttling, on a cold key, is retried (with backoff) up to cold_retries.
    store.fail_with(Some(Error::throttled("x")));
    let cache = SecretCache::builder(store.clone())
        .cold_retries(3)
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .build()
        .unwrap();
    let before = store.fetch_calls();
    let err = cache.get("other").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled);
    assert_eq!(store.fetch_calls() - before, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_refreshes_are_coalesced_and_rate_limited() {
    let provider = GatedProvider::new();
    let _ = provider.store.set("db", "v1");
    let cache = SecretCache::builder(provider.clone())
        .min_refresh_interval(Duration::from_millis(300))
        .build()
        .unwrap();
    let _ = cache.get("db").await.unwrap();
    let v2 = provider.store.set("db", "v2");
    tokio::time::sleep(Duration::from_millis(350)).await;

    // 100 tasks learn at once that the value is wrong (say, the database rejected it).
    provider.set_delay(Duration::from_millis(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.refresh("db").await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().version.id, v2);
    }
    assert_eq!(provider.calls(), 2, "100 refreshes, one store call");

    // Right after, a refresh is answered from the cache.
    let _ = cache.refresh("db").await.unwrap();
    assert_eq!(provider.calls(), 2);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let _ = cache.refresh("db").await.unwrap();
    assert_eq!(provider.calls(), 3);
}

#[tokio::test]
async fn invalidate_forces_the_next_read_to_the_store_and_tells_hooks() {
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("db", "v1");
    let _ = store.set("api", "a1");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let cache = {
        let seen = seen.clone();
        SecretCache::builder(store.clone())
            .on_event(move |event| {
                if let SecretEvent::Invalidated { id } = event {
                    seen.lock().unwrap().push(id.to_string());
                }
            })
            .build()
            .unwrap()
    };
    let _ = cache.get("db").await.unwrap();
    let _ = cache.get("api").await.unwrap();
    let _ = cache
        .get_selected("db", &credswap::Selector::Stage(credswap::Stage::Current))
        .await
        .unwrap();
    assert_eq!(store.fetch_calls(), 3);

    let v2 = store.set("db", "v2");
    cache.invalidate("db");
    assert_eq!(cache.get("db").await.unwrap().version.id, v2);
    let _ = cache
        .get_selected("db", &credswap::Selector::Stage(credswap::Stage::Current))
        .await
        .unwrap();
    let _ = cache.get("api").await.unwrap();
    assert_eq!(
        store.fetch_calls(),
        5,
        "both db keys refetched, api still cached"
    );

    cache.invalidate_all();
    let _ = cache.get("api").await.unwrap();
    assert_eq!(store.fetch_calls(), 6);
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["db".to_string(), "*".to_string()]
    );
}

#[tokio::test]
async fn a_probe_that_finds_the_version_unchanged_costs_no_fetch() {
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("db", "v1");
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_millis(100))
        .build()
        .unwrap();
    for _ in 0..5 {
        let _ = cache.get("db").await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let _ = cache.get("db").await.unwrap();
    assert_eq!(store.fetch_calls(), 1);
    assert!(store.probe_calls() >= 4);
    let stats = cache.stats();
    assert_eq!(stats.fetches, 1);
    assert_eq!(stats.probes, store.probe_calls());
}

#[tokio::test]
async fn bad_settings_are_config_errors() {
    let store: Arc<MemoryProvider> = Arc::new(MemoryProvider::new());
    let builds = [
        SecretCache::builder(store.clone())
            .ttl(Duration::ZERO)
            .build(),
        SecretCache::builder(store.clone())
            .refresh_ahead(0.9, 0.5)
            .build(),
        SecretCache::builder(store.clone())
            .refresh_ahead(0.0, 0.5)
            .build(),
        SecretCache::builder(store.clone())
            .backoff(Duration::from_secs(2), Duration::from_secs(1))
            .build(),
        SecretCache::builder(store.clone()).max_entries(0).build(),
        SecretCache::builder(store.clone())
            .ttl(Duration::MAX)
            .build(),
        SecretCache::builder(store.clone())
            .grace_period(Duration::MAX)
            .build(),
    ];
    for built in builds {
        assert_eq!(built.unwrap_err().kind(), ErrorKind::Config);
    }
    let cache = SecretCache::builder(store).build().unwrap();
    let err = cache.get("bad\0id").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
}

#[tokio::test(start_paused = true)]
async fn a_store_that_denies_the_version_probe_is_fetched_from_and_keeps_serving() {
    let provider = common::Scripted::new();
    let _ = provider.store.set("db", "v1");
    provider.deny_probes();
    let cache = SecretCache::builder(provider.clone())
        .ttl(Duration::from_millis(100))
        .build()
        .unwrap();
    let _ = cache.get("db").await.unwrap();
    let v2 = provider.store.set("db", "v2");
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Expired: the probe is denied, so the cache fetches instead; last-known-good is never dropped.
    assert_eq!(cache.get("db").await.unwrap().version.id, v2);
    assert_eq!(provider.probes(), 1);
    // From then on it does not ask for the probe again.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(cache.get("db").await.unwrap().version.id, v2);
    assert_eq!(provider.probes(), 1);
    assert_eq!(provider.fetches(), 3);
}

#[tokio::test]
async fn refresh_if_cached_refreshes_only_what_the_cache_holds_and_says_if_the_store_answered() {
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("db", "v1");
    let _ = store.set("db", "v2");
    let cache = SecretCache::builder(store.clone())
        .min_refresh_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    // Nothing of `db` cached: no store call.
    assert!(cache.refresh_if_cached("db").await.is_none());
    assert_eq!(store.fetch_calls() + store.probe_calls(), 0);

    let _ = cache.get("db").await.unwrap();
    let previous = credswap::Selector::Stage(credswap::Stage::Previous);
    let _ = cache.get_selected("db", &previous).await.unwrap();
    let v3 = store.set("db", "v3");
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(61)).await;
    let refreshed = cache.refresh_if_cached("db").await.unwrap().unwrap();
    assert_eq!(refreshed.value.version.id, v3);
    assert!(refreshed.store_answered);
    // Inside the rate limit: answered from the cache, and it says so.
    let again = cache.refresh_if_cached("db").await.unwrap().unwrap();
    assert_eq!(again.value.version.id, v3);
    assert!(!again.store_answered);
    // The previous version held under another selector was dropped, not left stale.
    let calls = store.fetch_calls();
    let previous_now = cache.get_selected("db", &previous).await.unwrap();
    assert_eq!(previous_now.value.expose_str(), Some("v2"));
    assert_eq!(store.fetch_calls(), calls + 1);
}
