//! The [`Rotator`]: the calls that run rotations (`rotate`, `rotate_if_due`, `resume`, `abort`,
//! `step`), each to its end, under the target's lock.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use super::builder::RotatorBuilder;
use super::events::RotationEvent;
use super::inner::Inner;
use super::run::Run;
use super::steps::{RotationOutcome, Step, StepOutcome, new_token};
use super::store::RotationStore;
use super::strategy::{SecretDocument, Strategy};
use super::target::{RotationTarget, TargetSession};
use crate::error::{Error, ErrorKind, Result};

/// Runs rotations of secrets held in a [`RotationStore`] for credentials of a
/// [`RotationTarget`]: the four steps, crash-safe and idempotent per token, one rotator per secret.
///
/// Cheap to clone (an `Arc`); one rotator serves any number of secrets.
///
/// # Concurrent calls on the same secret
///
/// Exactly one rotation of a secret runs at a time, across processes: the target's lock (a
/// PostgreSQL advisory lock, keyed by the store's [canonical name](RotationStore::canonical_id) of
/// the secret, so its name and its ARN take one lock) is held for each call, and the store's
/// pending version marks a rotation under way between calls and between processes that do not
/// share the lock. A `rotate` that finds the lock taken returns [`RotationOutcome::UnderWay`]
/// without changing anything. Calls made one after another each rotate:
/// [`rotate_if_due`](Self::rotate_if_due) skips a secret rotated a moment ago.
///
/// # Cancellation
///
/// Dropping the future of `rotate`, `resume`, `abort` or `step` does not stop the work: it runs
/// in a task of its own to its end (finished, or rolled back), because a rotation abandoned
/// between `set` and `finish` would leave a database that accepts only the pending password
/// while every consumer holds the current one. Only the runtime shutting down stops it; the
/// pending version it leaves is finished by the next `rotate` or `resume` (and undone by
/// `abort`), and the lock goes with its connection.
#[derive(Clone)]
pub struct Rotator {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Rotator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotator")
            .field("store", &self.inner.store.name())
            .field("target", &self.inner.target.name())
            .field("strategy", &self.inner.strategy)
            .field("policy", &self.inner.policy)
            .field("resume_orphaned", &self.inner.resume_orphaned)
            .finish_non_exhaustive()
    }
}

impl Rotator {
    /// A builder for a rotator of secrets in `store` for credentials of `target`.
    pub fn builder(
        store: Arc<dyn RotationStore>,
        target: Arc<dyn RotationTarget>,
    ) -> RotatorBuilder {
        RotatorBuilder::new(store, target)
    }

    /// The strategy in use.
    pub fn strategy(&self) -> &Strategy {
        &self.inner.strategy
    }

    /// The audit trail: every step's [`RotationEvent`] from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RotationEvent> {
        self.inner.events.subscribe()
    }

    /// Calls `hook` with every [`RotationEvent`] from now on, on the task where it happens (for
    /// metrics and audit logs that must not lag); a hook that panics is contained.
    pub fn on_event(&self, hook: impl Fn(&RotationEvent) + Send + Sync + 'static) {
        self.inner.events.add_hook(Arc::new(hook));
    }

    /// Rotates `secret_id` now: `create`, `set`, `test`, `finish` under one lock, with a new token.
    ///
    /// When the lock is free but the store holds a pending version (a rotator died mid-rotation),
    /// this finishes that rotation instead, with its token, unless the rotator was built with
    /// [`resume_orphaned(false)`](super::RotatorBuilder::resume_orphaned).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::RolledBack`] when `test` failed, or `finish` found the secret written during
    /// the rotation, and the rotation was undone; the store's or the database's error when a step
    /// failed (re-running finishes or undoes it: see [`resume`](Self::resume) and
    /// [`abort`](Self::abort)); [`ErrorKind::InvalidRequest`] for a role name the database cannot
    /// take, before anything changed.
    pub async fn rotate(&self, secret_id: &str) -> Result<RotationOutcome> {
        let (rotator, id) = (self.clone(), secret_id.to_owned());
        to_the_end(async move { rotator.rotate_with(&id, None).await }).await
    }

    /// Like [`rotate`](Self::rotate), unless the current version is younger than `min_age`
    /// ([`RotationOutcome::NotDue`]): replicas that run the same schedule rotate once, not once
    /// each. A store that does not say when the current version was made always rotates. A
    /// pending version left by a rotator that died is finished whatever its age.
    pub async fn rotate_if_due(
        &self,
        secret_id: &str,
        min_age: Duration,
    ) -> Result<RotationOutcome> {
        self.rotate_if_due_at(secret_id, min_age, SystemTime::now())
            .await
    }

    /// [`rotate_if_due`](Self::rotate_if_due) with the age measured at `now`: a schedule passes
    /// its own clock, which follows Tokio's (and so a paused test clock).
    pub(crate) async fn rotate_if_due_at(
        &self,
        secret_id: &str,
        min_age: Duration,
        now: SystemTime,
    ) -> Result<RotationOutcome> {
        let (rotator, id) = (self.clone(), secret_id.to_owned());
        to_the_end(async move { rotator.rotate_with(&id, Some((min_age, now))).await }).await
    }

    async fn rotate_with(
        &self,
        secret_id: &str,
        due: Option<(Duration, SystemTime)>,
    ) -> Result<RotationOutcome> {
        let run = &Run::new(&self.inner, secret_id);
        let result = match self
            .with_session(run, secret_id, |mut session| async move {
                let result = self
                    .rotate_locked(run, session.as_mut(), secret_id, due)
                    .await;
                (session, result)
            })
            .await
        {
            Ok(Turn::Ran(outcome)) => Ok(outcome),
            Ok(Turn::LockHeld(token)) => Ok(RotationOutcome::UnderWay { token }),
            Err(error) => Err(error),
        };
        run.finish_rotation(&result);
        result
    }

    async fn rotate_locked(
        &self,
        run: &Run<'_>,
        session: &mut dyn TargetSession,
        secret_id: &str,
        due: Option<(Duration, SystemTime)>,
    ) -> Result<RotationOutcome> {
        let store = &self.inner.store;
        let _ = self.complete_incomplete(run, session, secret_id).await?;
        // Read again under the lock: another rotator may have started or finished meanwhile.
        if let Some(token) = store.pending_token(secret_id).await? {
            if !self.inner.resume_orphaned {
                return Ok(RotationOutcome::UnderWay {
                    token: Some(token.into()),
                });
            }
            // We hold the lock, so the rotator that wrote it is gone (or a rotation function is
            // between two steps, which then find them done: every step is idempotent).
            return self.finish_pending(run, session, secret_id, token).await;
        }
        let current = store.current(secret_id).await?;
        if let (Some((min_age, now)), Some(created)) = (due, current.version.created_at) {
            let age = now.duration_since(created).unwrap_or(Duration::ZERO);
            if age < min_age {
                return Ok(RotationOutcome::NotDue {
                    current_version: current.version.id,
                    age,
                });
            }
        }
        let token = new_token()?;
        match run.step(session, &token, Step::Create).await {
            // A pending version appeared between our read and our write: a rotator that does not
            // share our lock (a rotation function elsewhere) is at work. Nothing was written.
            Err(error) if error.kind() == ErrorKind::Conflict => {
                return Ok(RotationOutcome::UnderWay {
                    token: store.pending_token(secret_id).await?.map(Arc::from),
                });
            }
            other => {
                let _ = other?;
            }
        }
        let new_version = run.steps_from(session, &token, Step::Set).await?;
        Ok(RotationOutcome::Rotated {
            rotation_id: run.rotation_id(),
            token: token.into(),
            old_version: current.version.id,
            new_version,
        })
    }

    /// Finishes a rotation that was promoted but not completed (its rotator died, or the answer
    /// to its promotion was lost): its hooks run, once, and its mark leaves the store. The token,
    /// when there was one.
    async fn complete_incomplete(
        &self,
        run: &Run<'_>,
        session: &mut dyn TargetSession,
        secret_id: &str,
    ) -> Result<Option<String>> {
        let Some(token) = self.inner.store.incomplete_token(secret_id).await? else {
            return Ok(None);
        };
        let _ = run.step(session, &token, Step::Finish).await?;
        Ok(Some(token))
    }

    /// All four steps with the pending version's `token`, each re-run harmlessly where done.
    async fn finish_pending(
        &self,
        run: &Run<'_>,
        session: &mut dyn TargetSession,
        secret_id: &str,
        token: String,
    ) -> Result<RotationOutcome> {
        let old_version = self.inner.store.current(secret_id).await?.version.id;
        let new_version = run.steps(session, &token).await?;
        Ok(RotationOutcome::Rotated {
            rotation_id: run.rotation_id(),
            token: token.into(),
            old_version,
            new_version,
        })
    }

    /// Finishes the rotation under way (a pending version left by a crashed or timed-out rotator):
    /// all four steps with its token, each re-run harmlessly where it had already been done.
    /// `None` when nothing was pending, as for [`abort`](Self::abort);
    /// [`RotationOutcome::UnderWay`] when another rotator holds the lock.
    ///
    /// # Errors
    ///
    /// As [`rotate`](Self::rotate).
    pub async fn resume(&self, secret_id: &str) -> Result<Option<RotationOutcome>> {
        let (rotator, id) = (self.clone(), secret_id.to_owned());
        to_the_end(async move { rotator.resume_now(&id).await }).await
    }

    async fn resume_now(&self, secret_id: &str) -> Result<Option<RotationOutcome>> {
        let run = &Run::new(&self.inner, secret_id);
        let result = self
            .with_session(run, secret_id, |mut session| async move {
                let result = self.resume_locked(run, session.as_mut(), secret_id).await;
                (session, result)
            })
            .await
            .map(|turn| match turn {
                Turn::Ran(outcome) => outcome,
                Turn::LockHeld(token) => Some(RotationOutcome::UnderWay { token }),
            });
        match &result {
            Ok(Some(outcome)) => run.finish_rotation(&Ok(outcome.clone())),
            Ok(None) => {}
            Err(error) => run.finish_rotation(&Err(error.clone())),
        }
        result
    }

    async fn resume_locked(
        &self,
        run: &Run<'_>,
        session: &mut dyn TargetSession,
        secret_id: &str,
    ) -> Result<Option<RotationOutcome>> {
        let store = &self.inner.store;
        let completed = self.complete_incomplete(run, session, secret_id).await?;
        if let Some(token) = store.pending_token(secret_id).await? {
            return self
                .finish_pending(run, session, secret_id, token)
                .await
                .map(Some);
        }
        let Some(token) = completed else {
            return Ok(None);
        };
        let new_version = store.current(secret_id).await?.version.id;
        let old_version = match store.previous(secret_id).await? {
            Some(previous) => previous.version.id,
            None => new_version.clone(),
        };
        Ok(Some(RotationOutcome::Rotated {
            rotation_id: run.rotation_id(),
            token: token.into(),
            old_version,
            new_version,
        }))
    }

    /// Undoes the rotation under way: the database goes back to the current credential (for
    /// alternating users, the other role back to the previous version's) and the pending version is
    /// removed. Returns the token undone, `None` when nothing was pending.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Conflict`] when a rotator is running now (it holds the lock); the database's
    /// or the store's error otherwise (the message says whether the database was restored; the
    /// pending version is kept: call again).
    pub async fn abort(&self, secret_id: &str) -> Result<Option<String>> {
        let (rotator, id) = (self.clone(), secret_id.to_owned());
        to_the_end(async move { rotator.abort_now(&id).await }).await
    }

    async fn abort_now(&self, secret_id: &str) -> Result<Option<String>> {
        let run = &Run::new(&self.inner, secret_id);
        let turn = self
            .with_session(run, secret_id, |mut session| async move {
                // A promoted rotation cannot be undone (consumers may use it): it is completed.
                let completed = self
                    .complete_incomplete(run, session.as_mut(), secret_id)
                    .await;
                let pending = match completed {
                    Ok(_) => self.inner.store.pending_token(secret_id).await,
                    Err(error) => Err(error),
                };
                let result = match pending {
                    Ok(Some(token)) => run
                        .undo(session.as_mut(), &token)
                        .await
                        .map(|_| Some(token)),
                    Ok(None) => Ok(None),
                    Err(error) => Err(error),
                };
                (session, result)
            })
            .await?;
        match turn {
            Turn::Ran(token) => Ok(token),
            Turn::LockHeld(token) => Err(lock_held(run.canonical(), token)),
        }
    }

    /// Runs one step of the rotation identified by `token`, as the body of an AWS Secrets Manager
    /// rotation function does with the event's `SecretId`, `ClientRequestToken` and `Step`.
    /// Each call takes the lock for its duration; every step is idempotent for its token, and
    /// `set` and `test` act only while `token` is the rotation under way (a late or repeated
    /// invocation for an older token changes nothing).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Conflict`] when another rotator holds the lock or another token's rotation is
    /// under way; [`ErrorKind::NotFound`] when `token` has no pending version (for `set`, `test`,
    /// `finish`); [`ErrorKind::RolledBack`] when `testSecret` failed, or `finishSecret` found the
    /// secret written during the rotation, and the rotation was undone; the store's or database's
    /// error otherwise (the caller, or AWS, retries the step).
    pub async fn step(&self, secret_id: &str, token: &str, step: Step) -> Result<StepOutcome> {
        let (rotator, id, token) = (self.clone(), secret_id.to_owned(), token.to_owned());
        to_the_end(async move { rotator.step_now(&id, &token, step).await }).await
    }

    async fn step_now(&self, secret_id: &str, token: &str, step: Step) -> Result<StepOutcome> {
        let run = &Run::new(&self.inner, secret_id);
        match self
            .with_session(run, secret_id, |mut session| async move {
                let result = run.step(session.as_mut(), token, step).await;
                (session, result)
            })
            .await?
        {
            Turn::Ran(outcome) => Ok(outcome),
            Turn::LockHeld(held_by) => Err(lock_held(run.canonical(), held_by)),
        }
    }

    /// Takes the rotation lock (a session with the target), runs `work` under it, and releases
    /// it; or says who holds it. `work` borrows the session by taking it and handing it back.
    async fn with_session<T, F, Fut>(
        &self,
        run: &Run<'_>,
        secret_id: &str,
        work: F,
    ) -> Result<Turn<T>>
    where
        F: FnOnce(Box<dyn TargetSession>) -> Fut,
        Fut: Future<Output = (Box<dyn TargetSession>, Result<T>)>,
    {
        run.resolve().await?;
        match self.open(run, secret_id).await? {
            Opened::Locked(token) => Ok(Turn::LockHeld(token.map(Arc::from))),
            Opened::Session(session) => {
                let (session, result) = work(session).await;
                release(run.canonical(), session, result)
                    .await
                    .map(Turn::Ran)
            }
        }
    }

    /// Opens a session with the target, which takes the rotation lock.
    async fn open(&self, run: &Run<'_>, secret_id: &str) -> Result<Opened> {
        let store = &self.inner.store;
        let current = store.current(secret_id).await?;
        // Names the database cannot take fail here, before any login or change.
        let document = SecretDocument::parse(secret_id, &current.value)?;
        let username = document.username(secret_id)?;
        let target = &self.inner.target;
        target.check_username(secret_id, username)?;
        target.check_username(
            secret_id,
            &self.inner.strategy.pending_role(username).username,
        )?;
        let pending_token = store.pending_token(secret_id).await?;
        let pending = match &pending_token {
            Some(token) => store.read_pending(secret_id, token).await?,
            None => None,
        };
        let session = target
            .begin(
                run.canonical(),
                &self.inner.strategy,
                &current.value,
                pending.as_ref(),
            )
            .await?;
        Ok(match session {
            Some(session) => Opened::Session(session),
            None => Opened::Locked(pending_token),
        })
    }
}

/// What became of a call that needed the lock.
enum Turn<T> {
    Ran(T),
    /// Another rotator holds the lock (with the token the store shows, if any).
    LockHeld(Option<Arc<str>>),
}

enum Opened {
    Session(Box<dyn TargetSession>),
    /// Another rotator holds the lock (with the token the store shows, if any).
    Locked(Option<String>),
}

fn lock_held(secret_id: &str, token: Option<Arc<str>>) -> Error {
    Error::new(ErrorKind::Conflict)
        .with_id(secret_id)
        .with_message(match token {
            Some(token) => format!("another rotator holds the rotation lock (rotation {token})"),
            None => "another rotator holds the rotation lock".to_owned(),
        })
}

/// Releases the lock. A failure to release matters less than the work's result: the lock goes
/// with the session's connection, which is closed either way.
async fn release<T>(
    secret_id: &str,
    session: Box<dyn TargetSession>,
    result: Result<T>,
) -> Result<T> {
    if let Err(error) = session.release().await {
        tracing::warn!(
            target: "credswap::rotation",
            secret_id,
            kind = %error.kind(),
            "credswap: releasing the rotation lock failed; it ends with the connection"
        );
    }
    result
}

/// Runs `work` in a task of its own and waits for it: dropping the caller's future does not stop
/// a rotation halfway.
async fn to_the_end<T: Send + 'static>(
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    match tokio::spawn(work).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => Err(Error::new(ErrorKind::Transient).with_message(
            "the rotation panicked (in the store, the target or a hook); a pending version it \
             left is finished by the next rotate or resume",
        )),
        Err(_) => Err(Error::new(ErrorKind::Closed)
            .with_message("the rotation was stopped: its runtime shut down")),
    }
}
