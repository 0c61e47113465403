//! Every store call of the engine bounded in time: a store that stops answering (a black-holed
//! connection, an SDK call without a timeout) must not hold the rotation lock, and with one user
//! the database's lockout, for ever.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;

use super::RotationStore;
use crate::error::{Error, Result};
use crate::value::{SecretValue, VersionId, Versioned};

/// A [`RotationStore`] that gives up on any call of `inner` after `timeout`, with
/// [`ErrorKind::Transient`](crate::ErrorKind::Transient). A call given up on may still have
/// happened in the store: the protocol's steps re-check what they would do, so the next run
/// finishes or undoes it.
pub(crate) struct Bounded {
    pub(crate) inner: std::sync::Arc<dyn RotationStore>,
    pub(crate) timeout: Duration,
}

impl Bounded {
    async fn call<T>(
        &self,
        id: &str,
        operation: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::transient(
                id,
                format!(
                    "the store ({}) did not answer {operation} within {:?}",
                    self.inner.name(),
                    self.timeout
                ),
            )),
        }
    }
}

#[async_trait]
impl RotationStore for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn canonical_id(&self, id: &str) -> Result<String> {
        self.call(id, "canonical_id", self.inner.canonical_id(id))
            .await
    }
    async fn current(&self, id: &str) -> Result<Versioned<SecretValue>> {
        self.call(id, "current", self.inner.current(id)).await
    }
    async fn previous(&self, id: &str) -> Result<Option<Versioned<SecretValue>>> {
        self.call(id, "previous", self.inner.previous(id)).await
    }
    async fn pending_token(&self, id: &str) -> Result<Option<String>> {
        self.call(id, "pending_token", self.inner.pending_token(id))
            .await
    }
    async fn read_pending(&self, id: &str, token: &str) -> Result<Option<SecretValue>> {
        self.call(id, "read_pending", self.inner.read_pending(id, token))
            .await
    }
    async fn read_created(&self, id: &str, token: &str) -> Result<Option<SecretValue>> {
        self.call(id, "read_created", self.inner.read_created(id, token))
            .await
    }
    async fn write_pending(
        &self,
        id: &str,
        token: &str,
        value: &SecretValue,
        base: &VersionId,
    ) -> Result<()> {
        let write = self.inner.write_pending(id, token, value, base);
        self.call(id, "write_pending", write).await
    }
    async fn promote(&self, id: &str, token: &str) -> Result<VersionId> {
        self.call(id, "promote", self.inner.promote(id, token))
            .await
    }
    async fn incomplete_token(&self, id: &str) -> Result<Option<String>> {
        self.call(id, "incomplete_token", self.inner.incomplete_token(id))
            .await
    }
    async fn complete(&self, id: &str, token: &str) -> Result<()> {
        self.call(id, "complete", self.inner.complete(id, token))
            .await
    }
    async fn remove_pending(&self, id: &str, token: &str) -> Result<()> {
        self.call(id, "remove_pending", self.inner.remove_pending(id, token))
            .await
    }
    async fn is_current(&self, id: &str, token: &str) -> Result<bool> {
        self.call(id, "is_current", self.inner.is_current(id, token))
            .await
    }
}
