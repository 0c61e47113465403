//! # AWS Secrets Manager: permissions and behaviour
//!
//! ## The least-privilege IAM policy
//!
//! [`AwsSecretsManagerProvider`](crate::provider::AwsSecretsManagerProvider) calls two actions:
//! `secretsmanager:GetSecretValue` (the value) and `secretsmanager:DescribeSecret` (the cheap
//! version probe). Grant exactly those, on the secrets the application reads:
//!
//! ```json
//! {
//!   "Version": "2012-10-17",
//!   "Statement": [
//!     {
//!       "Sid": "ReadAppSecrets",
//!       "Effect": "Allow",
//!       "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
//!       "Resource": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/app/*"
//!     }
//!   ]
//! }
//! ```
//!
//! The trailing `*` matters even for a single secret: Secrets Manager appends six random characters
//! to every secret's ARN (`…:secret:prod/app/db-AbCdEf`), so `…:secret:prod/app/db` matches nothing.
//! Use `…:secret:prod/app/db-??????` to name one secret exactly.
//!
//! A secret encrypted with a customer-managed KMS key also needs `kms:Decrypt` on that key (granted
//! through the key policy or an IAM policy with `kms:ViaService` =
//! `secretsmanager.<region>.amazonaws.com`); without it, reads fail with `DecryptionFailure`, which
//! the provider reports as [`ErrorKind::AccessDenied`](crate::ErrorKind::AccessDenied).
//!
//! ## What it costs
//!
//! With a [`SecretCache`](crate::SecretCache) in front, an unchanged secret costs one
//! `DescribeSecret` per refresh (quota 40,000 requests/s per region, four times that of
//! `GetSecretValue`); a `GetSecretValue` happens only when `VersionIdsToStages` shows a new
//! `AWSCURRENT`. Both are billed at $0.05 per 10,000 calls.
//!
//! ## Rotation
//!
//! After Secrets Manager's four-step rotation (create `AWSPENDING`, set it in the database, test it,
//! move `AWSCURRENT`), the old version is labelled `AWSPREVIOUS`. A handle that swaps keeps it as its
//! `previous` for the grace period, so [`SecretHandle::accepts`](crate::SecretHandle::accepts) takes
//! both, and a database pool falls back to it while the new password is not yet set.
