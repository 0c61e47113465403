//! The deadpool-postgres pool against a real PostgreSQL whose passwords are rotated from outside.

mod common;
mod pg_common;

use std::sync::Arc;
use std::time::Duration;

use credswap::pg::{PoolMonitor, RetryAndDrain, RotatingDeadpoolBuilder};
use deadpool_postgres::Pool;
use pg_common::{
    Fixture, Order, Query, creds_json, deadline_of, fixture, rotate, sessions_of, start_load,
    switch_secret,
};

fn target(port: u16) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    let _ = config.host("127.0.0.1").port(port).dbname("postgres");
    config
}

fn rotation(drain: Duration) -> RetryAndDrain {
    let mut config = RetryAndDrain::default();
    config.drain_delay = drain;
    config.retry_budget = Duration::from_secs(20);
    config.retry_attempts = 12;
    config
}

fn pool(fixture: &Fixture, drain: Duration) -> (Pool, PoolMonitor) {
    RotatingDeadpoolBuilder::new(fixture.handle.clone())
        .pg_config(target(fixture.port))
        .max_size(8)
        .retry_and_drain(rotation(drain))
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
async fn a_storm_of_rejected_logins_costs_the_store_one_call() {
    let storm = pg_common::storm().await;
    let (pool, monitor) = RotatingDeadpoolBuilder::new(storm.handle.clone())
        .pg_config(target(storm.pg.port()))
        .max_size(100)
        .retry_and_drain(rotation(Duration::from_secs(60)))
        .build_monitored()
        .unwrap();
    let calls_before = storm.rotate_behind_the_handle().await;

    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let pool = pool.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let _ = barrier.wait().await;
                let client = pool.get().await.map_err(|e| e.to_string())?;
                client
                    .query_one("SELECT 1", &[])
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("every task gets through");
    }
    let stats = monitor.stats();
    assert!(stats.auth_failures >= 50, "{stats:?}");
    assert_eq!(
        storm.provider.calls() - calls_before,
        1,
        "one store call for the whole storm ({stats:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_user_sessions_are_gone_within_the_drain_delay() {
    let fixture = fixture().await;
    let version_a = switch_secret(&fixture, &creds_json("app_a", "ab")).await;
    let (pool, monitor) = pool(&fixture, Duration::from_millis(500));
    let held: Vec<_> = futures_util::future::join_all((0..4).map(|_| pool.get()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    drop(held);
    assert_eq!(sessions_of(&fixture.admin, "app_a").await, 4);

    switch_secret(&fixture, &creds_json("app_b", "ab")).await;
    // Within the drain delay, old connections are still handed out.
    let client = pool.get().await.unwrap();
    let _ = client.query_one("SELECT 1", &[]).await.unwrap();
    drop(client);
    // The old user's idle sessions go at the pool's deadline for its version (the drain delay
    // after the switch), not before; the bound only catches a drain that never comes.
    let deadline = deadline_of(&monitor, &version_a).await;
    let drained_at = loop {
        let sessions = sessions_of(&fixture.admin, "app_a").await;
        let checked = tokio::time::Instant::now();
        if sessions == 0 {
            break checked;
        }
        assert!(
            checked < deadline + Duration::from_secs(10),
            "old user's idle sessions never drained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(drained_at >= deadline, "drained before the deadline");
    let client = pool.get().await.unwrap();
    let _ = client.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(
        sessions_of(&fixture.admin, "app_b").await,
        1,
        "new connections use app_b"
    );
    assert!(monitor.stats().connections_drained >= 4);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_from_a_database_restart_without_leaking_connections() {
    let fixture = fixture().await;
    let (pool, _monitor) = pool(&fixture, Duration::from_millis(300));
    let load = start_load(4, query_through(&pool));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pg = fixture.pg.clone();
    tokio::task::spawn_blocking(move || pg.lock().unwrap().restart().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = load.stop().await;

    for _ in 0..20 {
        let client = pool.get().await.expect("recovered");
        let _ = client.query_one("SELECT 1", &[]).await.expect("recovered");
    }
    // The restart ended the fixture's admin session: open a new one.
    let admin = pg_common::admin_client_at(fixture.port, &fixture.superuser_password).await;
    let sessions = sessions_of(&admin, "app").await;
    assert!(sessions <= 8, "{sessions} sessions for a pool of 8");
    assert!(pool.status().size <= 8);
}
