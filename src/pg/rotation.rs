//! What both pools share: which credentials new logins use, what to do when they are rejected,
//! which connections to retire and when, and what to report about it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::broadcast;

use super::auth_failure::{AuthFailurePolicy, SqlStatePolicy, is_auth_failure};
use super::config::RetryAndDrain;
use super::credentials::PgCredentials;
use super::drain::{Ledger, Verdict};
use super::events::{ConnectionTiming, Connections, PoolEvent, PoolStats, RotationRecord};
use crate::events::{Emitter, bump};
use crate::handle::{SecretHandle, Snapshot};
use crate::time::{Instant, instant_of};
use crate::value::{Version, VersionId};

crate::events::counters! {
    struct Counters => PoolStats {
        auth_failures, retries, refreshes_requested, fallbacks_to_previous, exhausted,
        credential_swaps, connections_drained,
    }
}

/// Nanoseconds + 1 of the last consumer update latency (0: none yet).
type LastLatency = AtomicU64;

/// The credentials a login attempt uses, and the epoch they belong to.
#[derive(Clone)]
pub(crate) struct Chosen {
    pub(crate) epoch: u64,
    snapshot: Arc<Snapshot<PgCredentials>>,
    previous: bool,
}

impl Chosen {
    pub(crate) fn credentials(&self) -> &PgCredentials {
        if self.previous {
            if let Some(previous) = self.snapshot.previous() {
                return previous;
            }
        }
        self.snapshot.current()
    }
}

struct State {
    /// Bumped whenever the credentials new logins use change (a new version, or a switch to the
    /// previous credentials and back).
    epoch: u64,
    use_previous: bool,
    /// The handle's snapshot the pool has taken in.
    snapshot: Arc<Snapshot<PgCredentials>>,
    ledger: Ledger,
}

/// Applies chosen credentials to a pool (sqlx: `set_connect_options`). Called under the state
/// lock, so applications happen in epoch order.
pub(crate) type Apply = Box<dyn Fn(&Chosen) + Send + Sync>;

pub(crate) struct Rotation {
    pub(crate) handle: SecretHandle<PgCredentials>,
    pub(crate) config: RetryAndDrain,
    policy: Arc<dyn AuthFailurePolicy>,
    state: Mutex<State>,
    counters: Counters,
    last_update_latency: LastLatency,
    apply: Apply,
    events: Emitter<PoolEvent>,
    /// Connection create and wait times (hooks only: one per acquire).
    timings: Emitter<ConnectionTiming>,
    /// How the pool counts its connections, set once the pool exists.
    connections: OnceLock<Box<dyn Fn() -> Connections + Send + Sync>>,
    /// Dropped with the rotation: tells its follower task to stop.
    shutdown: tokio::sync::watch::Sender<()>,
}

fn lease_end(version: &Version) -> Option<Instant> {
    version
        .lease
        .as_ref()
        .map(|lease| instant_of(lease.expires_at))
}

impl Rotation {
    pub(crate) fn new(
        handle: SecretHandle<PgCredentials>,
        config: RetryAndDrain,
        policy: Option<Arc<dyn AuthFailurePolicy>>,
        apply: Apply,
    ) -> Arc<Self> {
        let snapshot = handle.load_full();
        let now = Instant::now();
        let mut ledger = Ledger::new(0, snapshot.version().id.clone(), snapshot.lease_end(), now);
        if let Some(previous) = snapshot.previous_version() {
            // Connections may fall back to these; they go like credentials replaced now.
            ledger.adopt_replaced(&previous.id, lease_end(previous), now, &config);
        }
        let rotation = Arc::new(Rotation {
            config,
            policy: policy.unwrap_or_else(|| Arc::new(SqlStatePolicy::default())),
            state: Mutex::new(State {
                epoch: 0,
                use_previous: false,
                snapshot,
                ledger,
            }),
            counters: Counters::default(),
            last_update_latency: LastLatency::new(0),
            apply,
            events: Emitter::new(64, Vec::new()),
            timings: Emitter::new(1, Vec::new()),
            connections: OnceLock::new(),
            shutdown: tokio::sync::watch::Sender::new(()),
            handle,
        });
        let state = rotation.lock();
        (rotation.apply)(&rotation.chosen(&state));
        drop(state);
        rotation
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn chosen(&self, state: &State) -> Chosen {
        Chosen {
            epoch: state.epoch,
            snapshot: Arc::clone(&state.snapshot),
            previous: state.use_previous,
        }
    }

    fn emit(&self, event: PoolEvent) {
        self.events.emit(event);
    }

    /// The credentials to log in with now, after taking in any new version of the handle.
    pub(crate) fn current(&self) -> Chosen {
        let mut state = self.lock();
        self.take_in(&mut state);
        self.chosen(&state)
    }

    /// Takes in whatever the handle holds now.
    pub(crate) fn sync(&self) {
        let mut state = self.lock();
        self.take_in(&mut state);
    }

    /// Takes in a new snapshot of the handle: a new version (new logins use it; the one it
    /// replaces gets its deadline) or new metadata of the same version (a renewed lease).
    fn take_in(&self, state: &mut State) {
        let snapshot = self.handle.load();
        if Arc::ptr_eq(&snapshot, &state.snapshot) {
            return;
        }
        let snapshot = Arc::clone(&*snapshot);
        let old = state.snapshot.version().id.clone();
        let new = snapshot.version().id.clone();
        if old == new {
            // Same credentials, new metadata: follow the lease's renewals.
            state.ledger.renewed(&new, snapshot.lease_end());
            state.snapshot = snapshot;
            return;
        }
        let now = Instant::now();
        // The outgoing version's lease as the handle last saw it (renewals included).
        let outgoing_lease = snapshot
            .previous_version()
            .filter(|previous| previous.id == old)
            .and_then(lease_end);
        let deadline = state
            .ledger
            .replace(&old, outgoing_lease, now, &self.config);
        state.snapshot = snapshot;
        state.use_previous = false;
        state.epoch += 1;
        state.ledger.begin(state.epoch, &new, now);
        state.ledger.renewed(&new, state.snapshot.lease_end());
        bump(&self.counters.credential_swaps);
        let drain_in = deadline.saturating_duration_since(now);
        (self.apply)(&self.chosen(state));
        self.emit(PoolEvent::NewCredentials {
            version: new,
            replaced: old,
            drain_in,
        });
    }

    /// Fires (closes) when the rotation is dropped.
    pub(crate) fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<()> {
        self.shutdown.subscribe()
    }

    /// Applies the current choice again (after the pool it applies to came into being).
    #[cfg(feature = "sqlx")]
    pub(crate) fn reapply(&self) {
        let mut state = self.lock();
        self.take_in(&mut state);
        (self.apply)(&self.chosen(&state));
    }

    /// A login with the credentials of `epoch` finished now.
    pub(crate) fn login_finished(&self, epoch: u64) {
        let first = {
            let mut state = self.lock();
            let first = state.ledger.login_finished(epoch, Instant::now());
            first.map(|(version, latency)| {
                let since_created = [
                    Some(state.snapshot.version()),
                    state.snapshot.previous_version(),
                ]
                .into_iter()
                .flatten()
                .find(|known| known.id == version)
                .and_then(Version::since_created);
                (version, latency, since_created)
            })
        };
        if let Some((version, latency, since_created)) = first {
            self.first_connection(version, latency, since_created);
        }
    }

    /// Reports a measured connection step to the timing hooks.
    pub(crate) fn timing(&self, timing: ConnectionTiming) {
        self.timings.deliver(timing);
    }

    pub(crate) fn on_timing(&self, hook: crate::events::Hook<ConnectionTiming>) {
        self.timings.add_hook(hook);
    }

    /// Tells the rotation how to count the pool's connections (once, when the pool exists).
    pub(crate) fn count_connections_with(
        &self,
        count: impl Fn() -> Connections + Send + Sync + 'static,
    ) {
        let _ = self.connections.set(Box::new(count));
    }

    /// The pool's connections now (`None` before the pool exists).
    pub(crate) fn connections(&self) -> Option<Connections> {
        self.connections.get().map(|count| count())
    }

    /// A login finished now whose credentials the pool did not choose (it did not go through
    /// the rotating pool's acquire; it started at most `bound` ago).
    #[cfg(feature = "sqlx")]
    pub(crate) fn login_finished_unseen(&self, bound: Duration) {
        self.lock()
            .ledger
            .login_finished_unseen(bound, Instant::now());
    }

    fn first_connection(
        &self,
        version: VersionId,
        latency: Duration,
        since_created: Option<Duration>,
    ) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX - 1);
        self.last_update_latency.store(nanos + 1, Ordering::Relaxed);
        self.emit(PoolEvent::FirstConnection {
            version,
            update_latency: latency,
            since_created,
        });
    }

    /// Whether a connection opened `age` ago must be closed now; counts it as drained if so.
    pub(crate) fn retire(&self, age: Duration) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        if !state.ledger.any_due(now) {
            return false;
        }
        let created = now.checked_sub(age).unwrap_or(now);
        match state.ledger.judge(created, now) {
            Verdict::Keep => false,
            Verdict::Retire(version) => {
                bump(&self.counters.connections_drained);
                let replaced = version.and_then(|version| {
                    let at = state.ledger.replaced_at(&version)?;
                    Some((version, now.saturating_duration_since(at)))
                });
                drop(state);
                if let Some((version, since_replaced)) = replaced {
                    self.emit(PoolEvent::ConnectionRetired {
                        version,
                        since_replaced,
                    });
                }
                true
            }
        }
    }

    /// When the follower should next look for connections to retire.
    fn next_sweep(&self) -> Option<Instant> {
        self.lock().ledger.next_sweep(Instant::now())
    }

    /// After a sweep: announces versions whose deadline passed, and forgets what no connection
    /// needs any more.
    fn swept(&self) {
        let now = Instant::now();
        let due = {
            let mut state = self.lock();
            let due = state.ledger.newly_due(now);
            state.ledger.prune(now);
            due
        };
        for record in due {
            self.emit(PoolEvent::Drained {
                version: record.version,
                drained: record.connections_drained,
            });
        }
    }

    pub(crate) fn is_auth_failure(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        is_auth_failure(&*self.policy, error)
    }

    /// Reacts to a rejected login made with the credentials of `epoch`: asks the cache for the
    /// newest version (coalesced), and if there is none, switches between the current and the
    /// previous credentials — only with alternating users: with one user, the previous password
    /// stopped working when the database took the new one, so a login with it is wasted.
    pub(crate) async fn on_auth_failure(&self, epoch: u64) {
        bump(&self.counters.auth_failures);
        {
            let mut state = self.lock();
            self.take_in(&mut state);
            if state.epoch != epoch {
                // The credentials changed since this attempt started: retry with the new ones,
                // a refresh would learn nothing.
                return;
            }
        }
        bump(&self.counters.refreshes_requested);
        if let Err(error) = self.handle.refresh().await {
            tracing::warn!(kind = %error.kind(), "credswap: credential refresh after a rejected login failed");
        }
        let mut state = self.lock();
        self.take_in(&mut state);
        if state.epoch != epoch {
            // New credentials, or another task already switched: just retry.
            return;
        }
        let current = state.snapshot.current();
        let alternating = state
            .snapshot
            .previous()
            .is_some_and(|previous| previous.username != current.username);
        let now = Instant::now();
        if !state.use_previous && alternating {
            let Some(previous) = state.snapshot.previous_version().cloned() else {
                return;
            };
            state.use_previous = true;
            state.epoch += 1;
            let epoch = state.epoch;
            state.ledger.begin(epoch, &previous.id, now);
            bump(&self.counters.fallbacks_to_previous);
            (self.apply)(&self.chosen(&state));
            drop(state);
            self.emit(PoolEvent::FallbackToPrevious {
                version: previous.id,
            });
        } else if state.use_previous {
            state.use_previous = false;
            state.epoch += 1;
            let (epoch, version) = (state.epoch, state.snapshot.version().id.clone());
            state.ledger.begin(epoch, &version, now);
            (self.apply)(&self.chosen(&state));
        }
    }

    pub(crate) fn record_retry(&self) {
        bump(&self.counters.retries);
    }

    pub(crate) fn record_exhausted(&self) {
        bump(&self.counters.exhausted);
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let mut stats = PoolStats {
            last_update_latency: match self.last_update_latency.load(Ordering::Relaxed) {
                0 => None,
                n => Some(Duration::from_nanos(n - 1)),
            },
            ..PoolStats::default()
        };
        self.counters.fill(&mut stats);
        stats
    }

    pub(crate) fn rotations(&self) -> Vec<RotationRecord> {
        self.lock().ledger.history()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<PoolEvent> {
        self.events.subscribe()
    }

    pub(crate) fn on_event(&self, hook: crate::events::Hook<PoolEvent>) {
        self.events.add_hook(hook);
    }
}

/// Runs `attempt` until it succeeds, fails with something other than an authentication failure,
/// or the retry budget is spent; after each authentication failure, lets `rotation` refresh or
/// switch credentials and waits a jittered backoff.
pub(crate) async fn with_auth_retry<T, E, F, Fut>(
    rotation: &Rotation,
    mut attempt: F,
) -> Result<T, E>
where
    E: std::error::Error + 'static,
    F: FnMut(Chosen) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut failures = 0u32;
    loop {
        let chosen = rotation.current();
        let epoch = chosen.epoch;
        match attempt(chosen).await {
            Ok(value) => return Ok(value),
            Err(error) if rotation.is_auth_failure(&error) => {
                failures += 1;
                rotation.on_auth_failure(epoch).await;
                let wait = rotation.config.backoff_after(failures);
                if failures > rotation.config.retry_attempts
                    || started.elapsed() + wait > rotation.config.retry_budget
                {
                    rotation.record_exhausted();
                    tracing::warn!(
                        attempts = failures,
                        "credswap: login still rejected after the retry budget"
                    );
                    return Err(error);
                }
                rotation.record_retry();
                tokio::time::sleep(wait).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Follows the handle: takes in each new version as soon as it appears, and at each version's
/// drain deadline (and for a while after, as busy connections come back) calls `drain`, which
/// closes the pool's idle connections that must go. Ends when the rotation is dropped.
pub(crate) fn spawn_follower(
    rotation: Weak<Rotation>,
    handle: SecretHandle<PgCredentials>,
    mut shutdown: tokio::sync::watch::Receiver<()>,
    drain: impl Fn() + Send + 'static,
) {
    let _task = tokio::spawn(async move {
        loop {
            let next = match rotation.upgrade() {
                Some(rotation) => rotation.next_sweep(),
                None => return,
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = handle.changed() => {
                    let Some(rotation) = rotation.upgrade() else { return };
                    rotation.sync();
                }
                () = sleep_until_opt(next) => {
                    let Some(rotation) = rotation.upgrade() else { return };
                    drain();
                    rotation.swept();
                }
            }
        }
    });
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
