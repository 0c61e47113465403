//! The store saying no, or not answering: remembered answers for missing and denied secrets, and
//! stale serving reported once per backoff step. All under paused time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::paused;
use credswap::{Error, ErrorKind, MemoryProvider, SecretCache, SecretEvent};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn a_storm_of_reads_of_a_missing_key_costs_one_store_call_per_period() {
    paused(LIMIT, || async {
        let store = Arc::new(MemoryProvider::new());
        let cache = SecretCache::builder(store.clone())
            .negative_ttl(Duration::from_secs(5))
            .backoff(Duration::from_millis(250), Duration::from_secs(60))
            .build()
            .unwrap();
        // Waves of readers, a few milliseconds apart, for the first period.
        for _ in 0..100 {
            let readers: Vec<_> = (0..10)
                .map(|_| {
                    let cache = cache.clone();
                    tokio::spawn(async move { cache.get("nope").await })
                })
                .collect();
            for reader in readers {
                let err = reader.await.unwrap().unwrap_err();
                assert_eq!(err.kind(), ErrorKind::NotFound);
                assert_eq!(err.id(), Some("nope"));
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        // 3 s of readers: one store call.
        assert_eq!(store.fetch_calls(), 1, "{:?}", cache.stats());
        assert!(cache.stats().negative_hits >= 990, "{:?}", cache.stats());
        // A forced refresh respects it too.
        assert_eq!(
            cache.refresh("nope").await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(store.fetch_calls(), 1);

        // The first period is 4-5 s; the next one is twice as long (8-10 s).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = cache.get("nope").await.unwrap_err();
        assert_eq!(store.fetch_calls(), 2);
        tokio::time::sleep(Duration::from_secs(7)).await;
        let _ = cache.get("nope").await.unwrap_err();
        assert_eq!(store.fetch_calls(), 2, "the second period is longer");
        tokio::time::sleep(Duration::from_secs(4)).await;
        let _ = cache.get("nope").await.unwrap_err();
        assert_eq!(store.fetch_calls(), 3);

        // The secret appears: an invalidation makes the next read see it at once.
        let _ = store.set("nope", "here now");
        assert!(cache.get("nope").await.is_err(), "still remembered");
        cache.invalidate("nope");
        assert_eq!(
            cache.get("nope").await.unwrap().value.expose_str(),
            Some("here now")
        );
    });
}

#[test]
fn a_denied_answer_is_remembered_for_a_secret_that_was_cached() {
    paused(LIMIT, || async {
        let store = Arc::new(MemoryProvider::new());
        let _ = store.set("db", "v1");
        let cache = SecretCache::builder(store.clone())
            .ttl(Duration::from_secs(10))
            .negative_ttl(Duration::from_secs(5))
            .build()
            .unwrap();
        let _ = cache.get("db").await.unwrap();
        store.fail_with(Some(Error::access_denied("db")));
        tokio::time::sleep(Duration::from_secs(11)).await;
        let calls = || store.fetch_calls() + store.probe_calls();
        let before = calls();
        let err = cache.get("db").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AccessDenied);
        // The probe is denied, so the cache tries a fetch, which is denied too.
        let first_wave = calls() - before;
        assert_eq!(first_wave, 2);
        for _ in 0..50 {
            let err = cache.get("db").await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::AccessDenied);
        }
        assert_eq!(calls() - before, first_wave, "remembered: no more calls");
    });
}

#[test]
fn served_stale_is_reported_once_per_backoff_step_and_every_serve_is_counted() {
    paused(LIMIT, || async {
        let store = Arc::new(MemoryProvider::new());
        let _ = store.set("db", "v1");
        let cache = SecretCache::builder(store.clone())
            .ttl(Duration::from_secs(10))
            .max_stale(Duration::from_secs(3600))
            .backoff(Duration::from_secs(1), Duration::from_secs(8))
            .build()
            .unwrap();
        let mut events = cache.subscribe();
        let _ = cache.get("db").await.unwrap();
        store.fail_with(Some(Error::transient("db", "connection refused")));
        tokio::time::sleep(Duration::from_secs(11)).await;

        // 60 s of reads, 20 a second, through the outage.
        let mut reads = 0u64;
        for _ in 0..1200 {
            let value = cache.get("db").await.expect("last-known-good");
            assert_eq!(value.value.expose_str(), Some("v1"));
            reads += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stats = cache.stats();
        let mut stale_events = 0u64;
        while let Ok(event) = events.try_recv() {
            if matches!(event, SecretEvent::ServedStale { .. }) {
                stale_events += 1;
            }
        }
        // Every stale read is counted...
        assert!(
            stats.stale_serves >= reads - 1,
            "{stats:?} for {reads} reads"
        );
        // ...but reported once per failed attempt (backoff step), not per read.
        assert!(stale_events >= 1);
        assert!(
            stale_events <= stats.refresh_failures + 1,
            "{stale_events} stale events for {} failures",
            stats.refresh_failures
        );
        assert!(stats.refresh_failures < 20, "{stats:?}");
    });
}
