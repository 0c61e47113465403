//! The sqlx pool against a real PostgreSQL whose passwords are rotated from outside.

use crate::{common, pg_common};

use std::sync::Arc;
use std::time::Duration;

use credswap::ErrorKind;
use credswap::pg::{PgCredentials, RetryAndDrain, RotatingPgPool};
use pg_common::{
    Fixture, Kind, Order, Query, creds_json, fixture, rotate, scenarios, start_load, switch_secret,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

fn target(port: u16) -> PgConnectOptions {
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .database("postgres")
}

async fn pool_with(fixture: &Fixture, drain: Duration, options: PgPoolOptions) -> RotatingPgPool {
    RotatingPgPool::builder(fixture.handle.clone())
        .pool_options(options)
        .connect_options(target(fixture.port))
        .retry_and_drain(scenarios::retry_and_drain(drain))
        .connect()
        .await
        .expect("pool connects")
}

fn query_through(pool: &RotatingPgPool) -> Query {
    let pool = pool.clone();
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            // The ordinary sqlx API, with `&RotatingPgPool` as the executor.
            let n: i32 = sqlx::query_scalar("SELECT 1")
                .fetch_one(&pool)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query("INSERT INTO items (n) VALUES ($1)")
                .bind(n)
                .execute(&pool)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_caller_sees_an_error_through_ten_rotations_in_both_orders() {
    let fixture = fixture().await;
    // Short-lived connections, as in the control below: new logins happen all the time, also in
    // the windows where the database and the secret disagree.
    let options = PgPoolOptions::new()
        .max_connections(8)
        .max_lifetime(Duration::from_millis(300));
    let pool = pool_with(&fixture, Duration::from_millis(300), options).await;
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
    assert!(
        errors.is_empty(),
        "{} errors reached callers: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(ok > 100, "the load ran ({ok} queries)");
    let stats = pool.stats();
    // The test exercised what it claims: logins were rejected, and absorbed.
    assert!(stats.auth_failures > 0, "{stats:?}");
    assert!(stats.retries > 0, "{stats:?}");
    // A pool that needs no new login between two rotations may skip a version; it never lags more.
    assert!(stats.credential_swaps >= 5, "{stats:?}");
    // (Draining is not exercised here: max_lifetime retires connections first. See
    // old_user_sessions_are_gone_within_the_drain_delay.)
    assert!(stats.last_update_latency.is_some());
    assert_eq!(stats.exhausted, 0);
    // One user: its previous password died when the database took the new one, so no login was
    // spent on it.
    assert_eq!(stats.fallbacks_to_previous, 0, "{stats:?}");
    // And the pool ends on the newest password: a brand-new login works.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let _ = pool.handle().refresh().await.unwrap();
    assert!(pool.handle().load().current().password_matches("pw-10"));
    let fresh = pool.inner().clone();
    fresh.close().await;
    let reopened = RotatingPgPool::builder(pool.handle().clone())
        .connect_options(target(fixture.port))
        .connect()
        .await
        .expect("a new pool logs in with the newest password");
    assert_eq!(reopened.stats().auth_failures, 0);
}

trait PasswordMatches {
    fn password_matches(&self, expected: &str) -> bool;
}

impl PasswordMatches for PgCredentials {
    fn password_matches(&self, expected: &str) -> bool {
        use credswap::secrecy::ExposeSecret;
        self.password.expose_secret() == expected
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_pool_with_static_credentials_fails_under_the_same_rotations() {
    // The control: the same load and rotations against an ordinary sqlx pool must produce errors,
    // or the test above proves nothing.
    let fixture = fixture().await;
    let plain = PgPoolOptions::new()
        .max_connections(8)
        .max_lifetime(Duration::from_millis(300))
        .connect_with(target(fixture.port).username("app").password("pw-0"))
        .await
        .unwrap();
    let query: Query = {
        let plain = plain.clone();
        Arc::new(move || {
            let plain = plain.clone();
            Box::pin(async move {
                let _: i32 = sqlx::query_scalar("SELECT 1")
                    .fetch_one(&plain)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            })
        })
    };
    let load = start_load(8, query);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 1..=3 {
        rotate(&fixture, round, Order::DatabaseFirst).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let (_, errors) = load.stop().await;
    assert!(
        !errors.is_empty(),
        "a static pool should fail after a rotation"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("password authentication failed")),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_that_never_work_end_in_a_typed_error_not_a_hang() {
    let fixture = fixture().await;
    // Both the current and the previous credentials are wrong.
    switch_secret(&fixture, &creds_json("app", "wrong-1")).await;
    switch_secret(&fixture, &creds_json("app", "wrong-2")).await;
    let mut config = RetryAndDrain::default();
    config.retry_attempts = 3;
    config.retry_budget = Duration::from_secs(3);
    let builder = || {
        RotatingPgPool::builder(fixture.handle.clone())
            .connect_options(target(fixture.port))
            .retry_and_drain(config.clone())
    };
    let err = tokio::time::timeout(Duration::from_secs(20), builder().connect())
        .await
        .expect("no hang")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthRejected);
    assert!(err.to_string().contains("28P01"), "{err}");
    assert!(!err.to_string().contains("wrong-"));

    let pool = builder().build().unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), pool.acquire())
        .await
        .expect("no hang")
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("28P01")
    );
    let stats = pool.stats();
    assert_eq!(stats.exhausted, 1);
    assert_eq!(stats.auth_failures, 4);
    // Nothing a user might print shows a password.
    let printed = format!(
        "{err} {err:?} {pool:?} {:?} {:?} {:?}",
        pool.handle(),
        pool.handle().load().current(),
        pool.handle().load().previous()
    );
    for password in ["wrong-1", "wrong-2", "pw-0"] {
        assert!(!printed.contains(password), "{password} in {printed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_own_sqlx_callbacks_still_run() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let fixture = fixture().await;
    let connected = Arc::new(AtomicU64::new(0));
    let checked = Arc::new(AtomicU64::new(0));
    let released = Arc::new(AtomicU64::new(0));
    let (c, k, r) = (connected.clone(), checked.clone(), released.clone());
    let pool = RotatingPgPool::builder(fixture.handle.clone())
        .pool_options(PgPoolOptions::new().max_connections(2))
        .connect_options(target(fixture.port))
        .after_connect(move |conn, _meta| {
            let _ = c.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                use sqlx::Executor;
                let _ = conn.execute("SET application_name = 'hooked'").await?;
                Ok(())
            })
        })
        .before_acquire(move |_conn, _meta| {
            let _ = k.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(true) })
        })
        .after_release(move |_conn, _meta| {
            let _ = r.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(true) })
        })
        .connect()
        .await
        .unwrap();
    for _ in 0..10 {
        let name: String = sqlx::query_scalar("SELECT current_setting('application_name')")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            name, "hooked",
            "the user's after_connect ran on the connection"
        );
    }
    assert!(connected.load(Ordering::SeqCst) >= 1);
    assert!(checked.load(Ordering::SeqCst) >= 5, "before_acquire ran");
    assert!(
        common::eventually(Duration::from_secs(5), || released.load(Ordering::SeqCst)
            >= 10)
        .await,
        "after_release ran"
    );
    // And the pool's own bookkeeping still works beside them: the first connection was counted.
    assert_eq!(
        pool.monitor().rotations()[0].connections_opened,
        connected.load(Ordering::SeqCst)
    );
}

// The runs both pools share (`pg_common/scenarios.rs`).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_rejected_logins_costs_the_store_one_call() {
    scenarios::a_storm_of_rejected_logins_costs_the_store_one_call(Kind::Sqlx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_user_sessions_are_gone_within_the_drain_delay() {
    scenarios::old_user_sessions_are_gone_within_the_drain_delay(Kind::Sqlx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_from_a_database_restart_without_leaking_connections() {
    scenarios::the_pool_recovers_from_a_database_restart_without_leaking_connections(Kind::Sqlx)
        .await;
}
