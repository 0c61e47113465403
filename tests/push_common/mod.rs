//! The harness of the push integration tests: a [`Broker`] says how to reach, cut off and restart
//! a real one, an [`EventLog`] records what subscribers report, and a [`Reader`] reads as callers
//! would. The scenarios, written once and run against each broker (`tests/push/postgres.rs`,
//! `tests/push/redis.rs`), are in `scenarios.rs`.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use credswap::SecretCache;
use credswap::push::{Channel, Publisher, PushEvent, RecheckPass, Subscriber};

pub use crate::common::{GatedProvider, eventually};

mod forgery;
mod scenarios;

// Not every test binary runs every scenario.
#[allow(unused_imports)]
pub use self::forgery::{
    a_junk_flood_costs_no_reconnect_and_no_store_call,
    signed_announcements_apply_and_forged_ones_do_not,
};
#[allow(unused_imports)]
pub use self::scenarios::{
    a_broker_restart_is_survived, a_killed_listener_reconnects_and_catches_up,
    a_stopped_subscriber_costs_nothing, fifty_caches_follow_one_announcement,
    floods_and_garbage_cost_bounded_store_calls,
};

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
    /// Publishes `payloads`, as fast as the broker takes them (pipelined, or in one statement),
    /// as a forger would; returns once the broker took them all.
    async fn publish_burst(&self, payloads: &[String]);
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

/// Every push event of one or more subscribers (through [`hook`](Self::hook)), with when it
/// happened.
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
