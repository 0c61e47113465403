//! [`PoolMonitor`]: what a rotating pool tells its user, its counters, a record per version of
//! the credentials and an event for each step of a rotation (the vocabulary is in `events.rs`).

use std::fmt;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::credentials::PgCredentials;
use super::events::{ConnectionTiming, Connections, PoolEvent, PoolStats, RotationRecord};
use super::rotation::Rotation;
use crate::handle::SecretHandle;

/// Watches a rotating pool (either kind): counters, per-version records, events.
///
/// Get one from [`RotatingPgPool::monitor`](crate::pg::RotatingPgPool::monitor) or
/// [`RotatingDeadpoolBuilder::build_monitored`](crate::pg::RotatingDeadpoolBuilder::build_monitored).
#[derive(Clone)]
pub struct PoolMonitor {
    pub(crate) rotation: Arc<Rotation>,
}

impl fmt::Debug for PoolMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolMonitor")
            .field("stats", &self.stats())
            .finish()
    }
}

impl PoolMonitor {
    /// Counters since the pool was built.
    pub fn stats(&self) -> PoolStats {
        self.rotation.stats()
    }

    /// A record for each version of the credentials the pool used (the last 32), oldest first.
    pub fn rotations(&self) -> Vec<RotationRecord> {
        self.rotation.rotations()
    }

    /// A receiver of every [`PoolEvent`] from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PoolEvent> {
        self.rotation.subscribe()
    }

    /// The pool's connections now: in use, idle, the maximum and the callers waiting.
    pub fn connections(&self) -> Connections {
        self.rotation.connections().unwrap_or_default()
    }

    /// Calls `hook` with each measured connection step (a connection opened, a caller's wait
    /// for one), on the task where it happened: keep it short; a hook that panics is contained.
    /// Timings are not broadcast: there is one per acquire.
    pub fn on_timing(&self, hook: impl Fn(&ConnectionTiming) + Send + Sync + 'static) {
        self.rotation.on_timing(Arc::new(hook));
    }

    /// Calls `hook` with every [`PoolEvent`] from now on, on the task where it happened.
    pub fn on_event(&self, hook: impl Fn(&PoolEvent) + Send + Sync + 'static) {
        self.rotation.on_event(Arc::new(hook));
    }

    /// A reference that does not keep the pool's rotation state alive.
    #[cfg(feature = "metrics")]
    pub(crate) fn downgrade(&self) -> WeakMonitor {
        WeakMonitor(Arc::downgrade(&self.rotation))
    }

    /// The credentials handle the pool follows.
    pub fn handle(&self) -> &SecretHandle<PgCredentials> {
        &self.rotation.handle
    }
}

/// A [`PoolMonitor`] whose pool may be gone.
#[cfg(feature = "metrics")]
pub(crate) struct WeakMonitor(std::sync::Weak<Rotation>);

#[cfg(feature = "metrics")]
impl WeakMonitor {
    /// The monitor, while the pool's rotation state lives.
    pub(crate) fn upgrade(&self) -> Option<PoolMonitor> {
        self.0.upgrade().map(|rotation| PoolMonitor { rotation })
    }
}
