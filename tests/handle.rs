//! Handles: atomic swaps on rotation, dual-read within grace, decode failures keep the old value.

use std::sync::Arc;
use std::time::Duration;

use credswap::secrecy::{ExposeSecret, SecretString};
use credswap::{ErrorKind, FileProvider, MemoryProvider, SecretCache, SecretEvent};
use serde::Deserialize;

#[derive(Deserialize)]
struct DbSecret {
    username: String,
    password: SecretString,
}

fn db_json(user: &str, password: &str) -> String {
    format!(r#"{{"username": "{user}", "password": "{password}"}}"#)
}

async fn next_change<T: Send + Sync + 'static>(
    handle: &credswap::SecretHandle<T>,
) -> Arc<credswap::Snapshot<T>> {
    tokio::time::timeout(Duration::from_secs(10), handle.changed())
        .await
        .expect("the handle swaps within the test's patience")
}

#[tokio::test]
async fn rotating_a_memory_secret_swaps_every_handle_and_grace_ends() {
    let store = Arc::new(MemoryProvider::new());
    let v1 = store.set("db", db_json("app", "pw-one"));
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_millis(200))
        .grace_period(Duration::from_millis(800))
        .build()
        .unwrap();
    let first = cache.handle::<DbSecret>("db").await.unwrap();
    let clone = first.clone();
    let second = cache.handle::<DbSecret>("db").await.unwrap();
    assert_eq!(first.load().version().id, v1);
    assert!(first.load().previous().is_none());

    let waits = [first.clone(), clone.clone(), second.clone()]
        .map(|h| tokio::spawn(async move { next_change(&h).await.version().id.clone() }));
    tokio::task::yield_now().await;
    let v2 = store.set("db", db_json("app", "pw-two"));
    for wait in waits {
        assert_eq!(wait.await.unwrap(), v2);
    }
    for handle in [&first, &clone, &second] {
        let snapshot = handle.load();
        assert_eq!(snapshot.current().password.expose_secret(), "pw-two");
        assert_eq!(snapshot.previous_version().unwrap().id, v1);
        assert_eq!(
            snapshot.previous().unwrap().password.expose_secret(),
            "pw-one"
        );
        // Dual-read: both passwords are accepted during the grace period.
        assert!(handle.accepts(|s| s.password.expose_secret() == "pw-one"));
        assert!(handle.accepts(|s| s.password.expose_secret() == "pw-two"));
        assert!(!handle.accepts(|s| s.password.expose_secret() == "pw-zero"));
    }
    // After the grace period only the current one is.
    let until = first.load().previous_valid_until().unwrap();
    tokio::time::sleep_until(until + Duration::from_millis(20)).await;
    for handle in [&first, &clone, &second] {
        assert!(!handle.accepts(|s| s.password.expose_secret() == "pw-one"));
        assert!(handle.accepts(|s| s.password.expose_secret() == "pw-two"));
        assert!(handle.load().previous().is_none());
        assert_eq!(handle.load().current().username, "app");
    }
}

#[tokio::test]
async fn rotating_a_file_swaps_the_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.json");
    std::fs::write(&path, db_json("app", "file-one")).unwrap();
    let cache = SecretCache::builder(Arc::new(FileProvider::new(dir.path())))
        .ttl(Duration::from_millis(150))
        .build()
        .unwrap();
    let handle = cache.handle::<DbSecret>("db.json").await.unwrap();
    let raw = cache.handle_raw("db.json").await.unwrap();
    let old = handle.load().version().id.clone();

    // Write the way a secret agent does: a new file renamed over the old one.
    let staging = dir.path().join(".db.json.tmp");
    std::fs::write(&staging, db_json("app", "file-two")).unwrap();
    std::fs::rename(&staging, &path).unwrap();

    let snapshot = next_change(&handle).await;
    assert_eq!(snapshot.current().password.expose_secret(), "file-two");
    assert_eq!(snapshot.previous_version().unwrap().id, old);
    assert!(handle.accepts(|s| s.password.expose_secret() == "file-one"));
    assert!(
        raw.load()
            .current()
            .expose_str()
            .unwrap()
            .contains("file-two")
    );
}

#[tokio::test]
async fn a_malformed_new_version_keeps_the_old_snapshot_and_reports_it() {
    let store = Arc::new(MemoryProvider::new());
    let v1 = store.set("db", db_json("app", "good-one"));
    let cache = SecretCache::builder(store.clone())
        .min_refresh_interval(Duration::ZERO)
        .build()
        .unwrap();
    let mut events = cache.subscribe();
    let handle = cache.handle::<DbSecret>("db").await.unwrap();

    let bad_versions = [
        r#"{"username": "app", "password": "#.to_string(), // cut short
        r#"{"username": "app"}"#.to_string(),              // missing field
        r#"not json at all"#.to_string(),
        r#"{"username": 42, "password": "p"}"#.to_string(), // wrong type
    ];
    for bad in bad_versions {
        let bad_version = store.set("db", bad);
        let err = handle.refresh().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
        assert_eq!(err.id(), Some("db"));
        assert_eq!(handle.load().version().id, v1, "old snapshot kept");
        assert_eq!(handle.load().current().password.expose_secret(), "good-one");
        assert_eq!(handle.last_error().unwrap().kind(), ErrorKind::Decode);
        let event = loop {
            match events.try_recv().expect("a decode event") {
                event @ SecretEvent::DecodeFailed { .. } => break event,
                _ => continue,
            }
        };
        let SecretEvent::DecodeFailed { version, .. } = event else {
            unreachable!()
        };
        assert_eq!(version, bad_version);
    }
    let err = handle.last_error().unwrap();
    assert!(err.to_string().contains("line 1"), "{err}");

    // A good version after the bad ones is taken, and the error is cleared.
    let v3 = store.set("db", db_json("app", "good-two"));
    let snapshot = handle.refresh().await.unwrap();
    assert_eq!(snapshot.version().id, v3);
    assert!(handle.last_error().is_none());
    // previous is the last version the handle held, the good one.
    assert_eq!(snapshot.previous_version().unwrap().id, v1);
}

#[tokio::test]
async fn a_handle_on_a_missing_or_malformed_secret_is_a_typed_error() {
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("broken", "{");
    let cache = SecretCache::builder(store).build().unwrap();
    let err = cache.handle::<DbSecret>("absent").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = cache.handle::<DbSecret>("broken").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
}

#[tokio::test]
async fn invalidation_makes_handles_reload_at_once() {
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("token", "t-1");
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    let handle = cache.handle_raw("token").await.unwrap();
    let v2 = store.set("token", "t-2");
    let wait = {
        let handle = handle.clone();
        tokio::spawn(async move { next_change(&handle).await.version().id.clone() })
    };
    tokio::task::yield_now().await;
    // With an hour-long TTL, only the push makes the handle see the new version.
    cache.invalidate("token");
    assert_eq!(wait.await.unwrap(), v2);
    assert_eq!(handle.load().current().expose_str(), Some("t-2"));
}

#[tokio::test(start_paused = true)]
async fn dropped_handles_stop_their_watcher() {
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("token", "t-1");
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_millis(50))
        .build()
        .unwrap();
    let handle = cache.handle_raw("token").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let while_held = store.probe_calls();
    assert!(
        while_held >= 2,
        "the watcher refreshes while a handle lives"
    );
    drop(handle);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let after_drop = store.probe_calls();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.probe_calls(),
        after_drop,
        "no refreshes without handles"
    );
}

#[tokio::test]
async fn a_handle_opened_during_a_rotations_grace_period_accepts_the_previous_version_too() {
    let store = Arc::new(MemoryProvider::new());
    let v1 = store.set("partner", db_json("app", "key-one"));
    // The rotation happened moments ago (its version was created now), in another process.
    let v2 = store.set("partner", db_json("app", "key-two"));
    // A replica starting now, with a fresh cache.
    let cache = SecretCache::builder(store.clone())
        .grace_period(Duration::from_millis(600))
        .build()
        .unwrap();
    let handle = cache.handle::<DbSecret>("partner").await.unwrap();
    let snapshot = handle.load_full();
    assert_eq!(snapshot.version().id, v2);
    assert_eq!(snapshot.previous_version().unwrap().id, v1);
    // Like its peers, it accepts the old key until the new version's creation plus the grace.
    assert!(handle.accepts(|s| s.password.expose_secret() == "key-one"));
    assert!(handle.accepts(|s| s.password.expose_secret() == "key-two"));
    tokio::time::sleep_until(snapshot.previous_valid_until().unwrap()).await;
    assert!(!handle.accepts(|s| s.password.expose_secret() == "key-one"));

    // Past the grace period, a new handle does not even look for the previous version.
    let calls = store.fetch_calls();
    let late = SecretCache::builder(store.clone())
        .grace_period(Duration::from_millis(600))
        .build()
        .unwrap()
        .handle::<DbSecret>("partner")
        .await
        .unwrap();
    assert!(late.load().previous().is_none());
    assert_eq!(store.fetch_calls(), calls + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_handles_opened_on_a_young_secret_cost_one_call_per_version() {
    let store = Arc::new(MemoryProvider::new());
    let v1 = store.set("partner", db_json("app", "key-one"));
    let v2 = store.set("partner", db_json("app", "key-two"));
    let cache = SecretCache::builder(store.clone())
        .grace_period(Duration::from_secs(300))
        .build()
        .unwrap();
    let opened: Vec<_> = (0..1000)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.handle::<DbSecret>("partner").await })
        })
        .collect();
    for handle in futures_util::future::join_all(opened).await {
        let handle = handle.unwrap().unwrap();
        let snapshot = handle.load();
        assert_eq!(snapshot.version().id, v2);
        assert_eq!(snapshot.previous_version().unwrap().id, v1);
    }
    // One fetch of the current version, one of the previous: both through the cache, coalesced.
    assert_eq!(store.fetch_calls(), 2);

    // A store that keeps no previous version is asked once, and the answer is remembered.
    let lonely = Arc::new(MemoryProvider::new());
    let _ = lonely.set("fresh", db_json("app", "only"));
    let cache = SecretCache::builder(lonely.clone())
        .grace_period(Duration::from_secs(300))
        .build()
        .unwrap();
    for _ in 0..100 {
        let handle = cache.handle::<DbSecret>("fresh").await.unwrap();
        assert!(handle.load().previous().is_none());
    }
    assert_eq!(
        lonely.fetch_calls(),
        2,
        "current once, the missing previous once"
    );
}
