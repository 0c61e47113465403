//! Rotation-aware pools against plain ones, on one throwaway PostgreSQL, in one run.
//!
//! 1. Throughput (criterion): acquire + `SELECT 1` + release, through plain sqlx, `RotatingPgPool`,
//!    plain deadpool-postgres and a `RotatingDeadpoolBuilder` pool.
//! 2. Rotation under load (printed table): 8 tasks query for a while the role's password rotates
//!    every 2 s (alternating database-first and secret-first), with short-lived connections so new
//!    logins keep happening. Reports caller-visible failures, p50/p99 latency inside and outside
//!    rotation windows, and the consumer update latency.
//!
//! `cargo bench --bench pools --features sqlx,deadpool,testkit`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use credswap::pg::{PgCredentials, PoolStats, RotatingDeadpoolBuilder, RotatingPgPool};
use credswap::testkit::PostgresServer;
use credswap::{MemoryProvider, SecretCache};
use criterion::Criterion;
use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

fn secret(password: &str) -> String {
    format!(r#"{{"username": "app", "password": "{password}"}}"#)
}

struct Setup {
    pg: PostgresServer,
    store: Arc<MemoryProvider>,
    cache: SecretCache,
}

async fn setup() -> Setup {
    let pg = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
        .expect("start PostgreSQL");
    pg.execute("CREATE ROLE app LOGIN PASSWORD 'pw-0'").unwrap();
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("db", secret("pw-0"));
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_secs(5))
        .min_refresh_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    Setup { pg, store, cache }
}

fn sqlx_target(pg: &PostgresServer) -> PgConnectOptions {
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(pg.port())
        .database("postgres")
}

fn pg_target(pg: &PostgresServer) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    let _ = config.host("127.0.0.1").port(pg.port()).dbname("postgres");
    config
}

fn throughput(c: &mut Criterion, runtime: &tokio::runtime::Runtime, setup: &Setup) {
    let (plain_sqlx, rotating_sqlx, plain_deadpool, rotating_deadpool) = runtime.block_on(async {
        let handle = setup.cache.handle::<PgCredentials>("db").await.unwrap();
        let plain_sqlx = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(sqlx_target(&setup.pg).username("app").password("pw-0"))
            .await
            .unwrap();
        let rotating_sqlx = RotatingPgPool::builder(handle.clone())
            .pool_options(PgPoolOptions::new().max_connections(4))
            .connect_options(sqlx_target(&setup.pg))
            .connect()
            .await
            .unwrap();
        let mut config = pg_target(&setup.pg);
        let _ = config.user("app").password("pw-0");
        let plain_deadpool = deadpool_postgres::Pool::builder(deadpool_postgres::Manager::new(
            config,
            tokio_postgres::NoTls,
        ))
        .max_size(4)
        .build()
        .unwrap();
        let rotating_deadpool = RotatingDeadpoolBuilder::new(handle)
            .pg_config(pg_target(&setup.pg))
            .max_size(4)
            .build()
            .unwrap();
        (plain_sqlx, rotating_sqlx, plain_deadpool, rotating_deadpool)
    });

    // Interleaved A/B: alternating blocks of plain and rotating operations, so that the drift of
    // a shared, noisy machine falls on both sides alike. The ratio is the number to read.
    runtime.block_on(async {
        println!("interleaved A/B, acquire + SELECT 1, 200 rounds x 50 operations each side:");
        let (mut plain, mut rotating) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..200 {
            let started = Instant::now();
            for _ in 0..50 {
                let mut conn = plain_sqlx.acquire().await.unwrap();
                let _: i32 = sqlx::query_scalar("SELECT 1")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
            }
            plain += started.elapsed();
            let started = Instant::now();
            for _ in 0..50 {
                let mut conn = rotating_sqlx.acquire().await.unwrap();
                let _: i32 = sqlx::query_scalar("SELECT 1")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
            }
            rotating += started.elapsed();
        }
        println!(
            "  sqlx:     plain {:.1?}/op, rotating {:.1?}/op, rotating/plain = {:.3}",
            plain / 10_000,
            rotating / 10_000,
            rotating.as_secs_f64() / plain.as_secs_f64()
        );
        let (mut plain, mut rotating) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..200 {
            let started = Instant::now();
            for _ in 0..50 {
                let client = plain_deadpool.get().await.unwrap();
                let _ = client.query_one("SELECT 1", &[]).await.unwrap();
            }
            plain += started.elapsed();
            let started = Instant::now();
            for _ in 0..50 {
                let client = rotating_deadpool.get().await.unwrap();
                let _ = client.query_one("SELECT 1", &[]).await.unwrap();
            }
            rotating += started.elapsed();
        }
        println!(
            "  deadpool: plain {:.1?}/op, rotating {:.1?}/op, rotating/plain = {:.3}",
            plain / 10_000,
            rotating / 10_000,
            rotating.as_secs_f64() / plain.as_secs_f64()
        );
    });

    let mut group = c.benchmark_group("acquire_select_1");
    group.bench_function("sqlx_plain", |b| {
        b.to_async(runtime).iter(|| async {
            let mut conn = plain_sqlx.acquire().await.unwrap();
            let _: i32 = sqlx::query_scalar("SELECT 1")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        })
    });
    group.bench_function("sqlx_rotating", |b| {
        b.to_async(runtime).iter(|| async {
            let mut conn = rotating_sqlx.acquire().await.unwrap();
            let _: i32 = sqlx::query_scalar("SELECT 1")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        })
    });
    group.bench_function("deadpool_plain", |b| {
        b.to_async(runtime).iter(|| async {
            let client = plain_deadpool.get().await.unwrap();
            let _ = client.query_one("SELECT 1", &[]).await.unwrap();
        })
    });
    group.bench_function("deadpool_rotating", |b| {
        b.to_async(runtime).iter(|| async {
            let client = rotating_deadpool.get().await.unwrap();
            let _ = client.query_one("SELECT 1", &[]).await.unwrap();
        })
    });
    group.finish();
}

type Query = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

struct Sample {
    at: Instant,
    latency: Duration,
}

struct AuditOutcome {
    samples: Vec<Sample>,
    failures: usize,
    rotations: Vec<Instant>,
}

/// 8 tasks run `query` for `duration` while the password rotates every 2 s.
async fn under_rotation(
    setup: &Setup,
    round0: usize,
    duration: Duration,
    query: Query,
) -> AuditOutcome {
    let admin = {
        let config = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres password={}",
            setup.pg.port(),
            setup.pg.superuser_password()
        );
        let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
            .await
            .unwrap();
        let _task = tokio::spawn(connection);
        client
    };
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (stop, query) = (stop.clone(), query.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut failures = 0;
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    match query().await {
                        Ok(()) => samples.push(Sample {
                            at,
                            latency: at.elapsed(),
                        }),
                        Err(_) => failures += 1,
                    }
                }
                (samples, failures)
            })
        })
        .collect();
    let started = Instant::now();
    let mut rotations = Vec::new();
    let mut round = round0;
    while started.elapsed() + Duration::from_secs(2) < duration {
        tokio::time::sleep(Duration::from_secs(2)).await;
        round += 1;
        let password = format!("pw-{round}");
        let alter = format!("ALTER ROLE app PASSWORD '{password}'");
        rotations.push(Instant::now());
        if round % 2 == 0 {
            admin.batch_execute(&alter).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = setup.store.set("db", secret(&password));
        } else {
            let _ = setup.store.set("db", secret(&password));
            tokio::time::sleep(Duration::from_millis(50)).await;
            admin.batch_execute(&alter).await.unwrap();
        }
    }
    tokio::time::sleep(duration.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (s, f) = worker.await.unwrap();
        samples.extend(s);
        failures += f;
    }
    AuditOutcome {
        samples,
        failures,
        rotations,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, outcome: &AuditOutcome, stats: Option<PoolStats>) {
    // A rotation window: from the first change (database or secret) to 1 s after it.
    let window = Duration::from_secs(1);
    let (mut inside, mut outside): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for sample in &outcome.samples {
        let in_window = outcome
            .rotations
            .iter()
            .any(|r| sample.at >= *r && sample.at < *r + window);
        if in_window {
            inside.push(sample.latency);
        } else {
            outside.push(sample.latency);
        }
    }
    inside.sort();
    outside.sort();
    println!(
        "| {name} | {} | {} | {} | {:.2?} / {:.2?} | {:.2?} / {:.2?} | {} | {} |",
        outcome.rotations.len(),
        outcome.samples.len(),
        outcome.failures,
        percentile(&outside, 0.5),
        percentile(&outside, 0.99),
        percentile(&inside, 0.5),
        percentile(&inside, 0.99),
        stats.map_or("—".into(), |s| s.auth_failures.to_string()),
        stats
            .and_then(|s| s.last_update_latency)
            .map_or("—".into(), |d| format!("{d:.1?}")),
    );
}

fn rotation_under_load(runtime: &tokio::runtime::Runtime, setup: &Setup) {
    let duration = Duration::from_secs(
        std::env::var("CREDSWAP_BENCH_ROTATION_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    println!();
    println!(
        "rotation under load: 8 tasks, rotation every 2 s, connections live 300 ms, {duration:?} per pool"
    );
    println!(
        "| pool | rotations | queries | caller-visible failures | p50 / p99 outside rotation | p50 / p99 inside rotation (1 s) | rejected logins absorbed | consumer update latency (last) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    runtime.block_on(async {
        // Start from a known password.
        let mut round = 100;
        setup
            .pg
            .execute(&format!("ALTER ROLE app PASSWORD 'pw-{round}'"))
            .unwrap();
        let _ = setup.store.set("db", secret(&format!("pw-{round}")));
        tokio::time::sleep(Duration::from_millis(250)).await;
        let handle = setup.cache.handle::<PgCredentials>("db").await.unwrap();
        let _ = handle.refresh().await.unwrap();

        let sqlx_pool = RotatingPgPool::builder(handle.clone())
            .pool_options(
                PgPoolOptions::new()
                    .max_connections(8)
                    .max_lifetime(Duration::from_millis(300)),
            )
            .connect_options(sqlx_target(&setup.pg))
            .connect()
            .await
            .unwrap();
        let query: Query = {
            let pool = sqlx_pool.clone();
            Arc::new(move || {
                let pool = pool.clone();
                Box::pin(async move {
                    let _: i32 = sqlx::query_scalar("SELECT 1")
                        .fetch_one(&pool)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(())
                })
            })
        };
        let outcome = under_rotation(setup, round, duration, query).await;
        round += outcome.rotations.len();
        report("sqlx `RotatingPgPool`", &outcome, Some(sqlx_pool.stats()));

        let (deadpool, monitor) = RotatingDeadpoolBuilder::new(handle.clone())
            .pg_config(pg_target(&setup.pg))
            .max_size(8)
            .build_monitored()
            .unwrap();
        let churn = {
            let pool = deadpool.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = pool.retain(|_, m| m.age() < Duration::from_millis(300));
                }
            })
        };
        let query: Query = {
            let pool = deadpool.clone();
            Arc::new(move || {
                let pool = pool.clone();
                Box::pin(async move {
                    let client = pool.get().await.map_err(|e| e.to_string())?;
                    let _ = client
                        .query_one("SELECT 1", &[])
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(())
                })
            })
        };
        let outcome = under_rotation(setup, round, duration, query).await;
        round += outcome.rotations.len();
        churn.abort();
        report(
            "deadpool `RotatingDeadpoolBuilder`",
            &outcome,
            Some(monitor.stats()),
        );

        // The control: a plain sqlx pool with the credentials of the moment it was built.
        let _ = handle.refresh().await;
        let password = format!("pw-{round}");
        let plain = PgPoolOptions::new()
            .max_connections(8)
            .max_lifetime(Duration::from_millis(300))
            .connect_with(sqlx_target(&setup.pg).username("app").password(&password))
            .await
            .unwrap();
        let query: Query = Arc::new(move || {
            let plain = plain.clone();
            Box::pin(async move {
                let _: i32 = sqlx::query_scalar("SELECT 1")
                    .fetch_one(&plain)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            })
        });
        let outcome = under_rotation(setup, round, duration, query).await;
        report("plain sqlx `PgPool` (static credentials)", &outcome, None);
    });
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let setup = runtime.block_on(setup());
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        // No plots: the example charts enable plotters' `ab_glyph` fonts, which
        // criterion's report does not register. The numbers are what BENCHMARKS.md keeps.
        .without_plots()
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    throughput(&mut criterion, &runtime, &setup);
    criterion.final_summary();
    rotation_under_load(&runtime, &setup);
}
