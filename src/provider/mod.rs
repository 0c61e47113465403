//! Where secrets come from: the [`SecretProvider`] trait and the local providers.
//!
//! A provider only talks to its store; it knows nothing of caching, handles or pools.

#[cfg(feature = "aws")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws")))]
mod aws;
mod env;
mod file;
pub(crate) mod memory;
#[cfg(feature = "vault")]
#[cfg_attr(docsrs, doc(cfg(feature = "vault")))]
pub(crate) mod vault;

use async_trait::async_trait;

use crate::error::Result;
use crate::value::{Lease, SecretValue, Selector, VersionId, Versioned};

pub use self::{env::EnvProvider, file::FileProvider, memory::MemoryProvider};

#[cfg(feature = "aws")]
pub use self::aws::AwsSecretsManagerProvider;
#[cfg(all(feature = "vault", feature = "rotation"))]
pub(crate) use self::vault::vault_path;
#[cfg(feature = "vault")]
pub use self::vault::{
    PkiRequest, SessionEvent, VaultAuth, VaultConfig, VaultDatabaseProvider, VaultKvProvider,
    VaultPkiProvider, VaultSession,
};
/// The `vaultrs` this crate talks to Vault through, for
/// [`VaultSession::from_client`](crate::provider::VaultSession::from_client).
#[cfg(feature = "vault")]
pub use vaultrs;

/// A secret store.
///
/// Implement [`fetch`](Self::fetch); override [`probe`](Self::probe) when the store can tell the
/// current version id more cheaply than it can return the value (AWS `DescribeSecret`, Vault KV
/// metadata), and the lease methods when its secrets carry leases. The trait is object safe: the
/// cache holds an `Arc<dyn SecretProvider>`.
///
/// Errors must use the kinds of [`ErrorKind`](crate::ErrorKind) so the cache can tell a missing
/// secret (never retried, never served stale) from a passing outage (retried with backoff,
/// last-known-good served), and must never contain a secret value.
///
/// # Example
///
/// A provider that serves one fixed value:
///
/// ```
/// use credswap::async_trait;
/// use credswap::{Error, Result, SecretProvider, SecretValue, Selector, Version, Versioned};
///
/// struct Fixed;
///
/// #[async_trait]
/// impl SecretProvider for Fixed {
///     fn name(&self) -> &str {
///         "fixed"
///     }
///
///     async fn fetch(&self, id: &str, selector: &Selector) -> Result<Versioned<SecretValue>> {
///         match (id, selector) {
///             ("greeting", Selector::Current) => {
///                 Ok(Versioned::new(SecretValue::from("hello"), Version::current("1")))
///             }
///             _ => Err(Error::not_found(id)),
///         }
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let provider: std::sync::Arc<dyn SecretProvider> = std::sync::Arc::new(Fixed);
/// let got = provider.fetch("greeting", &Selector::Current).await.unwrap();
/// assert_eq!(got.value.expose_str(), Some("hello"));
/// # });
/// ```
#[async_trait]
pub trait SecretProvider: Send + Sync + 'static {
    /// A short name for logs and events (`"memory"`, `"aws-secretsmanager"`, …).
    fn name(&self) -> &str;

    /// Fetches the version of secret `id` that `selector` picks.
    async fn fetch(&self, id: &str, selector: &Selector) -> Result<Versioned<SecretValue>>;

    /// The id of the version `selector` picks, if the store can tell it more cheaply than a fetch.
    ///
    /// `Ok(None)` (the default) means "cannot tell cheaply" and must not have called the store:
    /// the cache then fetches. When this
    /// returns the id of the version the cache already holds, the cache extends that entry without a
    /// fetch.
    async fn probe(&self, id: &str, selector: &Selector) -> Result<Option<VersionId>> {
        let _ = (id, selector);
        Ok(None)
    }

    /// Renews `lease`, returning the renewed lease, or `Ok(None)` when the store has no leases.
    async fn renew_lease(&self, lease: &Lease) -> Result<Option<Lease>> {
        let _ = lease;
        Ok(None)
    }

    /// Revokes `lease` (ends the credentials it covers). A no-op by default.
    async fn revoke_lease(&self, lease: &Lease) -> Result<()> {
        let _ = lease;
        Ok(())
    }
}

// The cache stores `Arc<dyn SecretProvider>`: keep the trait object safe.
const _: Option<&dyn SecretProvider> = None;
