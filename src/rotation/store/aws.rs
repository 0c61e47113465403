//! AWS Secrets Manager as a rotation store: version stages, the token as the version id.

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput;

use super::RotationStore;
use crate::error::{Error, ErrorKind, Result};
use crate::provider::{AwsSecretsManagerProvider, SecretProvider};
use crate::value::{SecretValue, Selector, Stage, VersionId, Versioned};

const CURRENT: &str = "AWSCURRENT";
const PENDING: &str = "AWSPENDING";
/// Prefix of the stage label that, while a rotation is under way, names on its pending version the
/// version it was made from: `credswap-base-<version id>`. On the pending version, because a
/// write moves `AWSCURRENT` and `AWSPREVIOUS` (moto replaces the old current version's labels
/// wholesale) and leaves the pending version's labels alone.
const BASE_PREFIX: &str = "credswap-base-";

/// `VersionIdsToStages`: (version id, its labels).
type Stages = Vec<(String, Vec<String>)>;

/// A [`RotationStore`] over AWS Secrets Manager, following AWS's own rotation protocol, so it
/// interoperates with AWS's console, `RotateSecret` and rotation functions:
///
/// - The rotation token is the new version's id (`ClientRequestToken`).
/// - `create`: `PutSecretValue(ClientRequestToken = token, SecretString, VersionStages =
///   [AWSPENDING, credswap-base-<base>])` (idempotent in AWS for the same token and value), where
///   `<base>` is the current version the pending one was made from.
/// - A rotation is under way when `AWSPENDING` is on a version that is not `AWSCURRENT`
///   (`DescribeSecret`'s `VersionIdsToStages`), which is what `RotateSecret` itself checks. `set`
///   and `test` act only on the version that holds `AWSPENDING`.
/// - `finish`: refused with [`ErrorKind::Conflict`] when `AWSCURRENT` is no longer on `<base>`
///   (someone wrote the secret during the rotation: promoting would throw their write away);
///   otherwise `UpdateSecretVersionStage(AWSCURRENT, MoveToVersionId = token, RemoveFromVersionId =
///   <current>)`. AWS refuses the move when `RemoveFromVersionId` no longer holds `AWSCURRENT`, so
///   two finishers cannot both win, and moves `AWSPREVIOUS` to the old version by itself. Once the
///   `on_finished` hooks ran, `AWSPENDING` and the `credswap-base-…` label are removed; a current
///   version that still has its base label is a rotation whose hooks may not have run, which the
///   next rotator finishes. A pending version written by someone else (AWS's own rotation
///   functions) has no such label, and its promotion is not checked.
/// - `RotateSecret` itself stages `AWSPENDING` on the new version id before it invokes a rotation
///   function, with no value (or, in moto, a copy of the current value): `create` then writes the
///   new credential into that very version, so [`Rotator::step`](crate::rotation::Rotator::step) can be the
///   body of an AWS rotation function.
/// - Rollback and abort: `UpdateSecretVersionStage(AWSPENDING, RemoveFromVersionId = token)`; the
///   unlabelled version is deprecated and AWS deletes it eventually. A later `create` with the same
///   token takes it up again (AWS refuses a second value for a token), but never a version that
///   is not newer than the current one: a finished rotation's token cannot start another.
/// - The rotation lock, the audit trail and the `on_finished` hooks name the secret by its name
///   (`DescribeSecret`), so a rotation function (which gets the ARN) and a job (which may use the
///   name) take one lock, and announcements reach consumers, which read secrets by name.
///
/// Reads go through [`AwsSecretsManagerProvider`], and errors map to the same kinds; besides,
/// a token already used for another value (`ResourceExistsException`) and a stage moved by
/// someone else between our read and our move are [`ErrorKind::Conflict`].
///
/// IAM actions: `secretsmanager:GetSecretValue`, `DescribeSecret`, `PutSecretValue`,
/// `UpdateSecretVersionStage` on the rotated secrets (see [`docs::rotation`](crate::docs::rotation)).
#[derive(Debug, Clone)]
pub struct AwsRotationStore {
    provider: AwsSecretsManagerProvider,
}

impl AwsRotationStore {
    /// A store using `client`.
    pub fn new(client: Client) -> Self {
        AwsRotationStore {
            provider: AwsSecretsManagerProvider::new(client),
        }
    }

    /// A store configured from the environment, as `aws_config::load_defaults` does.
    pub async fn from_env() -> Self {
        AwsRotationStore {
            provider: AwsSecretsManagerProvider::from_env().await,
        }
    }

    fn client(&self) -> &Client {
        self.provider.client()
    }

    async fn describe(&self, id: &str) -> Result<DescribeSecretOutput> {
        self.client()
            .describe_secret()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| sdk_error(id, "DescribeSecret", e))
    }

    /// `VersionIdsToStages`.
    async fn stages(&self, id: &str) -> Result<Stages> {
        Ok(self
            .describe(id)
            .await?
            .version_ids_to_stages()
            .map(|map| {
                map.iter()
                    .map(|(version, stages)| (version.clone(), stages.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Moves (or removes, with `move_to` empty) `stage`.
    async fn move_stage(
        &self,
        id: &str,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> Result<()> {
        let sent = self
            .client()
            .update_secret_version_stage()
            .secret_id(id)
            .version_stage(stage)
            .set_move_to_version_id(move_to.map(str::to_owned))
            .set_remove_from_version_id(remove_from.map(str::to_owned))
            .send()
            .await;
        let Err(error) = sent else {
            return Ok(());
        };
        let error = sdk_error(id, "UpdateSecretVersionStage", error);
        // AWS refuses a move whose `RemoveFromVersionId` no longer holds the label. Rather than
        // read AWS's wording, look: if the label has left that version, someone moved it after we
        // read the stages.
        if let (ErrorKind::InvalidRequest, Some(from)) = (error.kind(), remove_from) {
            if !has(&self.stages(id).await?, from, stage) {
                return Err(Error::new(ErrorKind::Conflict)
                    .with_id(id)
                    .with_message(format!(
                        "{stage} left version {from} while this rotation was moving it: another \
                         writer got there first"
                    )));
            }
        }
        Err(error)
    }

    /// Removes every base label but the pending version's (the rotation under way needs it):
    /// the promoted or rolled-back version's, and any a crash left behind.
    async fn clear_bases(&self, id: &str) -> Result<()> {
        let stages = self.stages(id).await?;
        let pending = pending_of(&stages);
        for (version, labels) in &stages {
            if Some(version.as_str()) == pending {
                continue;
            }
            for label in labels.iter().filter(|l| l.starts_with(BASE_PREFIX)) {
                self.move_stage(id, label, None, Some(version)).await?;
            }
        }
        Ok(())
    }
}

fn holder<'a>(stages: &'a Stages, stage: &str) -> Option<&'a str> {
    stages
        .iter()
        .find(|(_, labels)| labels.iter().any(|l| l == stage))
        .map(|(version, _)| version.as_str())
}

fn labels<'a>(stages: &'a Stages, version: &str) -> &'a [String] {
    stages
        .iter()
        .find(|(v, _)| v == version)
        .map_or(&[], |(_, labels)| labels.as_slice())
}

fn has(stages: &Stages, version: &str, stage: &str) -> bool {
    labels(stages, version).iter().any(|l| l == stage)
}

/// The version under rotation: `AWSPENDING` on a version that is not current.
fn pending_of(stages: &Stages) -> Option<&str> {
    holder(stages, PENDING).filter(|version| !has(stages, version, CURRENT))
}

/// The version `version` was made from, as its base label says.
fn base_of<'a>(stages: &'a Stages, version: &str) -> Option<&'a str> {
    labels(stages, version)
        .iter()
        .find_map(|label| label.strip_prefix(BASE_PREFIX))
}

fn conflict(id: &str, message: String) -> Error {
    Error::new(ErrorKind::Conflict)
        .with_id(id)
        .with_message(message)
}

/// The provider's mapping, and what only a writer meets: a token already taken by another value.
fn sdk_error<E>(id: &str, operation: &str, error: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let taken = error
        .as_service_error()
        .and_then(ProvideErrorMetadata::code)
        == Some("ResourceExistsException");
    let mapped = AwsSecretsManagerProvider::map_sdk_error(id, operation, error);
    if taken {
        let message = mapped.message().unwrap_or(operation).to_owned();
        return conflict(id, message);
    }
    mapped
}

#[async_trait]
impl RotationStore for AwsRotationStore {
    fn name(&self) -> &str {
        "aws-secretsmanager"
    }

    async fn canonical_id(&self, id: &str) -> Result<String> {
        // The name, not the ARN: consumers read secrets by name, and the hooks announce this.
        Ok(self
            .describe(id)
            .await?
            .name()
            .map_or_else(|| id.to_owned(), str::to_owned))
    }

    async fn current(&self, id: &str) -> Result<Versioned<SecretValue>> {
        self.provider.fetch(id, &Selector::Current).await
    }

    async fn previous(&self, id: &str) -> Result<Option<Versioned<SecretValue>>> {
        match self
            .provider
            .fetch(id, &Selector::Stage(Stage::Previous))
            .await
        {
            Ok(previous) => Ok(Some(previous)),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn pending_token(&self, id: &str) -> Result<Option<String>> {
        let stages = self.stages(id).await?;
        Ok(pending_of(&stages).map(str::to_owned))
    }

    async fn read_pending(&self, id: &str, token: &str) -> Result<Option<SecretValue>> {
        let stages = self.stages(id).await?;
        if pending_of(&stages) != Some(token) {
            return Ok(None);
        }
        match self
            .provider
            .fetch(id, &Selector::Version(VersionId::new(token)))
            .await
        {
            Ok(found) => Ok(Some(found.value)),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn read_created(&self, id: &str, token: &str) -> Result<Option<SecretValue>> {
        // By version id: AWS keeps a rolled-back (unlabelled) version readable until it deletes
        // it, but `DescribeSecret` no longer lists it.
        let found = match self
            .provider
            .fetch(id, &Selector::Version(VersionId::new(token)))
            .await
        {
            Ok(found) => found,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let stages = &found.version.stages;
        if stages.contains(&Stage::Current) {
            return Ok(None);
        }
        if stages.contains(&Stage::Pending) {
            return Ok(Some(found.value));
        }
        // A base label a crash left behind does not count.
        let unlabelled = stages
            .iter()
            .all(|stage| matches!(stage, Stage::Custom(label) if label.starts_with(BASE_PREFIX)));
        if unlabelled {
            // A rolled-back pending version, or an old current one AWS has not deleted yet. Only
            // the first is newer than the current version.
            let current = self.current(id).await?.version.created_at;
            if let (Some(made), Some(current)) = (found.version.created_at, current) {
                if made > current {
                    return Ok(Some(found.value));
                }
            }
        }
        Err(conflict(
            id,
            format!(
                "version {token} exists and is not newer than the current version: a finished or \
                 superseded rotation's token cannot start another"
            ),
        ))
    }

    async fn write_pending(
        &self,
        id: &str,
        token: &str,
        value: &SecretValue,
        base: &VersionId,
    ) -> Result<()> {
        let stages = self.stages(id).await?;
        if let Some(other) = pending_of(&stages).filter(|pending| *pending != token) {
            return Err(conflict(
                id,
                format!("rotation {other} is under way (AWSPENDING); not writing pending {token}"),
            ));
        }
        if holder(&stages, CURRENT) != Some(base.as_str()) {
            return Err(conflict(
                id,
                format!("version {base} is no longer AWSCURRENT; not writing pending {token}"),
            ));
        }
        // A re-run keeps the base its rotation began from. A version `RotateSecret` staged for
        // this token (with no value, or with a copy of the current one, as moto makes it) has no
        // base label yet: it gets ours.
        let rerun = pending_of(&stages) == Some(token) && base_of(&stages, token).is_some();
        let base_label = format!("{BASE_PREFIX}{base}");
        let text = value
            .expose_str()
            .ok_or_else(|| Error::invalid_request(id, "a pending value must be text"))?;
        let _ = self
            .client()
            .put_secret_value()
            .secret_id(id)
            .client_request_token(token)
            .secret_string(text)
            .version_stages(PENDING)
            .version_stages(&base_label)
            .send()
            .await
            .map_err(|e| sdk_error(id, "PutSecretValue", e))?;
        // AWS changes nothing for a token it already holds with this value: a version a rollback
        // left unlabelled gets its labels back here (older moto, too, may not have moved them).
        let stages = self.stages(id).await?;
        if !has(&stages, token, PENDING) {
            let from = holder(&stages, PENDING).map(str::to_owned);
            self.move_stage(id, PENDING, Some(token), from.as_deref())
                .await?;
        }
        if !rerun && base_of(&stages, token) != Some(base.as_str()) {
            // A label a crash left on this version names an older base: it goes first.
            for stale in labels(&stages, token)
                .iter()
                .filter(|label| label.starts_with(BASE_PREFIX))
            {
                self.move_stage(id, stale, None, Some(token)).await?;
            }
            let from = holder(&stages, &base_label).map(str::to_owned);
            self.move_stage(id, &base_label, Some(token), from.as_deref())
                .await?;
        }
        Ok(())
    }

    async fn promote(&self, id: &str, token: &str) -> Result<VersionId> {
        let stages = self.stages(id).await?;
        if !stages.iter().any(|(version, _)| version == token) {
            return Err(Error::not_found(id).with_message(format!("no version {token}")));
        }
        if !has(&stages, token, CURRENT) {
            if !has(&stages, token, PENDING) {
                return Err(
                    Error::not_found(id).with_message(format!("version {token} is not AWSPENDING"))
                );
            }
            let current = holder(&stages, CURRENT).map(str::to_owned);
            if let Some(base) = base_of(&stages, token) {
                if current.as_deref() != Some(base) {
                    return Err(conflict(
                        id,
                        format!(
                            "the secret was written during the rotation: AWSCURRENT moved from \
                             version {base}, which pending {token} was made from, to {}",
                            current.as_deref().unwrap_or("no version")
                        ),
                    ));
                }
            }
            // Refused by AWS if `current` lost AWSCURRENT meanwhile: one finisher wins.
            self.move_stage(id, CURRENT, Some(token), current.as_deref())
                .await?;
        }
        // `AWSPENDING` and the base label stay on the promoted version until `complete`: they
        // mark a rotation whose hooks may not have run.
        Ok(VersionId::new(token))
    }

    async fn incomplete_token(&self, id: &str) -> Result<Option<String>> {
        let stages = self.stages(id).await?;
        Ok(holder(&stages, CURRENT)
            .filter(|current| base_of(&stages, current).is_some())
            .map(str::to_owned))
    }

    async fn complete(&self, id: &str, token: &str) -> Result<()> {
        let stages = self.stages(id).await?;
        if !has(&stages, token, CURRENT) {
            return Ok(());
        }
        // AWS leaves AWSPENDING on the promoted version; a later rotation must not mistake it.
        if has(&stages, token, PENDING) {
            self.move_stage(id, PENDING, None, Some(token)).await?;
        }
        self.clear_bases(id).await
    }

    async fn remove_pending(&self, id: &str, token: &str) -> Result<()> {
        let stages = self.stages(id).await?;
        if pending_of(&stages) == Some(token) {
            self.move_stage(id, PENDING, None, Some(token)).await?;
            self.clear_bases(id).await?;
        }
        Ok(())
    }

    async fn is_current(&self, id: &str, token: &str) -> Result<bool> {
        let stages = self.stages(id).await?;
        Ok(has(&stages, token, CURRENT))
    }
}
