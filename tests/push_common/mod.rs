//! The push scenarios, written once and run against each real broker (`tests/push_postgres.rs`,
//! `tests/push_redis.rs`): a [`Broker`] says how to reach, cut off and restart one.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use credswap::push::{
    Channel, MAX_ANNOUNCEMENT_BYTES, Publisher, PushEvent, RecheckPass, Subscriber,
};
use credswap::{ErrorKind, MemoryProvider, SecretCache, SecretEvent, VersionId};
use futures_util::StreamExt;

pub use crate::common::{GatedProvider, eventually};

/// The channel every test publishes and listens on.
pub const CHANNEL: &str = "credswap_test";

/// A real broker started by the test kit, and the operations the scenarios need on it.
#[async_trait]
pub trait Broker: Send + Sync {
    /// A listener that logs in as the `listener` user: one connection per subscriber built on it.
    fn listener(&self) -> Arc<dyn Channel>;
    /// A publisher that logs in as the administrator.
    async fn publisher(&self) -> Arc<dyn Publisher>;
    /// Publishes `payload` as it is, bypassing our encoder.
    async fn publish_raw(&self, payload: &str);
    /// Ends every listener connection from the broker's side; returns how many it ended.
    async fn kill_listeners(&self) -> usize;
    /// How many listener connections the broker has.
    async fn listeners(&self) -> usize;
    /// Refuses logins of the `listener` user and ends its connections.
    async fn lock_out_listeners(&self);
    /// Lets the `listener` user log in again.
    async fn let_in_listeners(&self);
    /// Stops the broker (blocking).
    fn stop(&mut self);
    /// Starts it again on the same port (blocking), with the `listener` user in place.
    fn start(&mut self);
    /// The largest payload the broker carries.
    fn max_payload(&self) -> usize;
}

/// Waits until the broker counts `n` listener connections (ended sessions take a moment to go).
pub async fn wait_listeners(broker: &dyn Broker, n: usize) -> bool {
    for _ in 0..500 {
        if broker.listeners().await == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Every push event of one or more subscribers, with when it happened.
#[derive(Clone, Default)]
pub struct EventLog(Arc<Mutex<Vec<(Instant, PushEvent)>>>);

impl EventLog {
    pub fn hook(&self) -> impl Fn(&PushEvent) + Send + Sync + 'static {
        let log = self.clone();
        move |event| log.0.lock().unwrap().push((Instant::now(), event.clone()))
    }

    pub fn count(&self, wanted: impl Fn(&PushEvent) -> bool) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| wanted(e))
            .count()
    }

    pub fn all(&self) -> Vec<PushEvent> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Waits (for at most a minute) until `n` events match; returns when the last of them happened.
    pub async fn wait_for(
        &self,
        n: usize,
        what: &str,
        wanted: impl Fn(&PushEvent) -> bool,
    ) -> Instant {
        let seen = eventually(Duration::from_secs(60), || self.count(&wanted) >= n).await;
        assert!(seen, "waited for {n} × {what}; events: {:#?}", self.all());
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| wanted(e))
            .nth(n - 1)
            .map(|(at, _)| *at)
            .unwrap()
    }
}

pub fn is_confirming(event: &PushEvent) -> bool {
    matches!(
        event,
        PushEvent::Rechecked {
            pass: RecheckPass::Confirming,
            ..
        }
    )
}

pub fn subscriber(
    channel: Arc<dyn Channel>,
    cache: &SecretCache,
    log: &EventLog,
    follow_up: Duration,
) -> Subscriber {
    Subscriber::builder(channel)
        .cache(cache.clone())
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .follow_up(follow_up, 3)
        .on_event(log.hook())
        .start()
        .expect("start a subscriber")
}

/// A task that reads the secret as callers would, counting errors, until stopped.
pub struct Reader {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(u64, Vec<String>)>,
}

impl Reader {
    pub fn start(
        cache: &SecretCache,
        handle: &credswap::SecretHandle<credswap::SecretValue>,
    ) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cache, handle, flag) = (cache.clone(), handle.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let (mut reads, mut errors) = (0, Vec::new());
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = handle.load().current().len();
                match cache.get("db").await {
                    Ok(_) => reads += 1,
                    Err(error) => errors.push(error.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (reads, errors)
        });
        Reader { stop, task }
    }

    /// Stops the reader; returns its reads and errors.
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

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
    // Let the subscriber spend its follow-ups, then stop it: whatever it did is counted.
    let _ = log
        .wait_for(1, "follow-ups spent", |e| {
            matches!(e, PushEvent::Behind { retry_in: None, .. })
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
