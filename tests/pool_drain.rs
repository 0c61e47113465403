//! Every connection opened with old credentials is drained, for both pools, against a real
//! PostgreSQL: logins in flight at a rotation, frequent rotations (each version at its own
//! deadline), and where connections go when the secret names a host.

mod common;
mod pg_common;

use std::sync::Arc;
use std::time::Duration;

use credswap::MemoryProvider;
use credswap::pg::{Endpoint, PoolEvent, RotationConfig};
use pg_common::{Held, Kind, Proxy, TestPool, creds_json, sessions_of, start_postgres, switch_now};
use tokio::time::Instant;

fn drain(delay: Duration) -> RotationConfig {
    RotationConfig::default()
        .drain_delay(delay)
        .retry_budget(Duration::from_secs(20))
        .retry_attempts(12)
        .endpoint(Endpoint::Configured)
}

async fn logins_in_flight_at_a_rotation_are_drained(kind: Kind) {
    let (pg, admin) = start_postgres(
        "CREATE ROLE app_a LOGIN PASSWORD 'ab'; CREATE ROLE app_b LOGIN PASSWORD 'ab';",
    )
    .await;
    // Every new connection takes 400 ms to reach the database.
    let proxy = Proxy::start(pg.port(), Duration::from_millis(400)).await;
    let store = Arc::new(MemoryProvider::new());
    let (_cache, handle) = pg_common::switchable(&store, &creds_json("app_a", "ab")).await;
    let pool = TestPool::open(kind, &handle, proxy.port, 8, drain(Duration::from_secs(1))).await;
    let mut events = pool.monitor().subscribe();

    // Eight logins as app_a are under way when the secret moves to app_b.
    let logins: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.hold().await })
        })
        .collect();
    assert!(common::eventually(Duration::from_secs(5), || proxy.accepted() >= 8).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    switch_now(&store, &handle, &creds_json("app_b", "ab")).await;
    let rotated = Instant::now();
    let held: Vec<Held> = futures_util::future::join_all(logins)
        .await
        .into_iter()
        .map(|login| login.unwrap().expect("the login in flight succeeds"))
        .collect();
    assert_eq!(
        sessions_of(&admin, "app_a").await,
        8,
        "they logged in as app_a"
    );
    drop(held);

    // Queries go on; within the drain delay plus a second, app_a has no session left.
    let deadline = rotated + Duration::from_secs(2);
    let mut errors = Vec::new();
    while Instant::now() < deadline {
        if let Err(error) = pool.query().await {
            errors.push(error);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        sessions_of(&admin, "app_a").await,
        0,
        "{kind:?}: old-user sessions after the drain delay plus one second ({:?})",
        pool.monitor().rotations()
    );
    assert!(sessions_of(&admin, "app_b").await >= 1);
    assert_eq!(pool.query().await.unwrap(), "app_b");
    // Each step was an event.
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(match event {
            PoolEvent::NewCredentials { .. } => "new",
            PoolEvent::FirstConnection { .. } => "first",
            PoolEvent::Drained { .. } => "drained",
            _ => "other",
        });
    }
    for step in ["new", "first", "drained"] {
        assert!(
            seen.contains(&step),
            "{kind:?}: no {step} event in {seen:?}"
        );
    }
    let records = pool.monitor().rotations();
    let old = &records[records.len() - 2];
    assert!(old.connections_drained >= 8, "{records:?}");
    assert!(records.last().unwrap().update_latency.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_logins_in_flight_at_a_rotation_are_drained() {
    logins_in_flight_at_a_rotation_are_drained(Kind::Sqlx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_logins_in_flight_at_a_rotation_are_drained() {
    logins_in_flight_at_a_rotation_are_drained(Kind::Deadpool).await;
}

async fn each_version_of_frequent_rotations_goes_at_its_own_deadline(kind: Kind) {
    const GENERATIONS: usize = 10;
    let roles: String = (0..GENERATIONS)
        .map(|i| format!("CREATE ROLE gen_{i} LOGIN PASSWORD 'g';"))
        .collect();
    let (pg, admin) = start_postgres(&roles).await;
    let store = Arc::new(MemoryProvider::new());
    let (_cache, handle) = pg_common::switchable(&store, &creds_json("gen_0", "g")).await;
    let delay = Duration::from_secs(1);
    let pool = TestPool::open(kind, &handle, pg.port(), 30, drain(delay)).await;

    // A new user every 200 ms; two connections opened as each (the earlier ones are held, so
    // these are new logins).
    let mut held = Vec::new();
    let mut switched = Vec::new();
    for i in 0..GENERATIONS {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            switch_now(&store, &handle, &creds_json(&format!("gen_{i}"), "g")).await;
        }
        switched.push(Instant::now());
        for _ in 0..2 {
            held.push(pool.hold().await.expect("a connection"));
        }
    }
    let released = Instant::now();
    drop(held);

    // Each generation's sessions end at its own deadline (replaced + drain delay), or at once
    // when that passed before they were released; never in bulk after the last rotation.
    let mut ended = [None; GENERATIONS - 1];
    let watch_until = switched[GENERATIONS - 1] + delay + Duration::from_secs(2);
    while Instant::now() < watch_until {
        for (i, end) in ended.iter_mut().enumerate() {
            if end.is_none() && sessions_of(&admin, &format!("gen_{i}")).await == 0 {
                *end = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, end) in ended.iter().enumerate() {
        let deadline = switched[i + 1] + delay;
        let due = deadline.max(released);
        let end = end.unwrap_or_else(|| panic!("{kind:?}: gen_{i} never drained"));
        assert!(
            end <= due + Duration::from_millis(700),
            "{kind:?}: gen_{i} drained {:?} after its due time",
            end - due
        );
        assert!(
            end + Duration::from_millis(200) >= due,
            "{kind:?}: gen_{i} drained {:?} before its due time",
            due - end
        );
    }
    assert!(sessions_of(&admin, &format!("gen_{}", GENERATIONS - 1)).await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_each_version_of_frequent_rotations_goes_at_its_own_deadline() {
    each_version_of_frequent_rotations_goes_at_its_own_deadline(Kind::Sqlx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_each_version_of_frequent_rotations_goes_at_its_own_deadline() {
    each_version_of_frequent_rotations_goes_at_its_own_deadline(Kind::Deadpool).await;
}

async fn the_configured_endpoint_wins_over_the_secrets_host_when_asked(kind: Kind) {
    let (pg, _admin) = start_postgres("CREATE ROLE app LOGIN PASSWORD 'pw';").await;
    let proxy = Proxy::start(pg.port(), Duration::ZERO).await;
    // An RDS-shaped secret: it names the database's own host and port.
    let secret = format!(
        r#"{{"engine": "postgres", "host": "127.0.0.1", "port": {}, "dbname": "postgres",
            "username": "app", "password": "pw"}}"#,
        pg.port()
    );
    let store = Arc::new(MemoryProvider::new());
    let (_cache, handle) = pg_common::switchable(&store, &secret).await;

    // Told to keep its target, the pool goes through the proxy (RDS Proxy, PgBouncer...).
    let through_proxy =
        TestPool::open(kind, &handle, proxy.port, 4, drain(Duration::from_secs(30))).await;
    assert_eq!(through_proxy.query().await.unwrap(), "app");
    assert_eq!(proxy.accepted(), 1);

    // By default it goes where the secret says (and a configured port does not clash with it).
    let config = drain(Duration::from_secs(30)).endpoint(Endpoint::FromSecret);
    let direct = TestPool::open(kind, &handle, proxy.port, 4, config).await;
    assert_eq!(direct.query().await.unwrap(), "app");
    assert_eq!(
        proxy.accepted(),
        1,
        "the default follows the secret's host and port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_the_configured_endpoint_wins_over_the_secrets_host_when_asked() {
    the_configured_endpoint_wins_over_the_secrets_host_when_asked(Kind::Sqlx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_the_configured_endpoint_wins_over_the_secrets_host_when_asked() {
    the_configured_endpoint_wins_over_the_secrets_host_when_asked(Kind::Deadpool).await;
}

async fn alternating_users_under_load_drain_each_old_role(kind: Kind) {
    let (pg, admin) = start_postgres(
        "CREATE ROLE app_a LOGIN PASSWORD 'ab'; CREATE ROLE app_b LOGIN PASSWORD 'ab';
         CREATE TABLE items (id bigserial PRIMARY KEY, n int);
         GRANT ALL ON items, items_id_seq TO app_a, app_b;",
    )
    .await;
    let store = Arc::new(MemoryProvider::new());
    let (_cache, handle) = pg_common::switchable(&store, &creds_json("app_a", "ab")).await;
    let pool = TestPool::open(
        kind,
        &handle,
        pg.port(),
        4,
        drain(Duration::from_millis(500)),
    )
    .await;
    let query: pg_common::Query = {
        let pool = pool.clone();
        Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move { pool.query().await.map(|_| ()) })
        })
    };
    let load = pg_common::start_load(4, query);
    for round in 1..=8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (new, old) = if round % 2 == 1 {
            ("app_b", "app_a")
        } else {
            ("app_a", "app_b")
        };
        switch_now(&store, &handle, &creds_json(new, "ab")).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            sessions_of(&admin, old).await,
            0,
            "{kind:?} round {round}: {old} still has sessions ({:?})",
            pool.monitor().rotations()
        );
    }
    let (ok, errors) = load.stop().await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(ok > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_alternating_users_under_load_drain_each_old_role() {
    alternating_users_under_load_drain_each_old_role(Kind::Sqlx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_alternating_users_under_load_drain_each_old_role() {
    alternating_users_under_load_drain_each_old_role(Kind::Deadpool).await;
}
