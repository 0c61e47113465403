use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;

use super::SecretProvider;
use crate::error::{Error, Result};
use crate::time::{Instant, later_wall};
use crate::value::{SecretValue, Selector, Stage, Version, VersionId, Versioned};

/// A store that keeps secrets in memory, with versions and stages like a real store: a
/// [`SecretProvider`] for caches and, with the `rotation` feature, a
/// [`RotationStore`](crate::rotation::RotationStore) for the rotation engine, so tests of your
/// own rotation flows need no server and a cache reads what a rotator rotates.
///
/// Every [`set`](Self::set) makes a new version current and labels the one before it previous
/// (as an operator's write would: a rotation under way then fails at `finish`). As a rotation
/// store it has the stage semantics of AWS Secrets Manager: the pending version's id is its
/// rotation token, promotion moves `current` to it and `previous` to the version that was
/// current, and a rolled-back version stays, unlabelled. It counts the provider calls it
/// receives and can be told to fail, to stand in for an outage.
///
/// Creation times follow Tokio's clock from the moment the store was made (the wall clock, unless
/// a test pauses time), so a [`Schedule`](crate::rotation::Schedule) tested under
/// `tokio::time::pause()` sees versions age.
///
/// ```
/// use credswap::{MemoryProvider, SecretProvider, Selector, Stage};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemoryProvider::new();
/// store.set("api-key", "old");
/// store.set("api-key", "new");
/// let previous = store.fetch("api-key", &Selector::Stage(Stage::Previous)).await.unwrap();
/// assert_eq!(previous.value.expose_str(), Some("old"));
/// assert_eq!(store.fetch_calls(), 1);
/// # });
/// ```
#[derive(Debug)]
pub struct MemoryProvider {
    secrets: Mutex<HashMap<String, Secret>>,
    failure: Mutex<Option<Error>>,
    fetch_calls: AtomicU64,
    probe_calls: AtomicU64,
    /// The wall clock and Tokio's clock when the store was made: creation times are the one plus
    /// what the other has run since.
    epoch: (SystemTime, Instant),
}

impl Default for MemoryProvider {
    fn default() -> Self {
        MemoryProvider {
            secrets: Mutex::default(),
            failure: Mutex::default(),
            fetch_calls: AtomicU64::new(0),
            probe_calls: AtomicU64::new(0),
            epoch: (SystemTime::now(), Instant::now()),
        }
    }
}

/// One secret's versions, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Secret {
    pub(crate) versions: Vec<Stored>,
    next: u64,
}

#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) id: VersionId,
    pub(crate) value: SecretValue,
    pub(crate) stages: Vec<Stage>,
    pub(crate) created_at: SystemTime,
    /// For a pending version: the version it was made from.
    pub(crate) base: Option<VersionId>,
}

impl Stored {
    pub(crate) fn versioned(&self) -> Versioned<SecretValue> {
        Versioned::new(
            self.value.clone(),
            Version {
                id: self.id.clone(),
                stages: self.stages.clone(),
                created_at: Some(self.created_at),
                lease: None,
                next_rotation: None,
            },
        )
    }

    pub(crate) fn has(&self, stage: &Stage) -> bool {
        self.stages.contains(stage)
    }

    // Used by the rotation store (`rotation/store/memory.rs`).
    #[cfg(feature = "rotation")]
    /// Pending and not yet current (a promoted version keeps its pending mark until `complete`).
    pub(crate) fn is_pending(&self) -> bool {
        self.has(&Stage::Pending) && !self.has(&Stage::Current)
    }
}

impl Secret {
    pub(crate) fn with_stage(&self, stage: &Stage) -> Option<&Stored> {
        self.versions.iter().find(|v| v.has(stage))
    }

    pub(crate) fn version(&self, id: &str) -> Option<&Stored> {
        self.versions.iter().find(|v| v.id.as_str() == id)
    }

    #[cfg(feature = "rotation")]
    pub(crate) fn index_of(&self, id: &str) -> Option<usize> {
        self.versions.iter().position(|v| v.id.as_str() == id)
    }

    #[cfg(feature = "rotation")]
    fn current_index(&self) -> Option<usize> {
        self.versions.iter().position(|v| v.has(&Stage::Current))
    }

    fn drop_stage(&mut self, stage: &Stage) {
        for stored in &mut self.versions {
            stored.stages.retain(|s| s != stage);
        }
    }

    #[cfg(feature = "rotation")]
    pub(crate) fn pending_token(&self) -> Option<&VersionId> {
        self.versions.iter().find(|v| v.is_pending()).map(|v| &v.id)
    }

    // Used by the rotation store (`rotation/store/memory.rs`).
    #[cfg(feature = "rotation")]
    /// Whether the version at `index` is one a rollback left: unlabelled and newer than the
    /// current version, so never current (versions become current in the order they were made).
    pub(crate) fn is_abandoned(&self, index: usize) -> bool {
        self.versions[index].stages.is_empty()
            && self.current_index().is_none_or(|current| index > current)
    }

    /// Makes the version at `index` current, the current one previous. A version that was
    /// current loses any mark of an incomplete rotation with its current stage.
    pub(crate) fn make_current(&mut self, index: usize, keep_pending_mark: bool) {
        self.drop_stage(&Stage::Previous);
        for stored in &mut self.versions {
            if stored.has(&Stage::Current) {
                stored
                    .stages
                    .retain(|s| s != &Stage::Current && s != &Stage::Pending);
                stored.stages.push(Stage::Previous);
            }
        }
        let promoted = &mut self.versions[index];
        if !keep_pending_mark {
            promoted.stages.retain(|s| s != &Stage::Pending);
        }
        promoted.stages.push(Stage::Current);
        promoted.base = None;
    }

    fn find(&self, selector: &Selector) -> Option<&Stored> {
        match selector {
            Selector::Version(id) => self.version(id.as_str()),
            other => self.with_stage(&other.stage()?),
        }
    }
}

impl MemoryProvider {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` as the new current version of `id` and returns its version id. The version
    /// that was current becomes previous.
    pub fn set(&self, id: &str, value: impl Into<SecretValue>) -> VersionId {
        let now = self.now();
        let mut secrets = self.lock();
        let secret = secrets.entry(id.to_owned()).or_default();
        secret.next += 1;
        let version = VersionId::new(format!("v{}", secret.next));
        secret.versions.push(Stored {
            id: version.clone(),
            value: value.into(),
            stages: Vec::new(),
            created_at: now,
            base: None,
        });
        let index = secret.versions.len() - 1;
        secret.make_current(index, false);
        version
    }

    /// Deletes `id` and all its versions.
    pub fn remove(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    /// Makes every call fail with `error` until called again with `None`: an outage on demand.
    pub fn fail_with(&self, error: Option<Error>) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// How many times [`fetch`](SecretProvider::fetch) was called.
    pub fn fetch_calls(&self) -> u64 {
        self.fetch_calls.load(Ordering::Relaxed)
    }

    /// How many times [`probe`](SecretProvider::probe) was called.
    pub fn probe_calls(&self) -> u64 {
        self.probe_calls.load(Ordering::Relaxed)
    }

    /// The creation time of a version made now.
    pub(crate) fn now(&self) -> SystemTime {
        later_wall(self.epoch.0, self.epoch.1.elapsed())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Secret>> {
        self.secrets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `act` to secret `id`, after the injected failure; not found when there is none.
    pub(crate) fn with<T>(
        &self,
        id: &str,
        act: impl FnOnce(&mut Secret) -> Result<T>,
    ) -> Result<T> {
        self.check_failure(id)?;
        let mut secrets = self.lock();
        let secret = secrets.get_mut(id).ok_or_else(|| Error::not_found(id))?;
        act(secret)
    }

    fn check_failure(&self, id: &str) -> Result<()> {
        match &*self.failure.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(error) => Err(error.clone().with_id(id)),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl SecretProvider for MemoryProvider {
    fn name(&self) -> &str {
        "memory"
    }

    async fn fetch(&self, id: &str, selector: &Selector) -> Result<Versioned<SecretValue>> {
        let _ = self.fetch_calls.fetch_add(1, Ordering::Relaxed);
        self.with(id, |secret| {
            secret
                .find(selector)
                .map(Stored::versioned)
                .ok_or_else(|| Error::not_found(id))
        })
    }

    async fn probe(&self, id: &str, selector: &Selector) -> Result<Option<VersionId>> {
        let _ = self.probe_calls.fetch_add(1, Ordering::Relaxed);
        self.with(id, |secret| {
            secret
                .find(selector)
                .map(|stored| Some(stored.id.clone()))
                .ok_or_else(|| Error::not_found(id))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[tokio::test]
    async fn failures_and_removal() {
        let store = MemoryProvider::new();
        let _ = store.set("s", "x");
        store.fail_with(Some(Error::throttled("ignored")));
        let err = store.fetch("s", &Selector::Current).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Throttled);
        assert_eq!(err.id(), Some("s"));
        store.fail_with(None);
        assert!(store.remove("s"));
        let err = store.fetch("s", &Selector::Current).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(store.fetch_calls(), 2);
    }
}
