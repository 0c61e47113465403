//! The deadpool-postgres pool against a real PostgreSQL whose passwords are rotated from outside.

use crate::pg_common;

use std::sync::Arc;
use std::time::Duration;

use credswap::pg::{PoolMonitor, RetryAndDrain, RotatingDeadpoolBuilder};
use deadpool_postgres::Pool;
use pg_common::{
    Fixture, Kind, Order, Query, creds_json, fixture, rotate, scenarios, start_load, switch_secret,
};

fn target(port: u16) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    let _ = config.host("127.0.0.1").port(port).dbname("postgres");
    config
}

fn pool(fixture: &Fixture, drain: Duration) -> (Pool, PoolMonitor) {
    RotatingDeadpoolBuilder::new(fixture.handle.clone())
        .pg_config(target(fixture.port))
        .max_size(8)
        .retry_and_drain(scenarios::retry_and_drain(drain))
        .build_monitored()
        .unwrap()
}

fn query_through(pool: &Pool) -> Query {
    let pool = pool.clone();
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            let row = client
                .query_one("SELECT 1", &[])
                .await
                .map_err(|e| e.to_string())?;
            let n: i32 = row.get(0);
            client
                .execute("INSERT INTO items (n) VALUES ($1)", &[&n])
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
    })
}

/// deadpool has no max lifetime: retire connections older than `age` from the test, so new logins
/// keep happening (also in the windows where the database and the secret disagree).
fn churn(pool: &Pool, age: Duration) -> tokio::task::JoinHandle<()> {
    let pool = pool.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = pool.retain(|_, metrics| metrics.age() < age);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_caller_sees_an_error_through_ten_rotations_in_both_orders() {
    let fixture = fixture().await;
    let (pool, monitor) = pool(&fixture, Duration::from_millis(300));
    let churn = churn(&pool, Duration::from_millis(300));
    let load = start_load(8, query_through(&pool));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut round = 0;
    for order in [Order::DatabaseFirst, Order::SecretFirst] {
        for _ in 0..5 {
            round += 1;
            rotate(&fixture, round, order).await;
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
    let (ok, errors) = load.stop().await;
    churn.abort();
    assert!(
        errors.is_empty(),
        "{} errors reached callers: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(ok > 100, "the load ran ({ok} queries)");
    let stats = monitor.stats();
    assert!(stats.auth_failures > 0, "{stats:?}");
    assert!(stats.retries > 0, "{stats:?}");
    assert!(stats.credential_swaps >= 5, "{stats:?}");
    assert!(stats.last_update_latency.is_some());
    assert_eq!(stats.exhausted, 0);
    // One user: its previous password died when the database took the new one, so no login was
    // spent on it.
    assert_eq!(stats.fallbacks_to_previous, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_deadpool_with_static_credentials_fails_under_the_same_rotations() {
    let fixture = fixture().await;
    let mut config = target(fixture.port);
    let _ = config.user("app").password("pw-0");
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let plain = Pool::builder(manager).max_size(8).build().unwrap();
    let churn = churn(&plain, Duration::from_millis(300));
    let load = start_load(8, query_through(&plain));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 1..=3 {
        rotate(&fixture, round, Order::DatabaseFirst).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let (_, errors) = load.stop().await;
    churn.abort();
    assert!(
        !errors.is_empty(),
        "a static pool should fail after a rotation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_that_never_work_end_in_a_typed_error_not_a_hang() {
    let fixture = fixture().await;
    switch_secret(&fixture, &creds_json("app", "wrong-1")).await;
    switch_secret(&fixture, &creds_json("app", "wrong-2")).await;
    let mut config = RetryAndDrain::default();
    config.retry_attempts = 3;
    config.retry_budget = Duration::from_secs(3);
    let (pool, monitor) = RotatingDeadpoolBuilder::new(fixture.handle.clone())
        .pg_config(target(fixture.port))
        .retry_and_drain(config)
        .build_monitored()
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), pool.get())
        .await
        .expect("no hang")
        .unwrap_err();
    let deadpool_postgres::PoolError::Backend(pg_error) = &err else {
        panic!("expected the database's error, got {err}");
    };
    assert_eq!(
        pg_error.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD)
    );
    assert!(!err.to_string().contains("wrong-"));
    let stats = monitor.stats();
    assert_eq!(stats.exhausted, 1);
    assert_eq!(stats.auth_failures, 4);
}

// The runs both pools share (`pg_common/scenarios.rs`).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_rejected_logins_costs_the_store_one_call() {
    scenarios::a_storm_of_rejected_logins_costs_the_store_one_call(Kind::Deadpool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_user_sessions_are_gone_within_the_drain_delay() {
    scenarios::old_user_sessions_are_gone_within_the_drain_delay(Kind::Deadpool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_from_a_database_restart_without_leaking_connections() {
    scenarios::the_pool_recovers_from_a_database_restart_without_leaking_connections(
        Kind::Deadpool,
    )
    .await;
}
