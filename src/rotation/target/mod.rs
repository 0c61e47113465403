//! The seam between the rotation protocol and the system whose credential rotates.

use async_trait::async_trait;

use crate::error::Result;
use crate::rotation::strategy::Strategy;
use crate::value::SecretValue;

/// The system whose credential rotates (a database), as the protocol uses it.
///
/// [`begin`](Self::begin) opens a [`TargetSession`] that holds the target's exclusive lock for
/// the secret until it is released or dropped, so rotators in different processes never
/// interleave. [`PostgresTarget`](crate::rotation::PostgresTarget) is the implementation this crate ships;
/// the trait exists so another database can be added, and so tests of the protocol's logic can use
/// a stand-in.
///
/// Values are whole secrets (the JSON document the store holds); the target reads the fields it
/// needs. Errors never contain a value.
#[async_trait]
pub trait RotationTarget: Send + Sync + 'static {
    /// A short name for events and logs (`"postgres"`).
    fn name(&self) -> &str;

    /// Checks, before anything changes, that `username` is a name the target accepts (length,
    /// characters). [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest) when not.
    fn check_username(&self, secret_id: &str, username: &str) -> Result<()> {
        let _ = (secret_id, username);
        Ok(())
    }

    /// Opens a session that holds the rotation lock for `secret_id`, or `Ok(None)` when another
    /// rotator holds it. `current` (and `pending`, when a rotation is under way) are the
    /// credentials the session may log in with when the target has no admin credential of its
    /// own; `strategy` says what the session will be asked to do.
    async fn begin(
        &self,
        secret_id: &str,
        strategy: &Strategy,
        current: &SecretValue,
        pending: Option<&SecretValue>,
    ) -> Result<Option<Box<dyn TargetSession>>>;
}

/// A session with the target that holds the rotation lock; dropping it releases the lock too
/// (the connection closes), [`release`](Self::release) does it promptly and reports errors.
#[async_trait]
pub trait TargetSession: Send {
    /// Whether `credential` logs in now (an authentication failure is `Ok(false)`).
    async fn logs_in(&mut self, credential: &SecretValue) -> Result<bool>;

    /// Makes `credential` work: its user gets its password. With `clone_of`, the user is created
    /// first when it does not exist, able to log in and a member of that role.
    async fn apply(&mut self, credential: &SecretValue, clone_of: Option<&str>) -> Result<()>;

    /// Logs in with `credential` on a new connection and runs the target's check.
    async fn verify(&mut self, credential: &SecretValue) -> Result<()>;

    /// Releases the lock and ends the session.
    async fn release(self: Box<Self>) -> Result<()>;
}

const _: Option<&dyn RotationTarget> = None;
const _: Option<&dyn TargetSession> = None;

mod no_cleartext;
pub(crate) mod postgres;
pub(crate) mod sql;
