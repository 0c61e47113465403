//! The rotation engine: crash-safe, four-phase rotation of PostgreSQL credentials, one rotator per
//! secret (feature `rotation`).
//!
//! The rest of the crate keeps applications connected while a secret rotates; this module performs
//! the rotation: from a scheduled job, an operator's command, or the body of an AWS Secrets Manager
//! rotation function. The guide with the permissions each part needs is [`docs::rotation`](crate::docs::rotation).
//!
//! # The protocol
//!
//! A rotation is identified by a **token** (a random UUID, which becomes the new version's id in
//! AWS) and runs four [`Step`]s:
//!
//! 1. **`create`**: generate a password ([`PasswordPolicy`], the operating system's random source)
//!    and store the new credential as the *pending* version, keeping every field of the secret's
//!    JSON and changing only `password` (and, for alternating users, `username`). The pending
//!    version is written *before* the database changes.
//! 2. **`set`**: apply it to the database: `ALTER ROLE "<role>" PASSWORD '<SCRAM verifier>'`, the
//!    verifier computed on the client, so no password ever appears in SQL or in the server's log.
//! 3. **`test`**: log in with the pending credential on a new connection and run a query.
//! 4. **`finish`**: promote pending to current; the old current becomes previous. An optional hook
//!    ([`RotatorBuilder::on_finished`]) announces it. The store refuses the promotion when the
//!    secret was written since `create` (the version the pending one was made from is no longer
//!    current): the rotation is then undone, as after a failed `test`, and the write is kept.
//!
//! `set` and `test` act only while the token is the store's pending version: a late or repeated
//! step of an older rotation (an AWS retry that arrives after the next rotation began) changes
//! nothing and fails with [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) or
//! [`ErrorKind::Conflict`](crate::ErrorKind::Conflict).
//!
//! [`Rotator::rotate`] runs all four under one lock; [`Rotator::step`] runs one, in the shape an AWS
//! rotation function receives (`SecretId`, `ClientRequestToken`, `Step`).
//!
//! # Crash safety
//!
//! Every step re-checks the state it would create, so re-running any step after a crash or a
//! timeout does no harm and never generates a second password:
//!
//! | step | already done when | then |
//! |---|---|---|
//! | `create` | the token is current, or a version for it exists that was never current (pending, or rolled back) | reuse it; no new password |
//! | `set` | the token is current, or the pending credential already logs in | nothing to do |
//! | `test` | the token is current | nothing to do |
//! | `finish` | the token is current | finish the store's cleanup, call the hook again |
//!
//! A rotator that dies mid-rotation leaves a pending version. The next [`Rotator::rotate`] that
//! takes the lock finishes it, with its token and its password (the dead rotator no longer holds
//! the lock; turn this off with [`RotatorBuilder::resume_orphaned`]); [`Rotator::resume`] does the
//! same on demand and [`Rotator::abort`] undoes it.
//!
//! # Rollback
//!
//! When `test` fails after `set` changed the database, or `finish` finds the secret written during
//! the rotation, the rotator puts the database back on the store's current credential (a fresh
//! verifier of the current password; for alternating users the other role gets the previous
//! version's password back), removes the pending version from the store, and fails with
//! [`ErrorKind::RolledBack`](crate::ErrorKind::RolledBack), whose message says which step failed
//! and what was restored. If the rollback itself fails, the error says so, and whether the
//! database was restored, and the pending version stays as the mark of unfinished work; `abort`
//! retries the rollback.
//!
//! # Strategies and their windows
//!
//! - [`Strategy::SingleUser`] re-passwords the role in the secret. PostgreSQL keeps one password
//!   per role, so **between `set` and `finish` only the new password works**: a consumer opening a
//!   connection in that window with the old one is rejected (`28P01`); the rotation-aware pools
//!   turn that rejection into one coalesced refresh of the secret and a retry, and once `finish` has
//!   promoted the new version the refresh finds it. Callers see no error; a few logins wait for a
//!   refresh. Connections opened before the rotation keep working (PostgreSQL checks passwords only
//!   at login).
//! - [`Strategy::AlternatingUsers`] re-passwords the role that is *not* in the current secret
//!   (`app` ↔ `app_clone`, the clone created on first use as a member of `app`) and moves the secret
//!   to it. The current role is never touched, so nothing is rejected at any point, and the previous
//!   role keeps working until the next rotation: consumers still on the previous version (dual-read,
//!   a pool's fallback) are fine. Zero downtime, at the price of an admin credential.
//!
//! # One rotator at a time
//!
//! Several replicas may run the same schedule. The PostgreSQL target holds an advisory lock for
//! the whole call (on its own session, so it ends with a crashed rotator's connection), keyed by
//! the store's [canonical name](RotationStore::canonical_id) of the secret, so a rotation function
//! given the ARN and a job given the name take the same lock. The stores refuse a second pending
//! version (AWS: an `AWSPENDING` version of another token; Vault: check-and-set on the pending
//! slot), and promotion is a check-and-set too (AWS: the version the pending one was made from,
//! which its `credswap-base-<version>` label names, must still hold `AWSCURRENT`, and
//! `RemoveFromVersionId` must hold it; Vault: `cas` = the version the pending one was made from). A rotator that finds the lock taken, or another rotator's pending
//! version appearing as it writes its own, returns [`RotationOutcome::UnderWay`], changes nothing,
//! and is not an error. [`Rotator::rotate_if_due`] also skips a secret rotated recently by
//! another replica.
//!
//! # Stores
//!
//! - [`MemoryProvider`](crate::MemoryProvider): in memory, with AWS's stage semantics; the same
//!   store is a [`SecretProvider`](crate::SecretProvider), for tests.
//! - `AwsRotationStore` (feature `aws`): AWS's own version stages, the token as the version id,
//!   interoperating with `RotateSecret` and AWS's rotation functions; its docs tell the protocol,
//!   step by step (it is told there only).
//! - `VaultKvRotationStore` (feature `vault`): KV v2, with the pending credential in a separate
//!   slot that readers never read; its module docs describe the check-and-set scheme.
//!
//! # Audit
//!
//! Every step, rollback and rotation emits a [`RotationEvent`] (rotation id, the secret's canonical
//! name, step, token, old and new version ids, outcome, duration; never a value) on
//! [`Rotator::subscribe`] and as a `tracing` event with target `credswap::rotation`.
//!
//! # Example
//!
//! ```no_run
//! # #![allow(dead_code)]
//! # async fn run() -> credswap::Result<()> {
//! # #[cfg(feature = "aws")] {
//! use std::sync::Arc;
//! use credswap::rotation::{AwsRotationStore, PostgresTarget, RotationOutcome, Rotator, Strategy};
//!
//! let store = AwsRotationStore::from_env().await;
//! let target = PostgresTarget::new().admin("rotator", std::env::var("ROTATOR_PASSWORD").unwrap());
//! let rotator = Rotator::builder(Arc::new(store), Arc::new(target))
//!     .strategy(Strategy::alternating_users())
//!     .build()?;
//! match rotator.rotate("prod/orders/db").await? {
//!     RotationOutcome::Rotated { new_version, .. } => println!("rotated to {new_version}"),
//!     RotationOutcome::UnderWay { token } => println!("another rotator is at work: {token:?}"),
//!     other => println!("{other:?}"),
//! }
//! # }
//! # Ok(()) }
//! ```

mod builder;
mod events;
mod inner;
mod password;
mod rotator;
mod run;
mod schedule;
mod steps;
mod store;
mod strategy;
mod target;
#[cfg(test)]
mod tests;

pub use self::{
    builder::RotatorBuilder,
    events::{AuditActivity, AuditOutcome, RotationEvent},
    password::PasswordPolicy,
    rotator::Rotator,
    schedule::{Attempts, Schedule, ScheduledRotation, Window},
    steps::{FinishedRotation, RotationOutcome, Step, StepOutcome, new_token},
    store::RotationStore,
    strategy::Strategy,
    target::{RotationTarget, TargetSession, postgres::PostgresTarget},
};

#[cfg(feature = "aws")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws")))]
pub use self::store::aws::AwsRotationStore;
#[cfg(feature = "vault")]
#[cfg_attr(docsrs, doc(cfg(feature = "vault")))]
pub use self::store::vault::VaultKvRotationStore;
