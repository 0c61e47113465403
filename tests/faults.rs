//! A load that panics or is cancelled leaves nothing behind: the next read starts a fresh load.
//! A panicking event hook or decoder does not take the load down with it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Scripted;
use credswap::{ErrorKind, MemoryProvider, SecretCache, SecretEvent};
use serde::{Deserialize, Deserializer};

#[tokio::test(start_paused = true)]
async fn a_provider_that_panics_once_does_not_poison_the_key() {
    let provider = Scripted::new();
    let _ = provider.store.set("db", "v1");
    let cache = SecretCache::builder(provider.clone())
        .min_refresh_interval(Duration::ZERO)
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .build()
        .unwrap();

    provider.panic_next();
    let err = cache.get("db").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.to_string().contains("panicked"), "{err}");
    assert!(
        !err.to_string().contains("scripted provider panics"),
        "{err}"
    );

    // The next read, refresh and handle all start fresh loads that work.
    let value = cache.get("db").await.expect("the key is not poisoned");
    assert_eq!(value.value.expose_str(), Some("v1"));
    let v1 = value.version.id.clone();
    let v2 = provider.store.set("db", "v2");
    provider.panic_next();
    // A panicking refresh is a passing failure: last-known-good is served.
    assert_eq!(cache.refresh("db").await.unwrap().version.id, v1);
    tokio::time::sleep(Duration::from_millis(50)).await; // past the backoff
    assert_eq!(cache.refresh("db").await.unwrap().version.id, v2);
    let handle = cache.handle_raw("db").await.unwrap();
    assert_eq!(handle.load().current().expose_str(), Some("v2"));
}

#[tokio::test]
async fn a_panicking_hook_does_not_fail_the_load() {
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("db", "v1");
    let cache = SecretCache::builder(store.clone())
        .on_event(|event| {
            if matches!(event, SecretEvent::Fetched { .. }) {
                panic!("a hook with a bug");
            }
        })
        .build()
        .unwrap();
    let mut events = cache.subscribe();
    let value = cache
        .get("db")
        .await
        .expect("the hook's panic stays in the hook");
    assert_eq!(value.value.expose_str(), Some("v1"));
    // The event still reached the subscribers, and the cache holds the value.
    assert!(matches!(
        events.try_recv().unwrap(),
        SecretEvent::Fetched { .. }
    ));
    let _ = cache.get("db").await.unwrap();
    assert_eq!(store.fetch_calls(), 1);
}

/// A type whose `Deserialize` panics on `{"boom": true}`.
struct Fragile {
    boom: bool,
}

impl<'de> Deserialize<'de> for Fragile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            boom: bool,
        }
        let raw = Raw::deserialize(deserializer)?;
        if raw.boom {
            panic!("Deserialize impl with a bug");
        }
        Ok(Fragile { boom: raw.boom })
    }
}

#[tokio::test]
async fn a_panicking_decoder_is_a_decode_error_and_the_handle_keeps_its_value() {
    let store = Arc::new(MemoryProvider::new());
    let v1 = store.set("cfg", r#"{"boom": false}"#);
    let cache = SecretCache::builder(store.clone())
        .min_refresh_interval(Duration::ZERO)
        .build()
        .unwrap();
    let handle = cache.handle::<Fragile>("cfg").await.unwrap();

    let _ = store.set("cfg", r#"{"boom": true}"#);
    let err = handle.refresh().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert!(err.to_string().contains("decoder panicked"), "{err}");
    assert_eq!(handle.load().version().id, v1);
    assert!(!handle.load().current().boom);

    // The key keeps working.
    let v3 = store.set("cfg", r#"{"boom": false}"#);
    assert_eq!(handle.refresh().await.unwrap().version().id, v3);
}

#[test]
fn a_load_cancelled_by_its_runtime_shutting_down_does_not_poison_the_key() {
    let provider = Scripted::new();
    let _ = provider.store.set("db", "v1");
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = first.block_on(async {
        let cache = SecretCache::builder(provider.clone()).build().unwrap();
        // A load that never finishes on this runtime: held until the runtime is gone.
        let mut hold = provider.hold_next();
        let reader = cache.clone();
        let _reader = tokio::spawn(async move { reader.get("db").await });
        hold.started().await;
        // Dropped with the runtime, unreleased.
        std::mem::forget(hold);
        cache
    });
    // The runtime shuts down with the load in flight: its task is dropped.
    drop(first);

    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        let value = tokio::time::timeout(Duration::from_secs(10), cache.get("db"))
            .await
            .expect("no hang")
            .expect("a fresh load on the new runtime");
        assert_eq!(value.value.expose_str(), Some("v1"));
        assert_eq!(provider.fetches(), 2);
    });
}
