//! Signed announcements through a subscriber, under paused time: signed ones apply, unsigned and
//! forged ones are counted and cost no store call, and a key rotated on the store loses no
//! announcement (the subscriber refreshes its key once and checks again).

use std::time::Duration;

use super::super::*;
use super::{TestChannel, cache_over, eventually, next, settled, store_calls, store_with};
use crate::{SecretValue, VersionId};

const KEY_1: &str = "key-one-0123456789abcdef";
const KEY_2: &str = "key-two-0123456789abcdef";

fn signed(id: &str, version: &VersionId, key: &AnnouncementKey) -> String {
    Announcement::new(id, version)
        .unwrap()
        .signed(key)
        .unwrap()
        .encode()
}

#[tokio::test(start_paused = true)]
async fn only_announcements_signed_with_the_key_apply() {
    let (store, _) = store_with("db", "one");
    let _ = store.set("push-key", KEY_1);
    let interval = Duration::from_secs(1);
    let cache = cache_over(&store, interval);
    let handle = cache.handle_raw("db").await.unwrap();
    let key = AnnouncementKey::from_handle(cache.handle_raw("push-key").await.unwrap());
    let channel = TestChannel::default();
    let subscriber = Subscriber::builder(channel.clone())
        .cache(cache.clone())
        .verify_with(key.clone())
        .start()
        .unwrap();
    let mut events = subscriber.subscribe();
    settled(&mut events).await;
    tokio::time::sleep(interval * 2).await;
    let calls = store_calls(&store);
    let refreshes = subscriber.stats().refreshes;

    // Unsigned, and signed with a key nobody holds: counted, reported, no store call (beyond
    // one refresh of the key, in case it rotated).
    let changed = store.set("db", "two");
    let forger = AnnouncementKey::fixed(SecretValue::from("a-forgers-key-0123456789"));
    for _ in 0..100 {
        channel.announce("db", &changed);
        channel.send(signed("db", &changed, &forger));
    }
    assert!(
        eventually(|| subscriber.stats().rejected == 200).await,
        "{:?}",
        subscriber.stats()
    );
    tokio::time::sleep(interval * 5).await;
    let stats = subscriber.stats();
    assert_eq!(stats.rejected, 200, "{stats:?}");
    assert_eq!(
        (stats.relevant, stats.applied, stats.refreshes - refreshes),
        (0, 0, 0),
        "{stats:?}"
    );
    assert!(
        store_calls(&store) - calls <= 1,
        "{}",
        store_calls(&store) - calls
    );
    assert_ne!(handle.load().version().id, changed);

    // Signed with the key: applied.
    channel.send(signed("db", &changed, &key));
    match next(&mut events, |e| matches!(e, PushEvent::Applied { .. })).await {
        PushEvent::Applied { version, .. } => assert_eq!(version, changed),
        other => unreachable!("{other:?}"),
    }
    assert_eq!(handle.load().version().id, changed);
    // Tampered with (another version under the same signature): rejected.
    let genuine = signed("db", &VersionId::new("v-genuine"), &key);
    let tampered = genuine.replace("v-genuine", "v-tampered");
    let before = subscriber.stats().rejected;
    channel.send(tampered);
    assert!(eventually(|| subscriber.stats().rejected == before + 1).await);
}

#[tokio::test(start_paused = true)]
async fn a_key_rotated_on_the_store_loses_no_announcement() {
    let (store, _) = store_with("db", "one");
    let _ = store.set("push-key", KEY_1);
    let interval = Duration::from_secs(1);
    // The subscriber's cache holds the key for an hour: it has not seen the new one when the
    // publisher starts signing with it.
    let cache = cache_over(&store, interval);
    let handle = cache.handle_raw("db").await.unwrap();
    let subscriber_key = AnnouncementKey::from_handle(cache.handle_raw("push-key").await.unwrap());
    let channel = TestChannel::default();
    let subscriber = Subscriber::builder(channel.clone())
        .cache(cache.clone())
        .verify_with(subscriber_key)
        .start()
        .unwrap();
    let mut events = subscriber.subscribe();
    settled(&mut events).await;
    tokio::time::sleep(interval * 2).await;

    let _ = store.set("push-key", KEY_2);
    let publisher_key = AnnouncementKey::fixed(SecretValue::from(KEY_2));
    let changed = store.set("db", "two");
    channel.send(signed("db", &changed, &publisher_key));
    match next(&mut events, |e| {
        matches!(e, PushEvent::Applied { .. } | PushEvent::Rejected { .. })
    })
    .await
    {
        PushEvent::Applied { version, .. } => assert_eq!(version, changed),
        other => panic!("the announcement was lost: {other:?}"),
    }
    assert_eq!(handle.load().version().id, changed);
    // Announcements signed with the previous key still apply during its grace period.
    let old_key = AnnouncementKey::fixed(SecretValue::from(KEY_1));
    tokio::time::sleep(interval * 2).await;
    let third = store.set("db", "three");
    channel.send(signed("db", &third, &old_key));
    match next(&mut events, |e| {
        matches!(e, PushEvent::Applied { .. } | PushEvent::Rejected { .. })
    })
    .await
    {
        PushEvent::Applied { version, .. } => assert_eq!(version, third),
        other => panic!("the previous key was refused within its grace: {other:?}"),
    }
    assert_eq!(subscriber.stats().rejected, 0);
}
