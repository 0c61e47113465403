//! The subscriber's connection loop against an in-process channel whose connections the test
//! controls, all under paused time: the backoff, re-checks after reconnects, keepalives, event
//! hooks, settings and shutdown. What announcements cost is in `refresh.rs`, signed announcements
//! in `signing.rs`; real brokers are in `tests/push/postgres.rs` and `tests/push/redis.rs`.

mod refresh;
mod signing;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc};

use super::*;
use crate::error::{Error, ErrorKind, Result};
use crate::{MemoryProvider, SecretCache, VersionId};

/// A broker stand-in: `listen` fails while `refuse` is above zero, connections are unbounded
/// channels the test writes into, and pings fail while `ping_fails` is set.
#[derive(Default)]
pub(super) struct Script {
    pub(super) listens: AtomicU32,
    pub(super) refuse: AtomicU32,
    pub(super) ping_fails: AtomicBool,
    current: Mutex<Option<mpsc::UnboundedSender<Result<Vec<u8>>>>>,
}

#[derive(Clone, Default)]
pub(super) struct TestChannel(pub(super) Arc<Script>);

impl TestChannel {
    pub(super) fn send(&self, payload: impl Into<Vec<u8>>) {
        let current = self.0.current.lock().unwrap();
        current
            .as_ref()
            .expect("connected")
            .send(Ok(payload.into()))
            .unwrap();
    }

    pub(super) fn announce(&self, id: &str, version: &VersionId) {
        self.send(Announcement::new(id, version).unwrap().encode());
    }

    /// Ends the current connection with an error, as a broker killing it would.
    pub(super) fn kill(&self) {
        if let Some(sender) = self.0.current.lock().unwrap().take() {
            let _ = sender.send(Err(
                Error::new(ErrorKind::Transient).with_message("killed by the test")
            ));
        }
    }

    /// Whether the subscriber still holds a connection (its inbox is alive).
    pub(super) fn held(&self) -> bool {
        self.0
            .current
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|sender| !sender.is_closed())
    }
}

struct TestInbox {
    receiver: mpsc::UnboundedReceiver<Result<Vec<u8>>>,
    script: Arc<Script>,
}

#[async_trait]
impl Inbox for TestInbox {
    async fn recv(&mut self) -> Result<Vec<u8>> {
        match self.receiver.recv().await {
            Some(received) => received,
            None => Err(Error::new(ErrorKind::Transient).with_message("closed")),
        }
    }

    async fn ping(&mut self) -> Result<()> {
        if self.script.ping_fails.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Transient).with_message("no pong"));
        }
        Ok(())
    }
}

#[async_trait]
impl Channel for TestChannel {
    fn describe(&self) -> String {
        "test channel".into()
    }

    async fn listen(&self) -> Result<Box<dyn Inbox>> {
        let _ = self.0.listens.fetch_add(1, Ordering::SeqCst);
        let refused = self
            .0
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if refused.is_ok() {
            return Err(Error::new(ErrorKind::Transient).with_message("refused by the test"));
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        *self.0.current.lock().unwrap() = Some(sender);
        Ok(Box::new(TestInbox {
            receiver,
            script: Arc::clone(&self.0),
        }))
    }
}

/// The next event `wanted` accepts, skipping others; fails after ten minutes (of paused time).
pub(super) async fn next(
    events: &mut broadcast::Receiver<PushEvent>,
    wanted: impl Fn(&PushEvent) -> bool,
) -> PushEvent {
    let found = tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            match events.recv().await {
                Ok(event) if wanted(&event) => return event,
                Ok(_) => {}
                Err(error) => panic!("event stream: {error}"),
            }
        }
    })
    .await;
    found.expect("the expected event within ten minutes")
}

pub(super) fn store_with(id: &str, value: &str) -> (Arc<MemoryProvider>, VersionId) {
    let store = Arc::new(MemoryProvider::new());
    let version = store.set(id, value);
    (store, version)
}

pub(super) fn cache_over(
    store: &Arc<MemoryProvider>,
    min_refresh_interval: Duration,
) -> SecretCache {
    SecretCache::builder(store.clone())
        .ttl(Duration::from_secs(3600))
        .min_refresh_interval(min_refresh_interval)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn reconnects_back_off_exponentially_with_jitter_and_start_over_after_a_stable_connection() {
    let channel = TestChannel::default();
    channel.0.refuse.store(6, Ordering::SeqCst);
    let (min, max) = (Duration::from_millis(100), Duration::from_millis(1600));
    let subscriber = Subscriber::builder(channel.clone())
        .backoff(min, max)
        .start()
        .unwrap();
    let mut events = subscriber.subscribe();
    let mut delays = Vec::new();
    for expected_attempt in 1..=6u32 {
        match next(&mut events, |e| matches!(e, PushEvent::Reconnecting { .. })).await {
            PushEvent::Reconnecting {
                attempt,
                delay,
                kind,
            } => {
                assert_eq!(attempt, expected_attempt);
                assert_eq!(kind, ErrorKind::Transient);
                delays.push(delay);
            }
            other => unreachable!("{other:?}"),
        }
    }
    // Doubling from the minimum, capped at the maximum, each with up to as much again at random.
    for (n, delay) in delays.iter().enumerate() {
        let base = (min * 2u32.pow(n as u32)).min(max);
        assert!(
            *delay >= base && *delay <= base * 2,
            "attempt {}: {delay:?}",
            n + 1
        );
    }
    let distinct: std::collections::HashSet<_> = delays.iter().collect();
    assert!(distinct.len() > 1, "no jitter: {delays:?}");
    match next(&mut events, |e| matches!(e, PushEvent::Connected { .. })).await {
        PushEvent::Connected { attempts, channel } => {
            assert_eq!(attempts, 7);
            assert_eq!(&*channel, "test channel");
        }
        other => unreachable!("{other:?}"),
    }
    assert!(subscriber.is_connected());

    // A connection that lived a moment: the backoff keeps growing.
    channel.kill();
    match next(&mut events, |e| matches!(e, PushEvent::Reconnecting { .. })).await {
        PushEvent::Reconnecting { attempt, delay, .. } => {
            assert_eq!(attempt, 7);
            assert!(delay >= max, "{delay:?}");
        }
        other => unreachable!("{other:?}"),
    }
    let _ = next(&mut events, |e| matches!(e, PushEvent::Connected { .. })).await;

    // A connection that stayed up past ten seconds: the next loss starts over.
    tokio::time::sleep(Duration::from_secs(11)).await;
    channel.kill();
    match next(&mut events, |e| matches!(e, PushEvent::Disconnected { .. })).await {
        PushEvent::Disconnected {
            connected_for,
            kind,
            reason,
        } => {
            assert!(connected_for >= Duration::from_secs(11));
            assert_eq!(kind, ErrorKind::Transient);
            assert!(reason.contains("killed by the test"), "{reason}");
        }
        other => unreachable!("{other:?}"),
    }
    match next(&mut events, |e| matches!(e, PushEvent::Reconnecting { .. })).await {
        PushEvent::Reconnecting { attempt, delay, .. } => {
            assert_eq!(attempt, 1);
            assert!(delay >= min && delay <= min * 2, "{delay:?}");
        }
        other => unreachable!("{other:?}"),
    }
    let _ = next(&mut events, |e| matches!(e, PushEvent::Connected { .. })).await;
    assert_eq!(subscriber.stats().reconnects, 2);
    assert_eq!(channel.0.listens.load(Ordering::SeqCst), 9);
}

#[tokio::test(start_paused = true)]
async fn after_a_reconnect_every_watched_secret_is_rechecked() {
    let (store, _) = store_with("db", "one");
    let _ = store.set("api", "k1");
    let cache = cache_over(&store, Duration::ZERO);
    let db = cache.handle_raw("db").await.unwrap();
    let _ = cache.get("api").await.unwrap();
    let channel = TestChannel::default();
    let subscriber = Subscriber::builder(channel.clone())
        .cache(cache.clone())
        .follow_up(Duration::from_millis(20), 3)
        .start()
        .unwrap();
    let mut events = subscriber.subscribe();
    let _ = next(&mut events, |e| {
        matches!(
            e,
            PushEvent::Rechecked {
                pass: RecheckPass::Confirming,
                ..
            }
        )
    })
    .await;

    // The secret changes while the subscriber is away, and the announcement is lost.
    channel.0.refuse.store(2, Ordering::SeqCst);
    channel.kill();
    let _ = next(&mut events, |e| matches!(e, PushEvent::Reconnecting { .. })).await;
    let changed = store.set("db", "two");
    match next(&mut events, |e| matches!(e, PushEvent::Rechecked { .. })).await {
        PushEvent::Rechecked { pass, ids, failed } => {
            assert_eq!(pass, RecheckPass::Immediate);
            assert_eq!((ids, failed), (2, 0));
        }
        other => unreachable!("{other:?}"),
    }
    assert_eq!(db.load().version().id, changed);
    match next(&mut events, |e| matches!(e, PushEvent::Rechecked { .. })).await {
        PushEvent::Rechecked { pass, ids, .. } => {
            // Nothing was inside the (zero) rate limit: nothing to ask again.
            assert_eq!(pass, RecheckPass::Confirming);
            assert_eq!(ids, 0);
        }
        other => unreachable!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_event_hook_stops_neither_the_loop_nor_later_announcements() {
    let (store, _) = store_with("db", "one");
    let cache = cache_over(&store, Duration::ZERO);
    let handle = cache.handle_raw("db").await.unwrap();
    let channel = TestChannel::default();
    let panicked = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&panicked);
    let subscriber = Subscriber::builder(channel.clone())
        .cache(cache)
        .on_event(move |event| {
            let fails = matches!(
                event,
                PushEvent::Connected { .. } | PushEvent::Applied { .. }
            );
            if fails && !flag.swap(true, Ordering::SeqCst) {
                panic!("a hook that fails once");
            }
        })
        .start()
        .unwrap();
    let mut events = subscriber.subscribe();
    let _ = next(&mut events, |e| {
        matches!(
            e,
            PushEvent::Rechecked {
                pass: RecheckPass::Confirming,
                ..
            }
        )
    })
    .await;
    channel.announce("db", &store.set("db", "two"));
    assert!(eventually(|| panicked.load(Ordering::SeqCst)).await);
    let third = store.set("db", "three");
    channel.announce("db", &third);
    let applied = next(
        &mut events,
        |e| matches!(e, PushEvent::Applied { version, .. } if *version == third),
    )
    .await;
    assert!(matches!(applied, PushEvent::Applied { .. }));
    assert_eq!(handle.load().version().id, third);
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_stops_answering_pings_is_replaced() {
    let channel = TestChannel::default();
    let subscriber = Subscriber::builder(channel.clone())
        .keepalive(Duration::from_secs(30))
        .start()
        .unwrap();
    let mut events = subscriber.subscribe();
    let _ = next(&mut events, |e| matches!(e, PushEvent::Connected { .. })).await;
    channel.0.ping_fails.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    match next(&mut events, |e| matches!(e, PushEvent::Disconnected { .. })).await {
        PushEvent::Disconnected { reason, .. } => assert!(reason.contains("no pong"), "{reason}"),
        other => unreachable!("{other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(30));
    channel.0.ping_fails.store(false, Ordering::SeqCst);
    let _ = next(&mut events, |e| matches!(e, PushEvent::Connected { .. })).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_and_drop_close_the_connection_and_stop_all_work() {
    let (store, _) = store_with("db", "one");
    let cache = cache_over(&store, Duration::ZERO);
    let _handle = cache.handle_raw("db").await.unwrap();
    let channel = TestChannel::default();
    let subscriber = Subscriber::builder(channel.clone())
        .cache(cache.clone())
        .start()
        .unwrap();
    let mut events = subscriber.subscribe();
    let _ = next(&mut events, |e| matches!(e, PushEvent::Connected { .. })).await;
    assert!(channel.held());
    subscriber.shutdown().await;
    let _ = next(&mut events, |e| matches!(e, PushEvent::Stopped)).await;
    assert!(!channel.held());
    assert_eq!(channel.0.listens.load(Ordering::SeqCst), 1);

    let subscriber = Subscriber::builder(channel.clone())
        .cache(cache)
        .start()
        .unwrap();
    let mut events = subscriber.subscribe();
    let _ = next(&mut events, |e| matches!(e, PushEvent::Connected { .. })).await;
    drop(subscriber);
    // The task is aborted: its inbox goes with it.
    assert!(
        eventually(|| !channel.held()).await,
        "the connection outlived the subscriber"
    );
    assert_eq!(channel.0.listens.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_and_drop_cancel_waiting_follow_ups_and_confirming_re_checks() {
    let (store, _) = store_with("db", "one");
    let interval = Duration::from_secs(1);
    let cache = cache_over(&store, interval);
    let handle = cache.handle_raw("db").await.unwrap();
    for stop_by_drop in [false, true] {
        // During a follow-up's wait.
        let channel = TestChannel::default();
        let subscriber = Arc::new(
            Subscriber::builder(channel.clone())
                .cache(cache.clone())
                .follow_up(Duration::from_secs(5), 3)
                .start()
                .unwrap(),
        );
        let mut events = subscriber.subscribe();
        settled(&mut events).await;
        tokio::time::sleep(interval * 2).await;
        channel.announce("db", &VersionId::new("not-yet-in-the-store"));
        match next(&mut events, |e| matches!(e, PushEvent::Behind { .. })).await {
            PushEvent::Behind { retry_in, .. } => assert!(retry_in.is_some()),
            other => unreachable!("{other:?}"),
        }
        let calls = store_calls(&store);
        let follow_ups = subscriber.stats().follow_ups;
        if stop_by_drop {
            drop(subscriber);
        } else {
            // From shared application state, twice.
            let state = Arc::clone(&subscriber);
            state.shutdown().await;
            subscriber.shutdown().await;
            assert_eq!(subscriber.stats().follow_ups, follow_ups);
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(store_calls(&store), calls, "a follow-up ran after the stop");

        // Between the re-check's immediate pass and its confirming one.
        let channel = TestChannel::default();
        let subscriber = Subscriber::builder(channel.clone())
            .cache(cache.clone())
            .follow_up(Duration::from_secs(5), 3)
            .start()
            .unwrap();
        let mut events = subscriber.subscribe();
        let _ = next(&mut events, |e| {
            matches!(
                e,
                PushEvent::Rechecked {
                    pass: RecheckPass::Immediate,
                    ..
                }
            )
        })
        .await;
        let calls = store_calls(&store);
        if stop_by_drop {
            drop(subscriber);
        } else {
            subscriber.shutdown().await;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(store_calls(&store), calls, "a re-check ran after the stop");
    }
    assert_eq!(handle.load().current().expose_str(), Some("one"));
}

#[tokio::test(start_paused = true)]
async fn settings_that_cannot_work_are_refused() {
    let build = |f: fn(SubscriberBuilder) -> SubscriberBuilder| {
        f(Subscriber::builder(TestChannel::default()))
            .start()
            .map(drop)
            .unwrap_err()
            .kind()
    };
    assert_eq!(
        build(|b| b.backoff(Duration::ZERO, Duration::from_secs(1))),
        ErrorKind::Config
    );
    assert_eq!(
        build(|b| b.backoff(Duration::from_secs(2), Duration::from_secs(1))),
        ErrorKind::Config
    );
    assert_eq!(build(|b| b.keepalive(Duration::ZERO)), ErrorKind::Config);
    assert_eq!(
        build(|b| b.broker_timeout(Duration::ZERO)),
        ErrorKind::Config
    );
    assert_eq!(build(|b| b.recheck_concurrency(0)), ErrorKind::Config);
    assert_eq!(build(|b| b.event_capacity(0)), ErrorKind::Config);
    assert_eq!(build(|b| b.spread(Duration::MAX)), ErrorKind::Config);
    assert_eq!(build(|b| b.follow_up(Duration::ZERO, 3)), ErrorKind::Config);
}

#[tokio::test(start_paused = true)]
async fn the_follow_up_delay_is_never_inside_a_caches_rate_limit() {
    let (store, _) = store_with("db", "one");
    let subscriber = Subscriber::builder(TestChannel::default())
        .cache(cache_over(&store, Duration::from_secs(2)))
        .follow_up(Duration::from_millis(10), 3)
        .start()
        .unwrap();
    assert_eq!(subscriber.shared.follow_up_delay(), Duration::from_secs(2));
    subscriber.add_cache(cache_over(&store, Duration::from_secs(7)));
    assert_eq!(subscriber.shared.follow_up_delay(), Duration::from_secs(7));
    subscriber.add_cache(cache_over(&store, Duration::from_secs(1)));
    assert_eq!(subscriber.shared.follow_up_delay(), Duration::from_secs(7));

    // By default: the longest interval of the caches, or a second when none has one.
    let subscriber = Subscriber::builder(TestChannel::default())
        .cache(cache_over(&store, Duration::ZERO))
        .start()
        .unwrap();
    assert_eq!(subscriber.shared.follow_up_delay(), Duration::from_secs(1));
}

#[test]
fn starting_outside_a_runtime_is_a_config_error() {
    let err = Subscriber::builder(TestChannel::default())
        .start()
        .map(drop)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

/// Whether no refresh task is running or waiting.
pub(super) fn idle(subscriber: &Subscriber) -> bool {
    subscriber.shared.pending.lock().unwrap().is_idle()
}

/// Store calls so far: fetches and probes.
pub(super) fn store_calls(store: &MemoryProvider) -> u64 {
    store.fetch_calls() + store.probe_calls()
}

/// Waits for the confirming pass of the re-check after the first connection: from then on the
/// subscriber does nothing until told.
pub(super) async fn settled(events: &mut broadcast::Receiver<PushEvent>) {
    let _ = next(events, |e| {
        matches!(
            e,
            PushEvent::Rechecked {
                pass: RecheckPass::Confirming,
                ..
            }
        )
    })
    .await;
}

/// Polls `condition` every 10 ms for up to ten seconds (of paused time).
pub(super) async fn eventually(condition: impl Fn() -> bool) -> bool {
    for _ in 0..1000 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}
