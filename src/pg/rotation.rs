//! What both pools share: which credentials to connect with, what to do when they are rejected,
//! which connections to retire, and the counters that show it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::time::Instant;

use backon::{BackoffBuilder, ExponentialBuilder};

use super::classify::{AuthFailurePolicy, SqlStatePolicy, is_auth_failure};
use super::credentials::PgCredentials;
use crate::events::bump;
use crate::handle::{SecretHandle, Snapshot};
use crate::value::VersionId;

/// How a rotation-aware pool retries rejected logins and retires old connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RotationConfig {
    /// Connection attempts after an authentication failure before the caller sees it. Default: 8.
    pub retry_attempts: u32,
    /// The longest a caller waits for a login to succeed again. Default: 30 s.
    pub retry_budget: Duration,
    /// First and largest wait between attempts (jittered, exponential). Default: 50 ms to 2 s.
    pub backoff_min: Duration,
    /// See `backoff_min`.
    pub backoff_max: Duration,
    /// How long after a rotation connections opened with older credentials stay in use. They are
    /// closed when they next come back to (or are taken from) the pool after that. Default: 30 s.
    pub drain_delay: Duration,
    /// Connections opened with leased credentials are retired at least this long before the lease
    /// ends, whatever the drain delay. Default: 30 s.
    pub lease_margin: Duration,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            retry_attempts: 8,
            retry_budget: Duration::from_secs(30),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            drain_delay: Duration::from_secs(30),
            lease_margin: Duration::from_secs(30),
        }
    }
}

impl RotationConfig {
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        ExponentialBuilder::default()
            .with_min_delay(self.backoff_min)
            .with_max_delay(self.backoff_max)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempt.saturating_sub(1).min(32) as usize)
            .unwrap_or(self.backoff_max)
    }
}

/// Counters of a rotation-aware pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Logins the database rejected as authentication failures.
    pub auth_failures: u64,
    /// Connection attempts retried after such a failure.
    pub retries: u64,
    /// Credential refreshes requested from the secret cache (coalesced there: many requests, few
    /// store calls).
    pub refreshes_requested: u64,
    /// Times the pool fell back to the previous credentials, still inside their grace period.
    pub fallbacks_to_previous: u64,
    /// Times the retry budget was spent and the caller saw the error.
    pub exhausted: u64,
    /// Times new credentials were applied for new connections.
    pub credential_swaps: u64,
    /// Connections closed because they were opened with older credentials.
    pub connections_drained: u64,
    /// Time from the pool seeing a new version to the first connection opened with it, for the
    /// latest rotation (consumer update latency).
    pub last_update_latency: Option<Duration>,
}

#[derive(Default)]
struct Counters {
    auth_failures: AtomicU64,
    retries: AtomicU64,
    refreshes_requested: AtomicU64,
    fallbacks_to_previous: AtomicU64,
    exhausted: AtomicU64,
    credential_swaps: AtomicU64,
    connections_drained: AtomicU64,
    /// Nanoseconds + 1 (0: none yet).
    last_update_latency: AtomicU64,
}

/// The credentials a connection attempt uses, and the epoch they belong to.
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
    /// Bumped whenever the credentials to use change (new version, or a fallback switch).
    epoch: u64,
    version: VersionId,
    use_previous: bool,
    snapshot: Arc<Snapshot<PgCredentials>>,
    /// When the pool switched to the newest version: connections opened before are old.
    rotated_at: Option<Instant>,
    /// When old connections must go.
    drain_deadline: Option<Instant>,
    /// When the newest version was seen, until a connection has been opened with it.
    awaiting_first_connect: Option<(u64, Instant)>,
}

/// Applies chosen credentials to a pool (sqlx: `set_connect_options`). Called under the state
/// lock, so applications happen in epoch order.
pub(crate) type Apply = Box<dyn Fn(&Chosen) + Send + Sync>;

pub(crate) struct Rotation {
    pub(crate) handle: SecretHandle<PgCredentials>,
    pub(crate) config: RotationConfig,
    policy: Arc<dyn AuthFailurePolicy>,
    state: Mutex<State>,
    counters: Counters,
    apply: Apply,
    /// Dropped with the rotation: tells its follower task to stop.
    shutdown: tokio::sync::watch::Sender<()>,
}

impl Rotation {
    pub(crate) fn new(
        handle: SecretHandle<PgCredentials>,
        config: RotationConfig,
        policy: Option<Arc<dyn AuthFailurePolicy>>,
        apply: Apply,
    ) -> Arc<Self> {
        let snapshot = handle.load_full();
        let rotation = Arc::new(Rotation {
            config,
            policy: policy.unwrap_or_else(|| Arc::new(SqlStatePolicy::default())),
            state: Mutex::new(State {
                epoch: 0,
                version: snapshot.version().id.clone(),
                use_previous: false,
                snapshot,
                rotated_at: None,
                drain_deadline: None,
                awaiting_first_connect: None,
            }),
            counters: Counters::default(),
            apply,
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

    /// The credentials to connect with now, after taking in any new version of the handle.
    pub(crate) fn current(&self) -> Chosen {
        let mut state = self.lock();
        let _ = self.take_new_version(&mut state);
        self.chosen(&state)
    }

    /// Takes in a new version of the handle, if there is one.
    pub(crate) fn sync(&self) {
        let mut state = self.lock();
        let _ = self.take_new_version(&mut state);
    }

    fn take_new_version(&self, state: &mut State) -> bool {
        let snapshot = self.handle.load();
        if snapshot.version().id == state.version {
            return false;
        }
        let snapshot = Arc::clone(&*snapshot);
        let now = Instant::now();
        // Old connections go after the drain delay, and before the old lease ends, whichever is
        // first.
        let mut deadline = crate::time::later(now, self.config.drain_delay);
        if let Some(lease) = &state.snapshot.version().lease {
            let left = lease
                .expires_at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .saturating_sub(self.config.lease_margin);
            deadline = deadline.min(crate::time::later(now, left));
        }
        tracing::info!(
            old = %state.version,
            new = %snapshot.version().id,
            drain_in = ?deadline.saturating_duration_since(now),
            "credswap: new database credentials for new connections"
        );
        state.version = snapshot.version().id.clone();
        state.snapshot = snapshot;
        state.use_previous = false;
        state.epoch += 1;
        state.rotated_at = Some(now);
        state.drain_deadline = Some(deadline);
        state.awaiting_first_connect = Some((state.epoch, now));
        bump(&self.counters.credential_swaps);
        (self.apply)(&self.chosen(state));
        true
    }

    /// Fires (closes) when the rotation is dropped.
    pub(crate) fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<()> {
        self.shutdown.subscribe()
    }

    /// Applies the current choice again (after the pool it applies to came into being).
    #[cfg(feature = "sqlx")]
    pub(crate) fn reapply(&self) {
        let mut state = self.lock();
        let _ = self.take_new_version(&mut state);
        (self.apply)(&self.chosen(&state));
    }

    /// When old connections must go, if a rotation is pending or done.
    pub(crate) fn drain_deadline(&self) -> Option<Instant> {
        self.lock().drain_deadline
    }

    /// Whether a connection opened `age` ago must be closed now.
    fn should_retire(&self, age: Duration) -> bool {
        let now = Instant::now();
        let state = self.lock();
        let (Some(rotated_at), Some(deadline)) = (state.rotated_at, state.drain_deadline) else {
            return false;
        };
        let opened_at = now.checked_sub(age).unwrap_or(now);
        opened_at < rotated_at && now >= deadline
    }

    /// Whether a connection opened `age` ago must be closed now; counts it as drained if so.
    pub(crate) fn retire(&self, age: Duration) -> bool {
        let retire = self.should_retire(age);
        if retire {
            bump(&self.counters.connections_drained);
        }
        retire
    }

    /// A connection was opened with the credentials of `epoch`.
    pub(crate) fn record_connected(&self, epoch: u64) {
        let mut state = self.lock();
        if let Some((waiting_epoch, since)) = state.awaiting_first_connect {
            if epoch >= waiting_epoch {
                let latency = since.elapsed();
                let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX - 1);
                self.counters
                    .last_update_latency
                    .store(nanos + 1, Ordering::Relaxed);
                state.awaiting_first_connect = None;
                tracing::debug!(?latency, "credswap: first connection with new credentials");
            }
        }
    }

    /// The epoch in force now (for connections whose credentials we cannot see, as in sqlx).
    #[cfg(feature = "sqlx")]
    pub(crate) fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    pub(crate) fn is_auth_failure(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        is_auth_failure(&*self.policy, error)
    }

    /// Reacts to a rejected login made with the credentials of `epoch`: asks the cache for the
    /// newest version (coalesced), and if there is none, switches between the current and the
    /// previous credentials (while the previous are inside their grace period).
    pub(crate) async fn on_auth_failure(&self, epoch: u64) {
        bump(&self.counters.auth_failures);
        {
            let mut state = self.lock();
            if self.take_new_version(&mut state) || state.epoch != epoch {
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
        if self.take_new_version(&mut state) || state.epoch != epoch {
            // New credentials, or another task already switched: just retry.
            return;
        }
        let has_previous = state.snapshot.previous().is_some();
        if !state.use_previous && has_previous {
            state.use_previous = true;
            bump(&self.counters.fallbacks_to_previous);
            tracing::info!("credswap: current credentials rejected; trying the previous ones");
        } else if state.use_previous {
            state.use_previous = false;
        } else {
            return;
        }
        state.epoch += 1;
        (self.apply)(&self.chosen(&state));
    }

    pub(crate) fn record_retry(&self) {
        bump(&self.counters.retries);
    }

    pub(crate) fn record_exhausted(&self) {
        bump(&self.counters.exhausted);
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PoolStats {
            auth_failures: load(&c.auth_failures),
            retries: load(&c.retries),
            refreshes_requested: load(&c.refreshes_requested),
            fallbacks_to_previous: load(&c.fallbacks_to_previous),
            exhausted: load(&c.exhausted),
            credential_swaps: load(&c.credential_swaps),
            connections_drained: load(&c.connections_drained),
            last_update_latency: match load(&c.last_update_latency) {
                0 => None,
                n => Some(Duration::from_nanos(n - 1)),
            },
        }
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
                let wait = rotation.config.backoff(failures);
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

/// Follows the handle: applies each new version as soon as it appears, and once the drain deadline
/// passes, calls `drain` so idle old connections are closed. Ends when `alive` reports false or the
/// pool's shutdown signal fires.
pub(crate) fn spawn_follower(
    rotation: std::sync::Weak<Rotation>,
    handle: SecretHandle<PgCredentials>,
    mut shutdown: tokio::sync::watch::Receiver<()>,
    drain: impl Fn() + Send + 'static,
) {
    let _task = tokio::spawn(async move {
        let mut pending_drain: Option<Instant> = None;
        loop {
            let drain_at = pending_drain;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = handle.changed() => {}
                () = sleep_until_opt(drain_at) => {
                    pending_drain = None;
                    drain();
                    continue;
                }
            }
            let Some(rotation) = rotation.upgrade() else {
                return;
            };
            // The swap may already have been taken in by a connection attempt: either way, the
            // drain deadline of the newest rotation is the one to wait for.
            rotation.sync();
            pending_drain = rotation.drain_deadline();
        }
    });
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
