//! AWS Secrets Manager as a rotation store: version stages, the token as the version id.

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput;

use super::store::RotationStore;
use crate::error::{Error, ErrorKind, Result};
use crate::provider::{AwsSecretsManagerProvider, SecretProvider};
use crate::value::{SecretValue, Selector, Stage, VersionId, Versioned};

const CURRENT: &str = "AWSCURRENT";
const PENDING: &str = "AWSPENDING";
/// While a rotation is under way, marks the version its pending version was made from.
const BASE: &str = "credswap-base";

/// `VersionIdsToStages`: (version id, its labels).
type Stages = Vec<(String, Vec<String>)>;

/// A [`RotationStore`] over AWS Secrets Manager, following AWS's own rotation protocol, so it
/// interoperates with AWS's console, `RotateSecret` and rotation functions:
///
/// - The rotation token is the new version's id (`ClientRequestToken`).
/// - `create`: `PutSecretValue(ClientRequestToken = token, SecretString, VersionStages = [AWSPENDING])`
///   (idempotent in AWS for the same token and value), then the label `credswap-base` on the
///   current version the pending one was made from.
/// - A rotation is under way when `AWSPENDING` is on a version that is not `AWSCURRENT`
///   (`DescribeSecret`'s `VersionIdsToStages`), which is what `RotateSecret` itself checks. `set`
///   and `test` act only on the version that holds `AWSPENDING`.
/// - `finish`: refused with [`ErrorKind::Conflict`] when `AWSCURRENT` is no longer on the
///   `credswap-base` version (someone wrote the secret during the rotation: promoting would throw
///   their write away); otherwise `UpdateSecretVersionStage(AWSCURRENT, MoveToVersionId = token,
///   RemoveFromVersionId = <current>)`. AWS refuses the move when `RemoveFromVersionId` no longer
///   holds `AWSCURRENT`, so two finishers cannot both win, and moves `AWSPREVIOUS` to the old
///   version by itself. Then `AWSPENDING` and `credswap-base` are removed. A pending version
///   written by someone else (AWS's own rotation functions) has no `credswap-base`, and its
///   promotion is not checked.
/// - Rollback and abort: `UpdateSecretVersionStage(AWSPENDING, RemoveFromVersionId = token)`; the
///   unlabelled version is deprecated and AWS deletes it eventually. A later `create` with the same
///   token takes it up again (AWS refuses a second value for a token), but never a version that
///   is not newer than the current one: a finished rotation's token cannot start another.
/// - The rotation lock and the audit trail name the secret by its ARN (`DescribeSecret`), so a
///   rotation function (which gets the ARN) and a job (which may use the name) take one lock.
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

    /// Removes the base mark, unless a rotation is under way (whose base it is).
    async fn clear_base(&self, id: &str, stages: &Stages) -> Result<()> {
        match holder(stages, BASE) {
            Some(base) if pending_of(stages).is_none() => {
                self.move_stage(id, BASE, None, Some(base)).await
            }
            _ => Ok(()),
        }
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
        Ok(self
            .describe(id)
            .await?
            .arn()
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
        if stages.is_empty() {
            // Unlabelled: a rolled-back pending version, or an old current one AWS has not
            // deleted yet. Only the first is newer than the current version.
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
        // A re-run keeps the base its rotation began from.
        let rerun = pending_of(&stages) == Some(token);
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
            .send()
            .await
            .map_err(|e| sdk_error(id, "PutSecretValue", e))?;
        // AWS moves a stage label to the version named; make sure ours holds it (a re-run of an
        // unlabelled version of the same token, or moto, may not have moved it).
        let stages = self.stages(id).await?;
        if !has(&stages, token, PENDING) {
            let from = holder(&stages, PENDING).map(str::to_owned);
            self.move_stage(id, PENDING, Some(token), from.as_deref())
                .await?;
        }
        let marked = holder(&stages, BASE);
        if !rerun && marked != Some(base.as_str()) {
            self.move_stage(id, BASE, Some(base.as_str()), marked)
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
            if let Some(base) = holder(&stages, BASE) {
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
        // AWS leaves AWSPENDING on the promoted version; a later rotation must not mistake it.
        let mut stages = self.stages(id).await?;
        if has(&stages, token, PENDING) {
            self.move_stage(id, PENDING, None, Some(token)).await?;
            stages = self.stages(id).await?;
        }
        self.clear_base(id, &stages).await?;
        Ok(VersionId::new(token))
    }

    async fn remove_pending(&self, id: &str, token: &str) -> Result<()> {
        let stages = self.stages(id).await?;
        if pending_of(&stages) == Some(token) {
            self.move_stage(id, PENDING, None, Some(token)).await?;
            let stages = self.stages(id).await?;
            self.clear_base(id, &stages).await?;
        }
        Ok(())
    }

    async fn is_current(&self, id: &str, token: &str) -> Result<bool> {
        let stages = self.stages(id).await?;
        Ok(has(&stages, token, CURRENT))
    }
}
