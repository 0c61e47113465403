//! What a handle holds at one moment.

use std::fmt;
use std::sync::Arc;

use crate::time::Instant;
use crate::value::Version;

/// What a handle holds at one moment: the current value and, for a grace period after a swap, the
/// one before it.
pub struct Snapshot<T> {
    pub(super) current: Arc<T>,
    pub(super) version: Version,
    /// When the current value's lease ends, on Tokio's clock.
    pub(super) lease_end: Option<Instant>,
    pub(super) previous: Option<Previous<T>>,
}

pub(super) struct Previous<T> {
    pub(super) value: Arc<T>,
    pub(super) version: Version,
    pub(super) valid_until: Instant,
}

impl<T> Clone for Previous<T> {
    fn clone(&self) -> Self {
        Previous {
            value: Arc::clone(&self.value),
            version: self.version.clone(),
            valid_until: self.valid_until,
        }
    }
}

impl<T> Snapshot<T> {
    /// The current value.
    pub fn current(&self) -> &T {
        &self.current
    }

    /// The current value's version.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// The value before the last swap, while its grace period lasts. For a handle opened during
    /// a rotation's grace period, the store's previous version (AWS `AWSPREVIOUS`, Vault KV's
    /// newest live earlier version), until the current version's creation time plus the grace
    /// period.
    pub fn previous(&self) -> Option<&T> {
        self.previous
            .as_ref()
            .filter(|p| Instant::now() < p.valid_until)
            .map(|p| &*p.value)
    }

    /// The version of the value before the last swap (also after its grace period ended).
    pub fn previous_version(&self) -> Option<&Version> {
        self.previous.as_ref().map(|p| &p.version)
    }

    /// Until when [`previous`](Self::previous) is accepted, on Tokio's clock
    /// ([`tokio::time::Instant`]).
    pub fn previous_valid_until(&self) -> Option<Instant> {
        self.previous.as_ref().map(|p| p.valid_until)
    }

    /// When the current value's lease ends (leased secrets such as Vault dynamic credentials), on
    /// Tokio's clock. The handle swaps to new credentials before then unless the store fails.
    pub fn lease_end(&self) -> Option<Instant> {
        self.lease_end
    }

    /// Which value `check` accepts: the current one, the previous one within its grace period,
    /// the previous one after it (a retired key, told apart from an unknown one), or neither.
    /// `check` always runs on both values, so a constant-time `check` keeps the whole answer
    /// constant-time.
    #[cfg(any(feature = "http-server", feature = "jwt"))]
    pub(crate) fn matching(&self, check: impl Fn(&T) -> bool) -> Matched<'_, T> {
        let current = check(&self.current);
        let previous = self.previous.as_ref().map(|p| (check(&p.value), p));
        if current {
            return Matched::Current(&self.current);
        }
        match previous {
            Some((true, p)) if Instant::now() < p.valid_until => {
                Matched::Previous(&p.value, &p.version)
            }
            Some((true, _)) => Matched::PreviousExpired,
            _ => Matched::Neither,
        }
    }

    /// Whether `check` accepts the current value, or the previous one while its grace period lasts:
    /// a validator's dual-read during a rotation (an API key checked against both the new and the
    /// old key, until every client has moved on).
    pub fn accepts(&self, check: impl Fn(&T) -> bool) -> bool {
        check(&self.current) || self.previous().is_some_and(check)
    }
}

/// What [`Snapshot::matching`] found.
#[cfg(any(feature = "http-server", feature = "jwt"))]
pub(crate) enum Matched<'a, T> {
    Current(&'a T),
    Previous(&'a T, &'a Version),
    PreviousExpired,
    Neither,
}

impl<T> fmt::Debug for Snapshot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values are never printed, whatever T is.
        f.debug_struct("Snapshot")
            .field("version", &self.version.id)
            .field(
                "previous_version",
                &self.previous.as_ref().map(|p| &p.version.id),
            )
            .field("previous_valid_until", &self.previous_valid_until())
            .field("lease_end", &self.lease_end)
            .finish_non_exhaustive()
    }
}
