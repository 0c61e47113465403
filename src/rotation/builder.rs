//! Configuring a [`Rotator`].

use std::fmt;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::password::PasswordPolicy;
use super::protocol::{FinishedHook, Inner, Rotator};
use super::store::RotationStore;
use super::strategy::Strategy;
use super::target::RotationTarget;
use crate::error::{Error, Result};
use crate::value::VersionId;

/// Builds a [`Rotator`]: `Rotator::builder(store, target)`, then the options, then
/// [`build`](Self::build).
///
/// ```
/// use std::sync::Arc;
/// use credswap::rotation::{MemoryRotationStore, PasswordPolicy, PostgresTarget, Rotator, Strategy};
///
/// let rotator = Rotator::builder(
///     Arc::new(MemoryRotationStore::new()),
///     Arc::new(PostgresTarget::new().admin("rotator", "admin-password")),
/// )
/// .strategy(Strategy::alternating_users())
/// .password_policy(PasswordPolicy::default().length(40))
/// .on_finished(|secret_id, version| println!("{secret_id} is now at {version}"))
/// .build()?;
/// # drop(rotator);
/// # Ok::<(), credswap::Error>(())
/// ```
#[must_use]
pub struct RotatorBuilder {
    store: Arc<dyn RotationStore>,
    target: Arc<dyn RotationTarget>,
    strategy: Strategy,
    policy: PasswordPolicy,
    on_finished: Option<FinishedHook>,
    resume_orphaned: bool,
    event_capacity: usize,
}

impl fmt::Debug for RotatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatorBuilder")
            .field("store", &self.store.name())
            .field("target", &self.target.name())
            .field("strategy", &self.strategy)
            .field("policy", &self.policy)
            .field("resume_orphaned", &self.resume_orphaned)
            .finish_non_exhaustive()
    }
}

impl RotatorBuilder {
    pub(crate) fn new(store: Arc<dyn RotationStore>, target: Arc<dyn RotationTarget>) -> Self {
        RotatorBuilder {
            store,
            target,
            strategy: Strategy::default(),
            policy: PasswordPolicy::default(),
            on_finished: None,
            resume_orphaned: true,
            event_capacity: 256,
        }
    }

    /// Single user (the default) or alternating users.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// How passwords are generated (default: 32 characters, see [`PasswordPolicy`]).
    pub fn password_policy(mut self, policy: PasswordPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Called after every `finish` (also a re-run) with the secret id (as the caller spelled it)
    /// and its new current version id: the place to announce the rotation to consumers. It runs
    /// inline: keep it quick, hand slow work to a task. A panic in it is caught and logged (without
    /// its message); the rotation is finished all the same.
    pub fn on_finished(mut self, hook: impl Fn(&str, &VersionId) + Send + Sync + 'static) -> Self {
        self.on_finished = Some(Arc::new(hook));
        self
    }

    /// What [`rotate`](Rotator::rotate) (and a schedule) does when it holds the rotation lock
    /// and finds a pending version in the store: a rotator died between two steps. `true` (the
    /// default): finish that rotation, with its token and the password it already generated.
    /// `false`: answer [`UnderWay`](super::RotationOutcome::UnderWay) and leave it to
    /// [`resume`](Rotator::resume) or [`abort`](Rotator::abort), say when an AWS rotation function
    /// in another process drives the steps and you want it alone to finish them.
    pub fn resume_orphaned(mut self, resume: bool) -> Self {
        self.resume_orphaned = resume;
        self
    }

    /// How many audit events a slow [`subscribe`](Rotator::subscribe)r may fall behind by before
    /// it misses some (default 256).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// The rotator.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) for a password policy that cannot produce
    /// strong passwords, an empty alternating-users suffix or a zero event capacity.
    pub fn build(self) -> Result<Rotator> {
        self.policy.validate()?;
        self.strategy.validate()?;
        if self.event_capacity == 0 {
            return Err(Error::config(
                "the rotation event capacity must be at least 1",
            ));
        }
        let (events, _) = broadcast::channel(self.event_capacity);
        Ok(Rotator {
            inner: Arc::new(Inner {
                store: self.store,
                target: self.target,
                strategy: self.strategy,
                policy: self.policy,
                on_finished: self.on_finished,
                resume_orphaned: self.resume_orphaned,
                events,
            }),
        })
    }
}
