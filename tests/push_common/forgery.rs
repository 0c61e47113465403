//! What a forger on the channel can do: flood it with junk (no reconnect, no store call), or send
//! announcements that are unsigned or signed with the wrong key (counted, ignored) where the
//! subscribers verify signatures.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use credswap::push::{
    AnnouncementKey, Publisher, PushEvent, RecheckPass, SignedPublisher, Subscriber,
};
use credswap::{SecretCache, SecretValue};

use super::{Broker, GatedProvider, eventually};

/// The events a flood does not repeat: a log that stays small while junk pours in.
#[derive(Clone, Default)]
struct Milestones(Arc<Mutex<Vec<PushEvent>>>);

impl Milestones {
    fn hook(&self) -> impl Fn(&PushEvent) + Send + Sync + 'static {
        let log = self.clone();
        move |event| {
            if !matches!(
                event,
                PushEvent::Malformed { .. }
                    | PushEvent::Ignored { .. }
                    | PushEvent::Rejected { .. }
            ) {
                log.0.lock().unwrap().push(event.clone());
            }
        }
    }

    fn settled(&self) -> bool {
        self.0.lock().unwrap().iter().any(|event| {
            matches!(
                event,
                PushEvent::Rechecked {
                    pass: RecheckPass::Confirming,
                    ..
                }
            )
        })
    }
}

/// 200,000 junk payloads (not announcements, or announcements of secrets nobody holds) sent as
/// fast as the broker takes them, at a subscriber holding 50 secrets: whatever it cannot read in
/// time it sheds; it never hangs up (so never re-checks its secrets), and asks the store nothing.
pub async fn a_junk_flood_costs_no_reconnect_and_no_store_call(broker: &dyn Broker, name: &str) {
    const SECRETS: usize = 50;
    const JUNK: usize = 200_000;
    let store = GatedProvider::new();
    for i in 0..SECRETS {
        let _ = store.store.set(&format!("app/{i}"), "first");
    }
    let interval = Duration::from_millis(500);
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_secs(3600))
        .min_refresh_interval(interval)
        .build()
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..SECRETS {
        handles.push(cache.handle_raw(&format!("app/{i}")).await.unwrap());
    }
    let milestones = Milestones::default();
    let subscriber = Subscriber::builder(broker.listener())
        .cache(cache.clone())
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .follow_up(interval, 3)
        .on_event(milestones.hook())
        .start()
        .unwrap();
    assert!(eventually(Duration::from_secs(30), || milestones.settled()).await);
    let calls = store.calls();

    let junk: Vec<String> = (0..JUNK)
        .map(|n| match n % 4 {
            0 => format!("junk {n}"),
            1 => format!(r#"{{"id":"forged/{n}","version":"1"}}"#),
            2 => format!(r#"{{"id":"forged/{n}"}}"#),
            _ => format!(r#"{{"id": {n}}}"#),
        })
        .collect();
    let started = Instant::now();
    broker.publish_burst(&junk).await;
    let accounted = eventually(Duration::from_secs(120), || {
        let stats = subscriber.stats();
        stats.received + stats.shed >= JUNK as u64
    })
    .await;
    let stats = subscriber.stats();
    assert!(accounted, "{stats:?}");
    let elapsed = started.elapsed();
    assert_eq!(stats.received + stats.shed, JUNK as u64, "{stats:?}");
    assert_eq!(stats.reconnects, 0, "{stats:?}");
    assert!(subscriber.is_connected());
    assert_eq!(stats.relevant, 0, "{stats:?}");
    let store_calls = store.calls() - calls;
    assert!(store_calls <= 2, "{store_calls} store calls for junk");
    let reconnected = milestones
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|event| matches!(event, PushEvent::Disconnected { .. }))
        .count();
    assert_eq!(reconnected, 0);

    // The same connection still carries a real announcement.
    let publisher = broker.publisher().await;
    let version = store.store.set("app/7", "second");
    let _ = publisher.announce("app/7", &version).await.unwrap();
    assert!(
        eventually(Duration::from_secs(30), || handles[7].load().version().id
            == version)
        .await
    );
    println!(
        "{name}: {JUNK} junk payloads in {elapsed:.1?}: {} read ({} malformed, {} ignored), {} \
         shed, {} reconnects, {store_calls} store calls",
        stats.received, stats.malformed, stats.ignored, stats.shed, stats.reconnects
    );
    subscriber.shutdown().await;
}

/// With signed announcements, a forger who may publish but does not hold the key changes
/// nothing: unsigned and wrongly signed announcements are counted and ignored, genuine ones
/// apply, and a key rotated on the store loses no announcement.
pub async fn signed_announcements_apply_and_forged_ones_do_not(broker: &dyn Broker, name: &str) {
    let store = GatedProvider::new();
    let _ = store.store.set("db", "first");
    let _ = store.store.set("push/key", "announcement-key-1-0123456789");
    let interval = Duration::from_millis(300);
    let cache = |store: &Arc<GatedProvider>| {
        SecretCache::builder(store.clone())
            .ttl(Duration::from_secs(3600))
            .min_refresh_interval(interval)
            .build()
            .unwrap()
    };
    // Each side has its own cache (another process, in production).
    let (theirs, ours) = (cache(&store), cache(&store));
    let handle = theirs.handle_raw("db").await.unwrap();
    let milestones = Milestones::default();
    let subscriber = Subscriber::builder(broker.listener())
        .cache(theirs.clone())
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .follow_up(interval, 3)
        .verify_with(AnnouncementKey::from_handle(
            theirs.handle_raw("push/key").await.unwrap(),
        ))
        .on_event(milestones.hook())
        .start()
        .unwrap();
    assert!(eventually(Duration::from_secs(30), || milestones.settled()).await);
    let publisher_key = ours.handle_raw("push/key").await.unwrap();
    let publisher = SignedPublisher::new(
        broker.publisher().await,
        AnnouncementKey::from_handle(publisher_key.clone()),
    );
    let forged_with = AnnouncementKey::fixed(SecretValue::from("a-forgers-key-0123456789"));

    // The forger: 100 unsigned and 100 wrongly signed announcements of a real new version.
    let calls = store.calls();
    let started = Instant::now();
    let changed = store.store.set("db", "second");
    for _ in 0..100 {
        let unsigned = credswap::push::Announcement::new("db", &changed).unwrap();
        broker.publish_raw(&unsigned.encode()).await;
        broker
            .publish_raw(&unsigned.signed(&forged_with).unwrap().encode())
            .await;
    }
    assert!(
        eventually(Duration::from_secs(30), || subscriber.stats().rejected
            == 200)
        .await,
        "{:?}",
        subscriber.stats()
    );
    assert_ne!(handle.load().version().id, changed, "nothing applied");
    // At most one refresh of the key per rate-limit interval, in case it had rotated.
    let bound = (started.elapsed().as_millis() / interval.as_millis()) as u64 + 1;
    let key_refreshes = store.calls() - calls;
    assert!(
        key_refreshes <= bound,
        "{key_refreshes} store calls, bound {bound}"
    );

    // Genuine: applied.
    let _ = publisher.announce("db", &changed).await.unwrap();
    assert!(
        eventually(Duration::from_secs(30), || handle.load().version().id
            == changed)
        .await
    );

    // The key rotates; the publisher takes the new one at once, the subscriber has not seen it.
    tokio::time::sleep(interval * 2).await;
    let _ = store.store.set("push/key", "announcement-key-2-0123456789");
    let _ = publisher_key.refresh().await.unwrap();
    let third = store.store.set("db", "third");
    let _ = publisher.announce("db", &third).await.unwrap();
    assert!(
        eventually(Duration::from_secs(30), || handle.load().version().id
            == third)
        .await,
        "the announcement signed with the new key was lost: {:?}",
        subscriber.stats()
    );
    let stats = subscriber.stats();
    assert_eq!(stats.rejected, 200, "{stats:?}");
    println!(
        "{name}: 200 forged announcements rejected ({key_refreshes} key refreshes); genuine ones \
         applied across a key rotation ({stats:?})"
    );
    subscriber.shutdown().await;
}
