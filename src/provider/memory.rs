use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;

use super::SecretProvider;
use crate::error::{Error, Result};
use crate::value::{SecretValue, Selector, Stage, Version, VersionId, Versioned};

/// A provider that keeps secrets in memory, with versions and stages like a real store.
///
/// Useful in tests and for secrets an application computes itself. Every [`set`](Self::set) makes
/// a new version current and labels the one before it previous; [`set_pending`](Self::set_pending)
/// and [`promote_pending`](Self::promote_pending) play a rotation's stage dance. It counts the calls
/// it receives and can be told to fail, to stand in for an outage.
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
#[derive(Debug, Default)]
pub struct MemoryProvider {
    secrets: Mutex<HashMap<String, Secret>>,
    failure: Mutex<Option<Error>>,
    fetch_calls: AtomicU64,
    probe_calls: AtomicU64,
}

#[derive(Debug, Default)]
struct Secret {
    versions: Vec<Stored>,
    next: u64,
}

#[derive(Debug)]
struct Stored {
    id: VersionId,
    value: SecretValue,
    stages: Vec<Stage>,
    created_at: SystemTime,
}

impl Stored {
    fn version(&self) -> Version {
        Version {
            id: self.id.clone(),
            stages: self.stages.clone(),
            created_at: Some(self.created_at),
            lease: None,
            next_rotation: None,
        }
    }
}

impl Secret {
    fn push(&mut self, value: SecretValue, stages: Vec<Stage>) -> VersionId {
        self.next += 1;
        let id = VersionId::new(format!("v{}", self.next));
        self.versions.push(Stored {
            id: id.clone(),
            value,
            stages,
            created_at: SystemTime::now(),
        });
        id
    }

    fn drop_stage(&mut self, stage: &Stage) {
        for stored in &mut self.versions {
            stored.stages.retain(|s| s != stage);
        }
    }

    /// Moves `current` to the version at `index`, and `previous` to the version that was current.
    fn make_current(&mut self, index: usize) {
        let old = self
            .versions
            .iter()
            .position(|v| v.stages.contains(&Stage::Current));
        if old == Some(index) {
            return;
        }
        self.drop_stage(&Stage::Previous);
        if let Some(old) = old {
            let stages = &mut self.versions[old].stages;
            stages.retain(|s| s != &Stage::Current);
            stages.push(Stage::Previous);
        }
        let stages = &mut self.versions[index].stages;
        stages.retain(|s| s != &Stage::Pending);
        stages.push(Stage::Current);
    }

    fn find(&self, selector: &Selector) -> Option<&Stored> {
        match selector {
            Selector::Version(id) => self.versions.iter().find(|v| &v.id == id),
            other => {
                let stage = other.stage()?;
                self.versions.iter().find(|v| v.stages.contains(&stage))
            }
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
        let mut secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        let secret = secrets.entry(id.to_owned()).or_default();
        let version = secret.push(value.into(), Vec::new());
        let index = secret.versions.len() - 1;
        secret.make_current(index);
        version
    }

    /// Stores `value` as the pending version of `id` (replacing any earlier pending label).
    pub fn set_pending(&self, id: &str, value: impl Into<SecretValue>) -> VersionId {
        let mut secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        let secret = secrets.entry(id.to_owned()).or_default();
        secret.drop_stage(&Stage::Pending);
        secret.push(value.into(), vec![Stage::Pending])
    }

    /// Makes the pending version of `id` current. Fails with not-found when there is none.
    pub fn promote_pending(&self, id: &str) -> Result<VersionId> {
        let mut secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        let secret = secrets.get_mut(id).ok_or_else(|| Error::not_found(id))?;
        let index = secret
            .versions
            .iter()
            .position(|v| v.stages.contains(&Stage::Pending))
            .ok_or_else(|| Error::not_found(id).with_message("no pending version"))?;
        secret.make_current(index);
        Ok(secret.versions[index].id.clone())
    }

    /// Deletes `id` and all its versions.
    pub fn remove(&self, id: &str) -> bool {
        let mut secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        secrets.remove(id).is_some()
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

    /// Applies `read` to the version of `id` that `selector` picks, after the injected failure.
    fn with_version<T>(
        &self,
        id: &str,
        selector: &Selector,
        read: impl FnOnce(&Stored) -> T,
    ) -> Result<T> {
        self.check_failure(id)?;
        let secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        secrets
            .get(id)
            .and_then(|secret| secret.find(selector))
            .map(read)
            .ok_or_else(|| Error::not_found(id))
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
        self.with_version(id, selector, |stored| {
            Versioned::new(stored.value.clone(), stored.version())
        })
    }

    async fn probe(&self, id: &str, selector: &Selector) -> Result<Option<VersionId>> {
        let _ = self.probe_calls.fetch_add(1, Ordering::Relaxed);
        self.with_version(id, selector, |stored| Some(stored.id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[tokio::test]
    async fn stages_follow_a_rotation() {
        let store = MemoryProvider::new();
        let v1 = store.set("s", "one");
        let v2 = store.set_pending("s", "two");
        let current = store.fetch("s", &Selector::Current).await.unwrap();
        assert_eq!(current.version.id, v1);
        let pending = store
            .fetch("s", &Selector::Stage(Stage::Pending))
            .await
            .unwrap();
        assert_eq!(pending.value.expose_str(), Some("two"));
        assert_eq!(store.promote_pending("s").unwrap(), v2);
        let current = store.fetch("s", &Selector::Current).await.unwrap();
        assert_eq!(current.version.id, v2);
        assert_eq!(current.version.stages, vec![Stage::Current]);
        let previous = store
            .fetch("s", &Selector::Stage(Stage::Previous))
            .await
            .unwrap();
        assert_eq!(previous.version.id, v1);
        assert!(
            store
                .fetch("s", &Selector::Stage(Stage::Pending))
                .await
                .is_err()
        );
        let by_id = store.fetch("s", &Selector::Version(v1)).await.unwrap();
        assert_eq!(by_id.value.expose_str(), Some("one"));
        assert!(store.promote_pending("s").is_err());
    }

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
