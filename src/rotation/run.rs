//! The steps themselves: each re-checks the state it would create and does nothing when it finds
//! it, so any step can be re-run after a crash or a timeout.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::FutureExt;

use super::events::{AuditActivity, AuditOutcome, RotationEvent};
use super::inner::{Inner, emit, failure_outcome};
use super::steps::{FinishedRotation, RotationOutcome, Step, StepOutcome, new_token};
use super::strategy::SecretDocument;
use super::target::TargetSession;
use crate::error::{Error, ErrorKind, Result};
use crate::time::Instant;
use crate::value::{SecretValue, VersionId, Versioned};

/// One call's worth of work on one secret: its rotation id and its events.
pub(crate) struct Run<'a> {
    inner: &'a Inner,
    rotation_id: Arc<str>,
    /// The id as the caller spelled it: every store call uses it.
    secret_id: Arc<str>,
    /// The store's one name for the secret, once asked: the lock and the events use it.
    canonical: OnceLock<Arc<str>>,
    /// The token and old version so far, for the closing event of a rotation that fails midway.
    progress: Mutex<Progress>,
    started: Instant,
}

#[derive(Default)]
struct Progress {
    token: Option<Arc<str>>,
    old_version: Option<VersionId>,
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

/// How an undo failed: before the database was restored, or after (only the store's pending
/// version is left).
enum UndoFailure {
    NotRestored { during: &'static str, error: Error },
    PendingKept { restored: String, error: Error },
}

impl UndoFailure {
    fn kind(&self) -> ErrorKind {
        match self {
            UndoFailure::NotRestored { error, .. } | UndoFailure::PendingKept { error, .. } => {
                error.kind()
            }
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
            canonical: OnceLock::new(),
            progress: Mutex::default(),
            started: Instant::now(),
        }
    }

    pub(crate) fn rotation_id(&self) -> Arc<str> {
        Arc::clone(&self.rotation_id)
    }

    /// Asks the store for the secret's one name (once).
    pub(crate) async fn resolve(&self) -> Result<()> {
        if self.canonical.get().is_none() {
            let canonical = self.inner.store.canonical_id(&self.secret_id).await?;
            let _ = self.canonical.set(canonical.into());
        }
        Ok(())
    }

    /// The name the lock and the events use: the store's one name, once resolved.
    pub(crate) fn canonical(&self) -> &str {
        self.canonical.get().unwrap_or(&self.secret_id)
    }

    fn id(&self) -> &str {
        &self.secret_id
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn event(
        &self,
        activity: AuditActivity,
        token: Option<Arc<str>>,
        old_version: Option<VersionId>,
        new_version: Option<VersionId>,
        outcome: AuditOutcome,
        started: Instant,
    ) {
        emit(
            self.inner,
            RotationEvent {
                rotation_id: self.rotation_id(),
                secret_id: self.canonical().into(),
                activity,
                token,
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
                Some(Arc::clone(token)),
                Some(old_version.clone()),
                Some(new_version.clone()),
                AuditOutcome::Done,
            ),
            Ok(RotationOutcome::UnderWay { token }) => {
                (token.clone(), None, None, AuditOutcome::UnderWay)
            }
            Ok(RotationOutcome::NotDue {
                current_version, ..
            }) => (
                None,
                Some(current_version.clone()),
                None,
                AuditOutcome::NotDue,
            ),
            Err(error) => {
                // As far as it got: the token and the version it started from.
                let progress = self.progress();
                (
                    progress.token.clone(),
                    progress.old_version.clone(),
                    None,
                    failure_outcome(error),
                )
            }
        };
        self.event(
            AuditActivity::Rotation,
            token,
            old,
            new,
            outcome,
            self.started,
        );
    }

    /// All four steps for `token`, in order; the new current version.
    pub(crate) async fn steps(
        &self,
        session: &mut dyn TargetSession,
        token: &str,
    ) -> Result<VersionId> {
        self.steps_from(session, token, Step::Create).await
    }

    /// The steps from `first` on, for `token`; the new current version.
    pub(crate) async fn steps_from(
        &self,
        session: &mut dyn TargetSession,
        token: &str,
        first: Step,
    ) -> Result<VersionId> {
        for step in Step::ALL.into_iter().filter(|step| *step >= first) {
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
        let token: Arc<str> = token.into();
        self.progress().token = Some(Arc::clone(&token));
        let result = match step {
            Step::Create => self.create(&token).await,
            Step::Set => self.set(session, &token).await,
            Step::Test => self.test(session, &token).await,
            Step::Finish => self.finish(session, &token).await,
        };
        match result {
            Ok(done) => {
                let outcome = match done.outcome {
                    StepOutcome::Done => AuditOutcome::Done,
                    StepOutcome::AlreadyDone => AuditOutcome::AlreadyDone,
                };
                if let Some(old) = &done.old_version {
                    let mut progress = self.progress();
                    if progress.old_version.is_none() {
                        progress.old_version = Some(old.clone());
                    }
                }
                self.event(
                    AuditActivity::Step(step),
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
                    AuditActivity::Step(step),
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

    /// The value of `token`'s pending version, only while `token` *is* the rotation under way
    /// (`set` and `test` must never act on an older token, re-passwording the role to a password
    /// the store has moved past) and holds a credential other than the current one; and the
    /// current version.
    async fn pending_value(&self, token: &str) -> Result<(SecretValue, Versioned<SecretValue>)> {
        let store = &self.inner.store;
        let id = self.id();
        match store.pending_token(id).await? {
            Some(pending) if pending == token => {}
            Some(other) => {
                return Err(Error::new(ErrorKind::Conflict)
                    .with_id(id)
                    .with_message(format!(
                        "rotation {other} is under way; token {token} is not pending, so nothing \
                         was changed"
                    )));
            }
            None => return Err(not_pending(id, token)),
        }
        let pending = store
            .read_pending(id, token)
            .await?
            .ok_or_else(|| not_pending(id, token))?;
        let current = store.current(id).await?;
        refuse_unchanged(id, token, &pending, &current.value)?;
        Ok((pending, current))
    }

    /// Generates the new credential and stores it as pending, before the database changes.
    ///
    /// The token's version may exist already: written by an earlier run (reused, so a token never
    /// gets a second password), or staged by AWS's `RotateSecret` before it invokes a rotation
    /// function, with no value (AWS) or with a copy of the current one (moto). A version that
    /// holds no credential of its own gets the new one.
    async fn create(&self, token: &str) -> Result<Done> {
        let store = &self.inner.store;
        let id = self.id();
        if store.is_current(id, token).await? {
            return Ok(Done::already(Some(VersionId::new(token))));
        }
        let current = store.current(id).await?;
        let old = Some(current.version.id.clone());
        let document = SecretDocument::parse(id, &current.value)?;
        // Never a second password for a token: reuse the value an earlier run stored (writing it
        // again is a no-op, or puts back the mark a rollback removed).
        if let Some(created) = store.read_created(id, token).await? {
            if !document.same_login(&SecretDocument::parse(id, &created)?) {
                store
                    .write_pending(id, token, &created, &current.version.id)
                    .await?;
                return Ok(Done::already(old));
            }
        }
        if let Some(other) = store
            .pending_token(id)
            .await?
            .filter(|other| other != token)
        {
            return Err(Error::new(ErrorKind::Conflict)
                .with_id(id)
                .with_message(format!("rotation {other} is under way")));
        }
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
        let (pending, current) = self.pending_value(token).await?;
        let old = Some(current.version.id.clone());
        if session.logs_in(&pending).await? {
            // A server that lets the role in whatever it says (`trust` or `peer` in pg_hba.conf)
            // would have the store promote a password the database never got: prove it matters.
            let document = SecretDocument::parse(id, &pending)?;
            let wrong = document.with_login(document.username(id)?, &self.inner.policy.generate()?);
            if session.logs_in(&wrong).await? {
                // Nothing changed in the database: the pending version goes, so the next run
                // does not trip over it (a person has to fix pg_hba.conf first).
                let removed = store.remove_pending(id, token).await;
                return Err(accepts_any_password(
                    id,
                    document.username(id)?,
                    removed.is_ok(),
                ));
            }
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
        let (pending, current) = self.pending_value(token).await?;
        let old = Some(current.version.id);
        match session.verify(&pending).await {
            Ok(()) => Ok(Done::now(old)),
            Err(failure) => Err(self.roll_back(session, token, Step::Test, &failure).await),
        }
    }

    /// Promotes the pending version, runs the `on_finished` hooks, and removes the rotation's mark
    /// from the store ([`RotationStore::complete`](super::RotationStore::complete)). The hooks run
    /// once per rotation: now, or on a re-run that finds the mark still there (the rotator died
    /// after the promotion, or its answer was lost), never again once the mark is gone. When the
    /// store refuses because the secret was written during the rotation, undoes the rotation: the
    /// database goes back to the credential now current.
    async fn finish(&self, session: &mut dyn TargetSession, token: &str) -> Result<Done> {
        let store = &self.inner.store;
        let id = self.id();
        let already = store.is_current(id, token).await?;
        let old = if already {
            None
        } else {
            // Only the rotation under way, and only one that changes the credential.
            Some(self.pending_value(token).await?.1.version.id)
        };
        let new_version = match store.promote(id, token).await {
            Ok(version) => version,
            Err(error) if error.kind() == ErrorKind::Conflict => {
                // Someone else finished this very rotation in between: nothing to undo.
                if !store.is_current(id, token).await? {
                    return Err(self.roll_back(session, token, Step::Finish, &error).await);
                }
                store.current(id).await?.version.id
            }
            // The store may have promoted and the answer got lost: look before failing.
            Err(error) => match store.is_current(id, token).await {
                Ok(true) => store.current(id).await?.version.id,
                _ => return Err(error),
            },
        };
        // The mark promotion left decides, not whether this call promoted: another finisher (a
        // process not sharing our lock) may have promoted, or even run the hooks, in between.
        let hooks_due = store.incomplete_token(id).await?.as_deref() == Some(token);
        if hooks_due {
            self.run_hooks(token, &new_version).await;
            if let Err(error) = store.complete(id, token).await {
                // The rotation is finished and announced; the next rotator removes the mark
                // (and runs the hooks once more, which announcements take in their stride).
                tracing::warn!(
                    target: "credswap::rotation",
                    rotation_id = %self.rotation_id,
                    secret_id = %self.canonical(),
                    token,
                    kind = %error.kind(),
                    "credswap: the rotation is finished, but removing its mark from the store \
                     failed; the next rotation removes it"
                );
            }
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

    /// Runs the `on_finished` hooks, each bounded by the store timeout. A hook that panics or
    /// hangs is the hook's problem, not the rotation's: it is logged (without its message).
    async fn run_hooks(&self, token: &str, version: &VersionId) {
        for hook in &self.inner.on_finished {
            let finished = FinishedRotation {
                secret_id: self.canonical().into(),
                version: version.clone(),
                token: token.into(),
                rotation_id: self.rotation_id(),
            };
            let running = AssertUnwindSafe(hook(finished)).catch_unwind();
            let failure = match tokio::time::timeout(self.inner.store_timeout, running).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => "panicked",
                Err(_) => "did not finish within the store timeout",
            };
            tracing::error!(
                target: "credswap::rotation",
                rotation_id = %self.rotation_id,
                secret_id = %self.canonical(),
                new_version = %version,
                "credswap: an on_finished hook {failure}; the rotation is finished all the same"
            );
        }
    }

    /// Undoes a rotation whose `step` failed after `set` changed the database; the error to
    /// report either way.
    async fn roll_back(
        &self,
        session: &mut dyn TargetSession,
        token: &str,
        step: Step,
        failure: &Error,
    ) -> Error {
        let id = self.id();
        let failed = describe(failure);
        match self.undo_logged(session, token).await {
            Ok(restored) => Error::new(ErrorKind::RolledBack)
                .with_id(id)
                .with_message(format!("{step} failed ({failed}); rolled back: {restored}")),
            Err(UndoFailure::NotRestored { during, error }) => {
                Error::new(error.kind()).with_id(id).with_message(format!(
                    "{step} failed ({failed}) and the ROLLBACK FAILED {during} ({}): the database \
                     was not restored and may accept only pending version {token} (single user), \
                     which is kept; run Rotator::abort to retry the rollback{}",
                    describe(&error),
                    if step == Step::Test {
                        ", or Rotator::resume to try the rotation again"
                    } else {
                        ""
                    }
                ))
            }
            Err(UndoFailure::PendingKept { restored, error }) => {
                Error::new(error.kind()).with_id(id).with_message(format!(
                    "{step} failed ({failed}); the database was restored ({restored}) but \
                     REMOVING PENDING VERSION {token} FAILED ({}): run Rotator::abort to remove it",
                    describe(&error)
                ))
            }
        }
    }

    /// Puts the database back on the credentials the store's current (and, for the other role of
    /// alternating users, previous) version holds, then removes `token`'s pending version (for
    /// [`Rotator::abort`](super::Rotator::abort)). What was restored.
    pub(crate) async fn undo(
        &self,
        session: &mut dyn TargetSession,
        token: &str,
    ) -> Result<String> {
        self.undo_logged(session, token)
            .await
            .map_err(|failure| match failure {
                UndoFailure::NotRestored { during, error } => {
                    let message = format!("the rollback failed {during}: {}", describe(&error));
                    Error::new(error.kind())
                        .with_id(self.id())
                        .with_message(message)
                }
                UndoFailure::PendingKept { restored, error } => Error::new(error.kind())
                    .with_id(self.id())
                    .with_message(format!(
                        "the database was restored ({restored}) but removing pending version \
                         {token} failed: {}",
                        describe(&error)
                    )),
            })
    }

    async fn undo_logged(
        &self,
        session: &mut dyn TargetSession,
        token: &str,
    ) -> std::result::Result<String, UndoFailure> {
        let started = Instant::now();
        let result = self.undo_inner(session, token).await;
        let (old, outcome) = match &result {
            Ok((old, _)) => (Some(old.clone()), AuditOutcome::Done),
            Err(failure) => (None, AuditOutcome::Failed(failure.kind())),
        };
        self.event(
            AuditActivity::Rollback,
            Some(token.into()),
            old,
            None,
            outcome,
            started,
        );
        result.map(|(_, restored)| restored)
    }

    /// The pending version goes last, so a failure leaves it as the mark of unfinished work.
    async fn undo_inner(
        &self,
        session: &mut dyn TargetSession,
        token: &str,
    ) -> std::result::Result<(VersionId, String), UndoFailure> {
        let reading = |error| UndoFailure::NotRestored {
            during: "reading the store",
            error,
        };
        let restoring = |error| UndoFailure::NotRestored {
            during: "restoring the database",
            error,
        };
        let store = &self.inner.store;
        let id = self.id();
        let current = store.current(id).await.map_err(reading)?;
        let current_user = SecretDocument::parse(id, &current.value)
            .and_then(|d| d.username(id).map(str::to_owned))
            .map_err(reading)?;
        let pending_user = match store.read_pending(id, token).await.map_err(reading)? {
            Some(pending) => Some(
                SecretDocument::parse(id, &pending)
                    .and_then(|d| d.username(id).map(str::to_owned))
                    .map_err(reading)?,
            ),
            None => None,
        };
        let restored = match pending_user {
            Some(user) if user != current_user => {
                // Alternating users: the current role was never touched; the other role goes back
                // to the previous version's password, which consumers on it may still use.
                let previous = store.previous(id).await.map_err(reading)?;
                let previous_user = match &previous {
                    Some(previous) => Some(
                        SecretDocument::parse(id, &previous.value)
                            .and_then(|d| d.username(id).map(str::to_owned))
                            .map_err(reading)?,
                    ),
                    None => None,
                };
                match previous.zip(previous_user) {
                    Some((previous, previous_user)) if previous_user == user => {
                        session
                            .apply(&previous.value, None)
                            .await
                            .map_err(restoring)?;
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
                session
                    .apply(&current.value, None)
                    .await
                    .map_err(restoring)?;
                format!(
                    "role `{current_user}` was restored to current version {}",
                    current.version.id
                )
            }
        };
        store
            .remove_pending(id, token)
            .await
            .map_err(|error| UndoFailure::PendingKept {
                restored: restored.clone(),
                error,
            })?;
        Ok((
            current.version.id,
            format!("{restored}; pending version {token} was removed"),
        ))
    }
}

/// Refuses to act on a pending credential that is the current one (a copy `RotateSecret` left in
/// the token's version, as moto makes it): `set` would find it "already done" and `finish` would
/// announce a rotation that changed nothing.
fn refuse_unchanged(
    id: &str,
    token: &str,
    pending: &SecretValue,
    current: &SecretValue,
) -> Result<()> {
    if SecretDocument::parse(id, pending)?.same_login(&SecretDocument::parse(id, current)?) {
        return Err(Error::invalid_request(
            id,
            format!(
                "pending version {token} holds the current credential, so the password would not \
                 change; createSecret writes a new one into it"
            ),
        ));
    }
    Ok(())
}

fn accepts_any_password(id: &str, username: &str, pending_removed: bool) -> Error {
    let pending = if pending_removed {
        "the pending version was removed"
    } else {
        "removing the pending version failed too (Rotator::abort removes it)"
    };
    Error::config(format!(
        "the database lets role `{username}` log in with any password (`trust` or `peer` in \
         pg_hba.conf?), so no step can prove it took the new one; nothing was changed in the \
         database and {pending}; require scram-sha-256 for it"
    ))
    .with_id(id)
}

fn not_pending(id: &str, token: &str) -> Error {
    Error::not_found(id).with_message(format!(
        "token {token} has no pending version (never created, rolled back, or finished and \
         superseded), so nothing was changed; a new rotation starts with createSecret"
    ))
}

/// An error's kind and message, without the secret id the caller's error repeats.
fn describe(error: &Error) -> String {
    match error.message() {
        Some(message) => format!("{}: {message}", error.kind()),
        None => error.kind().to_string(),
    }
}
