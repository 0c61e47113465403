//! The seam between the rotation protocol and a secret store.

use async_trait::async_trait;

use crate::error::Result;
use crate::value::{SecretValue, VersionId, Versioned};

/// A secret store as the rotation protocol uses it: a current version, at most one pending
/// version identified by its rotation token, and a promotion that makes the pending version
/// current.
///
/// Every method must be idempotent for its token: the protocol re-runs steps after crashes and
/// timeouts, and a re-run must neither fail because the first run succeeded nor do anything twice.
/// Writes are checked against concurrent writers (AWS: the `RemoveFromVersionId` of a stage move;
/// Vault: check-and-set) and lose with [`ErrorKind::Conflict`](crate::ErrorKind::Conflict); in
/// particular [`promote`](Self::promote) refuses when the version the pending one was made from
/// is no longer current (someone wrote the secret during the rotation). Errors never contain a
/// value.
///
/// The trait is object safe: the [`Rotator`](crate::rotation::Rotator) holds an `Arc<dyn RotationStore>`.
/// A store that wraps another (to add logging, say) forwards every method, the ones with
/// defaults included: a default `complete` in a wrapper would leave the inner store's marks.
/// Implementations: [`MemoryProvider`](crate::MemoryProvider), `AwsRotationStore`
/// (feature `aws`), `VaultKvRotationStore` (feature `vault`).
///
/// # Example
///
/// A complete store over a map, one current and one pending version per secret:
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
///
/// use async_trait::async_trait;
/// use credswap::rotation::RotationStore;
/// use credswap::{Error, ErrorKind, Result, SecretValue, Version, VersionId, Versioned};
///
/// #[derive(Default)]
/// struct MapStore {
///     secrets: Mutex<HashMap<String, Slot>>,
/// }
///
/// #[derive(Default)]
/// struct Slot {
///     // (version id, value), oldest first; the last one is current unless a pending one follows.
///     versions: Vec<(String, SecretValue)>,
///     current: usize,
///     // The pending token and the version it was made from.
///     pending: Option<(String, String)>,
/// }
///
/// impl MapStore {
///     fn with<T>(&self, id: &str, f: impl FnOnce(&mut Slot) -> Result<T>) -> Result<T> {
///         let mut secrets = self.secrets.lock().unwrap();
///         f(secrets.get_mut(id).ok_or_else(|| Error::not_found(id))?)
///     }
/// }
///
/// fn versioned(slot: &Slot, index: usize) -> Versioned<SecretValue> {
///     let (version, value) = &slot.versions[index];
///     Versioned::new(value.clone(), Version::current(version.as_str()))
/// }
///
/// fn conflict(id: &str) -> Error {
///     Error::new(ErrorKind::Conflict).with_id(id)
/// }
///
/// #[async_trait]
/// impl RotationStore for MapStore {
///     fn name(&self) -> &str {
///         "map"
///     }
///
///     async fn current(&self, id: &str) -> Result<Versioned<SecretValue>> {
///         self.with(id, |slot| Ok(versioned(slot, slot.current)))
///     }
///
///     async fn previous(&self, id: &str) -> Result<Option<Versioned<SecretValue>>> {
///         self.with(id, |slot| Ok(slot.current.checked_sub(1).map(|i| versioned(slot, i))))
///     }
///
///     async fn pending_token(&self, id: &str) -> Result<Option<String>> {
///         self.with(id, |slot| Ok(slot.pending.as_ref().map(|(token, _)| token.clone())))
///     }
///
///     async fn read_pending(&self, id: &str, token: &str) -> Result<Option<SecretValue>> {
///         self.with(id, |slot| match &slot.pending {
///             Some((pending, _)) if pending == token => Ok(slot.versions.last().map(|v| v.1.clone())),
///             _ => Ok(None),
///         })
///     }
///
///     async fn write_pending(
///         &self, id: &str, token: &str, value: &SecretValue, base: &VersionId,
///     ) -> Result<()> {
///         self.with(id, |slot| match &slot.pending {
///             Some((pending, _)) if pending == token => Ok(()), // a re-run: already written
///             Some(_) => Err(conflict(id)),
///             None if slot.versions[slot.current].0 != base.as_str() => Err(conflict(id)),
///             None if slot.versions.iter().any(|(version, _)| version == token) => Err(conflict(id)),
///             None => {
///                 slot.versions.push((token.to_owned(), value.clone()));
///                 slot.pending = Some((token.to_owned(), base.as_str().to_owned()));
///                 Ok(())
///             }
///         })
///     }
///
///     async fn promote(&self, id: &str, token: &str) -> Result<VersionId> {
///         self.with(id, |slot| {
///             if slot.versions[slot.current].0 == token {
///                 return Ok(VersionId::new(token)); // already current
///             }
///             match &slot.pending {
///                 Some((pending, base)) if pending == token => {
///                     if slot.versions[slot.current].0 != *base {
///                         return Err(conflict(id)); // written during the rotation
///                     }
///                 }
///                 _ => return Err(Error::not_found(id).with_message("no pending version for token")),
///             }
///             slot.current = slot.versions.len() - 1;
///             slot.pending = None;
///             Ok(VersionId::new(token))
///         })
///     }
///
///     async fn remove_pending(&self, id: &str, token: &str) -> Result<()> {
///         self.with(id, |slot| {
///             if slot.pending.as_ref().is_some_and(|(pending, _)| pending == token) {
///                 slot.pending = None;
///                 slot.versions.truncate(slot.current + 1);
///             }
///             Ok(())
///         })
///     }
///
///     async fn is_current(&self, id: &str, token: &str) -> Result<bool> {
///         self.with(id, |slot| Ok(slot.versions[slot.current].0 == token))
///     }
/// }
///
/// let store: std::sync::Arc<dyn RotationStore> = std::sync::Arc::new(MapStore::default());
/// # drop(store);
/// ```
#[async_trait]
pub trait RotationStore: Send + Sync + 'static {
    /// A short name for events and logs (`"aws-secretsmanager"`, `"vault-kv2"`, …).
    fn name(&self) -> &str;

    /// One name for the secret however `id` spells it, for the rotation lock and the audit trail:
    /// rotators that call one secret by two names (an AWS rotation function gets the ARN, a job the
    /// name) must still take one lock. AWS: the secret's ARN; Vault: mount and normalized path.
    /// The default is `id` itself, right for stores with one spelling per secret.
    async fn canonical_id(&self, id: &str) -> Result<String> {
        Ok(id.to_owned())
    }

    /// The current version: its value and version id (and, where the store says, its creation
    /// time, which [`Rotator::rotate_if_due`](crate::rotation::Rotator::rotate_if_due) reads).
    async fn current(&self, id: &str) -> Result<Versioned<SecretValue>>;

    /// The version before the current one, if the store keeps it (AWS `AWSPREVIOUS`, the previous
    /// KV version). Alternating-users rollback restores the other role to it.
    async fn previous(&self, id: &str) -> Result<Option<Versioned<SecretValue>>>;

    /// The token of the rotation under way, if a pending version exists. A pending version that
    /// is also current (a finished rotation whose label was not yet removed) does not count.
    async fn pending_token(&self, id: &str) -> Result<Option<String>>;

    /// The pending value written for `token`, while `token`'s version *is* the pending one: `None`
    /// for a version that is current, was current once, or lost its pending mark in a rollback.
    /// `set` and `test` act only on what this returns.
    async fn read_pending(&self, id: &str, token: &str) -> Result<Option<SecretValue>>;

    /// For a re-run of `create`: the value an earlier `create` stored for `token` and that never
    /// became current: the pending version, or (in stores that keep them) one a rollback left
    /// without its pending mark and that is newer than the current version. `create` reuses it
    /// rather than make a second password for a token (AWS refuses a second value for a token).
    ///
    /// The default is [`read_pending`](Self::read_pending), right for stores that delete rolled-back
    /// versions.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) where the store knows `token`'s version
    /// exists and must not be reused (it was current once, or predates the current version).
    async fn read_created(&self, id: &str, token: &str) -> Result<Option<SecretValue>> {
        self.read_pending(id, token).await
    }

    /// Stores `value` as the pending version for `token`, made from current version `base`, and
    /// remembers `base` for [`promote`](Self::promote).
    ///
    /// Idempotent: when `token`'s pending version already exists, this does nothing but make sure
    /// it is marked pending (the protocol reads it back first and writes the same value again,
    /// never a different one for a token); the `base` recorded first stays.
    /// Fails with [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) when another token's
    /// rotation is under way or `base` is no longer current.
    async fn write_pending(
        &self,
        id: &str,
        token: &str,
        value: &SecretValue,
        base: &VersionId,
    ) -> Result<()>;

    /// Makes `token`'s pending version current (the current one becomes previous) and returns the
    /// new current version id. Idempotent: when `token` is already current, returns its version
    /// id.
    ///
    /// A store that keeps a mark of the rotation on the promoted version (AWS: `AWSPENDING` and
    /// the base label; Vault: the pending slot) leaves it there: the protocol then runs the
    /// `on_finished` hooks and calls [`complete`](Self::complete), and a rotator that finds the
    /// mark later ([`incomplete_token`](Self::incomplete_token)) knows the hooks may not have run.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict), changing nothing, when the version the
    /// pending one was made from (the `base` given to [`write_pending`](Self::write_pending)) is no
    /// longer current: someone wrote the secret during the rotation, and promoting would throw
    /// their write away. [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when `token` has no
    /// pending version.
    async fn promote(&self, id: &str, token: &str) -> Result<VersionId>;

    /// The token of a rotation that was promoted but not completed: its version is current and
    /// still carries the rotation's mark, so its `on_finished` hooks may not have run (the rotator
    /// died, or the answer to `promote` was lost). `None` when there is none. The default,
    /// `None`, is right for stores that leave no mark on a promoted version.
    async fn incomplete_token(&self, id: &str) -> Result<Option<String>> {
        let _ = id;
        Ok(None)
    }

    /// Removes the mark a promotion left on `token`'s version (after the hooks ran). Idempotent:
    /// nothing to do when `token` is not current or carries no mark. The default does nothing.
    async fn complete(&self, id: &str, token: &str) -> Result<()> {
        let _ = (id, token);
        Ok(())
    }

    /// Removes `token`'s pending mark, if it is the pending version (rollback, abort): a version
    /// that is current, or another token's, is left alone. Stores that keep versions may keep the
    /// value, unmarked (AWS deprecates it), for [`read_created`](Self::read_created).
    async fn remove_pending(&self, id: &str, token: &str) -> Result<()>;

    /// Whether `token`'s version is the current one (its rotation has finished).
    async fn is_current(&self, id: &str, token: &str) -> Result<bool>;
}

// The rotator stores `Arc<dyn RotationStore>`: keep the trait object safe.
const _: Option<&dyn RotationStore> = None;

#[cfg(feature = "aws")]
pub(crate) mod aws;
pub(crate) mod bounded;
mod memory;
#[cfg(feature = "vault")]
pub(crate) mod vault;
