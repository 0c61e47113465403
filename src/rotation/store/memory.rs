//! [`MemoryProvider`] as a rotation store, for tests and for secrets an application rotates for
//! itself: AWS's stage semantics on the provider's own versions (see the type's documentation).

use async_trait::async_trait;

use super::RotationStore;
use crate::error::{Error, ErrorKind, Result};
use crate::provider::MemoryProvider;
use crate::provider::memory::Stored;
use crate::value::{SecretValue, Stage, VersionId, Versioned};

fn conflict(id: &str, message: impl Into<std::sync::Arc<str>>) -> Error {
    Error::new(ErrorKind::Conflict)
        .with_id(id)
        .with_message(message)
}

/// The rotation seam of the in-memory store:
///
/// ```
/// use credswap::MemoryProvider;
/// use credswap::rotation::RotationStore;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemoryProvider::new();
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
#[async_trait]
impl RotationStore for MemoryProvider {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::SecretProvider;
    use crate::value::Selector;

    #[tokio::test]
    async fn readers_see_the_stages_a_rotation_moves() {
        let store = MemoryProvider::new();
        let v1 = store.set("s", "one");
        let two = SecretValue::from("two");
        store.write_pending("s", "t-2", &two, &v1).await.unwrap();
        let current = store.fetch("s", &Selector::Current).await.unwrap();
        assert_eq!(current.version.id, v1);
        let pending = store
            .fetch("s", &Selector::Stage(Stage::Pending))
            .await
            .unwrap();
        assert_eq!(pending.value.expose_str(), Some("two"));
        assert_eq!(store.promote("s", "t-2").await.unwrap().as_str(), "t-2");
        store.complete("s", "t-2").await.unwrap();
        let current = store.fetch("s", &Selector::Current).await.unwrap();
        assert_eq!(current.version.id.as_str(), "t-2");
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
        assert!(store.promote("s", "t-3").await.is_err());
    }

    #[tokio::test]
    async fn one_pending_rotation_at_a_time_and_idempotent_steps() {
        let store = MemoryProvider::new();
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
        let store = MemoryProvider::new();
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
        let store = MemoryProvider::new();
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
        let store = MemoryProvider::new();
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
