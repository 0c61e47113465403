//! Every connection opened with old credentials is drained, for both pools, against a real
//! PostgreSQL: logins in flight at a rotation, frequent rotations (each version at its own
//! deadline), and where connections go when the secret names a host.

use crate::{common, pg_common};

use std::sync::Arc;
use std::time::Duration;

use credswap::MemoryProvider;
use credswap::pg::{Endpoint, PoolEvent, RetryAndDrain};
use pg_common::{Held, Kind, Proxy, TestPool, creds_json, sessions_of, start_postgres, switch_now};
use tokio::time::Instant;

fn drain(delay: Duration) -> RetryAndDrain {
    RetryAndDrain::default()
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
    let version_a = handle.load().version().id.clone();
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

    // Queries go on without an error until app_a has no session left: not before the pool's
    // deadline for app_a's version (the drain delay after the switch), and within a sweep or so
    // of it (the bound here only catches a drain that never comes).
    let deadline = pg_common::deadline_of(&pool.monitor(), &version_a).await;
    let mut errors = Vec::new();
    let drained_at = loop {
        if let Err(error) = pool.query().await {
            errors.push(error);
        }
        if sessions_of(&admin, "app_a").await == 0 {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(15),
            "{kind:?}: old-user sessions long after the drain deadline ({:?})",
            pool.monitor().rotations()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        drained_at >= deadline,
        "{kind:?}: app_a drained {:?} before its deadline",
        deadline - drained_at
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
    let old = records.iter().find(|r| r.version == version_a).unwrap();
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

/// How close to a switch a connection may be created and still be judged by the version before it
/// (the pools' conservative margin: such a connection may go at the earlier deadline).
const JUDGED_BY_EITHER_SIDE: Duration = Duration::from_millis(100);

/// Waits until the pool has taken in `version` (its follower, or an acquire, did).
async fn taken_in(pool: &TestPool, version: &str) {
    let seen = common::eventually(Duration::from_secs(10), || {
        pool.monitor()
            .rotations()
            .iter()
            .any(|record| record.version.as_str() == version)
    })
    .await;
    assert!(seen, "the pool never took in version {version}");
}

async fn each_version_of_frequent_rotations_goes_at_its_own_deadline(kind: Kind) {
    const GENERATIONS: usize = 10;
    // Deadlines `SPACING` apart, and a drain delay long enough that several of them come after
    // the connections are released: those show whether each version goes at its own.
    const SPACING: Duration = Duration::from_millis(800);
    let delay = Duration::from_millis(4500);
    let roles: String = (0..GENERATIONS)
        .map(|i| format!("CREATE ROLE gen_{i} LOGIN PASSWORD 'g';"))
        .collect();
    let (pg, admin) = start_postgres(&roles).await;
    let store = Arc::new(MemoryProvider::new());
    let (_cache, handle) = pg_common::switchable(&store, &creds_json("gen_0", "g")).await;
    let pool = TestPool::open(kind, &handle, pg.port(), 30, drain(delay)).await;

    // A new user every `SPACING`; two connections opened as each (the earlier ones are held, so
    // these are new logins), more than the pools' margin after the pool took the switch in, so
    // each generation is judged by its own version alone.
    let mut held = Vec::new();
    let mut versions = vec![handle.load().version().id.clone()];
    for i in 0..GENERATIONS {
        let turn = Instant::now();
        if i > 0 {
            switch_now(&store, &handle, &creds_json(&format!("gen_{i}"), "g")).await;
            let version = handle.load().version().id.clone();
            taken_in(&pool, version.as_str()).await;
            versions.push(version);
        }
        tokio::time::sleep(JUDGED_BY_EITHER_SIDE + Duration::from_millis(50)).await;
        for _ in 0..2 {
            held.push(pool.hold().await.expect("a connection"));
        }
        if i + 1 < GENERATIONS {
            tokio::time::sleep_until(turn + SPACING).await;
        }
    }
    let released = Instant::now();
    drop(held);

    // The pool's own deadline for each replaced generation (its replacement plus the delay).
    let records = pool.monitor().rotations();
    let deadline_of = |i: usize| {
        records
            .iter()
            .find(|record| record.version == versions[i])
            .and_then(|record| record.drain_deadline)
            .unwrap_or_else(|| panic!("{kind:?}: gen_{i} has no drain deadline: {records:?}"))
    };
    let deadlines: Vec<Instant> = (0..GENERATIONS - 1).map(deadline_of).collect();
    for pair in deadlines.windows(2) {
        assert!(pair[0] < pair[1], "{kind:?}: deadlines in rotation order");
    }

    // Watch each generation's sessions end.
    let mut ended = [None; GENERATIONS - 1];
    let watch_until = deadlines[GENERATIONS - 2] + Duration::from_secs(5);
    while ended.iter().any(Option::is_none) && Instant::now() < watch_until {
        for (i, end) in ended.iter_mut().enumerate() {
            if end.is_none() && sessions_of(&admin, &format!("gen_{i}")).await == 0 {
                *end = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ended: Vec<Instant> = ended
        .iter()
        .enumerate()
        .map(|(i, end)| end.unwrap_or_else(|| panic!("{kind:?}: gen_{i} never drained")))
        .collect();
    // Held past a few rotations, a generation would show it: each is due at its own deadline
    // (or at the release, when that came first) and goes within a sweep (at most a second) of
    // it; three rotation spacings leave room for a busy machine.
    let slack = SPACING * 3;
    for (i, end) in ended.iter().enumerate() {
        // Never before its own deadline (the pool compares with `>=`; the test sees it later).
        assert!(
            *end >= deadlines[i],
            "{kind:?}: gen_{i} drained {:?} before its deadline",
            deadlines[i] - *end
        );
        let due = deadlines[i].max(released);
        assert!(
            *end < due + slack,
            "{kind:?}: gen_{i} drained {:?} after its due time",
            *end - due
        );
    }
    // Several generations were due after the release, so each went at its own deadline, not at
    // the release and not at the last rotation's deadline.
    let after_release = deadlines
        .iter()
        .filter(|deadline| **deadline > released)
        .count();
    assert!(
        after_release >= 3,
        "{kind:?}: {after_release} deadlines after the release"
    );
    // Every connection of a replaced generation was drained.
    let drained = pool.monitor().stats().connections_drained;
    assert!(
        drained >= 2 * (GENERATIONS as u64 - 1),
        "{kind:?}: {drained} drained"
    );
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
        // Busy connections of the old role go when they come back after the drain delay.
        let mut drained = false;
        for _ in 0..500 {
            if sessions_of(&admin, old).await == 0 {
                drained = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            drained,
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
