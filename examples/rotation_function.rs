//! The body of an AWS Secrets Manager rotation function, on the rotation engine.
//!
//! AWS rotates a secret by invoking its rotation function four times, with the same
//! `ClientRequestToken` and the steps `createSecret`, `setSecret`, `testSecret` and
//! `finishSecret`, retrying any step that failed or timed out. Before the first invocation,
//! `RotateSecret` has already attached `AWSPENDING` to a version whose id is the token (with no
//! value yet; under moto, with a copy of the current value). [`handle`] is the whole function
//! body: [`Rotator::step`] writes the new credential into that staged version, and every step is
//! idempotent, so AWS's retries are harmless. In a Lambda, with the `lambda_runtime` crate:
//!
//! ```text
//! let rotator = rotator(aws_sdk_secretsmanager::Client::new(&config), endpoint, tls)?;
//! lambda_runtime::run(service_fn(|event: LambdaEvent<RotationRequest>| {
//!     let rotator = rotator.clone();
//!     async move { handle(&rotator, &event.payload).await.map(|_| ()) }
//! }))
//! .await
//! ```
//!
//! This program runs the body against a throwaway moto (AWS Secrets Manager) and PostgreSQL from
//! the test kit: it registers a rotation function with moto, calls `RotateSecret` as an operator
//! would, then delivers the four events as AWS does (each one twice, as a retry would), and shows
//! that the old password no longer logs in.
//!
//! ```text
//! cargo run --example rotation_function --features rotation,aws,testkit
//! ```
#![allow(dead_code)]

use std::sync::Arc;

use credswap::rotation::{AwsRotationStore, PostgresTarget, Rotator, Step, StepOutcome};
use serde::Deserialize;

/// The event AWS invokes a rotation function with.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationRequest {
    /// The secret's ARN.
    pub secret_id: String,
    /// The new version's id: the same for the four steps of one rotation.
    pub client_request_token: String,
    /// `createSecret`, `setSecret`, `testSecret` or `finishSecret`.
    pub step: String,
}

/// The rotation function's body: one step of one rotation. An error makes AWS retry the step
/// (and, for `createSecret`, leave the rotation pending until the next attempt).
pub async fn handle(rotator: &Rotator, request: &RotationRequest) -> credswap::Result<StepOutcome> {
    let step: Step = request.step.parse()?;
    rotator
        .step(&request.secret_id, &request.client_request_token, step)
        .await
}

/// The rotator a rotation function builds once per cold start: the store is the function's own
/// Secrets Manager client, and the database endpoint comes from the function's configuration
/// (never from the secret, which the engine refuses when it names another host).
pub fn rotator(
    client: aws_sdk_secretsmanager::Client,
    endpoint: tokio_postgres::Config,
) -> credswap::Result<Rotator> {
    // The throwaway server listens on loopback only; a real function gives `.tls(...)` instead.
    let target = PostgresTarget::new().connection(endpoint).allow_plaintext();
    Rotator::builder(Arc::new(AwsRotationStore::new(client)), Arc::new(target)).build()
}

#[cfg(not(test))]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use aws_sdk_secretsmanager::config::{Credentials, Region};
    use credswap::testkit::{MotoServer, PostgresServer};

    let pg = tokio::task::spawn_blocking(PostgresServer::start).await??;
    pg.execute("CREATE ROLE reports_app LOGIN PASSWORD 'first-password-from-setup'")?;
    let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("example", "example", None, None, "static"))
        .load()
        .await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let secret = serde_json::json!({
        "engine": "postgres", "host": "127.0.0.1", "port": pg.port(), "dbname": "postgres",
        "username": "reports_app", "password": "first-password-from-setup",
    });
    let created = client
        .create_secret()
        .name("example/reports/db")
        .secret_string(secret.to_string())
        .send()
        .await?;
    let arn = created.arn().unwrap_or_default().to_owned();

    // What an operator does: attach the function and rotate now. moto stages AWSPENDING on the
    // token, as AWS does before it invokes the function.
    let function = moto.rotation_function("reports-rotation")?;
    let token = credswap::rotation::new_token()?;
    let _ = client
        .rotate_secret()
        .secret_id(&arn)
        .client_request_token(&token)
        .rotation_lambda_arn(function)
        .send()
        .await?;

    // What AWS does: the four steps, each delivered twice.
    let mut endpoint = tokio_postgres::Config::new();
    let _ = endpoint
        .host("127.0.0.1")
        .port(pg.port())
        .dbname("postgres");
    let rotator = rotator(client.clone(), endpoint)?;
    for step in Step::ALL {
        for delivery in ["first", "retry"] {
            let request = RotationRequest {
                secret_id: arn.clone(),
                client_request_token: token.clone(),
                step: step.as_aws_str().to_owned(),
            };
            let outcome = handle(&rotator, &request).await?;
            println!("{step:<13} {delivery:<5} {outcome:?}");
        }
    }

    let mut old = tokio_postgres::Config::new();
    let _ = old
        .host("127.0.0.1")
        .port(pg.port())
        .dbname("postgres")
        .user("reports_app")
        .password("first-password-from-setup");
    match old.connect(tokio_postgres::NoTls).await {
        Ok(_) => println!("the old password still logs in (unexpected)"),
        Err(error) => println!("the old password is refused: {error}"),
    }
    let current = client
        .describe_secret()
        .secret_id(&arn)
        .send()
        .await?
        .version_ids_to_stages()
        .cloned()
        .unwrap_or_default();
    println!("versions and their stages now: {current:?}");
    Ok(())
}
