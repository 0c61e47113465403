//! The pools' vocabulary: what a rotating pool counts ([`PoolStats`]), remembers of each version
//! of its credentials ([`RotationRecord`]) and reports ([`PoolEvent`]).

use std::time::Duration;

use crate::time::Instant;
use crate::value::VersionId;

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
    /// Times the pool fell back to the previous credentials (alternating users, inside grace).
    pub fallbacks_to_previous: u64,
    /// Times the retry budget was spent and the caller saw the error.
    pub exhausted: u64,
    /// Times new credentials were applied for new connections.
    pub credential_swaps: u64,
    /// Connections closed because they were opened with credentials past their drain deadline.
    pub connections_drained: u64,
    /// Time from the pool taking in a version to the first connection opened with it, for the
    /// latest version that has one (consumer update latency). Every version's is in
    /// [`PoolMonitor::rotations`](super::PoolMonitor::rotations).
    pub last_update_latency: Option<Duration>,
}

/// How many connections a pool has, for the OpenTelemetry `db.client.connection.*` gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Connections {
    /// Open connections in use by a caller.
    pub used: u64,
    /// Open connections waiting in the pool.
    pub idle: u64,
    /// The most connections the pool opens.
    pub max: u64,
    /// Callers waiting for a connection.
    pub pending: u64,
}

/// A measured step of handing out a connection, for the OpenTelemetry `create_time` and
/// `wait_time` histograms. See [`PoolMonitor::on_timing`](super::PoolMonitor::on_timing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionTiming {
    /// A new connection was opened (login included) in this long. The deadpool pool measures
    /// its own connect; the sqlx pool measures from the acquire that caused it (sqlx opens the
    /// connection inside it, at once unless every connection is in use).
    Created(Duration),
    /// A caller of [`RotatingPgPool::acquire`](super::RotatingPgPool::acquire) waited this long
    /// for a connection, retries included. (deadpool's `get` is deadpool's own and is not timed.)
    Waited(Duration),
}

impl crate::events::Event for ConnectionTiming {
    fn log(&self) {}

    fn name(&self) -> &'static str {
        match self {
            ConnectionTiming::Created(_) => "connection_created",
            ConnectionTiming::Waited(_) => "connection_waited",
        }
    }
}

/// What a rotating pool knows about one version of its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationRecord {
    /// The version.
    pub version: VersionId,
    /// When the pool took it in (Tokio's clock).
    pub seen_at: Instant,
    /// From taking it in to the first connection opened with it.
    pub update_latency: Option<Duration>,
    /// When a newer version replaced it.
    pub replaced_at: Option<Instant>,
    /// When its connections must go (the drain delay after the replacement, or its lease's end
    /// minus the margin, whichever is first).
    pub drain_deadline: Option<Instant>,
    /// Connections opened with it.
    pub connections_opened: u64,
    /// Connections closed because its deadline passed.
    pub connections_drained: u64,
}

/// A step of a rotation, as a rotating pool lived it. Carries versions and counts, never
/// credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolEvent {
    /// New connections use `version` from now on; connections of `replaced` go within
    /// `drain_in`.
    NewCredentials {
        /// The version now used for new connections.
        version: VersionId,
        /// The version it replaced.
        replaced: VersionId,
        /// How long until the connections of `replaced` are closed.
        drain_in: Duration,
    },
    /// The first connection with `version` opened: the consumer update latency.
    FirstConnection {
        /// The version.
        version: VersionId,
        /// From the pool taking it in to this connection.
        update_latency: Duration,
        /// From the version's creation in the store (when the store says) to this connection:
        /// the consumer update latency end to end.
        since_created: Option<Duration>,
    },
    /// A connection opened with `version` was closed because its drain deadline had passed.
    ConnectionRetired {
        /// The version it was opened with.
        version: VersionId,
        /// From the version's replacement to this close; the largest is when the version's
        /// last drained connection went.
        since_replaced: Duration,
    },
    /// The current credentials were rejected and the pool tries the previous ones (alternating
    /// users, inside their grace period).
    FallbackToPrevious {
        /// The previous version now used for new connections.
        version: VersionId,
    },
    /// The drain deadline of `version` passed: its idle connections were closed, and busy ones
    /// are closed when they come back. `drained` counts those closed so far.
    Drained {
        /// The version whose connections go.
        version: VersionId,
        /// Connections of it closed so far.
        drained: u64,
    },
}

impl crate::events::Event for PoolEvent {
    fn log(&self) {
        match self {
            PoolEvent::NewCredentials {
                version,
                replaced,
                drain_in,
            } => tracing::info!(
                old = %replaced,
                new = %version,
                ?drain_in,
                "credswap: new database credentials for new connections"
            ),
            PoolEvent::FirstConnection {
                version,
                update_latency,
                ..
            } => tracing::debug!(
                %version,
                latency = ?update_latency,
                "credswap: first connection with new credentials"
            ),
            PoolEvent::FallbackToPrevious { version } => tracing::info!(
                %version,
                "credswap: current credentials rejected; trying the previous ones"
            ),
            PoolEvent::ConnectionRetired {
                version,
                since_replaced,
            } => tracing::trace!(
                %version,
                ?since_replaced,
                "credswap: closed a connection opened with rotated credentials"
            ),
            PoolEvent::Drained { version, drained } => tracing::debug!(
                %version,
                drained,
                "credswap: drain deadline passed for old credentials"
            ),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            PoolEvent::NewCredentials { .. } => "new_credentials",
            PoolEvent::FirstConnection { .. } => "first_connection",
            PoolEvent::FallbackToPrevious { .. } => "fallback_to_previous",
            PoolEvent::ConnectionRetired { .. } => "connection_retired",
            PoolEvent::Drained { .. } => "drained",
        }
    }
}
