//! A rotation store in memory, for tests and for secrets an application rotates for itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;

use super::RotationStore;
use crate::error::{Error, ErrorKind, Result};
use crate::provider::SecretProvider;
use crate::time::{Instant, later_wall};
use crate::value::{SecretValue, Selector, Stage, Version, VersionId, Versioned};

/// A [`RotationStore`] in memory, with the stage semantics of AWS Secrets Manager: the pending
/// version's id is its rotation token, promotion moves `current` to it and `previous` to the version
/// that was current, and a rolled-back version stays, unlabelled.
///
/// It is also a [`SecretProvider`], so a [`SecretCache`](crate::SecretCache) can read what a
/// [`Rotator`](crate::rotation::Rotator) rotates: tests of your own rotation flows need no server.
///
/// Creation times follow Tokio's clock from the moment the store was made (the wall clock, unless
/// a test pauses time), so a [`Schedule`](crate::rotation::Schedule) tested under `tokio::time::pause()`
/// sees versions age.
///
/// ```
/// use credswap::rotation::{MemoryRotationStore, RotationStore};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemoryRotationStore::new();
/// let v1 = store.set("db", r#"{"username": "app", "password": "first"}"#);
/// let token = "0b7c3c7e-5f44-4d55-9d0e-6b8f8f0e2a11";
/// let next = r#"{"username": "app", "password": "second"}"#.into();
/// store.write_pending("db", token, &next, &v1).await?;
/// assert_eq!(store.pending_token("db").await?.as_deref(), Some(token));
/// store.promote("db", token).await?;
/// assert!(store.is_current("db", token).await?);
/// assert_eq!(store.previous("db").await?.unwrap().version.id, v1);
/// # Ok::<(), credswap::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct MemoryRotationStore {
    secrets: Mutex<HashMap<String, Secret>>,
    /// The wall clock and Tokio's clock when the store was made: creation times are the one plus
    /// what the other has run since.
    epoch: (SystemTime, Instant),
}

impl Default for MemoryRotationStore {
    fn default() -> Self {
        MemoryRotationStore {
            secrets: Mutex::default(),
            epoch: (SystemTime::now(), Instant::now()),
        }
    }
}

#[derive(Debug, Default)]
struct Secret {
    /// Oldest first.
    versions: Vec<Stored>,
    next: u64,
}

#[derive(Debug)]
struct Stored {
    id: VersionId,
    value: SecretValue,
    stages: Vec<Stage>,
    created_at: SystemTime,
    /// For a pending version: the version it was made from.
    base: Option<VersionId>,
}

impl Stored {
    fn versioned(&self) -> Versioned<SecretValue> {
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

    fn has(&self, stage: &Stage) -> bool {
        self.stages.contains(stage)
    }

    fn is_pending(&self) -> bool {
        self.has(&Stage::Pending) && !self.has(&Stage::Current)
    }
}

impl Secret {
    fn with_stage(&self, stage: &Stage) -> Option<&Stored> {
        self.versions.iter().find(|v| v.has(stage))
    }

    fn version(&self, id: &str) -> Option<&Stored> {
        self.versions.iter().find(|v| v.id.as_str() == id)
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.versions.iter().position(|v| v.id.as_str() == id)
    }

    fn current_index(&self) -> Option<usize> {
        self.versions.iter().position(|v| v.has(&Stage::Current))
    }

    fn drop_stage(&mut self, stage: &Stage) {
        for stored in &mut self.versions {
            stored.stages.retain(|s| s != stage);
        }
    }

    fn pending_token(&self) -> Option<&VersionId> {
        self.versions.iter().find(|v| v.is_pending()).map(|v| &v.id)
    }

    /// Whether the version at `index` is one a rollback left: unlabelled and newer than the
    /// current version, so never current (versions become current in the order they were made).
    fn is_abandoned(&self, index: usize) -> bool {
        self.versions[index].stages.is_empty()
            && self.current_index().is_none_or(|current| index > current)
    }

    /// Makes the version at `index` current, the current one previous. A version that was
    /// current loses any mark of an incomplete rotation with its current stage.
    fn make_current(&mut self, index: usize, keep_pending_mark: bool) {
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
}

impl MemoryRotationStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` as the new current version of `id` (outside any rotation, as an operator's
    /// write would: a rotation under way then fails at `finish`) and returns its version id.
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

    fn now(&self) -> SystemTime {
        later_wall(self.epoch.0, self.epoch.1.elapsed())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Secret>> {
        self.secrets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<T>(&self, id: &str, read: impl FnOnce(&mut Secret) -> Result<T>) -> Result<T> {
        let mut secrets = self.lock();
        let secret = secrets.get_mut(id).ok_or_else(|| Error::not_found(id))?;
        read(secret)
    }
}

fn conflict(id: &str, message: impl Into<std::sync::Arc<str>>) -> Error {
    Error::new(ErrorKind::Conflict)
        .with_id(id)
        .with_message(message)
}

#[async_trait]
impl RotationStore for MemoryRotationStore {
    fn name(&self) -> &str {
        "memory"
    }

    async fn current(&self, id: &str) -> Result<Versioned<SecretValue>> {
        self.with(id, |secret| {
            secret
                .with_stage(&Stage::Current)
                .map(Stored::versioned)
                .ok_or_else(|| Error::not_found(id).with_message("no current version"))
        })
    }

    async fn previous(&self, id: &str) -> Result<Option<Versioned<SecretValue>>> {
        self.with(id, |secret| {
            Ok(secret.with_stage(&Stage::Previous).map(Stored::versioned))
        })
    }

    async fn pending_token(&self, id: &str) -> Result<Option<String>> {
        self.with(id, |secret| {
            Ok(secret.pending_token().map(|v| v.as_str().to_owned()))
        })
    }

    async fn read_pending(&self, id: &str, token: &str) -> Result<Option<SecretValue>> {
        self.with(id, |secret| {
            Ok(secret
                .version(token)
                .filter(|v| v.is_pending())
                .map(|v| v.value.clone()))
        })
    }

    async fn read_created(&self, id: &str, token: &str) -> Result<Option<SecretValue>> {
        self.with(id, |secret| {
            let Some(index) = secret.index_of(token) else {
                return Ok(None);
            };
            let stored = &secret.versions[index];
            if stored.has(&Stage::Current) {
                Ok(None)
            } else if stored.is_pending() || secret.is_abandoned(index) {
                Ok(Some(stored.value.clone()))
            } else {
                Err(conflict(
                    id,
                    format!("version {token} was current once or predates the current version"),
                ))
            }
        })
    }

    async fn write_pending(
        &self,
        id: &str,
        token: &str,
        value: &SecretValue,
        base: &VersionId,
    ) -> Result<()> {
        let now = self.now();
        self.with(id, |secret| {
            if let Some(pending) = secret.pending_token() {
                return if pending.as_str() == token {
                    Ok(())
                } else {
                    Err(conflict(
                        id,
                        format!("rotation {pending} is under way; not writing pending {token}"),
                    ))
                };
            }
            let current = secret.with_stage(&Stage::Current).map(|v| v.id.clone());
            if current.as_ref() != Some(base) {
                return Err(conflict(
                    id,
                    format!("version {base} is no longer current; not writing pending {token}"),
                ));
            }
            match secret.index_of(token) {
                // A rolled-back version of the token, written again with its own value: mark it
                // pending again, as AWS does.
                Some(index)
                    if secret.is_abandoned(index) && secret.versions[index].value == *value =>
                {
                    let stored = &mut secret.versions[index];
                    stored.stages.push(Stage::Pending);
                    stored.base = Some(base.clone());
                    Ok(())
                }
                Some(_) => Err(conflict(id, format!("version {token} already exists"))),
                None => {
                    secret.versions.push(Stored {
                        id: VersionId::new(token),
                        value: value.clone(),
                        stages: vec![Stage::Pending],
                        created_at: now,
                        base: Some(base.clone()),
                    });
                    Ok(())
                }
            }
        })
    }

    async fn promote(&self, id: &str, token: &str) -> Result<VersionId> {
        self.with(id, |secret| {
            let index = secret
                .index_of(token)
                .ok_or_else(|| Error::not_found(id).with_message(format!("no version {token}")))?;
            let target = &secret.versions[index];
            if target.has(&Stage::Current) {
                return Ok(VersionId::new(token));
            }
            if !target.has(&Stage::Pending) {
                return Err(
                    Error::not_found(id).with_message(format!("version {token} is not pending"))
                );
            }
            let current = secret.with_stage(&Stage::Current).map(|v| &v.id);
            if let Some(base) = target.base.as_ref().filter(|base| current != Some(*base)) {
                return Err(conflict(
                    id,
                    format!(
                        "the secret was written during the rotation: version {base}, which \
                         pending {token} was made from, is no longer current"
                    ),
                ));
            }
            // The pending stage stays, as AWS leaves `AWSPENDING`, until `complete`.
            secret.make_current(index, true);
            Ok(VersionId::new(token))
        })
    }

    async fn incomplete_token(&self, id: &str) -> Result<Option<String>> {
        self.with(id, |secret| {
            Ok(secret
                .versions
                .iter()
                .find(|v| v.has(&Stage::Current) && v.has(&Stage::Pending))
                .map(|v| v.id.as_str().to_owned()))
        })
    }

    async fn complete(&self, id: &str, token: &str) -> Result<()> {
        self.with(id, |secret| {
            if let Some(index) = secret.index_of(token) {
                let stored = &mut secret.versions[index];
                if stored.has(&Stage::Current) {
                    stored.stages.retain(|s| s != &Stage::Pending);
                }
            }
            Ok(())
        })
    }

    async fn remove_pending(&self, id: &str, token: &str) -> Result<()> {
        self.with(id, |secret| {
            if let Some(index) = secret.index_of(token) {
                let stored = &mut secret.versions[index];
                if stored.is_pending() {
                    // Kept, unlabelled, as AWS keeps a deprecated version.
                    stored.stages.retain(|s| s != &Stage::Pending);
                    stored.base = None;
                }
            }
            Ok(())
        })
    }

    async fn is_current(&self, id: &str, token: &str) -> Result<bool> {
        self.with(id, |secret| {
            Ok(secret
                .version(token)
                .is_some_and(|v| v.has(&Stage::Current)))
        })
    }
}

#[async_trait]
impl SecretProvider for MemoryRotationStore {
    fn name(&self) -> &str {
        "memory-rotation"
    }

    async fn fetch(&self, id: &str, selector: &Selector) -> Result<Versioned<SecretValue>> {
        self.with(id, |secret| {
            let found = match selector {
                Selector::Version(version) => secret.version(version.as_str()),
                other => other.stage().and_then(|stage| secret.with_stage(&stage)),
            };
            found.map(Stored::versioned).ok_or_else(|| {
                Error::not_found(id).with_message(format!("no version for {selector}"))
            })
        })
    }

    async fn probe(&self, id: &str, selector: &Selector) -> Result<Option<VersionId>> {
        self.fetch(id, selector).await.map(|v| Some(v.version.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_pending_rotation_at_a_time_and_idempotent_steps() {
        let store = MemoryRotationStore::new();
        let v1 = store.set("s", "one");
        let two = SecretValue::from("two");
        store.write_pending("s", "t-1", &two, &v1).await.unwrap();
        // The same token again: nothing happens.
        store.write_pending("s", "t-1", &two, &v1).await.unwrap();
        let err = store
            .write_pending("s", "t-2", &two, &v1)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert_eq!(
            store.pending_token("s").await.unwrap().as_deref(),
            Some("t-1")
        );
        assert!(store.read_pending("s", "t-2").await.unwrap().is_none());
        assert_eq!(store.promote("s", "t-1").await.unwrap().as_str(), "t-1");
        assert_eq!(store.promote("s", "t-1").await.unwrap().as_str(), "t-1");
        assert!(store.is_current("s", "t-1").await.unwrap());
        assert_eq!(store.pending_token("s").await.unwrap(), None);
        let previous = store.previous("s").await.unwrap().unwrap();
        assert_eq!(previous.version.id, v1);
        // A pending version made from a version that is no longer current is refused.
        let err = store
            .write_pending("s", "t-3", &two, &v1)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
    }

    #[tokio::test]
    async fn a_removed_pending_version_stays_unlabelled_and_only_its_token_can_revive_it() {
        let store = MemoryRotationStore::new();
        let v1 = store.set("s", "one");
        let two = SecretValue::from("two");
        store.write_pending("s", "t-1", &two, &v1).await.unwrap();
        store.remove_pending("s", "t-1").await.unwrap();
        store.remove_pending("s", "t-1").await.unwrap();
        assert_eq!(store.pending_token("s").await.unwrap(), None);
        assert!(store.read_pending("s", "t-1").await.unwrap().is_none());
        assert!(store.promote("s", "t-1").await.is_err());
        assert_eq!(store.current("s").await.unwrap().version.id, v1);
        let read = SecretProvider::fetch(&store, "s", &Selector::Current)
            .await
            .unwrap();
        assert_eq!(read.value.expose_str(), Some("one"));
        // The version is still there, unlabelled: `create` may take it up again.
        let kept = SecretProvider::fetch(&store, "s", &Selector::Version("t-1".into()))
            .await
            .unwrap();
        assert!(kept.version.stages.is_empty());
        assert_eq!(
            store.read_created("s", "t-1").await.unwrap(),
            Some(two.clone())
        );
        let other = SecretValue::from("three");
        let err = store
            .write_pending("s", "t-1", &other, &v1)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "one value per token");
        store.write_pending("s", "t-1", &two, &v1).await.unwrap();
        assert_eq!(
            store.pending_token("s").await.unwrap().as_deref(),
            Some("t-1")
        );
    }

    #[tokio::test]
    async fn remove_pending_leaves_current_and_previous_versions_alone() {
        let store = MemoryRotationStore::new();
        let v1 = store.set("s", "one");
        let v2 = store.set("s", "two");
        store.remove_pending("s", v1.as_str()).await.unwrap();
        store.remove_pending("s", v2.as_str()).await.unwrap();
        assert_eq!(store.current("s").await.unwrap().version.id, v2);
        assert_eq!(store.previous("s").await.unwrap().unwrap().version.id, v1);
        // A version that was current once is never reused as a pending one.
        let err = store.read_created("s", v1.as_str()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(
            store
                .read_pending("s", v1.as_str())
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_write_during_the_rotation_makes_promote_refuse() {
        let store = MemoryRotationStore::new();
        let v1 = store.set("s", "one");
        store
            .write_pending("s", "t-1", &SecretValue::from("two"), &v1)
            .await
            .unwrap();
        let operator = store.set("s", "operator");
        let err = store.promote("s", "t-1").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert_eq!(store.current("s").await.unwrap().version.id, operator);
        assert_eq!(
            store.pending_token("s").await.unwrap().as_deref(),
            Some("t-1")
        );
    }
}
