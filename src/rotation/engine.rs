//! The steps themselves: each re-checks the state it would create and does nothing when it finds
//! it, so any step can be re-run after a crash or a timeout.

use std::sync::Arc;
use std::time::Instant;

use super::events::{Activity, Outcome, RotationEvent};
use super::protocol::{
    Inner, RotationOutcome, Step, StepOutcome, emit, failure_outcome, new_token,
};
use super::strategy::SecretDocument;
use super::target::TargetSession;
use crate::error::{Error, ErrorKind, Result};
use crate::value::VersionId;

/// One call's worth of work on one secret: its rotation id and its events.
pub(crate) struct Run<'a> {
    inner: &'a Inner,
    rotation_id: Arc<str>,
    secret_id: Arc<str>,
    started: Instant,
}

/// What a step did, for its event.
struct Done {
    outcome: StepOutcome,
    old_version: Option<VersionId>,
    new_version: Option<VersionId>,
}

impl Done {
    fn now(old_version: Option<VersionId>) -> Self {
        Done {
            outcome: StepOutcome::Done,
            old_version,
            new_version: None,
        }
    }

    fn already(old_version: Option<VersionId>) -> Self {
        Done {
            outcome: StepOutcome::AlreadyDone,
            old_version,
            new_version: None,
        }
    }
}

impl<'a> Run<'a> {
    pub(crate) fn new(inner: &'a Inner, secret_id: &str) -> Self {
        // The first 16 hex digits of a fresh UUID: unique enough to group one call's events.
        let rotation_id = new_token()
            .map(|t| t.replace('-', "")[..16].to_owned())
            .unwrap_or_else(|_| format!("{:016x}", fastrand::u64(..)));
        Run {
            inner,
            rotation_id: rotation_id.into(),
            secret_id: secret_id.into(),
            started: Instant::now(),
        }
    }

    pub(crate) fn rotation_id(&self) -> Arc<str> {
        Arc::clone(&self.rotation_id)
    }

    fn id(&self) -> &str {
        &self.secret_id
    }

    fn event(
        &self,
        activity: Activity,
        token: Option<&str>,
        old_version: Option<VersionId>,
        new_version: Option<VersionId>,
        outcome: Outcome,
        started: Instant,
    ) {
        emit(
            self.inner,
            RotationEvent {
                rotation_id: self.rotation_id(),
                secret_id: Arc::clone(&self.secret_id),
                activity,
                token: token.map(Arc::from),
                old_version,
                new_version,
                outcome,
                duration: started.elapsed(),
            },
        );
    }

    /// The event that closes a `rotate` or `resume` call.
    pub(crate) fn finish_rotation(&self, result: &Result<RotationOutcome>) {
        let (token, old, new, outcome) = match result {
            Ok(RotationOutcome::Rotated {
                token,
                old_version,
                new_version,
                ..
            }) => (
                Some(token.as_str()),
                Some(old_version.clone()),
                Some(new_version.clone()),
                Outcome::Done,
            ),
            Ok(RotationOutcome::UnderWay { token }) => {
                (token.as_deref(), None, None, Outcome::UnderWay)
            }
            Ok(RotationOutcome::NotDue {
                current_version, ..
            }) => (None, Some(current_version.clone()), None, Outcome::NotDue),
            Err(error) => (None, None, None, failure_outcome(error)),
        };
        self.event(Activity::Rotation, token, old, new, outcome, self.started);
    }

    /// All four steps for `token`, in order; the new current version.
    pub(crate) async fn steps(
        &self,
        session: &mut dyn TargetSession,
        token: &str,
    ) -> Result<VersionId> {
        for step in Step::ALL {
            let _ = self.step(session, token, step).await?;
        }
        self.inner
            .store
            .current(self.id())
            .await
            .map(|v| v.version.id)
    }

    /// One step, with its event.
    pub(crate) async fn step(
        &self,
        session: &mut dyn TargetSession,
        token: &str,
        step: Step,
    ) -> Result<StepOutcome> {
        let started = Instant::now();
        let result = match step {
            Step::Create => self.create(token).await,
            Step::Set => self.set(session, token).await,
            Step::Test => self.test(session, token).await,
            Step::Finish => self.finish(token).await,
        };
        match result {
            Ok(done) => {
                let outcome = match done.outcome {
                    StepOutcome::Done => Outcome::Done,
                    StepOutcome::AlreadyDone => Outcome::AlreadyDone,
                };
                self.event(
                    Activity::Step(step),
                    Some(token),
                    done.old_version,
                    done.new_version,
                    outcome,
                    started,
                );
                Ok(done.outcome)
            }
            Err(error) => {
                self.event(
                    Activity::Step(step),
                    Some(token),
                    None,
                    None,
                    failure_outcome(&error),
                    started,
                );
                Err(error)
            }
        }
    }

    async fn pending_value(&self, token: &str) -> Result<crate::value::SecretValue> {
        self.inner
            .store
            .read_pending(self.id(), token)
            .await?
            .ok_or_else(|| {
                Error::not_found(self.id()).with_message(format!(
                    "no pending version for token {token}: run createSecret first"
                ))
            })
    }

    /// Generates the new credential and stores it as pending, before the database changes.
    async fn create(&self, token: &str) -> Result<Done> {
        let store = &self.inner.store;
        let id = self.id();
        if store.is_current(id, token).await? {
            return Ok(Done::already(Some(VersionId::new(token))));
        }
        let current = store.current(id).await?;
        let old = Some(current.version.id.clone());
        // Never a second password for a token: reuse the pending value written by an earlier run
        // (writing it again is a no-op, or puts back a label a rollback removed).
        if let Some(pending) = store.read_pending(id, token).await? {
            store
                .write_pending(id, token, &pending, &current.version.id)
                .await?;
            return Ok(Done::already(old));
        }
        if let Some(other) = store.pending_token(id).await? {
            return Err(Error::new(ErrorKind::Conflict)
                .with_id(id)
                .with_message(format!("rotation {other} is under way")));
        }
        let document = SecretDocument::parse(id, &current.value)?;
        let username = document.username(id)?;
        let role = self.inner.strategy.pending_role(username);
        let target = &self.inner.target;
        target.check_username(id, username)?;
        target.check_username(id, &role.username)?;
        let password = self.inner.policy.generate()?;
        let pending = document.with_login(&role.username, &password);
        store
            .write_pending(id, token, &pending, &current.version.id)
            .await?;
        Ok(Done::now(old))
    }

    /// Applies the pending credential to the database, unless it already logs in.
    async fn set(&self, session: &mut dyn TargetSession, token: &str) -> Result<Done> {
        let store = &self.inner.store;
        let id = self.id();
        if store.is_current(id, token).await? {
            return Ok(Done::already(Some(VersionId::new(token))));
        }
        let pending = self.pending_value(token).await?;
        let current = store.current(id).await?;
        let old = Some(current.version.id.clone());
        if session.logs_in(&pending).await? {
            return Ok(Done::already(old));
        }
        let current_user = SecretDocument::parse(id, &current.value)?
            .username(id)?
            .to_owned();
        let pending_user = SecretDocument::parse(id, &pending)?
            .username(id)?
            .to_owned();
        let role = self.inner.strategy.pending_role(&current_user);
        // Create the clone only when the pending credential names the clone this strategy expects.
        let clone_of = role.clone_of.filter(|_| role.username == pending_user);
        session.apply(&pending, clone_of.as_deref()).await?;
        Ok(Done::now(old))
    }

    /// Logs in with the pending credential; when that fails, undoes the rotation.
    async fn test(&self, session: &mut dyn TargetSession, token: &str) -> Result<Done> {
        let store = &self.inner.store;
        let id = self.id();
        if store.is_current(id, token).await? {
            return Ok(Done::already(Some(VersionId::new(token))));
        }
        let pending = self.pending_value(token).await?;
        let old = Some(store.current(id).await?.version.id);
        match session.verify(&pending).await {
            Ok(()) => Ok(Done::now(old)),
            Err(failure) => Err(self.roll_back(session, token, &failure).await),
        }
    }

    /// Promotes the pending version; calls the `on_finished` hook (also on a re-run, so an
    /// announcement lost in a crash is sent again).
    async fn finish(&self, token: &str) -> Result<Done> {
        let store = &self.inner.store;
        let id = self.id();
        let already = store.is_current(id, token).await?;
        let old = if already {
            None
        } else {
            Some(store.current(id).await?.version.id)
        };
        let new_version = store.promote(id, token).await?;
        if let Some(hook) = &self.inner.on_finished {
            hook(id, &new_version);
        }
        Ok(Done {
            outcome: if already {
                StepOutcome::AlreadyDone
            } else {
                StepOutcome::Done
            },
            old_version: old,
            new_version: Some(new_version),
        })
    }

    /// Undoes a rotation whose test failed; the error to report either way.
    async fn roll_back(
        &self,
        session: &mut dyn TargetSession,
        token: &str,
        failure: &Error,
    ) -> Error {
        let id = self.id();
        let failed = describe(failure);
        match self.undo(session, token).await {
            Ok(restored) => Error::new(ErrorKind::RolledBack)
                .with_id(id)
                .with_message(format!(
                    "testSecret failed ({failed}); rolled back: {restored}"
                )),
            Err(rollback) => Error::new(rollback.kind())
                .with_id(id)
                .with_message(format!(
                    "testSecret failed ({failed}) and the ROLLBACK FAILED ({}): pending version \
                 {token} is kept and the database may accept only it; run Rotator::abort to retry \
                 the rollback, or Rotator::resume to try the rotation again",
                    describe(&rollback)
                )),
        }
    }

    /// Puts the database back on the credentials the store's current (and, for the other role of
    /// alternating users, previous) version holds, then removes `token`'s pending version. The
    /// pending version goes last, so a failure leaves it as the mark of unfinished work.
    pub(crate) async fn undo(
        &self,
        session: &mut dyn TargetSession,
        token: &str,
    ) -> Result<String> {
        let started = Instant::now();
        let result = self.undo_inner(session, token).await;
        let (old, outcome) = match &result {
            Ok((old, _)) => (Some(old.clone()), Outcome::Done),
            Err(error) => (None, Outcome::Failed(error.kind())),
        };
        self.event(Activity::Rollback, Some(token), old, None, outcome, started);
        result.map(|(_, restored)| restored)
    }

    async fn undo_inner(
        &self,
        session: &mut dyn TargetSession,
        token: &str,
    ) -> Result<(VersionId, String)> {
        let store = &self.inner.store;
        let id = self.id();
        let current = store.current(id).await?;
        let current_user = SecretDocument::parse(id, &current.value)?
            .username(id)?
            .to_owned();
        let pending_user = match store.read_pending(id, token).await? {
            Some(pending) => Some(
                SecretDocument::parse(id, &pending)?
                    .username(id)?
                    .to_owned(),
            ),
            None => None,
        };
        let restored = match pending_user {
            Some(user) if user != current_user => {
                // Alternating users: the current role was never touched; the other role goes back
                // to the previous version's password, which consumers on it may still use.
                let previous = store.previous(id).await?;
                let previous_user = match &previous {
                    Some(previous) => Some(
                        SecretDocument::parse(id, &previous.value)?
                            .username(id)?
                            .to_owned(),
                    ),
                    None => None,
                };
                match previous.zip(previous_user) {
                    Some((previous, previous_user)) if previous_user == user => {
                        session.apply(&previous.value, None).await?;
                        format!(
                            "role `{user}` was restored to previous version {}",
                            previous.version.id
                        )
                    }
                    _ => format!(
                        "role `{user}` has no earlier credential in the store and keeps the \
                         untested one, which is discarded; current role `{current_user}` was \
                         never changed"
                    ),
                }
            }
            _ => {
                session.apply(&current.value, None).await?;
                format!(
                    "role `{current_user}` was restored to current version {}",
                    current.version.id
                )
            }
        };
        store.remove_pending(id, token).await?;
        Ok((
            current.version.id,
            format!("{restored}; pending version {token} was removed"),
        ))
    }
}

/// An error's kind and message, without the secret id the caller's error repeats.
fn describe(error: &Error) -> String {
    match error.message() {
        Some(message) => format!("{}: {message}", error.kind()),
        None => error.kind().to_string(),
    }
}
