//! A data-pipeline worker copying rows in batches for minutes while its database password rotates.
//!
//! Starts a throwaway PostgreSQL (scram-sha-256) through the test kit, fills a `source` table, and
//! copies it into `target` in batches of 200 rows, one transaction per batch, through a
//! [`RotatingPgPool`]. Meanwhile a "rotation job" changes the role's password in the database and
//! in the secret store every few seconds, alternating which it changes first. The worker prints its
//! progress and the rotations it absorbed; it should see no error.
//!
//! ```text
//! cargo run --example pipeline_worker --features sqlx,testkit -- [SECONDS] [ROTATE_EVERY_SECONDS]
//! ```
//! (defaults: 120 and 10).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use credswap::pg::{PgCredentials, RetryAndDrain, RotatingPgPool};
use credswap::testkit::PostgresServer;
use credswap::{MemoryProvider, SecretCache};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const BATCH: i64 = 200;
/// Stands in for the work a real pipeline does per batch (transforming, calling out).
const WORK_PER_BATCH: Duration = Duration::from_millis(10);

fn secret(password: &str) -> String {
    format!(r#"{{"engine": "postgres", "username": "etl", "password": "{password}"}}"#)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let run_for = Duration::from_secs(args.next().map_or(Ok(120), |a| a.parse())?);
    let rotate_every = Duration::from_secs(args.next().map_or(Ok(10), |a| a.parse())?);

    println!("starting a throwaway PostgreSQL...");
    let pg = tokio::task::spawn_blocking(PostgresServer::start).await??;
    pg.execute(
        "CREATE ROLE etl LOGIN PASSWORD 'etl-0';
         CREATE TABLE source (id bigint PRIMARY KEY, payload text NOT NULL);
         CREATE TABLE target (id bigint PRIMARY KEY, payload text NOT NULL);
         INSERT INTO source SELECT g, md5(g::text) FROM generate_series(1, 3000000) g;
         GRANT SELECT ON source TO etl; GRANT ALL ON target TO etl;",
    )?;

    // The secret store and the cache an application would have (AWS or Vault in production).
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("etl/db", secret("etl-0"));
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_secs(30))
        .min_refresh_interval(Duration::from_millis(250))
        .build()?;
    let creds = cache.handle::<PgCredentials>("etl/db").await?;

    let mut rotation = RetryAndDrain::default();
    rotation.drain_delay = Duration::from_secs(2);
    let pool = RotatingPgPool::builder(creds)
        .pool_options(
            PgPoolOptions::new()
                .max_connections(4)
                .max_lifetime(Duration::from_secs(5)),
        )
        .connect_options(
            PgConnectOptions::new()
                .host(pg.host())
                .port(pg.port())
                .database("postgres"),
        )
        .retry_and_drain(rotation)
        .connect()
        .await?;

    // The rotation job: database first, then secret first, and so on.
    let done = Arc::new(AtomicBool::new(false));
    let rotator = {
        let (done, store) = (done.clone(), store.clone());
        let superuser = (pg.port(), pg.superuser_password().to_owned());
        tokio::spawn(async move {
            let config = format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres password={}",
                superuser.0, superuser.1
            );
            let (admin, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
                .await
                .expect("superuser login");
            let _task = tokio::spawn(connection);
            let mut round = 0u32;
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(rotate_every).await;
                round += 1;
                let password = format!("etl-{round}");
                let alter = format!("ALTER ROLE etl PASSWORD '{password}'");
                if round % 2 == 1 {
                    admin.batch_execute(&alter).await.expect("alter role");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = store.set("etl/db", secret(&password));
                    println!("  rotation {round}: database first, then the secret");
                } else {
                    let _ = store.set("etl/db", secret(&password));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    admin.batch_execute(&alter).await.expect("alter role");
                    println!("  rotation {round}: secret first, then the database");
                }
            }
            round
        })
    };

    let started = Instant::now();
    let mut last_id = 0i64;
    let mut copied = 0u64;
    let mut errors = 0u64;
    let mut next_report = Duration::from_secs(5);
    while started.elapsed() < run_for {
        let batch = async {
            let mut tx = pool.begin().await?;
            let moved = sqlx::query(
                "INSERT INTO target SELECT id, payload FROM source
                 WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(last_id)
            .bind(BATCH)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok::<_, sqlx::Error>(moved)
        };
        match batch.await {
            Ok(0) => {
                println!("source exhausted");
                break;
            }
            Ok(moved) => {
                last_id += moved as i64;
                copied += moved;
                tokio::time::sleep(WORK_PER_BATCH).await;
            }
            Err(error) => {
                errors += 1;
                eprintln!("batch failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if started.elapsed() >= next_report {
            let stats = pool.stats();
            println!(
                "[{:>4}s] copied {copied} rows; logins rejected and retried: {}, credential swaps: {}, \
                 connections drained: {}, errors seen by the worker: {errors}",
                started.elapsed().as_secs(),
                stats.auth_failures,
                stats.credential_swaps,
                stats.connections_drained,
            );
            next_report += Duration::from_secs(5);
        }
    }
    done.store(true, Ordering::Relaxed);
    let rotations = rotator.await?;
    let stats = pool.stats();
    println!(
        "done: {copied} rows in {:.0?} through {rotations} rotations; {} rejected logins absorbed, \
         {} retries, last consumer update latency {:?}; errors seen by the worker: {errors}",
        started.elapsed(),
        stats.auth_failures,
        stats.retries,
        stats.last_update_latency,
    );
    if errors > 0 {
        std::process::exit(1);
    }
    Ok(())
}
