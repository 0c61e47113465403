//! The audit trail: one event per step, with ids, versions, outcome and duration, never a value.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ErrorKind;
use crate::value::VersionId;

use super::steps::Step;

/// What an event reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditActivity {
    /// One of the four steps.
    Step(Step),
    /// Undoing a rotation whose `test` failed or whose `finish` found the secret written
    /// meanwhile, or an [`abort`](super::Rotator::abort).
    Rollback,
    /// A whole rotation (`rotate`, `resume`): its result.
    Rotation,
}

impl fmt::Display for AuditActivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditActivity::Step(step) => f.write_str(step.as_aws_str()),
            AuditActivity::Rollback => f.write_str("rollback"),
            AuditActivity::Rotation => f.write_str("rotation"),
        }
    }
}

/// How it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditOutcome {
    /// Done now.
    Done,
    /// Nothing to do: an earlier run had done it (a re-run after a crash or timeout).
    AlreadyDone,
    /// Another rotation of the secret is under way; nothing was changed.
    UnderWay,
    /// The current version is younger than the minimum age; nothing was changed.
    NotDue,
    /// `test` failed, or `finish` found the secret written meanwhile, and the rotation was undone.
    RolledBack,
    /// Failed with this kind of error.
    Failed(ErrorKind),
}

impl fmt::Display for AuditOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditOutcome::Done => f.write_str("done"),
            AuditOutcome::AlreadyDone => f.write_str("already_done"),
            AuditOutcome::UnderWay => f.write_str("under_way"),
            AuditOutcome::NotDue => f.write_str("not_due"),
            AuditOutcome::RolledBack => f.write_str("rolled_back"),
            AuditOutcome::Failed(kind) => write!(f, "failed:{kind}"),
        }
    }
}

/// One entry of the rotation audit trail.
///
/// Sent on [`Rotator::subscribe`](super::Rotator::subscribe) and logged as a `tracing` event
/// (target `credswap::rotation`, INFO; WARN for failures and rollbacks) with the same fields.
/// It carries ids, versions and kinds, never a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationEvent {
    /// One id per `rotate`/`resume`/`abort`/`step` call, to group its events.
    pub rotation_id: Arc<str>,
    /// The secret, by the store's one name for it
    /// ([`canonical_id`](super::RotationStore::canonical_id): AWS its name, Vault mount and path).
    pub secret_id: Arc<str>,
    /// The step (or rollback, or the whole rotation).
    pub activity: AuditActivity,
    /// The rotation's token: the pending version's id.
    pub token: Option<Arc<str>>,
    /// The version that was current when the step ran.
    pub old_version: Option<VersionId>,
    /// The version that is current after it (set by `finish`).
    pub new_version: Option<VersionId>,
    /// How it went.
    pub outcome: AuditOutcome,
    /// How long it took.
    pub duration: Duration,
}

impl crate::events::Event for RotationEvent {
    fn name(&self) -> &'static str {
        "rotation"
    }

    fn id(&self) -> Option<&str> {
        Some(&self.secret_id)
    }

    fn log(&self) {
        let token = self.token.as_deref().unwrap_or("");
        let old = self.old_version.as_ref().map_or("", VersionId::as_str);
        let new = self.new_version.as_ref().map_or("", VersionId::as_str);
        let duration_ms = self.duration.as_secs_f64() * 1e3;
        match self.outcome {
            AuditOutcome::Failed(_) | AuditOutcome::RolledBack => tracing::warn!(
                target: "credswap::rotation",
                rotation_id = %self.rotation_id,
                secret_id = %self.secret_id,
                step = %self.activity,
                token,
                old_version = old,
                new_version = new,
                outcome = %self.outcome,
                duration_ms,
                "credswap: rotation {}",
                self.activity
            ),
            _ => tracing::info!(
                target: "credswap::rotation",
                rotation_id = %self.rotation_id,
                secret_id = %self.secret_id,
                step = %self.activity,
                token,
                old_version = old,
                new_version = new,
                outcome = %self.outcome,
                duration_ms,
                "credswap: rotation {}",
                self.activity
            ),
        }
    }
}
