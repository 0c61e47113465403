//! A full four-phase rotation on loopback, per store and strategy, while a rotating sqlx pool
//! queries continuously: the rotation's duration (median, p95; SCRAM verifier included) and the
//! errors the pool's callers saw.
//!
//! `cargo bench --bench rotation --features rotation,aws,vault,sqlx,testkit`
//! (`CREDSWAP_BENCH_ROTATIONS` sets the rotations per row, default 20.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::{Credentials, Region};
use credswap::SecretCache;
use credswap::SecretProvider;
use credswap::pg::{PgCredentials, RetryAndDrain, RotatingPgPool};
use credswap::provider::{AwsSecretsManagerProvider, VaultAuth, VaultKvProvider, VaultSession};
use credswap::rotation::{
    AwsRotationStore, PostgresTarget, RotationStore, Rotator, Strategy, VaultKvRotationStore,
};
use credswap::testkit::{MotoServer, OpenBaoServer, PostgresServer};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

fn secret(port: u16, user: &str, password: &str) -> String {
    serde_json::json!({
        "engine": "postgres", "host": "127.0.0.1", "port": port, "dbname": "postgres",
        "username": user, "password": password,
    })
    .to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Row {
    store: &'static str,
    strategy: &'static str,
    durations: Vec<Duration>,
    queries: u64,
    errors: u64,
}

async fn measure(
    pg: &PostgresServer,
    store_name: &'static str,
    store: Arc<dyn RotationStore>,
    provider: Arc<dyn SecretProvider>,
    id: &str,
    strategy: Strategy,
    rotations: usize,
) -> Row {
    let strategy_name = strategy.name();
    let mut endpoint = tokio_postgres::Config::new();
    let _ = endpoint
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
        .strategy(strategy)
        .build()
        .unwrap();
    let cache = SecretCache::builder(provider)
        .ttl(Duration::from_secs(1))
        .min_refresh_interval(Duration::from_millis(100))
        .grace_period(Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = cache.handle::<PgCredentials>(id).await.unwrap();
    let mut config = RetryAndDrain::default();
    config.drain_delay = Duration::from_millis(500);
    let pool = RotatingPgPool::builder(handle)
        .pool_options(
            PgPoolOptions::new()
                .max_connections(4)
                .max_lifetime(Duration::from_secs(2)),
        )
        .connect_options(PgConnectOptions::new().database("postgres"))
        .retry_and_drain(config)
        .connect()
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (queries, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (pool, stop, queries, errors) =
                (pool.clone(), stop.clone(), queries.clone(), errors.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let result: Result<i32, _> =
                        sqlx::query_scalar("SELECT 1").fetch_one(&pool).await;
                    let counter = if result.is_ok() { &queries } else { &errors };
                    let _ = counter.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    let mut durations = Vec::with_capacity(rotations);
    for _ in 0..rotations {
        let started = Instant::now();
        let outcome = rotator.rotate(id).await.expect("rotation");
        durations.push(started.elapsed());
        assert!(outcome.rotated(), "{outcome:?}");
        // Let the pool follow (a TTL) before the next rotation, as a real schedule would.
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    durations.sort();
    Row {
        store: store_name,
        strategy: strategy_name,
        durations,
        queries: queries.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
    }
}

fn main() {
    let rotations: usize = std::env::var("CREDSWAP_BENCH_ROTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .max(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pg = PostgresServer::start().expect("start PostgreSQL");
    let moto = MotoServer::start().expect("start moto");
    let bao = OpenBaoServer::start().expect("start OpenBao");
    let port = pg.port();
    let rows = runtime.block_on(async {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(moto.endpoint())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "static"))
            .load()
            .await;
        let client = aws_sdk_secretsmanager::Client::new(&config);
        let session = VaultSession::connect(
            bao.addr(),
            VaultAuth::Token(bao.root_token().to_owned().into()),
        )
        .await
        .unwrap();
        let mut rows = Vec::new();
        for (index, strategy) in [Strategy::SingleUser, Strategy::alternating_users()]
            .into_iter()
            .enumerate()
        {
            let user = format!("bench_{index}");
            pg.execute(&format!(
                "CREATE ROLE {user} LOGIN PASSWORD 'Bench-Initial-01'"
            ))
            .unwrap();
            let aws_id = format!("bench/{user}");
            let _ = client
                .create_secret()
                .name(&aws_id)
                .secret_string(secret(port, &user, "Bench-Initial-01"))
                .send()
                .await
                .unwrap();
            rows.push(
                measure(
                    &pg,
                    "AWS Secrets Manager (moto)",
                    Arc::new(AwsRotationStore::new(client.clone())),
                    Arc::new(AwsSecretsManagerProvider::new(client.clone())),
                    &aws_id,
                    strategy.clone(),
                    rotations,
                )
                .await,
            );
            // Vault starts from the role's password as the AWS rows left it: a fresh role.
            let user = format!("vbench_{index}");
            pg.execute(&format!(
                "CREATE ROLE {user} LOGIN PASSWORD 'Bench-Initial-01'"
            ))
            .unwrap();
            let file = bao.work_dir().join("bench.json");
            std::fs::write(&file, secret(port, &user, "Bench-Initial-01")).unwrap();
            let _ = bao
                .cli(&[
                    "kv",
                    "put",
                    &format!("secret/bench/{user}"),
                    &format!("@{}", file.display()),
                ])
                .unwrap();
            let vault_id = format!("bench/{user}");
            rows.push(
                measure(
                    &pg,
                    "Vault KV v2 (OpenBao)",
                    Arc::new(VaultKvRotationStore::new(session.clone(), "secret")),
                    Arc::new(VaultKvProvider::new(session.clone(), "secret")),
                    &vault_id,
                    strategy,
                    rotations,
                )
                .await,
            );
        }
        rows
    });
    println!("full rotation (create, set, test, finish) on loopback, {rotations} per row:");
    println!(
        "| store | strategy | median | p95 | max | pool queries during | caller-visible errors |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {:.1?} | {:.1?} | {:.1?} | {} | {} |",
            row.store,
            row.strategy,
            percentile(&row.durations, 0.5),
            percentile(&row.durations, 0.95),
            row.durations.last().copied().unwrap_or_default(),
            row.queries,
            row.errors,
        );
    }
}
