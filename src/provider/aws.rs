//! AWS Secrets Manager.

use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use super::SecretProvider;
use crate::error::{Error, ErrorKind, Result};
use crate::value::{SecretValue, Selector, Stage, Version, VersionId, Versioned};

/// A provider over AWS Secrets Manager.
///
/// - [`fetch`](SecretProvider::fetch) calls `GetSecretValue` by stage (`AWSCURRENT`, `AWSPENDING`,
///   `AWSPREVIOUS` or a custom label) or by version id; `SecretString` becomes a text value,
///   `SecretBinary` a binary one; the version id, all stages and the creation date land in
///   [`Version`].
/// - [`probe`](SecretProvider::probe) calls `DescribeSecret` and reads `VersionIdsToStages`: while
///   the cached version is still `AWSCURRENT`, the cache keeps it without a `GetSecretValue`.
///   (`DescribeSecret` has four times the quota of `GetSecretValue`.)
/// - Errors: `ResourceNotFoundException` → [`ErrorKind::NotFound`]; `AccessDeniedException` and
///   `DecryptionFailure` → [`ErrorKind::AccessDenied`]; `ThrottlingException` and HTTP 429 →
///   [`ErrorKind::Throttled`]; `InvalidRequestException` (a secret scheduled for deletion) and
///   `InvalidParameterException` → [`ErrorKind::InvalidRequest`]; timeouts, connection failures,
///   5xx and expired temporary credentials (`ExpiredTokenException`, which the SDK renews) →
///   [`ErrorKind::Transient`]. Messages name the secret id and AWS's error code, never the
///   value.
///
/// Endpoint, region, credentials and retry settings come from the SDK configuration, so
/// `AWS_ENDPOINT_URL`, profiles and IAM roles work as everywhere else. The least-privilege IAM
/// policy is in [`docs::aws`](crate::docs::aws).
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run() -> credswap::Result<()> {
/// use std::sync::Arc;
/// use credswap::provider::AwsSecretsManagerProvider;
/// use credswap::SecretCache;
///
/// let provider = AwsSecretsManagerProvider::from_env().await;
/// let cache = SecretCache::builder(Arc::new(provider)).build()?;
/// let db = cache.handle::<serde_json::Value>("prod/app/db").await?;
/// # drop(db);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AwsSecretsManagerProvider {
    client: Client,
}

impl AwsSecretsManagerProvider {
    /// A provider using `client`.
    pub fn new(client: Client) -> Self {
        AwsSecretsManagerProvider { client }
    }

    /// A provider from an SDK configuration (region, endpoint, credentials, retries).
    pub fn from_conf(config: &aws_config::SdkConfig) -> Self {
        Self::new(Client::new(config))
    }

    /// A provider configured from the environment, as `aws_config::load_defaults` does.
    pub async fn from_env() -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::from_conf(&config)
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn to_system_time(date: &aws_smithy_types::DateTime) -> Option<SystemTime> {
    SystemTime::try_from(*date).ok()
}

impl AwsSecretsManagerProvider {
    /// [`map_sdk_error`], reachable from outside this private module (the rotation store maps its
    /// errors the same way).
    #[cfg(feature = "rotation")]
    pub(crate) fn map_sdk_error<E>(
        id: &str,
        operation: &str,
        error: SdkError<E, HttpResponse>,
    ) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        map_sdk_error(id, operation, error)
    }
}

/// Maps an SDK error of `operation` on secret `id` to our kinds.
pub(crate) fn map_sdk_error<E>(id: &str, operation: &str, error: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match error {
        SdkError::ServiceError(context) => {
            let http_status = context.raw().status().as_u16();
            let service_error = context.err();
            let code = service_error.code().unwrap_or("Unknown").to_owned();
            let aws_message = service_error.message().unwrap_or_default().to_owned();
            let detail = format!("{operation}: {code}: {aws_message}");
            let kind = match (code.as_str(), http_status) {
                ("ResourceNotFoundException", _) => ErrorKind::NotFound,
                ("AccessDeniedException" | "DecryptionFailure", _) => ErrorKind::AccessDenied,
                (
                    "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded",
                    _,
                )
                | (_, 429) => ErrorKind::Throttled,
                ("InvalidRequestException" | "InvalidParameterException", _) => {
                    ErrorKind::InvalidRequest
                }
                ("InternalServiceError" | "InternalFailure" | "ServiceUnavailable", _) => {
                    ErrorKind::Transient
                }
                // Temporary credentials (STS, an instance or pod role) ran out; the SDK's
                // credentials provider fetches new ones, so the next call can succeed.
                ("ExpiredTokenException" | "ExpiredToken" | "RequestExpired", _) => {
                    ErrorKind::Transient
                }
                (_, status) if status >= 500 => ErrorKind::Transient,
                (_, 403) => ErrorKind::AccessDenied,
                _ => ErrorKind::InvalidRequest,
            };
            let detail = if code == "DecryptionFailure" {
                format!("{detail} (check kms:Decrypt on the secret's KMS key and the key's state)")
            } else {
                detail
            };
            Error::new(kind).with_id(id).with_message(detail)
        }
        SdkError::TimeoutError(_) => Error::transient(
            id,
            format!("{operation}: timed out reaching Secrets Manager"),
        ),
        SdkError::DispatchFailure(failure) => {
            let what = if failure.is_timeout() {
                "timed out"
            } else if failure.is_io() {
                "connection failed"
            } else {
                "request could not be sent"
            };
            Error::transient(id, format!("{operation}: {what}"))
        }
        SdkError::ResponseError(_) => Error::transient(
            id,
            format!("{operation}: unreadable response from Secrets Manager"),
        ),
        SdkError::ConstructionFailure(_) => Error::new(ErrorKind::Config)
            .with_id(id)
            .with_message(format!("{operation}: the request could not be built")),
        _ => Error::transient(id, format!("{operation}: unexpected SDK error")),
    }
}

#[async_trait]
impl SecretProvider for AwsSecretsManagerProvider {
    fn name(&self) -> &str {
        "aws-secretsmanager"
    }

    async fn fetch(&self, id: &str, selector: &Selector) -> Result<Versioned<SecretValue>> {
        let request = self.client.get_secret_value().secret_id(id);
        let request = match selector {
            Selector::Version(version) => request.version_id(version.as_str()),
            other => match other.stage() {
                Some(stage) => request.version_stage(stage.as_aws_label()),
                None => request,
            },
        };
        let output = request
            .send()
            .await
            .map_err(|e| map_sdk_error(id, "GetSecretValue", e))?;
        let value = match (output.secret_string(), output.secret_binary()) {
            (Some(text), _) => SecretValue::text(text),
            (None, Some(blob)) => SecretValue::bytes(blob.as_ref().to_vec()),
            (None, None) => {
                return Err(Error::invalid_request(
                    id,
                    "the secret version has neither SecretString nor SecretBinary",
                ));
            }
        };
        let version_id = output
            .version_id()
            .ok_or_else(|| Error::invalid_request(id, "GetSecretValue returned no VersionId"))?;
        let version = Version {
            id: VersionId::new(version_id),
            stages: output
                .version_stages()
                .iter()
                .map(|s| Stage::from_aws_label(s))
                .collect(),
            created_at: output.created_date().and_then(to_system_time),
            lease: None,
            next_rotation: None,
        };
        Ok(Versioned::new(value, version))
    }

    async fn probe(&self, id: &str, selector: &Selector) -> Result<Option<VersionId>> {
        let output = self
            .client
            .describe_secret()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| map_sdk_error(id, "DescribeSecret", e))?;
        if output.deleted_date().is_some() {
            return Err(Error::invalid_request(
                id,
                "the secret is scheduled for deletion",
            ));
        }
        let stages = output.version_ids_to_stages();
        let found = match selector {
            Selector::Version(version) => stages
                .and_then(|map| map.get(version.as_str()))
                .map(|_| version.clone()),
            other => {
                let Some(stage) = other.stage() else {
                    return Ok(None);
                };
                let label = stage.as_aws_label();
                stages.and_then(|map| {
                    map.iter()
                        .find(|(_, labels)| labels.iter().any(|l| l == label))
                        .map(|(version, _)| VersionId::new(version.as_str()))
                })
            }
        };
        found
            .map(Some)
            .ok_or_else(|| Error::not_found(id).with_message(format!("no version for {selector}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn service_error(code: &str, status: u16) -> SdkError<GetSecretValueError, HttpResponse> {
        let error = GetSecretValueError::generic(
            ErrorMetadata::builder()
                .code(code)
                .message("an AWS message")
                .build(),
        );
        let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        SdkError::service_error(error, raw)
    }

    #[test]
    fn service_errors_map_to_kinds() {
        let cases = [
            ("ResourceNotFoundException", 400, ErrorKind::NotFound),
            ("AccessDeniedException", 400, ErrorKind::AccessDenied),
            ("DecryptionFailure", 400, ErrorKind::AccessDenied),
            ("ThrottlingException", 400, ErrorKind::Throttled),
            ("SomethingNew", 429, ErrorKind::Throttled),
            ("InvalidRequestException", 400, ErrorKind::InvalidRequest),
            ("InvalidParameterException", 400, ErrorKind::InvalidRequest),
            ("InternalServiceError", 500, ErrorKind::Transient),
            ("SomethingNew", 503, ErrorKind::Transient),
            ("SomethingNew", 403, ErrorKind::AccessDenied),
            ("ExpiredTokenException", 400, ErrorKind::Transient),
            ("ExpiredToken", 403, ErrorKind::Transient),
            ("RequestExpired", 400, ErrorKind::Transient),
        ];
        for (code, status, kind) in cases {
            let error = map_sdk_error("prod/app/db", "GetSecretValue", service_error(code, status));
            assert_eq!(error.kind(), kind, "{code} {status}");
            assert_eq!(error.id(), Some("prod/app/db"));
            assert!(error.to_string().contains(code), "{error}");
        }
        let error = map_sdk_error(
            "x",
            "GetSecretValue",
            service_error("DecryptionFailure", 400),
        );
        assert!(error.to_string().contains("kms:Decrypt"));
    }

    #[test]
    fn transport_errors_are_transient() {
        let timeout: SdkError<GetSecretValueError, HttpResponse> =
            SdkError::timeout_error(std::io::Error::other("slow"));
        assert_eq!(
            map_sdk_error("x", "GetSecretValue", timeout).kind(),
            ErrorKind::Transient
        );
    }
}
