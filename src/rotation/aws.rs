//! AWS Secrets Manager as a rotation store: version stages, the token as the version id.

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;

use super::store::RotationStore;
use crate::error::{Error, ErrorKind, Result};
use crate::provider::{AwsSecretsManagerProvider, SecretProvider};
use crate::value::{SecretValue, Selector, Stage, VersionId, Versioned};

const CURRENT: &str = "AWSCURRENT";
const PENDING: &str = "AWSPENDING";

/// A [`RotationStore`] over AWS Secrets Manager, following AWS's own rotation protocol, so it
/// interoperates with AWS's console, `RotateSecret` and rotation functions:
///
/// - The rotation token is the new version's id (`ClientRequestToken`).
/// - `create`: `PutSecretValue(ClientRequestToken = token, SecretString, VersionStages = [AWSPENDING])`
///   (idempotent in AWS for the same token and value; a version of the token that lost its label
///   is labelled again).
/// - A rotation is under way when `AWSPENDING` is on a version that is not `AWSCURRENT`
///   (`DescribeSecret`'s `VersionIdsToStages`), which is what `RotateSecret` itself checks.
/// - `finish`: `UpdateSecretVersionStage(AWSCURRENT, MoveToVersionId = token,
///   RemoveFromVersionId = <current>)`. AWS refuses the move when `RemoveFromVersionId` no longer
///   holds `AWSCURRENT`, so two finishers cannot both win, and moves `AWSPREVIOUS` to the old
///   version by itself. Then `AWSPENDING` is removed from the token.
/// - Rollback and abort: `UpdateSecretVersionStage(AWSPENDING, RemoveFromVersionId = token)`; the
///   unlabelled version is deprecated and AWS deletes it eventually.
///
/// Reads go through [`AwsSecretsManagerProvider`], so errors map to the same kinds.
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

    /// `VersionIdsToStages`.
    async fn stages(&self, id: &str) -> Result<Vec<(String, Vec<String>)>> {
        let output = self
            .client()
            .describe_secret()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| sdk_error(id, "DescribeSecret", e))?;
        Ok(output
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
        let _ = self
            .client()
            .update_secret_version_stage()
            .secret_id(id)
            .version_stage(stage)
            .set_move_to_version_id(move_to.map(str::to_owned))
            .set_remove_from_version_id(remove_from.map(str::to_owned))
            .send()
            .await
            .map_err(|e| sdk_error(id, "UpdateSecretVersionStage", e))?;
        Ok(())
    }
}

fn holder<'a>(stages: &'a [(String, Vec<String>)], stage: &str) -> Option<&'a str> {
    stages
        .iter()
        .find(|(_, labels)| labels.iter().any(|l| l == stage))
        .map(|(version, _)| version.as_str())
}

fn labels<'a>(stages: &'a [(String, Vec<String>)], version: &str) -> &'a [String] {
    stages
        .iter()
        .find(|(v, _)| v == version)
        .map_or(&[], |(_, labels)| labels.as_slice())
}

fn has(stages: &[(String, Vec<String>)], version: &str, stage: &str) -> bool {
    labels(stages, version).iter().any(|l| l == stage)
}

/// The version under rotation: `AWSPENDING` on a version that is not current.
fn pending_of(stages: &[(String, Vec<String>)]) -> Option<&str> {
    holder(stages, PENDING).filter(|version| !has(stages, version, CURRENT))
}

fn sdk_error<E>(
    id: &str,
    operation: &str,
    error: aws_sdk_secretsmanager::error::SdkError<
        E,
        aws_sdk_secretsmanager::config::http::HttpResponse,
    >,
) -> Error
where
    E: aws_sdk_secretsmanager::error::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    if let aws_sdk_secretsmanager::error::SdkError::ServiceError(context) = &error {
        let code = context.err().code().unwrap_or("Unknown").to_owned();
        let message = context.err().message().unwrap_or_default().to_owned();
        let detail = format!("{operation}: {code}: {message}");
        let kind = match code.as_str() {
            "ResourceNotFoundException" => ErrorKind::NotFound,
            "AccessDeniedException" | "DecryptionFailure" | "EncryptionFailure" => {
                ErrorKind::AccessDenied
            }
            // A version id taken by another value, a stage no longer where we read it: someone
            // else wrote in between.
            "ResourceExistsException" => ErrorKind::Conflict,
            "InvalidParameterException"
                if message.contains("stage") || message.contains("Stage") =>
            {
                ErrorKind::Conflict
            }
            "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" => {
                ErrorKind::Throttled
            }
            "InternalServiceError" | "InternalFailure" | "ServiceUnavailable" => {
                ErrorKind::Transient
            }
            _ if context.raw().status().as_u16() >= 500 => ErrorKind::Transient,
            _ => ErrorKind::InvalidRequest,
        };
        return Error::new(kind).with_id(id).with_message(detail);
    }
    Error::transient(id, format!("{operation}: could not reach Secrets Manager"))
}

#[async_trait]
impl RotationStore for AwsRotationStore {
    fn name(&self) -> &str {
        "aws-secretsmanager"
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
        // A version of the token that lost its label (rolled back) still counts: AWS refuses a
        // second value for a token, and trying the same password again is harmless. Writing it
        // again (`write_pending`) puts the label back.
        if !stages.iter().any(|(version, _)| version == token) || has(&stages, token, CURRENT) {
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

    async fn write_pending(
        &self,
        id: &str,
        token: &str,
        value: &SecretValue,
        base: &VersionId,
    ) -> Result<()> {
        let stages = self.stages(id).await?;
        if let Some(other) = pending_of(&stages).filter(|pending| *pending != token) {
            return Err(Error::new(ErrorKind::Conflict)
                .with_id(id)
                .with_message(format!(
                    "rotation {other} is under way (AWSPENDING); not writing pending {token}"
                )));
        }
        if holder(&stages, CURRENT) != Some(base.as_str()) {
            return Err(Error::new(ErrorKind::Conflict)
                .with_id(id)
                .with_message(format!(
                    "version {base} is no longer AWSCURRENT; not writing pending {token}"
                )));
        }
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
        // unlabelled version of the same token, or an older moto, may not have moved it).
        let stages = self.stages(id).await?;
        if !has(&stages, token, PENDING) {
            let from = holder(&stages, PENDING).map(str::to_owned);
            self.move_stage(id, PENDING, Some(token), from.as_deref())
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
            // Refused by AWS if `current` lost AWSCURRENT meanwhile: one finisher wins.
            self.move_stage(id, CURRENT, Some(token), current.as_deref())
                .await?;
        }
        // AWS leaves AWSPENDING on the promoted version; a later rotation must not mistake it.
        let stages = self.stages(id).await?;
        if has(&stages, token, PENDING) {
            self.move_stage(id, PENDING, None, Some(token)).await?;
        }
        Ok(VersionId::new(token))
    }

    async fn remove_pending(&self, id: &str, token: &str) -> Result<()> {
        let stages = self.stages(id).await?;
        if has(&stages, token, PENDING) && !has(&stages, token, CURRENT) {
            self.move_stage(id, PENDING, None, Some(token)).await?;
        }
        Ok(())
    }

    async fn is_current(&self, id: &str, token: &str) -> Result<bool> {
        let stages = self.stages(id).await?;
        Ok(has(&stages, token, CURRENT))
    }
}
