//! What a handle can say about the value it serves.

use crate::error::{Error, ErrorKind};
use crate::time::Instant;
use crate::value::VersionId;

/// What a handle can say about the value it serves. [`SecretHandle::load`](crate::SecretHandle::load)
/// never fails and never blocks: it serves the last good snapshot in every case below, and this
/// status says how far to trust it.
///
/// | status | what happened | what `load()` serves |
/// |---|---|---|
/// | `Fresh` | the store confirmed the version at the last check | the current version |
/// | `Stale` | the store is unreachable or throttling | last-known-good (the cache's `get` serves it too, up to `max_stale`) |
/// | `Failing` | the store says the secret is gone or access is denied | the last value, no longer confirmed (the cache's `get` fails) |
/// | `LeaseExpired` | the value's lease ended and no new credentials came | the expired credentials, which no longer work |
/// | `DecodeFailed` | the store's newer version does not decode into the handle's type | the last version that did |
///
/// Every change of state is also a [`SecretEvent::HandleStatusChanged`](crate::SecretEvent::HandleStatusChanged).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HandleStatus {
    /// The store confirmed the version the handle serves at its last check.
    Fresh,
    /// The store could not be asked (unreachable, throttled, 5xx) since `since`: the handle serves
    /// last-known-good.
    Stale {
        /// The last store error.
        error: Error,
        /// When the store started failing.
        since: Instant,
    },
    /// The store answered, at `since`, that the secret is gone or that access is denied: the
    /// handle still serves its last value, which may no longer work.
    Failing {
        /// The store's answer.
        error: Error,
        /// When it first said so.
        since: Instant,
    },
    /// The lease of the value the handle serves ended at `at`: those credentials no longer work.
    LeaseExpired {
        /// When the lease ended.
        at: Instant,
    },
    /// The store's newer version `version` could not be decoded: the handle serves the last one
    /// that could.
    DecodeFailed {
        /// Why (without any of the content).
        error: Error,
        /// The version that could not be decoded.
        version: VersionId,
    },
}

/// Equal when the variant and its details are: errors compare by kind and message.
impl PartialEq for HandleStatus {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &Error, b: &Error| a.kind() == b.kind() && a.to_string() == b.to_string();
        match (self, other) {
            (HandleStatus::Fresh, HandleStatus::Fresh) => true,
            (
                HandleStatus::Stale { error, since },
                HandleStatus::Stale {
                    error: other_error,
                    since: other_since,
                },
            )
            | (
                HandleStatus::Failing { error, since },
                HandleStatus::Failing {
                    error: other_error,
                    since: other_since,
                },
            ) => since == other_since && same(error, other_error),
            (HandleStatus::LeaseExpired { at }, HandleStatus::LeaseExpired { at: other }) => {
                at == other
            }
            (
                HandleStatus::DecodeFailed { error, version },
                HandleStatus::DecodeFailed {
                    error: other_error,
                    version: other_version,
                },
            ) => version == other_version && same(error, other_error),
            _ => false,
        }
    }
}

impl Eq for HandleStatus {}

impl HandleStatus {
    /// A short, stable, lower-case name of the status without its details (`"fresh"`,
    /// `"stale"`, `"failing"`, `"lease_expired"`, `"decode_failed"`), for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            HandleStatus::Fresh => "fresh",
            HandleStatus::Stale { .. } => "stale",
            HandleStatus::Failing { .. } => "failing",
            HandleStatus::LeaseExpired { .. } => "lease_expired",
            HandleStatus::DecodeFailed { .. } => "decode_failed",
        }
    }

    /// Whether the store confirmed the value at its last check.
    pub fn is_fresh(&self) -> bool {
        matches!(self, HandleStatus::Fresh)
    }

    /// The error behind a status other than `Fresh`.
    pub fn error(&self) -> Option<Error> {
        match self {
            HandleStatus::Fresh => None,
            HandleStatus::Stale { error, .. }
            | HandleStatus::Failing { error, .. }
            | HandleStatus::DecodeFailed { error, .. } => Some(error.clone()),
            HandleStatus::LeaseExpired { .. } => Some(
                Error::new(ErrorKind::AccessDenied)
                    .with_message("the lease of the credentials ended and no new ones were issued"),
            ),
        }
    }

    /// The status as a handle's store-driven state becomes, given that a load failed with `error`.
    pub(super) fn after_failure(&self, error: &Error, now: Instant) -> HandleStatus {
        if error.allows_stale() {
            let since = match self {
                HandleStatus::Stale { since, .. } => *since,
                _ => now,
            };
            HandleStatus::Stale {
                error: error.clone(),
                since,
            }
        } else {
            let since = match self {
                HandleStatus::Failing { since, .. } => *since,
                _ => now,
            };
            HandleStatus::Failing {
                error: error.clone(),
                since,
            }
        }
    }

    /// This status, seen at `now` for a value whose lease ends at `lease_end`: an ended lease
    /// outranks everything else.
    pub(super) fn at(&self, now: Instant, lease_end: Option<Instant>) -> HandleStatus {
        match lease_end {
            Some(at) if now >= at => HandleStatus::LeaseExpired { at },
            _ => self.clone(),
        }
    }
}
