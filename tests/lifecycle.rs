//! Time and shutdown: under `tokio::time::pause()` the cache follows virtual time (as a user's own
//! tests would run it), and after `shutdown` no task of the cache calls the store.

mod common;

use std::time::Duration;

use common::{Scripted, paused};
use credswap::{ErrorKind, SecretCache};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn under_paused_time_ttl_and_refresh_ahead_follow_virtual_time() {
    paused(LIMIT, || async {
        let provider = Scripted::new();
        let v1 = provider.store.set("api", "k1");
        let cache = SecretCache::builder(provider.clone())
            .ttl(Duration::from_secs(60))
            .build()
            .unwrap();
        let handle = cache.handle_raw("api").await.unwrap();
        assert_eq!(handle.load().version().id, v1);

        // A rotation at t=100 s is seen at the next refresh point (45-54 s apart).
        tokio::time::sleep(Duration::from_secs(100)).await;
        let v2 = provider.store.set("api", "k2");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(handle.load().version().id, v2);

        // Ten minutes of virtual time cost what the TTL says: about one probe a refresh point.
        let before = provider.calls();
        tokio::time::sleep(Duration::from_secs(600)).await;
        let calls = provider.calls() - before;
        assert!(
            (10..=15).contains(&calls),
            "{calls} store calls in 10 minutes"
        );
        // The first read, the handle's look for a previous version (the secret is younger than
        // the grace period), the rotation; unchanged versions cost probes only.
        assert_eq!(provider.fetches(), 3);
    });
}

#[test]
fn after_shutdown_no_task_calls_the_store() {
    paused(LIMIT, || async {
        let provider = Scripted::new();
        let _ = provider.store.set("api", "k1");
        let _ = provider.store.set("other", "o1");
        let cache = SecretCache::builder(provider.clone())
            .ttl(Duration::from_secs(60))
            .build()
            .unwrap();
        let handle = cache.handle_raw("api").await.unwrap();

        // A load under way at shutdown is aborted; its waiter is told the cache closed.
        let mut hold = provider.hold_next();
        let waiting = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get("other").await })
        };
        hold.started().await;
        cache.shutdown().await;
        let err = waiting.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed);

        let calls = provider.calls();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(provider.calls(), calls, "no store call after shutdown");
        assert_eq!(
            cache.get("api").await.unwrap_err().kind(),
            ErrorKind::Closed
        );
        assert_eq!(
            handle.refresh().await.unwrap_err().kind(),
            ErrorKind::Closed
        );
        assert_eq!(
            cache.handle_raw("api").await.unwrap_err().kind(),
            ErrorKind::Closed
        );
        assert_eq!(provider.calls(), calls);
        // The handle still serves its last snapshot.
        assert_eq!(handle.load().current().expose_str(), Some("k1"));
        drop(hold);
    });
}

#[test]
fn shutdown_can_revoke_the_leases_it_held() {
    paused(LIMIT, || async {
        let provider = Scripted::new().with_leases(Duration::from_secs(600));
        let _ = provider
            .store
            .set("creds", r#"{"username": "u", "password": "p"}"#);
        let cache = SecretCache::builder(provider.clone()).build().unwrap();
        let handle = cache.handle_raw("creds").await.unwrap();
        assert_eq!(cache.shutdown_revoking_leases().await.unwrap(), 1);
        assert_eq!(provider.revoked(), ["lease-1"]);
        let calls = provider.calls();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(provider.calls(), calls, "no new credentials after shutdown");
        drop(handle);
    });
}
