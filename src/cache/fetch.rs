//! How a load asks the store: a cheap version probe when the cache holds the key (falling back to
//! a fetch where the probe is not allowed), lease renewal for leased values, and a fetch with a few
//! retries when there is nothing to fall back on.

use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;

use super::entry::Entry;
use super::events::{SecretEvent, StoreCall, StoreOperation};
use super::key::Key;
use super::secret_cache::Inner;
use crate::error::{ErrorKind, Result};
use crate::events::bump;
use crate::time::Instant;
use crate::value::{Lease, SecretValue, Versioned};

/// What the store answered.
pub(super) struct Answer {
    pub(super) value: Arc<Versioned<SecretValue>>,
    /// The store refused the probe for this key: later loads fetch directly.
    pub(super) probe_denied: bool,
}

impl Inner {
    pub(super) async fn ask_store(&self, key: &Key, previous: Option<&Entry>) -> Result<Answer> {
        let Some(previous) = previous else {
            return Ok(Answer {
                value: self.fetch_with_retries(key).await?,
                probe_denied: false,
            });
        };
        if let Some(lease) = &previous.value.version.lease {
            return Ok(Answer {
                value: self.renew_or_replace(key, previous, lease).await?,
                probe_denied: previous.probe_denied,
            });
        }
        let mut probe_denied = previous.probe_denied;
        if !probe_denied {
            // A cheap probe first: an unchanged version needs no fetch. `Ok(None)` means the
            // provider cannot probe and made no call.
            let probe = self.provider.probe(&key.id, &key.selector);
            match self.timed(key, StoreOperation::Probe, probe).await {
                Ok(Some(version)) => {
                    bump(&self.counters.probes);
                    if version == previous.value.version.id {
                        return Ok(Answer {
                            value: Arc::clone(&previous.value),
                            probe_denied,
                        });
                    }
                }
                Ok(None) => {}
                Err(error) if error.kind() == ErrorKind::AccessDenied => {
                    // A policy may allow reading the value but not describing it (AWS
                    // `DescribeSecret`, Vault KV metadata). Fetching still works, and is what a
                    // probe would have led to anyway.
                    bump(&self.counters.probes);
                    tracing::info!(
                        id = %key.id,
                        "credswap: the store denies the version probe; fetching the value instead"
                    );
                    probe_denied = true;
                }
                Err(error) => {
                    bump(&self.counters.probes);
                    return Err(error);
                }
            }
        }
        bump(&self.counters.fetches);
        let fetch = self.provider.fetch(&key.id, &key.selector);
        let value = self.timed(key, StoreOperation::Fetch, fetch).await?;
        Ok(Answer {
            value: Arc::new(value),
            probe_denied,
        })
    }

    /// A leased value: renew the lease while the store grants it in full; once a renewal comes
    /// back shortened (the max TTL is near) or is refused, fetch new credentials, before the old
    /// ones end.
    async fn renew_or_replace(
        &self,
        key: &Key,
        previous: &Entry,
        lease: &Lease,
    ) -> Result<Arc<Versioned<SecretValue>>> {
        if lease.renewable {
            let renew = self.provider.renew_lease(lease);
            match self.timed(key, StoreOperation::RenewLease, renew).await {
                Ok(Some(renewed)) if renewed.duration >= lease.duration => {
                    bump(&self.counters.lease_renewals);
                    self.events.emit(SecretEvent::LeaseRenewed {
                        id: Arc::clone(&key.id),
                        version: previous.value.version.id.clone(),
                        expires_in: renewed.duration,
                    });
                    let mut value = Versioned::clone(&previous.value);
                    value.version.lease = Some(renewed);
                    return Ok(Arc::new(value));
                }
                Ok(_) => {
                    tracing::info!(id = %key.id, "lease near its max TTL: fetching new credentials");
                }
                Err(error) if error.is_retryable() => return Err(error),
                Err(error) => {
                    tracing::info!(id = %key.id, kind = %error.kind(), "lease renewal refused: fetching new credentials");
                }
            }
        }
        bump(&self.counters.lease_replacements);
        self.fetch_with_retries(key).await
    }

    /// Runs one store call and reports it (operation, outcome, duration) to the store-call hooks.
    async fn timed<T>(
        &self,
        key: &Key,
        operation: StoreOperation,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let result = call.await;
        self.calls.emit(StoreCall {
            id: Arc::clone(&key.id),
            provider: Arc::clone(&self.provider_name),
            operation,
            error: result.as_ref().err().map(crate::Error::kind),
            duration: started.elapsed(),
        });
        result
    }

    async fn fetch_with_retries(&self, key: &Key) -> Result<Arc<Versioned<SecretValue>>> {
        // Retry passing failures a few times before giving up.
        let fetch = || async {
            bump(&self.counters.fetches);
            let fetch = self.provider.fetch(&key.id, &key.selector);
            self.timed(key, StoreOperation::Fetch, fetch).await
        };
        fetch
            .retry(
                self.policy
                    .backoff()
                    .builder()
                    .with_max_times(self.policy.cold_retries),
            )
            .sleep(tokio::time::sleep)
            .when(crate::Error::is_retryable)
            .adjust(|error, delay| {
                delay.map(|d| d.max(error.retry_after().unwrap_or(Duration::ZERO)))
            })
            .notify(|error, delay| {
                tracing::debug!(id = %key.id, kind = %error.kind(), ?delay, "retrying secret fetch");
            })
            .await
            .map(Arc::new)
    }
}
