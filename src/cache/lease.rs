//! Ending leases: revoking what the cache holds at shutdown, and what a discarded load fetched.

use std::sync::Arc;

use super::entry::Entry;
use super::inflight::Fate;
use super::secret_cache::{Inner, SecretCache};
use crate::error::Result;
use crate::value::Lease;

impl SecretCache {
    /// Revokes the lease of every cached leased secret (Vault dynamic credentials) and forgets
    /// those secrets: their database users end now rather than at their max TTL. Returns how many
    /// leases were revoked.
    ///
    /// A renewal or fetch of those secrets under way is discarded (and what it fetched revoked):
    /// it cannot bring a revoked lease back. Handles keep their last snapshot, so stop using them
    /// (and close pools built on them) first: the credentials no longer work. The next read, or a
    /// handle's next refresh, fetches new credentials; to end everything at once, use
    /// [`shutdown_revoking_leases`](Self::shutdown_revoking_leases).
    ///
    /// # Errors
    ///
    /// The first revocation that failed; the others are still attempted.
    pub async fn revoke_leases(&self) -> Result<usize> {
        let leased = self.inner.forget_leased();
        self.inner.revoke_all(leased).await
    }
}

impl Inner {
    /// Removes every leased entry from the cache, discarding loads of those keys, and returns
    /// them.
    pub(super) fn forget_leased(&self) -> Vec<Arc<Entry>> {
        let leased: Vec<Arc<Entry>> = {
            let mut loads = self.loads.lock();
            let leased: Vec<Arc<Entry>> = self
                .index
                .load()
                .values()
                .filter(|entry| entry.value.version.lease.is_some())
                .cloned()
                .collect();
            for entry in &leased {
                let cache_key = &entry.key.cache_key;
                loads.discard_where(Fate::Revoked, |key| key == &**cache_key);
                self.index.remove_if_same(cache_key, entry);
            }
            leased
        };
        for entry in &leased {
            self.store.invalidate(&entry.key.cache_key);
        }
        leased
    }

    pub(super) async fn revoke_all(&self, entries: Vec<Arc<Entry>>) -> Result<usize> {
        let mut revoked = 0;
        let mut first_error = None;
        for entry in entries {
            let Some(lease) = &entry.value.version.lease else {
                continue;
            };
            match self.provider.revoke_lease(lease).await {
                Ok(()) => revoked += 1,
                Err(error) => {
                    tracing::warn!(id = %entry.key.id, kind = %error.kind(), "lease revocation failed");
                    let _ = first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(revoked),
        }
    }

    /// Revokes `lease` in the background (a value nobody will use).
    pub(super) fn spawn_revoke(&self, lease: Lease) {
        let provider = Arc::clone(&self.provider);
        let _task = tokio::spawn(async move {
            if let Err(error) = provider.revoke_lease(&lease).await {
                tracing::warn!(kind = %error.kind(), "credswap: revoking a discarded lease failed");
            }
        });
    }
}
