//! Loads finish in whatever order the store answers; handles never go back, invalidations
//! concern only their key, and nothing a discarded load fetched survives it. Races are forced with
//! held store calls.

mod common;

use std::time::Duration;

use common::{Scripted, paused};
use credswap::{SecretCache, SecretEvent};

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_refresh_that_loses_the_race_never_swaps_a_handle_back() {
    let provider = Scripted::new();
    let v1 = provider.store.set("db", "one");
    let cache = SecretCache::builder(provider.clone())
        .ttl(Duration::from_secs(3600))
        .min_refresh_interval(Duration::ZERO)
        .build()
        .unwrap();
    let mut events = cache.subscribe();
    let handle = cache.handle_raw("db").await.unwrap();

    // A refresh whose store call reads version one, then is held.
    let mut hold = provider.hold_next();
    let refreshing = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.refresh().await })
    };
    hold.started().await;

    // Meanwhile the secret rotates and an invalidation makes the handle take version two.
    let v2 = provider.store.set("db", "two");
    cache.invalidate("db");
    assert!(
        common::eventually(Duration::from_secs(10), || handle.load().version().id == v2).await,
        "the handle takes version two"
    );

    // The slow call finally answers with version one: the handle stays on two.
    hold.release();
    let snapshot = refreshing.await.unwrap().expect("the refresh succeeds");
    assert_eq!(snapshot.version().id, v2, "refresh returns the newest");
    assert_eq!(handle.load().version().id, v2, "the handle never goes back");
    assert_eq!(handle.load().current().expose_str(), Some("two"));
    while let Ok(event) = events.try_recv() {
        if let SecretEvent::HandleSwapped { old, new, .. } = event {
            assert!(!(old == v2 && new == v1), "swapped back from two to one");
        }
    }
}

#[tokio::test]
async fn invalidating_one_secret_leaves_loads_of_others_alone() {
    let provider = Scripted::new();
    let _ = provider.store.set("a", "a1");
    let _ = provider.store.set("b", "b1");
    let cache = SecretCache::builder(provider.clone()).build().unwrap();
    let mut hold = provider.hold_next();
    let reading_b = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get("b").await })
    };
    hold.started().await;
    cache.invalidate("a");
    hold.release();
    assert_eq!(
        reading_b.await.unwrap().unwrap().value.expose_str(),
        Some("b1")
    );
    // b's load was kept: reading it again costs nothing.
    let _ = cache.get("b").await.unwrap();
    assert_eq!(provider.fetches(), 1);
}

#[tokio::test]
async fn credentials_fetched_by_a_load_an_invalidation_overtook_are_revoked() {
    let provider = Scripted::new().with_leases(Duration::from_secs(3600));
    let _ = provider
        .store
        .set("creds", r#"{"username": "u", "password": "p"}"#);
    let cache = SecretCache::builder(provider.clone()).build().unwrap();
    let mut hold = provider.hold_next();
    let reading = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get("creds").await })
    };
    hold.started().await;
    cache.invalidate("creds");
    hold.release();
    let value = reading.await.unwrap().unwrap();
    // The waiter got the credentials of a load started after the invalidation...
    assert_eq!(value.version.id.as_str(), "lease-2");
    assert_eq!(provider.fetches(), 2);
    // ...and the credentials nobody will use were revoked, not left to live out their lease.
    assert!(
        common::eventually(Duration::from_secs(5), || provider.revoked() == ["lease-1"]).await,
        "{:?}",
        provider.revoked()
    );
}

#[test]
fn a_renewal_under_way_cannot_bring_back_a_revoked_lease() {
    paused(LIMIT, || async {
        let provider = Scripted::new().with_leases(Duration::from_secs(30));
        let _ = provider
            .store
            .set("creds", r#"{"username": "u", "password": "p"}"#);
        let cache = SecretCache::builder(provider.clone())
            .ttl(Duration::from_secs(3600))
            .build()
            .unwrap();
        assert_eq!(
            cache.get("creds").await.unwrap().version.id.as_str(),
            "lease-1"
        );
        // Past the renewal point (about two thirds of the lease), a read starts a renewal: held.
        tokio::time::sleep(Duration::from_secs(22)).await;
        let mut hold = provider.hold_next();
        let _ = cache.get("creds").await.unwrap();
        hold.started().await;
        assert_eq!(provider.renewals(), 1);

        assert_eq!(cache.revoke_leases().await.unwrap(), 1);
        hold.release();
        tokio::task::yield_now().await;
        // The renewal's answer is not stored: the next read fetches new credentials.
        let value = cache.get("creds").await.unwrap();
        assert_eq!(value.version.id.as_str(), "lease-2");
        assert!(provider.revoked().iter().all(|id| id == "lease-1"));
        assert!(!provider.revoked().is_empty());
    });
}

#[test]
fn a_watcher_whose_last_handle_went_while_it_slept_does_not_load() {
    paused(LIMIT, || async {
        let provider = Scripted::new();
        let _ = provider.store.set("db", "v1");
        let cache = SecretCache::builder(provider.clone())
            .ttl(Duration::from_secs(60))
            .refresh_ahead(0.5, 0.5)
            .build()
            .unwrap();
        let handle = cache.handle_raw("db").await.unwrap();
        let calls = provider.calls();
        // The watcher sleeps until the refresh point, 30 s away; the handle goes before it.
        tokio::time::sleep(Duration::from_secs(29)).await;
        drop(handle);
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(
            provider.calls(),
            calls,
            "no load for a secret nobody follows"
        );
    });
}
