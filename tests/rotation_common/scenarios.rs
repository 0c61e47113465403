//! The scenarios every store must pass under load, each against real servers it starts itself.
//! (What happens after crashes, late steps and concurrent writes is in `recovery.rs`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use credswap::ErrorKind;
use credswap::pg::PoolMonitor;
use credswap::rotation::{RotationOutcome, RotationStore, Rotator, Strategy};
use credswap::testkit::PostgresServer;

use super::{
    DRAIN_DELAY, HoldWhileOthersTry, INITIAL, Pools, Store, create_role, handle, login_of, logs_in,
    pools_under_load, postgres, rds_json, rotator, wait_for,
};
use crate::pg_common::sessions_of;

/// Queries each pool has served so far (sqlx, deadpool).
fn served(pools: &Pools) -> (u64, u64) {
    (
        pools.sqlx_load.ok.load(Ordering::Relaxed),
        pools.deadpool_load.ok.load(Ordering::Relaxed),
    )
}

/// Waits until each pool has served a query after `since`: the load is alive, however fast or
/// slow the machine is.
async fn both_serve_after(pools: &Pools, since: (u64, u64)) -> bool {
    wait_for(Duration::from_secs(20), || {
        let now = served(pools);
        async move { now.0 > since.0 && now.1 > since.1 }
    })
    .await
}

/// Connections a pool has opened, over every version of its credentials.
fn opened(monitor: &PoolMonitor) -> u64 {
    monitor
        .rotations()
        .iter()
        .map(|record| record.connections_opened)
        .sum()
}

/// A sqlx and a deadpool pool under continuous load on handles of the rotated secret while the
/// engine rotates it ten times: no caller sees an error, every new credential logs in, and (for
/// alternating users) the old role's connections drain after each rotation.
pub async fn ten_rotations_under_load(store: Store, strategy: Strategy) {
    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    create_role(&admin, "app", INITIAL).await;
    let id = store.secret_id("e2e");
    store.create(&id, &rds_json(port, "app", INITIAL)).await;
    let alternating = strategy.needs_admin();
    let rotator = rotator(store.rotation_store(), &pg, strategy, alternating);
    let (_cache, handle) = handle(store.provider(), &id).await;
    let pools = pools_under_load(&handle, port).await;
    let rotation_store = store.rotation_store();
    let mut passwords = vec![INITIAL.to_owned()];
    let mut users = std::collections::HashSet::new();
    for round in 1..=10 {
        let outcome = rotator
            .rotate(&id)
            .await
            .unwrap_or_else(|e| panic!("rotation {round}: {e}"));
        let RotationOutcome::Rotated {
            old_version,
            new_version,
            ..
        } = outcome
        else {
            panic!("rotation {round}: {outcome:?}");
        };
        assert_ne!(old_version, new_version);
        let (user, password) = login_of(&rotation_store.current(&id).await.unwrap().value);
        assert!(logs_in(port, &user, &password).await, "round {round}");
        assert!(!passwords.contains(&password), "a new password every time");
        passwords.push(password);
        let _ = users.insert(user.clone());
        // The applications' handle follows within a TTL.
        let followed = wait_for(Duration::from_secs(10), || {
            let seen = handle.load().version().id.clone();
            let new_version = new_version.clone();
            async move { seen == new_version }
        })
        .await;
        assert!(
            followed,
            "round {round}: the handle did not take the new version"
        );
        if alternating {
            let old_user = if user == "app" { "app_clone" } else { "app" };
            // The pools drain the old role's connections: each version at its drain deadline,
            // idle ones by a sweep every second after it. Slack for a loaded machine.
            let drained = wait_for(DRAIN_DELAY + Duration::from_secs(3), || async {
                sessions_of(&admin, old_user).await == 0
            })
            .await;
            if !drained {
                let rows = admin
                    .query(
                        "SELECT coalesce(application_name, ''), state, \
                         (now() - backend_start)::text, left(query, 60) \
                         FROM pg_stat_activity WHERE usename = $1",
                        &[&old_user],
                    )
                    .await
                    .unwrap();
                let sessions: Vec<(String, Option<String>, String, String)> = rows
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                    .collect();
                panic!(
                    "round {round}: sessions of {old_user} remain after the drain delay: \
                     {sessions:?}; sqlx {:?}; deadpool {:?}",
                    pools.sqlx.stats(),
                    pools.monitor.stats()
                );
            }
        }
        // Callers keep being served after every rotation.
        let since = served(&pools);
        assert!(
            both_serve_after(&pools, since).await,
            "round {round}: a pool served no query after the rotation ({since:?})"
        );
    }
    let sqlx_stats = pools.sqlx.stats();
    let deadpool_stats = pools.monitor.stats();
    let (_, errors) = pools.stop().await;
    assert!(
        errors.is_empty(),
        "{} errors reached callers: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(sqlx_stats.credential_swaps >= 5, "{sqlx_stats:?}");
    assert!(deadpool_stats.credential_swaps >= 5, "{deadpool_stats:?}");
    if alternating {
        assert_eq!(users.len(), 2, "the secret alternated between two roles");
        assert!(sqlx_stats.connections_drained > 0, "{sqlx_stats:?}");
    } else {
        // Only the newest password works for the single user.
        for old in &passwords[..passwords.len() - 1] {
            assert!(!logs_in(port, "app", old).await);
        }
    }
}

/// A `test` that fails after `set` changed the database: the rotation is rolled back, the
/// application (pools under load) keeps working on the old credential, and no pending version is
/// left.
pub async fn failing_test_rolls_back(store: Store, strategy: Strategy) {
    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    create_role(&admin, "app", INITIAL).await;
    let alternating = strategy.needs_admin();
    let mut target = super::target(&pg);
    if alternating {
        // The clone exists but may not log in: the test login fails (SQLSTATE 28000).
        admin
            .batch_execute("CREATE ROLE app_clone NOLOGIN IN ROLE app")
            .await
            .unwrap();
        target = target.admin(
            PostgresServer::SUPERUSER,
            pg.superuser_password().to_owned(),
        );
    } else {
        // The test query reads a table the role may not read.
        admin
            .batch_execute("CREATE TABLE vault_only (x int)")
            .await
            .unwrap();
        target = target.test_query("SELECT count(*) FROM vault_only");
    }
    let id = store.secret_id("rollback");
    store.create(&id, &rds_json(port, "app", INITIAL)).await;
    let rotation_store = store.rotation_store();
    let before = rotation_store.current(&id).await.unwrap();
    let rotator = Rotator::builder(store.rotation_store(), Arc::new(target))
        .strategy(strategy)
        .build()
        .unwrap();
    let (cache, handle) = handle(store.provider(), &id).await;
    let pools = pools_under_load(&handle, port).await;
    assert!(
        both_serve_after(&pools, (0, 0)).await,
        "the load never started"
    );
    let err = rotator.rotate(&id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RolledBack, "{err}");
    let message = err.to_string();
    assert!(message.contains("testSecret failed"), "{message}");
    assert!(message.contains("was removed"), "{message}");
    if alternating {
        assert!(message.contains("SQLSTATE 28000"), "{message}");
    } else {
        assert!(message.contains("restored to current version"), "{message}");
        assert!(message.contains("SQLSTATE 42501"), "{message}");
    }
    // After the rollback the consumers ask the store again (a TTL later) and log in anew (the
    // pools retire connections after 3 s) with what it holds: wait for both, and for queries on
    // the new connections.
    let (calls, logins, since) = (
        cache.stats().provider_calls,
        (opened(&pools.sqlx.monitor()), opened(&pools.monitor)),
        served(&pools),
    );
    let settled = wait_for(Duration::from_secs(20), || {
        let asked = cache.stats().provider_calls > calls;
        let logged_in =
            opened(&pools.sqlx.monitor()) > logins.0 && opened(&pools.monitor) > logins.1;
        async move { asked && logged_in }
    })
    .await;
    assert!(
        settled,
        "the consumers did not read the store and log in again"
    );
    assert!(
        both_serve_after(&pools, since).await,
        "a pool served no query after the rollback"
    );
    let (_, errors) = pools.stop().await;
    assert!(
        errors.is_empty(),
        "{} errors reached callers: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let after = rotation_store.current(&id).await.unwrap();
    assert_eq!(
        after.version.id, before.version.id,
        "the current version is unchanged"
    );
    assert_eq!(
        rotation_store.pending_token(&id).await.unwrap(),
        None,
        "no dangling pending version"
    );
    assert!(
        logs_in(port, "app", INITIAL).await,
        "the old credential works"
    );
    if let Store::Aws { client, .. } = &store {
        let stages = client
            .describe_secret()
            .secret_id(&id)
            .send()
            .await
            .unwrap();
        let pending = stages
            .version_ids_to_stages()
            .unwrap()
            .values()
            .filter(|labels| labels.iter().any(|l| l == "AWSPENDING"))
            .count();
        assert_eq!(pending, 0);
    }
}

/// Five rotators started at once on one secret: one rotates, four say it is under way, none
/// fails. The winner is held inside its rotation until the others have answered.
pub async fn five_rotators_one_rotation(store: Store) {
    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    create_role(&admin, "app", INITIAL).await;
    let id = store.secret_id("five");
    store.create(&id, &rds_json(port, "app", INITIAL)).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(5));
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let held: Arc<dyn RotationStore> =
                HoldWhileOthersTry::new(store.rotation_store(), answered.clone(), 4);
            // Each rotator stands for a separate replica: its own rotator and connections.
            let rotator = rotator(held, &pg, Strategy::SingleUser, false);
            let (barrier, answered, id) = (barrier.clone(), answered.clone(), id.clone());
            tokio::spawn(async move {
                let _ = barrier.wait().await;
                let outcome = rotator.rotate(&id).await;
                if !matches!(outcome, Ok(RotationOutcome::Rotated { .. })) {
                    let _ = answered.fetch_add(1, Ordering::SeqCst);
                }
                outcome
            })
        })
        .collect();
    let mut rotated = 0;
    let mut under_way = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(RotationOutcome::Rotated { .. }) => rotated += 1,
            Ok(RotationOutcome::UnderWay { .. }) => under_way += 1,
            other => {
                panic!("a rotator neither rotated nor found the rotation under way: {other:?}")
            }
        }
    }
    assert_eq!((rotated, under_way), (1, 4));
    let rotation_store = store.rotation_store();
    let current = rotation_store.current(&id).await.unwrap();
    let previous = rotation_store.previous(&id).await.unwrap().unwrap();
    let (_, old_password) = login_of(&previous.value);
    assert_eq!(
        old_password, INITIAL,
        "exactly one rotation: the previous version is the first"
    );
    let (user, password) = login_of(&current.value);
    assert!(logs_in(port, &user, &password).await);
    assert_eq!(rotation_store.pending_token(&id).await.unwrap(), None);
}
