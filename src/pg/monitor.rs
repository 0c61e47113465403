//! [`PoolMonitor`]: what a rotating pool tells its user, its counters, a record per version of
//! the credentials and an event for each step of a rotation (the vocabulary is in `events.rs`).

use std::fmt;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::credentials::PgCredentials;
use super::events::{PoolEvent, PoolStats, RotationRecord};
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

    /// The credentials handle the pool follows.
    pub fn handle(&self) -> &SecretHandle<PgCredentials> {
        &self.rotation.handle
    }
}
