//! Rotates a database secret from the command line while the program's own pool keeps querying.
//!
//! Starts a throwaway PostgreSQL and moto (AWS Secrets Manager) or OpenBao (Vault KV v2) from the
//! test kit, creates the role `orders_app` and its secret, builds a rotating sqlx pool that queries
//! in the background, rotates N times with progress output for every step, and prints the errors
//! the pool's callers saw (zero).
//!
//! ```text
//! cargo run --example rotate --features rotation,aws,vault,sqlx,testkit -- aws 5 alternating
//! cargo run --example rotate --features rotation,aws,vault,sqlx,testkit -- vault 3 single
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_secretsmanager::config::{Credentials, Region};
use credswap::pg::{PgCredentials, RotatingPgPool};
use credswap::provider::{AwsSecretsManagerProvider, VaultAuth, VaultKvProvider, VaultSession};
use credswap::rotation::{
    AuditActivity, AwsRotationStore, PostgresTarget, RotationOutcome, RotationStore, Rotator,
    Strategy, VaultKvRotationStore,
};
use credswap::testkit::{MotoServer, OpenBaoServer, PostgresServer};
use credswap::{SecretCache, SecretProvider};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

type Stores = (Arc<dyn RotationStore>, Arc<dyn SecretProvider>);

/// Keeps the store's server alive for the program's run.
enum Server {
    Moto(#[allow(dead_code)] MotoServer),
    Bao(#[allow(dead_code)] OpenBaoServer),
}

async fn aws_store(id: &str, secret: &str) -> Result<(Server, Stores), Box<dyn std::error::Error>> {
    let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("example", "example", None, None, "static"))
        .load()
        .await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let _ = client
        .create_secret()
        .name(id)
        .secret_string(secret)
        .send()
        .await?;
    println!("moto (AWS Secrets Manager) at {}", moto.endpoint());
    Ok((
        Server::Moto(moto),
        (
            Arc::new(AwsRotationStore::new(client.clone())),
            Arc::new(AwsSecretsManagerProvider::new(client)),
        ),
    ))
}

async fn vault_store(
    id: &str,
    secret: &str,
) -> Result<(Server, Stores), Box<dyn std::error::Error>> {
    let bao = tokio::task::spawn_blocking(OpenBaoServer::start).await??;
    let file = bao.work_dir().join("secret.json");
    std::fs::write(&file, secret)?;
    let _ = bao.cli(&[
        "kv",
        "put",
        &format!("secret/{id}"),
        &format!("@{}", file.display()),
    ])?;
    let session = VaultSession::connect(
        bao.addr(),
        VaultAuth::Token(bao.root_token().to_owned().into()),
    )
    .await?;
    println!("OpenBao (Vault KV v2) at {}", bao.addr());
    Ok((
        Server::Bao(bao),
        (
            Arc::new(VaultKvRotationStore::new(session.clone(), "secret")),
            Arc::new(VaultKvProvider::new(session, "secret")),
        ),
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let store_kind = args.first().map_or("aws", String::as_str).to_owned();
    let rotations: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(5);
    let strategy = match args.get(2).map_or("alternating", String::as_str) {
        "single" => Strategy::SingleUser,
        _ => Strategy::alternating_users(),
    };

    let pg = tokio::task::spawn_blocking(PostgresServer::start).await??;
    pg.execute("CREATE ROLE orders_app LOGIN PASSWORD 'first-password-from-setup'")?;
    println!("PostgreSQL on 127.0.0.1:{}", pg.port());
    let secret = serde_json::json!({
        "engine": "postgres", "host": "127.0.0.1", "port": pg.port(), "dbname": "postgres",
        "username": "orders_app", "password": "first-password-from-setup",
    })
    .to_string();
    let id = "example/orders/db";
    let (_server, (store, provider)) = match store_kind.as_str() {
        "vault" => vault_store(id, &secret).await?,
        _ => aws_store(id, &secret).await?,
    };

    // The application side: a rotating pool on a handle of the secret, querying all the time.
    let cache = SecretCache::builder(provider)
        .ttl(Duration::from_secs(1))
        .min_refresh_interval(Duration::from_millis(100))
        .build()?;
    let handle = cache.handle::<PgCredentials>(id).await?;
    let pool = RotatingPgPool::builder(handle)
        .pool_options(PgPoolOptions::new().max_connections(4))
        .connect_options(PgConnectOptions::new().database("postgres"))
        .connect()
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let (queries, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (pool, stop, queries, errors) =
            (pool.clone(), stop.clone(), queries.clone(), errors.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result: Result<i32, _> = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await;
                let counter = if result.is_ok() { &queries } else { &errors };
                let _ = counter.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // The rotation side, with an admin credential (alternating users create the clone role). The
    // admin password goes only to the endpoint configured here, never to one a secret names; the
    // throwaway server listens on loopback, so plaintext is fine (in production: `.tls(...)`).
    let mut endpoint = tokio_postgres::Config::new();
    endpoint
        .host("127.0.0.1")
        .port(pg.port())
        .dbname("postgres");
    let target = PostgresTarget::new()
        .connection(endpoint)
        .admin(
            PostgresServer::SUPERUSER,
            pg.superuser_password().to_owned(),
        )
        .allow_plaintext();
    let rotator = Rotator::builder(store, Arc::new(target))
        .strategy(strategy.clone())
        .on_finished(|finished| async move {
            println!(
                "    announced: {} is at {}",
                finished.secret_id, finished.version
            );
        })
        .build()?;
    let mut events = rotator.subscribe();
    let progress = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            if let AuditActivity::Step(step) = event.activity {
                println!(
                    "    {step:<13} {:<12} {:>8.1?}",
                    event.outcome.to_string(),
                    event.duration
                );
            }
        }
    });
    println!("rotating `{id}` {rotations} times ({}):", strategy.name());
    for round in 1..=rotations {
        println!("  rotation {round}:");
        match rotator.rotate(id).await? {
            RotationOutcome::Rotated {
                old_version,
                new_version,
                ..
            } => println!("    {old_version} -> {new_version}"),
            other => println!("    {other:?}"),
        }
        // Give the pool a TTL to follow, as consumers do between scheduled rotations.
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await?;
    progress.abort();
    println!(
        "the pool ran {} queries during the rotations; errors its callers saw: {}",
        queries.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}
