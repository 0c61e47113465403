//! The subscriber: one connection loop shared by every broker. Connect (with jittered backoff),
//! re-check what the caches watch, receive and hand payloads to the applier, ping when idle,
//! reconnect when the connection is lost.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use backon::ExponentialBackoff;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;

use super::builder::SubscriberBuilder;
use super::channel::{Channel, Inbox};
use super::events::{PushEvent, PushStats};
use super::pending::{KEY_RETRY_HOLD, KeyRetry, Pending, Verified};
use super::refresh;
use super::settings::{PushHook, Settings};
use super::shared::{Counters, Shared};
use super::throttle::LogThrottle;
use crate::backoff::Backoff;
use crate::cache::SecretCache;
use crate::error::{Error, ErrorKind};
use crate::events::{Emitter, bump};

/// A connection that stayed up this long was healthy: the next reconnect starts the backoff over.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Keeps caches current by listening to a broker: each announcement of a changed secret refreshes
/// that secret in every cache that holds or follows it, through the cache's normal, coalesced and
/// rate-limited [`refresh`](SecretCache::refresh).
///
/// - **Announcements carry no values.** A cache only ever gets a value from its own store, so a
///   forged announcement cannot inject one. One costs each cache that holds the secret at most two
///   refreshes (each a probe, plus a fetch when the version changed), and a flood of them at most
///   one refresh per `min_refresh_interval` per secret. Announcements for secrets no cache
///   watches cost nothing; malformed ones are dropped with a [`PushEvent::Malformed`] (logged at
///   most once a minute per kind); what a connection cannot hold is shed
///   ([`PushEvent::Shed`]) without a reconnect. With
///   [`verify_with`](SubscriberBuilder::verify_with), unsigned and forged announcements are
///   rejected ([`PushEvent::Rejected`]).
/// - **Never miss silently.** Both brokers drop what is published while a subscriber is
///   disconnected. When its connection is lost (or a keepalive ping goes unanswered), the
///   subscriber reconnects with jittered exponential backoff and then re-checks every secret its
///   caches watch, once (paced: never sooner than a follow-up delay after the last re-check).
///   The caches' TTL stays the last backstop.
/// - **Follow-ups.** When a refresh was answered by the cache's rate limit rather than the store,
///   it is asked again past the limit (a bounded number of times); when the store answered with
///   another version than announced, once more, in case a replica lagged, and then the store is
///   believed ([`PushEvent::Unconfirmed`]). Announcements arriving meanwhile are coalesced into
///   that work. A secret evicted or invalidated meanwhile is not fetched back.
/// - **Events.** Connection state, reconnects, re-checks, and the latency from each announcement
///   to the swap of the handles on it: [`subscribe`](Self::subscribe), `tracing`, or
///   [`SubscriberBuilder::on_event`].
///
/// It stops on [`shutdown`](Self::shutdown) (which takes `&self`, so an `Arc` in application
/// state will do) or when dropped; after that it makes no connection and starts no store call. It
/// holds its caches (clones) until then. A drop does not wait: refreshes a cache had already
/// started may still finish inside the cache.
///
/// Build one with [`Subscriber::builder`] over a [`Channel`]: [`PgListener`](crate::push::PgListener)
/// (feature `push-postgres`), [`RedisListener`](crate::push::RedisListener) (feature
/// `push-redis`), or your own.
pub struct Subscriber {
    pub(super) shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    /// The connection loop, until a shutdown has waited for it to end.
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("channel", &self.shared.channel)
            .field("caches", &self.shared.caches().len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Subscriber {
    /// Starts building a subscriber that listens on `channel`.
    pub fn builder(channel: impl Channel) -> SubscriberBuilder {
        SubscriberBuilder::new(Arc::new(channel))
    }

    pub(super) fn spawn(
        runtime: &tokio::runtime::Handle,
        channel: Arc<dyn Channel>,
        caches: Vec<SecretCache>,
        settings: Settings,
        event_capacity: usize,
        hooks: Vec<PushHook>,
    ) -> Self {
        let events = Emitter::new(event_capacity, hooks);
        let follow_up_nanos = AtomicU64::new(0);
        let shared = Arc::new(Shared {
            follow_up_nanos,
            settings,
            channel: Arc::from(channel.describe()),
            caches: RwLock::new(caches),
            events,
            connected: AtomicBool::new(false),
            counters: Counters::default(),
            log_throttle: LogThrottle::default(),
            pending: Mutex::new(Pending::default()),
            key_retry: Mutex::new(KeyRetry::default()),
            recheck_began: Mutex::new(None),
        });
        shared.raise_follow_up(shared.settings.follow_up_delay);
        for cache in shared.caches() {
            shared.raise_follow_up(cache.min_refresh_interval());
        }
        let (stop, stopped) = watch::channel(false);
        let span = tracing::info_span!("credswap.push", channel = %shared.channel);
        let task = runtime.spawn(tracing::Instrument::instrument(
            run(Arc::clone(&shared), channel, stopped),
            span,
        ));
        Subscriber {
            shared,
            stop,
            task: tokio::sync::Mutex::new(Some(task)),
        }
    }

    /// A receiver of every [`PushEvent`] from now on. A receiver that lags more than the event
    /// capacity behind loses the oldest events (and is told so by `RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<PushEvent> {
        self.shared.events.subscribe()
    }

    /// Calls `hook` with every [`PushEvent`] from now on, as
    /// [`SubscriberBuilder::on_event`](super::SubscriberBuilder::on_event) does for hooks set
    /// before the start.
    pub fn on_event(&self, hook: impl Fn(&PushEvent) + Send + Sync + 'static) {
        self.shared.events.add_hook(Arc::new(hook));
    }

    /// Adds a cache to keep current, from the next announcement on. The follow-up delay is raised
    /// to the cache's `min_refresh_interval` if that is longer.
    pub fn add_cache(&self, cache: SecretCache) {
        self.shared.raise_follow_up(cache.min_refresh_interval());
        self.shared
            .caches
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(cache);
    }

    /// Whether the subscriber is subscribed right now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Counters since the subscriber started.
    pub fn stats(&self) -> PushStats {
        stats_of(&self.shared)
    }

    /// A reference that does not keep the subscriber's state alive.
    #[cfg(all(
        feature = "metrics",
        any(feature = "push-postgres", feature = "push-redis")
    ))]
    pub(crate) fn downgrade(&self) -> WeakSubscriber {
        WeakSubscriber(Arc::downgrade(&self.shared))
    }

    /// Stops the subscriber and waits until it has: its connection is closed, waiting follow-ups
    /// and re-checks (a confirming pass included) are cancelled, and it emits
    /// [`PushEvent::Stopped`]. A refresh a cache had already started completes inside the cache
    /// (its waiters may need it); no new one starts.
    ///
    /// # Concurrent calls
    ///
    /// Every call returns once the subscriber has stopped; calls after that return at once.
    /// Cancelling a call (dropping its future) does not undo the stop.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let mut task = self.task.lock().await;
        if let Some(running) = task.as_mut() {
            let _ = running.await;
            *task = None;
        }
    }
}

/// Dropping a subscriber stops it without waiting: its task is aborted, and with it the connection,
/// waiting follow-ups and re-checks. Refreshes a cache had already started on its behalf may still
/// finish inside the cache (they are the cache's loads, shared with its other callers); none
/// starts after the drop. No [`PushEvent::Stopped`] is emitted; call
/// [`shutdown`](Subscriber::shutdown) to wait for the stop.
impl Drop for Subscriber {
    fn drop(&mut self) {
        // Aborting the loop drops its task set, which aborts every follow-up and re-check.
        if let Some(task) = self.task.get_mut().take() {
            task.abort();
        }
    }
}

/// The reconnect delays: the crate's backoff, restarted after a stable connection.
struct Reconnect {
    rule: Backoff,
    delays: ExponentialBackoff,
    /// Attempts since the last stable connection: what the backoff has grown by.
    attempt: u32,
    /// Connection attempts since the last connection (or the start), the current one included.
    tries: u32,
}

impl Reconnect {
    fn new(settings: &Settings) -> Self {
        let rule = Backoff::new(settings.backoff_min, settings.backoff_max);
        Reconnect {
            delays: rule.delays(),
            rule,
            attempt: 0,
            tries: 0,
        }
    }

    /// The number and delay of the next attempt.
    fn next(&mut self, max: Duration) -> (u32, Duration) {
        self.attempt = self.attempt.saturating_add(1);
        let delay = self.delays.next().unwrap_or(max);
        (self.attempt, delay)
    }

    /// A connection attempt starts.
    fn trying(&mut self) {
        self.tries = self.tries.saturating_add(1);
    }

    /// A connection was established: how many tries it took.
    fn connected(&mut self) -> u32 {
        std::mem::take(&mut self.tries)
    }

    /// A connection that had been up for `lived` was lost.
    fn lost(&mut self, lived: Duration) {
        if lived >= STABLE_AFTER {
            self.delays = self.rule.delays();
            self.attempt = 0;
        }
    }
}

/// Waits until the subscriber is told to stop (or its handle is gone).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    // `wait_for` fails only when the sender is gone, which also means stop.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The connection loop. Ends on stop; aborted with the subscriber otherwise.
async fn run(shared: Arc<Shared>, channel: Arc<dyn Channel>, mut stop: watch::Receiver<bool>) {
    // Follow-ups and re-checks: aborted when this set is dropped, with the loop.
    let mut tasks = JoinSet::new();
    let mut recheck: Option<AbortHandle> = None;
    // Announcements that checked once their key was refreshed come back here to be applied.
    let (verified, mut verified_later) = mpsc::channel(KEY_RETRY_HOLD);
    let mut reconnect = Reconnect::new(&shared.settings);
    let mut ever_connected = false;
    let mut last_failure: Option<Error> = None;
    loop {
        if let Some(error) = last_failure.take() {
            let (attempt, delay) = reconnect.next(shared.settings.backoff_max);
            shared.emit(PushEvent::Reconnecting {
                attempt,
                delay,
                kind: error.kind(),
            });
            tokio::select! {
                biased;
                () = stop_requested(&mut stop) => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        reconnect.trying();
        let connecting = tokio::time::timeout(shared.settings.broker_timeout, channel.listen());
        let mut inbox = tokio::select! {
            biased;
            () = stop_requested(&mut stop) => break,
            result = connecting => match result {
                Ok(Ok(inbox)) => inbox,
                Ok(Err(error)) => {
                    tracing::debug!(target: "credswap::push", kind = %error.kind(), %error, "connection attempt failed");
                    last_failure = Some(error);
                    continue;
                }
                Err(_) => {
                    last_failure = Some(timed_out("connecting to the broker"));
                    continue;
                }
            },
        };
        let attempts = reconnect.connected();
        shared.connected.store(true, Ordering::Release);
        if ever_connected {
            bump(&shared.counters.reconnects);
        }
        ever_connected = true;
        shared.emit(PushEvent::Connected {
            channel: Arc::clone(&shared.channel),
            attempts,
        });
        // Whatever was announced while we were away is lost: look at everything again, once per
        // connection, and never sooner than a follow-up delay after the last re-check began (a
        // connection that flaps must not turn into a store call per secret per flap; the re-check
        // is deferred, not skipped). A re-check still running from a previous connection is
        // superseded by this one.
        if let Some(previous) = recheck.take() {
            previous.abort();
        }
        let began = *shared
            .recheck_began
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let not_before = began.map(|last| last + shared.follow_up_delay());
        let starts = not_before.map_or_else(Instant::now, |at| at.max(Instant::now()));
        recheck = Some(tasks.spawn(super::recheck::recheck(Arc::clone(&shared), starts)));

        let connected_at = Instant::now();
        let outcome = receive(
            &shared,
            inbox.as_mut(),
            &mut tasks,
            &mut stop,
            (&verified, &mut verified_later),
        )
        .await;
        drop(inbox);
        shared.connected.store(false, Ordering::Release);
        let Some(error) = outcome else { break };
        let connected_for = connected_at.elapsed();
        shared.emit(PushEvent::Disconnected {
            kind: error.kind(),
            reason: Arc::from(error.to_string()),
            connected_for,
        });
        reconnect.lost(connected_for);
        last_failure = Some(error);
    }
    shared.connected.store(false, Ordering::Release);
    tasks.shutdown().await;
    shared.emit(PushEvent::Stopped);
}

/// How often payloads shed by a connection are reported as an event.
const SHED_REPORT_EVERY: Duration = Duration::from_secs(1);

/// Counts what `inbox` shed; reports it when `force`d or a report is due.
fn note_shed(
    shared: &Shared,
    inbox: &mut dyn Inbox,
    unreported: &mut u64,
    last: &mut Instant,
    force: bool,
) {
    let shed = inbox.shed();
    if shed > 0 {
        let _ = shared.counters.shed.fetch_add(shed, Ordering::Relaxed);
        *unreported += shed;
    }
    if *unreported > 0 && (force || last.elapsed() >= SHED_REPORT_EVERY) {
        shared.emit(PushEvent::Shed {
            count: std::mem::take(unreported),
        });
        *last = Instant::now();
    }
}

/// Where announcements verified after a refresh of the key come back to the connection loop.
type VerifiedLater<'a> = (&'a mpsc::Sender<Verified>, &'a mut mpsc::Receiver<Verified>);

/// Reads one connection until it fails (returns the error) or the subscriber stops (`None`).
async fn receive(
    shared: &Arc<Shared>,
    inbox: &mut dyn Inbox,
    tasks: &mut JoinSet<()>,
    stop: &mut watch::Receiver<bool>,
    (verified, verified_later): VerifiedLater<'_>,
) -> Option<Error> {
    let settings = &shared.settings;
    let mut unreported_shed = 0u64;
    let mut last_shed_report = Instant::now();
    loop {
        // Collect finished work so the set does not grow.
        while tasks.try_join_next().is_some() {}
        let next = tokio::time::timeout(settings.keepalive, inbox.recv());
        let received = tokio::select! {
            biased;
            () = stop_requested(stop) => return None,
            Some(later) = verified_later.recv() => {
                refresh::dispatch(shared, tasks, later.announcement, later.received_at);
                continue;
            }
            received = next => received,
        };
        note_shed(
            shared,
            inbox,
            &mut unreported_shed,
            &mut last_shed_report,
            received.is_err(),
        );
        match received {
            Ok(Ok(payload)) => refresh::receive(shared, tasks, &payload, Instant::now(), verified),
            Ok(Err(error)) => {
                note_shed(
                    shared,
                    inbox,
                    &mut unreported_shed,
                    &mut last_shed_report,
                    true,
                );
                return Some(error);
            }
            Err(_idle) => {
                let ping = tokio::time::timeout(settings.broker_timeout, inbox.ping());
                let pinged = tokio::select! {
                    biased;
                    () = stop_requested(stop) => return None,
                    pinged = ping => pinged,
                };
                match pinged {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => return Some(error),
                    Err(_) => return Some(timed_out("waiting for the broker to answer a ping")),
                }
            }
        }
    }
}

fn timed_out(what: &str) -> Error {
    Error::new(ErrorKind::Transient).with_message(format!("timed out {what}"))
}

fn stats_of(shared: &Shared) -> PushStats {
    let mut stats = PushStats {
        connected: shared.connected.load(Ordering::Acquire),
        ..PushStats::default()
    };
    shared.counters.fill(&mut stats);
    stats
}

/// A [`Subscriber`]'s state that may be gone.
#[cfg(all(
    feature = "metrics",
    any(feature = "push-postgres", feature = "push-redis")
))]
pub(crate) struct WeakSubscriber(std::sync::Weak<Shared>);

#[cfg(all(
    feature = "metrics",
    any(feature = "push-postgres", feature = "push-redis")
))]
impl WeakSubscriber {
    /// The subscriber's counters, while its state lives.
    pub(crate) fn stats(&self) -> Option<PushStats> {
        self.0.upgrade().map(|shared| stats_of(&shared))
    }
}
