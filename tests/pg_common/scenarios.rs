//! Runs shared by the sqlx and deadpool pool tests: each takes the pool [`Kind`] and keeps the
//! assertions both pools answer to (where the pools differ, the difference is named).

use std::sync::Arc;
use std::time::Duration;

use super::{
    Fixture, Kind, Query, TestPool, creds_json, deadline_of, fixture, sessions_of, start_load,
    switch_secret,
};

/// The pools' settings in these runs: `drain` as the drain delay, a generous retry budget.
pub fn retry_and_drain(drain: Duration) -> credswap::pg::RetryAndDrain {
    let mut config = credswap::pg::RetryAndDrain::default();
    config.drain_delay = drain;
    config.retry_budget = Duration::from_secs(20);
    config.retry_attempts = 12;
    config
}

async fn pool(kind: Kind, fixture: &Fixture, drain: Duration) -> TestPool {
    TestPool::open(
        kind,
        &fixture.handle,
        fixture.port,
        8,
        retry_and_drain(drain),
    )
    .await
}

/// `SELECT 1` through the pool, as the load's query.
fn select_through(pool: &TestPool) -> Query {
    let pool = pool.clone();
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move { pool.query().await.map(|_| ()) })
    })
}

/// 100 tasks need a connection at once, with the stale password: 100 rejected logins cost the
/// store one call.
pub async fn a_storm_of_rejected_logins_costs_the_store_one_call(kind: Kind) {
    let storm = super::storm().await;
    let pool = TestPool::open(
        kind,
        &storm.handle,
        storm.pg.port(),
        100,
        retry_and_drain(Duration::from_secs(60)),
    )
    .await;
    let calls_before = storm.rotate_behind_the_handle().await;

    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let pool = pool.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut held = {
                    let _ = barrier.wait().await;
                    pool.hold().await?
                };
                held.select_one().await?;
                // Hold it so every task needs its own connection.
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("every task gets through");
    }
    let stats = pool.monitor().stats();
    assert!(stats.auth_failures >= 50, "{stats:?}");
    assert_eq!(
        storm.provider.calls() - calls_before,
        1,
        "one store call for the whole storm ({stats:?})"
    );
}

/// Alternating users: the secret moves from app_a to app_b, and app_a's idle sessions go at the
/// pool's deadline for its version, not before.
pub async fn old_user_sessions_are_gone_within_the_drain_delay(kind: Kind) {
    let fixture = fixture().await;
    let version_a = switch_secret(&fixture, &creds_json("app_a", "ab")).await;
    let pool = pool(kind, &fixture, Duration::from_millis(500)).await;
    // Open several connections as app_a, then leave them idle in the pool.
    let held: Vec<_> = futures_util::future::join_all((0..4).map(|_| pool.hold()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sessions_of(&fixture.admin, "app_a").await, 4);

    switch_secret(&fixture, &creds_json("app_b", "ab")).await;
    // Within the drain delay, old connections are still handed out.
    let _ = pool.query().await.unwrap();
    // The bound only catches a drain that never comes.
    let deadline = deadline_of(&pool.monitor(), &version_a).await;
    let drained_at = loop {
        let sessions = sessions_of(&fixture.admin, "app_a").await;
        let checked = tokio::time::Instant::now();
        if sessions == 0 {
            break checked;
        }
        assert!(
            checked < deadline + Duration::from_secs(10),
            "{kind:?}: old user's idle sessions never drained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        drained_at >= deadline,
        "{kind:?}: drained before the deadline"
    );
    assert_eq!(
        pool.query().await.unwrap(),
        "app_b",
        "new connections use app_b"
    );
    let app_b = sessions_of(&fixture.admin, "app_b").await;
    match kind {
        // deadpool opens connections only on demand: the one query above.
        Kind::Deadpool => assert_eq!(app_b, 1),
        Kind::Sqlx => assert!(app_b >= 1),
    }
    assert!(pool.monitor().stats().connections_drained >= 4);
}

/// A database restart under load: the pool recovers and holds no more sessions than its size.
pub async fn the_pool_recovers_from_a_database_restart_without_leaking_connections(kind: Kind) {
    let fixture = fixture().await;
    let pool = pool(kind, &fixture, Duration::from_millis(300)).await;
    let load = start_load(4, select_through(&pool));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pg = fixture.pg.clone();
    tokio::task::spawn_blocking(move || pg.lock().unwrap().restart().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Connections that were open when the server went down fail; that is expected.
    let _ = load.stop().await;

    for _ in 0..20 {
        let _ = pool.query().await.expect("recovered");
    }
    // The restart ended the fixture's admin session: open a new one.
    let admin = super::admin_client_at(fixture.port, &fixture.superuser_password).await;
    let sessions = sessions_of(&admin, "app").await;
    assert!(
        sessions <= 8,
        "{kind:?}: {sessions} sessions for a pool of 8"
    );
    assert!(pool.size() <= 8);
}
