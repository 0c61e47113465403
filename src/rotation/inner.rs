//! What every call of a [`Rotator`](super::Rotator) shares: the store, the target, the strategy,
//! the password policy, the hooks and the audit trail's emitter.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::events::{AuditOutcome, RotationEvent};
use super::password::PasswordPolicy;
use super::steps::FinishedRotation;
use super::store::RotationStore;
use super::strategy::Strategy;
use super::target::RotationTarget;
use crate::error::{Error, ErrorKind};
use crate::events::Emitter;

pub(crate) type FinishedHook =
    Arc<dyn Fn(FinishedRotation) -> BoxFuture<'static, ()> + Send + Sync>;

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn RotationStore>,
    pub(crate) target: Arc<dyn RotationTarget>,
    pub(crate) strategy: Strategy,
    pub(crate) policy: PasswordPolicy,
    pub(crate) on_finished: Vec<FinishedHook>,
    pub(crate) resume_orphaned: bool,
    pub(crate) store_timeout: Duration,
    pub(crate) events: Emitter<RotationEvent>,
}

pub(crate) fn emit(inner: &Inner, event: RotationEvent) {
    inner.events.emit(event);
}

pub(crate) fn failure_outcome(error: &Error) -> AuditOutcome {
    if error.kind() == ErrorKind::RolledBack {
        AuditOutcome::RolledBack
    } else {
        AuditOutcome::Failed(error.kind())
    }
}
