//! # Rotating credentials with the rotation engine
//!
//! The [`rotation`](crate::rotation) module performs rotations of PostgreSQL credentials held in
//! AWS Secrets Manager or Vault/OpenBao KV v2, in four idempotent steps (`create`, `set`, `test`,
//! `finish`), one rotator per secret. This page is the operator's view: how to run it, what
//! happens when something fails, and the least privilege each part needs.
//!
//! ## Three ways to run it
//!
//! **A job or an operator's command**: [`Rotator::rotate`](crate::rotation::Rotator::rotate) runs
//! all four steps under one lock. Replicas that call it *at the same time* rotate once: one
//! rotates, the others get [`RotationOutcome::UnderWay`](crate::rotation::RotationOutcome::UnderWay).
//! Calls one after another each rotate; use
//! [`Rotator::rotate_if_due`](crate::rotation::Rotator::rotate_if_due) to skip a secret rotated a
//! moment ago.
//!
//! **A service that rotates its own secret**: [`Rotator::schedule`](crate::rotation::Rotator::schedule)
//! with a [`Schedule`](crate::rotation::Schedule) (a period, jitter, an optional daily UTC window).
//! Each attempt skips a secret younger than the schedule's minimum age (half a period by default),
//! so replicas whose attempts fall within that of each other rotate once; replicas started further
//! apart may each rotate in a period (raise the minimum age toward the period if that matters).
//! Failed attempts back off exponentially up to a period; failures that need a person (a
//! rollback, a configuration or permission error) wait a full period and log a warning.
//!
//! **The body of an AWS Secrets Manager rotation function**: AWS invokes the function four times
//! per rotation with `SecretId`, `ClientRequestToken` and `Step`; [`Rotator::step`](crate::rotation::Rotator::step)
//! takes exactly those. Before the first invocation, `RotateSecret` has already attached
//! `AWSPENDING` to a version whose id is the token, with no value yet (moto stages a copy of the
//! current value instead): `createSecret` writes the new credential into that version, whichever
//! shape it has. A rotation either changes the password or fails; it never reports success with
//! the old one. The steps are idempotent, so AWS's retries are harmless. `examples/rotation_function.rs`
//! is a complete function body, and its test drives it the way AWS does (each step twice) against
//! moto after a real `RotateSecret`. Outside AWS, [`rotation::new_token`](crate::rotation::new_token)
//! makes a token in the shape AWS accepts (a 36-character UUID; AWS takes 32 to 64 characters).
//!
//! ```no_run
//! # #![allow(dead_code)]
//! # #[cfg(feature = "aws")]
//! # async fn handler() -> credswap::Result<()> {
//! use std::sync::Arc;
//! use credswap::rotation::{AwsRotationStore, PostgresTarget, Rotator, Step, Strategy};
//!
//! #[derive(serde::Deserialize)]
//! #[serde(rename_all = "PascalCase")]
//! struct RotationEvent {
//!     secret_id: String,
//!     client_request_token: String,
//!     step: String,
//! }
//!
//! // In a Lambda runtime (say, the `lambda_runtime` crate), for each event:
//! let event: RotationEvent = serde_json::from_str(
//!     r#"{"SecretId": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/orders/db-AbCdEf",
//!         "ClientRequestToken": "4c1f0c1e-7a5e-4d7b-9a57-2f4c5b8a9e10", "Step": "createSecret"}"#,
//! ).unwrap();
//! let admin_password = std::env::var("ROTATOR_PASSWORD").unwrap(); // or read a master secret
//! // The database the function may send credentials to: its configuration, not the secret's.
//! let database: tokio_postgres::Config = "host=orders-db.internal dbname=orders".parse().unwrap();
//! # let tls = tokio_postgres::NoTls; // stands for a real connector (tokio-postgres-rustls, …)
//! let rotator = Rotator::builder(
//!     Arc::new(AwsRotationStore::from_env().await),
//!     Arc::new(
//!         PostgresTarget::new()
//!             .connection(database)
//!             .admin("rotator", admin_password)
//!             .tls(tls),
//!     ),
//! )
//! .strategy(Strategy::alternating_users())
//! .build()?;
//! let step: Step = event.step.parse()?;
//! rotator.step(&event.secret_id, &event.client_request_token, step).await?;
//! # Ok(()) }
//! ```
//!
//! An error makes the invocation fail and AWS retries it; a failed `testSecret` has already been
//! rolled back ([`ErrorKind::RolledBack`](crate::ErrorKind::RolledBack)) by the time AWS sees the
//! error.
//!
//! ## After a rotation: hooks that run exactly once
//!
//! [`RotatorBuilder::on_finished`](crate::rotation::RotatorBuilder::on_finished) takes async
//! hooks (and [`announce_to`](crate::rotation::RotatorBuilder::announce_to) is the ready-made one
//! that announces on a push publisher). They get the store's canonical name of the secret (AWS:
//! its name, also when the rotation was given its ARN), so consumers that cache by name apply the
//! announcement. A promotion leaves a mark in the store (AWS: `AWSPENDING` and a base label on the
//! new version; Vault: the pending slot) until the hooks ran: when the store's answer to the
//! promotion is lost, or the rotator crashes right after it, the next `rotate`, `resume`, `abort`,
//! scheduled attempt or `finishSecret` runs the hooks it missed, once. (When removing the mark
//! fails right after the hooks ran, the next run runs them again; announcements take a repeat in
//! their stride.) Each hook is bounded by the store timeout and may panic without undoing
//! anything.
//!
//! ## Stopping: cancellation is the normal way
//!
//! Dropping the future of `rotate`, `resume`, `abort` or `step`, or a
//! [`ScheduledRotation`](crate::rotation::ScheduledRotation), never abandons a rotation between
//! `set` and `finish` (with a single user, that would leave a database accepting only the pending
//! password while every cache holds the current one): the work runs in a task of its own to its
//! end, finished or rolled back. [`ScheduledRotation::shutdown`](crate::rotation::ScheduledRotation::shutdown)
//! stops a schedule and waits for that end. A service shutting down stops, in this order: its
//! schedules (`shutdown().await`), its push subscribers, its pools, its caches, and last the
//! [`VaultSession`](crate::provider::VaultSession) they use (its `shutdown().await` revokes the
//! token it logged in for, and with it the leases that token created). Only the runtime shutting down cuts a rotation off; the next
//! `rotate` or `resume` finishes it. Every store call (and hook) is bounded by
//! [`store_timeout`](crate::rotation::RotatorBuilder::store_timeout) (30 s by default), so a
//! black-holed request cannot hold the rotation lock, and with it a single user's lockout.
//!
//! ## What is better than the usual rotation functions
//!
//! | | AWS's PostgreSQL Lambdas, Vault's database plugin | this engine |
//! |---|---|---|
//! | password in SQL | `ALTER USER … WITH PASSWORD '<plaintext>'`: in the statement log | a client-computed SCRAM-SHA-256 verifier only |
//! | idempotence | re-checks state in each step | the same, per token; tested against real stores by stopping after `create`, `set` and `test` and by losing the store's answer after the pending write and after the promotion |
//! | failed test | the database keeps the new password, the rotation is marked failed | the database goes back to the current credential, the pending version is removed |
//! | a write during the rotation | AWS's `finishSecret` promotes over it (the write becomes `AWSPREVIOUS`) | `finish` refuses, the database goes back to the written credential |
//! | concurrent rotators | one per AWS rotation / Vault's own queue | advisory lock per secret (keyed by its name or KV path, however it is spelled) plus the store's check-and-set |
//!
//! ## When something fails
//!
//! | what happened | what you see | what to do |
//! |---|---|---|
//! | `test` failed, rollback succeeded | [`ErrorKind::RolledBack`](crate::ErrorKind::RolledBack): which step failed, what was restored | fix the cause (grants, `pg_hba.conf`, the test query) and rotate again |
//! | `test` failed, rollback failed too | the rollback's error kind, a message saying `ROLLBACK FAILED` and whether the database was restored | [`Rotator::abort`](crate::rotation::Rotator::abort) retries the rollback |
//! | the rotator died mid-rotation | the next `rotate` (or scheduled attempt) finishes it with its token; with [`resume_orphaned(false)`](crate::rotation::RotatorBuilder::resume_orphaned), `UnderWay` with the token | nothing; or [`Rotator::resume`](crate::rotation::Rotator::resume) finishes it, `abort` undoes it |
//! | another rotator is running | `UnderWay` from `rotate`, [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) from `step` | nothing |
//! | a late or repeated step for an older token | `NotFound` (no rotation under way) or `Conflict` (another one is); nothing changed | nothing |
//! | someone wrote the secret during the rotation | `RolledBack` at `finish`: the store refused to promote, the database was put back on the written credential and the pending version removed | rotate again |
//! | the store's answer to the promotion was lost | `rotate` sees that the store did promote and reports the rotation; if the store stays unreachable, the error, and the next call reports it and runs its hooks | nothing |
//! | the pending version could not be removed after the promotion (Vault: a 503, or a policy without `delete`) | nothing: the slot is marked done (or left for the next run), and the next rotation takes it over | nothing |
//! | a store call never answers | [`ErrorKind::Transient`](crate::ErrorKind::Transient) after the store timeout; the lock is released | nothing: the next run finishes or undoes the rotation |
//! | the database lets the role in with any password (`trust` or `peer` in `pg_hba.conf`) | [`ErrorKind::Config`](crate::ErrorKind::Config) at `set`, nothing changed, the pending version removed | require `scram-sha-256` for the role |
//! | the secret names another host or port than the target is configured for | [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest) before any connection | fix the secret or the configuration |
//! | the server asks for the password in cleartext | [`ErrorKind::Config`](crate::ErrorKind::Config); nothing was sent | fix `pg_hba.conf`, or use TLS |
//!
//! With single user, a rotator that dies between `set` and `finish` leaves a database that accepts
//! only the pending password: consumers whose cache holds the current one are rejected until the
//! next `rotate` finishes the rotation (or `abort` undoes it). Alternating users never have that
//! window. A schedule's next attempt finishes it; a job that runs rarely should run `resume` soon
//! after a failure.
//!
//! The engine's database sessions run under a `statement_timeout` (30 s by default,
//! [`PostgresTarget::statement_timeout`](crate::rotation::PostgresTarget::statement_timeout);
//! rounded up to whole milliseconds, never to "none"), so a role locked by another session fails
//! the step instead of holding the rotation lock. The secret's `ssl_mode` is honoured: `require`
//! and `verify-*` need a TLS connector on the target.
//!
//! ## Where credentials go, and what "no password in SQL" protects
//!
//! Credentials go only where the rotator's configuration says:
//! [`PostgresTarget::connection`](crate::rotation::PostgresTarget::connection) pins the host and
//! port, and a secret that names another is refused before anything is sent (anyone who may write
//! the secret but not the rotator's configuration could otherwise collect the admin's `CREATEROLE`
//! password at the next rotation). An admin credential requires a pinned endpoint. Without a TLS
//! connector ([`PostgresTarget::tls`](crate::rotation::PostgresTarget::tls)) the target refuses to
//! connect unless you opt in with
//! [`allow_plaintext`](crate::rotation::PostgresTarget::allow_plaintext) (logged as a warning). With
//! TLS the admin requires channel binding. A server that asks for a cleartext password is refused
//! before any password is sent on plaintext connections, and before the admin's under TLS; the
//! role's own logins under TLS rely on the TLS connector verifying the server.
//!
//! PostgreSQL receives a SCRAM-SHA-256 verifier computed on the client (with the server's
//! `scram_iterations` when it is above 4,096), never the password, so the password is in no
//! statement log, `pg_stat_statements` entry or server error. That is what it protects. It does
//! not make the verifier harmless: with the verifier and one observed login (or the server's
//! `pg_authid`), an attacker can log in as the role (RFC 5802 §9). So keep the statement log and
//! the catalog as private as passwords, and keep the wire encrypted: plaintext sends the verifier
//! in clear.
//!
//! ## Least privilege
//!
//! **AWS** (the rotator's IAM role; consumers need only `GetSecretValue` and `DescribeSecret`, see
//! [`docs::aws`](crate::docs::aws)):
//!
//! ```json
//! {
//!   "Version": "2012-10-17",
//!   "Statement": [{
//!     "Effect": "Allow",
//!     "Action": [
//!       "secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret",
//!       "secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage"
//!     ],
//!     "Resource": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/orders/db-??????"
//!   }]
//! }
//! ```
//!
//! plus `kms:Decrypt` and `kms:GenerateDataKey` on a customer-managed key, if the secret uses one.
//!
//! **Vault / OpenBao** (KV v2 at `secret`, pending slots under the default prefix): the policy in
//! the [`VaultKvRotationStore`](crate::rotation) docs: `create`, `read`, `update` on
//! `secret/data/<path>` and `secret/data/credswap-pending/<path>`, `read`, `update` on
//! `secret/metadata/<path>`, `read` (and, to remove finished slots, `delete`) on
//! `secret/metadata/credswap-pending/<path>`. Without `delete`, a finished slot is marked done and
//! taken over by the next rotation. Readers get `read` on `secret/data/<path>` and
//! `secret/metadata/<path>` only, never the pending prefix. Secret ids with a `.` or `..` segment,
//! an empty segment, `?`, `#` or `%` are refused: they would reach another path.
//!
//! **PostgreSQL**:
//! - Single user without an admin credential: none beyond `LOGIN`: a role may change its own
//!   password.
//! - With an admin credential (required for alternating users): a role with `CREATEROLE`; from
//!   PostgreSQL 16, `CREATEROLE` acts only on roles the admin has `ADMIN OPTION` on, so create the
//!   application roles as the admin, or `GRANT app TO rotator WITH ADMIN OPTION` (and the same for
//!   `app_clone` once it exists). The admin needs `ADMIN OPTION` on `app` to `GRANT app TO
//!   app_clone`. It does not need to be a superuser.
//! - Everyone involved connects to the same database, where the advisory lock lives.
//!
//! ## What is logged
//!
//! Each step, rollback and rotation emits a [`RotationEvent`](crate::rotation::RotationEvent) and a
//! `tracing` event (target `credswap::rotation`) with the rotation id, secret id, step, token, old and
//! new version ids, outcome and duration. Never a password: the test suite runs rotations (and
//! failed ones) at TRACE level and scans everything captured, and scans the PostgreSQL statement
//! log (`log_statement = 'all'`) for every password used.
