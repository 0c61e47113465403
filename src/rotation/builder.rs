//! Configuring a [`Rotator`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::inner::{FinishedHook, Inner};
use super::password::PasswordPolicy;
use super::rotator::Rotator;
use super::steps::FinishedRotation;
use super::store::RotationStore;
use super::store::bounded::Bounded;
use super::strategy::Strategy;
use super::target::RotationTarget;
use crate::error::{Error, Result};
use crate::events::Emitter;
use crate::push::Publisher;

/// How long one store call may take unless [`RotatorBuilder::store_timeout`] says otherwise.
const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds a [`Rotator`]: `Rotator::builder(store, target)`, then the options, then
/// [`build`](Self::build).
///
/// ```
/// use std::sync::Arc;
/// use credswap::MemoryProvider;
/// use credswap::rotation::{PasswordPolicy, PostgresTarget, Rotator, Strategy};
///
/// let rotator = Rotator::builder(
///     Arc::new(MemoryProvider::new()),
///     Arc::new(PostgresTarget::new().admin("rotator", "admin-password")),
/// )
/// .strategy(Strategy::alternating_users())
/// .password_policy(PasswordPolicy::default().length(40))
/// .on_finished(|finished| async move {
///     println!("{} is now at {}", finished.secret_id, finished.version);
/// })
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
    on_finished: Vec<FinishedHook>,
    resume_orphaned: bool,
    store_timeout: Duration,
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
            .field("on_finished", &self.on_finished.len())
            .field("store_timeout", &self.store_timeout)
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
            on_finished: Vec::new(),
            resume_orphaned: true,
            store_timeout: DEFAULT_STORE_TIMEOUT,
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

    /// Runs `hook` once a rotation has finished (its new version is current): the place to
    /// announce it to consumers. Hooks run in the order they were added, each awaited under the
    /// rotation lock and bounded by the [store timeout](Self::store_timeout); a hook that panics
    /// or hangs is logged (without its message) and the rotation is finished all the same. For
    /// the common case, [`announce_to`](Self::announce_to) is this with a push publisher.
    ///
    /// # Exactly once
    ///
    /// The hooks run once per rotation, also across crashes and lost answers: a promotion leaves
    /// a mark in the store (AWS: `AWSPENDING` and the base label on the new version; Vault: the
    /// pending slot) that is removed only after the hooks ran, and the next `rotate`, `resume`,
    /// `abort`, scheduled attempt or `finishSecret` that finds it runs the hooks it missed. The one
    /// window left: when the store fails to remove the mark right after the hooks ran, the next
    /// rotator runs them again (announcements take that in their stride).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use credswap::MemoryProvider;
    /// # use credswap::rotation::{PostgresTarget, Rotator};
    /// let rotator = Rotator::builder(
    ///     Arc::new(MemoryProvider::new()),
    ///     Arc::new(PostgresTarget::new().allow_plaintext()),
    /// )
    /// .on_finished(|finished| async move {
    ///     tracing::info!(secret = %finished.secret_id, version = %finished.version, "rotated");
    /// })
    /// .build()?;
    /// # drop(rotator);
    /// # Ok::<(), credswap::Error>(())
    /// ```
    pub fn on_finished<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(FinishedRotation) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_finished
            .push(Arc::new(move |finished| Box::pin(hook(finished))));
        self
    }

    /// Announces every finished rotation on `publisher` ([`Publisher::announce`]: the secret's
    /// canonical name and its new version, never a value), as an
    /// [`on_finished`](Self::on_finished) hook. An announcement that fails is logged by the
    /// publisher; consumers then find the new version at their next refresh.
    ///
    /// ```no_run
    /// # #![allow(dead_code)]
    /// # async fn run(rotator: credswap::rotation::RotatorBuilder) -> credswap::Result<()> {
    /// # #[cfg(feature = "push-redis")] {
    /// use credswap::push::{DEFAULT_CHANNEL, RedisPublisher};
    ///
    /// let rotator = rotator
    ///     .announce_to(RedisPublisher::open("redis://broker:6379", DEFAULT_CHANNEL)?)
    ///     .build()?;
    /// # drop(rotator); }
    /// # Ok(()) }
    /// ```
    pub fn announce_to(self, publisher: impl Publisher + 'static) -> Self {
        let publisher = Arc::new(publisher);
        self.on_finished(move |finished| {
            let publisher = Arc::clone(&publisher);
            async move {
                // `announce` logs its outcome.
                let _ = publisher
                    .announce(&finished.secret_id, &finished.version)
                    .await;
            }
        })
    }

    /// How long any one call to the store (and any one hook) may take before the step gives up
    /// with [`ErrorKind::Transient`](crate::ErrorKind::Transient) (default 30 s): a store that
    /// stops answering must not hold the rotation lock for ever. A call given up on may still
    /// have happened in the store; the next run finishes or undoes the rotation.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
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
    /// strong passwords, an empty alternating-users suffix, a zero event capacity or store
    /// timeout.
    pub fn build(self) -> Result<Rotator> {
        self.policy.validate()?;
        self.strategy.validate()?;
        if self.event_capacity == 0 {
            return Err(Error::config(
                "the rotation event capacity must be at least 1",
            ));
        }
        if self.store_timeout.is_zero() || self.store_timeout > crate::time::MAX_SETTING {
            return Err(Error::config(
                "the rotation store timeout must be above zero and at most ten years",
            ));
        }
        let events = Emitter::new(self.event_capacity, Vec::new());
        Ok(Rotator {
            inner: Arc::new(Inner {
                store: Arc::new(Bounded {
                    inner: self.store,
                    timeout: self.store_timeout,
                }),
                target: self.target,
                strategy: self.strategy,
                policy: self.policy,
                on_finished: self.on_finished,
                resume_orphaned: self.resume_orphaned,
                store_timeout: self.store_timeout,
                events,
            }),
        })
    }
}
