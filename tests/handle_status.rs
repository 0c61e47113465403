//! What a handle serves when the store stops confirming its value, and how it says so: a status to
//! check and an event per change of state. `load()` keeps serving the last good snapshot.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Scripted, paused};
use credswap::{Error, ErrorKind, HandleStatus, MemoryProvider, SecretCache, SecretEvent};

const LIMIT: Duration = Duration::from_secs(30);

/// The statuses announced, by name (`HandleStatus::as_str`).
fn states(events: &mut tokio::sync::broadcast::Receiver<SecretEvent>) -> Vec<&'static str> {
    let mut states = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let SecretEvent::HandleStatusChanged { status, .. } = event {
            states.push(status.as_str());
        }
    }
    states
}

#[test]
fn a_deleted_secret_leaves_the_handle_failing_with_the_error_until_it_returns() {
    paused(LIMIT, || async {
        let store = Arc::new(MemoryProvider::new());
        let v1 = store.set("db", "one");
        let cache = SecretCache::builder(store.clone())
            .ttl(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut events = cache.subscribe();
        let handle = cache.handle_raw("db").await.unwrap();
        assert!(handle.status().is_fresh());
        assert!(handle.last_error().is_none());

        assert!(store.remove("db"));
        // The watcher finds out at the next refresh point, and again at each try after it.
        tokio::time::sleep(Duration::from_secs(300)).await;
        let status = handle.status();
        let HandleStatus::Failing { error, .. } = &status else {
            panic!("expected failing, got {status:?}");
        };
        assert_eq!(error.kind(), ErrorKind::NotFound);
        assert_eq!(handle.last_error().unwrap().kind(), ErrorKind::NotFound);
        // load() still serves the last value; the cache's get refuses it.
        assert_eq!(handle.load().version().id, v1);
        assert_eq!(handle.load().current().expose_str(), Some("one"));
        assert_eq!(
            cache.get("db").await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        // One event for the change, however many failed checks.
        assert_eq!(states(&mut events), ["failing"]);

        // The secret comes back: the handle takes it and is fresh again.
        let v2 = store.set("db", "two");
        // (The watcher backs off up to twice the backoff maximum between tries.)
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert_eq!(handle.load().version().id, v2);
        assert!(handle.status().is_fresh(), "{:?}", handle.status());
        assert_eq!(states(&mut events), ["fresh"]);
    });
}

#[test]
fn an_outage_makes_the_handle_stale_and_recovery_fresh() {
    paused(LIMIT, || async {
        let store = Arc::new(MemoryProvider::new());
        let _ = store.set("db", "one");
        let cache = SecretCache::builder(store.clone())
            .ttl(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut events = cache.subscribe();
        let handle = cache.handle_raw("db").await.unwrap();
        store.fail_with(Some(Error::transient("db", "connection refused")));
        tokio::time::sleep(Duration::from_secs(120)).await;
        let status = handle.status();
        assert!(
            matches!(&status, HandleStatus::Stale { error, .. } if error.kind() == ErrorKind::Transient),
            "{status:?}"
        );
        assert_eq!(handle.load().current().expose_str(), Some("one"));
        store.fail_with(None);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(handle.status().is_fresh(), "{:?}", handle.status());
        assert_eq!(states(&mut events), ["stale", "fresh"]);
    });
}

#[test]
fn a_lease_that_ends_without_new_credentials_is_reported_at_its_end() {
    paused(LIMIT, || async {
        let provider = Scripted::new().with_leases(Duration::from_secs(60));
        let _ = provider
            .store
            .set("creds", r#"{"username": "u", "password": "p"}"#);
        let cache = SecretCache::builder(provider.clone())
            .ttl(Duration::from_secs(3600))
            .build()
            .unwrap();
        let mut events = cache.subscribe();
        let handle = cache.handle_raw("creds").await.unwrap();
        let lease_end = handle.load().lease_end().expect("a lease");

        // The store can neither renew the lease nor issue new credentials.
        provider.fail_renewals(Some(Error::transient("creds", "sealed")));
        provider
            .store
            .fail_with(Some(Error::transient("creds", "sealed")));
        tokio::time::sleep_until(lease_end - Duration::from_secs(1)).await;
        assert!(
            matches!(handle.status(), HandleStatus::Stale { .. }),
            "{:?}",
            handle.status()
        );
        tokio::time::sleep_until(lease_end + Duration::from_millis(10)).await;
        let status = handle.status();
        assert!(
            matches!(status, HandleStatus::LeaseExpired { at } if at == lease_end),
            "{status:?}"
        );
        assert_eq!(handle.last_error().unwrap().kind(), ErrorKind::AccessDenied);
        // The expired credentials are still what load() serves (pools can tell from the status).
        assert_eq!(handle.load().version().id.as_str(), "lease-1");
        // The watcher woke at the lease's end, so the event came then.
        assert_eq!(states(&mut events), ["stale", "lease_expired"]);
    });
}

#[tokio::test]
async fn a_new_version_that_does_not_decode_is_a_status_too() {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Key {
        key: String,
    }
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("api", r#"{"key": "k1"}"#);
    let cache = SecretCache::builder(store.clone())
        .min_refresh_interval(Duration::ZERO)
        .build()
        .unwrap();
    let handle = cache.handle::<Key>("api").await.unwrap();
    let bad = store.set("api", r#"{"nope": 1}"#);
    assert_eq!(
        handle.refresh().await.unwrap_err().kind(),
        ErrorKind::Decode
    );
    let status = handle.status();
    assert!(
        matches!(&status, HandleStatus::DecodeFailed { version, .. } if *version == bad),
        "{status:?}"
    );
    assert_eq!(handle.last_error().unwrap().kind(), ErrorKind::Decode);
}
