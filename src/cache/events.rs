//! The cache's vocabulary: what happens to secrets (for hooks, audit logs and metrics), the
//! states of a handle, and the cache's counters.
//!
//! Events carry ids, versions, error kinds and durations, never values, so they are safe to log
//! as they are.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ErrorKind;
use crate::events::Event;
use crate::handle::status::HandleStatus;
use crate::value::{Selector, VersionId};

/// Something that happened to a secret in a [`SecretCache`](crate::SecretCache).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretEvent {
    /// A secret was fetched from the store for the first time (or after an invalidation).
    Fetched {
        /// The secret id.
        id: Arc<str>,
        /// Which version was asked for.
        selector: Selector,
        /// The version the store returned.
        version: VersionId,
    },
    /// The store returned a version different from the cached one.
    Rotated {
        /// The secret id.
        id: Arc<str>,
        /// Which version was asked for.
        selector: Selector,
        /// The version the cache held before.
        old: VersionId,
        /// The version it holds now.
        new: VersionId,
    },
    /// A fetch or refresh failed.
    RefreshFailed {
        /// The secret id.
        id: Arc<str>,
        /// What failed.
        kind: ErrorKind,
        /// How many failures in a row, this one included.
        consecutive_failures: u32,
        /// How long the cache waits before it asks the store again.
        retry_in: Duration,
    },
    /// Last-known-good was served because the store failed.
    ServedStale {
        /// The secret id.
        id: Arc<str>,
        /// The version served.
        version: VersionId,
        /// How long past its TTL the served value is.
        stale_for: Duration,
    },
    /// A secret was removed from the cache by [`invalidate`](crate::SecretCache::invalidate) or
    /// [`invalidate_all`](crate::SecretCache::invalidate_all) (then `id` is `*`).
    Invalidated {
        /// The secret id.
        id: Arc<str>,
    },
    /// A handle could not decode a new version and kept its previous snapshot.
    DecodeFailed {
        /// The secret id.
        id: Arc<str>,
        /// The version that could not be decoded.
        version: VersionId,
        /// Why, without any of the content.
        reason: Arc<str>,
    },
    /// A lease was renewed; the credentials stay the same.
    LeaseRenewed {
        /// The secret id.
        id: Arc<str>,
        /// The version whose lease was renewed.
        version: VersionId,
        /// How long the renewed lease lasts.
        expires_in: Duration,
    },
    /// A handle swapped its snapshot to a new version.
    HandleSwapped {
        /// The secret id.
        id: Arc<str>,
        /// The version the handle held before.
        old: VersionId,
        /// The version it holds now.
        new: VersionId,
        /// From the new version's creation in the store (its wall-clock time, when the store
        /// says) to the swap: the first part of the consumer update latency.
        since_created: Option<Duration>,
    },
    /// What a handle can say about the value it serves changed: it became stale, failing, expired
    /// or fresh again. See [`HandleStatus`](crate::handle::HandleStatus).
    HandleStatusChanged {
        /// The secret id.
        id: Arc<str>,
        /// The version the handle serves.
        version: VersionId,
        /// The new status, with the error behind it (which never carries a value).
        status: HandleStatus,
    },
}

impl SecretEvent {
    /// The id of the secret the event concerns.
    pub fn id(&self) -> &str {
        match self {
            SecretEvent::Fetched { id, .. }
            | SecretEvent::Rotated { id, .. }
            | SecretEvent::RefreshFailed { id, .. }
            | SecretEvent::ServedStale { id, .. }
            | SecretEvent::Invalidated { id }
            | SecretEvent::DecodeFailed { id, .. }
            | SecretEvent::LeaseRenewed { id, .. }
            | SecretEvent::HandleSwapped { id, .. }
            | SecretEvent::HandleStatusChanged { id, .. } => id,
        }
    }

    /// A short stable name for the event (`"rotated"`, `"served_stale"`, …).
    pub fn name(&self) -> &'static str {
        match self {
            SecretEvent::Fetched { .. } => "fetched",
            SecretEvent::Rotated { .. } => "rotated",
            SecretEvent::RefreshFailed { .. } => "refresh_failed",
            SecretEvent::ServedStale { .. } => "served_stale",
            SecretEvent::Invalidated { .. } => "invalidated",
            SecretEvent::DecodeFailed { .. } => "decode_failed",
            SecretEvent::LeaseRenewed { .. } => "lease_renewed",
            SecretEvent::HandleSwapped { .. } => "handle_swapped",
            SecretEvent::HandleStatusChanged { .. } => "handle_status_changed",
        }
    }
}

/// Counters of a cache since it was built. See [`SecretCache::stats`](crate::SecretCache::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads answered from the cache without waiting for the store.
    pub hits: u64,
    /// Reads that had to wait for the store (missing or expired keys).
    pub misses: u64,
    /// Calls made to the provider, fetches and probes together.
    pub provider_calls: u64,
    /// Of those, fetches of a value.
    pub fetches: u64,
    /// Of those, cheap version probes.
    pub probes: u64,
    /// Fetches or refreshes that failed.
    pub refresh_failures: u64,
    /// Reads answered with last-known-good because the store failed (every one is counted; the
    /// [`SecretEvent::ServedStale`] event is emitted once per entry and backoff step).
    pub stale_serves: u64,
    /// Reads answered with a remembered not-found or access-denied answer, without a store call.
    pub negative_hits: u64,
    /// Times a newer version replaced a cached one.
    pub rotations: u64,
    /// Lease renewals that kept the credentials.
    pub lease_renewals: u64,
    /// Of the misses, reads that joined a load already under way instead of starting one.
    pub coalesced_waits: u64,
    /// Leased credentials replaced by new ones because their lease could not be renewed in full.
    pub lease_replacements: u64,
}

/// What one call of a [`SecretCache`](crate::SecretCache) to its store asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreOperation {
    /// A cheap version check ([`SecretProvider::probe`](crate::provider::SecretProvider::probe)).
    Probe,
    /// A read of the value.
    Fetch,
    /// A lease renewal.
    RenewLease,
}

impl StoreOperation {
    /// A short, stable, lower-case name (`"probe"`, `"fetch"`, `"renew_lease"`), for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOperation::Probe => "probe",
            StoreOperation::Fetch => "fetch",
            StoreOperation::RenewLease => "renew_lease",
        }
    }
}

/// One call a [`SecretCache`](crate::SecretCache) made to its store, reported to the hooks of
/// [`on_store_call`](crate::SecretCache::on_store_call) (for metrics: one per call, rarer than
/// reads by the cache's design). Carries the id, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreCall {
    /// The secret id.
    pub id: Arc<str>,
    /// The provider's [`name`](crate::provider::SecretProvider::name).
    pub provider: Arc<str>,
    /// What was asked.
    pub operation: StoreOperation,
    /// `None` when the store answered, else the kind of error.
    pub error: Option<ErrorKind>,
    /// How long the call took.
    pub duration: Duration,
}

impl StoreCall {
    /// `"ok"`, or the error kind's name: the outcome label of a store-call metric.
    pub fn outcome(&self) -> &'static str {
        self.error.map_or("ok", ErrorKind::as_str)
    }
}

impl Event for StoreCall {
    fn log(&self) {
        tracing::trace!(
            id = %self.id,
            provider = %self.provider,
            operation = self.operation.as_str(),
            outcome = self.outcome(),
            duration_ms = self.duration.as_secs_f64() * 1e3,
            "credswap: store call"
        );
    }

    fn name(&self) -> &'static str {
        "store_call"
    }

    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

impl Event for SecretEvent {
    fn log(&self) {
        let (name, id) = (self.name(), self.id());
        match self {
            SecretEvent::RefreshFailed { .. } | SecretEvent::ServedStale { .. } => {
                tracing::warn!(event = name, id, details = ?self, "secret event");
            }
            SecretEvent::DecodeFailed { .. } => {
                tracing::error!(event = name, id, details = ?self, "secret event");
            }
            SecretEvent::HandleStatusChanged { status, .. } if !status.is_fresh() => {
                tracing::warn!(event = name, id, details = ?self, "secret event");
            }
            SecretEvent::Fetched { .. } => {
                tracing::debug!(event = name, id, details = ?self, "secret event");
            }
            _ => {
                tracing::info!(event = name, id, details = ?self, "secret event");
            }
        }
    }

    fn name(&self) -> &'static str {
        SecretEvent::name(self)
    }

    fn id(&self) -> Option<&str> {
        Some(SecretEvent::id(self))
    }
}
