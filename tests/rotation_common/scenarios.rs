//! The scenarios every store must pass, each against real servers it starts itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use credswap::ErrorKind;
use credswap::rotation::{PostgresTarget, RotationOutcome, RotationStore, Rotator, Step, Strategy};
use credswap::testkit::PostgresServer;

use super::{
    FailAfter, HoldWhileOthersTry, Store, create_role, handle, login_of, logs_in, pools_under_load,
    postgres, rds_json, rotator, wait_for,
};
use crate::pg_common::sessions_of;

const INITIAL: &str = "Initial-Pass-0001";

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
            // The pools drain the old role's connections (drain delay 500 ms; they come back to
            // the pools at once under this load), well before connections would age out (3 s).
            let drained = wait_for(Duration::from_millis(2500), || async {
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
    }
    let sqlx_stats = pools.sqlx.stats();
    let deadpool_stats = pools.monitor.stats();
    let (ok, errors) = pools.stop().await;
    assert!(
        errors.is_empty(),
        "{} errors reached callers: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(ok > 200, "the load ran ({ok} queries)");
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

/// Stopping after each step (a crash) and running the protocol again with the same token, as
/// AWS does, gives exactly one new password, and the database and the store agree.
pub async fn crash_after_each_step_then_rerun(store: Store) {
    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    for (index, stop_after) in [Step::Create, Step::Set, Step::Test]
        .into_iter()
        .enumerate()
    {
        let user = format!("crash_{index}");
        create_role(&admin, &user, INITIAL).await;
        let id = store.secret_id(&user);
        store.create(&id, &rds_json(port, &user, INITIAL)).await;
        let rotation_store = store.rotation_store();
        let original = rotation_store.current(&id).await.unwrap().version.id;
        let token = format!("5c2d7f4e-0000-4000-8000-00000000000{index}");
        {
            let first = rotator(store.rotation_store(), &pg, Strategy::SingleUser, false);
            for step in Step::ALL.into_iter().filter(|s| *s <= stop_after) {
                let _ = first.step(&id, &token, step).await.unwrap();
            }
            // The rotator dies here.
        }
        let generated = rotation_store
            .read_pending(&id, &token)
            .await
            .unwrap()
            .expect("the pending version survives the crash");
        let second = rotator(store.rotation_store(), &pg, Strategy::SingleUser, false);
        for step in Step::ALL {
            let _ = second
                .step(&id, &token, step)
                .await
                .unwrap_or_else(|e| panic!("{step} after a crash after {stop_after}: {e}"));
        }
        assert_agree(
            &store,
            rotation_store.as_ref(),
            &id,
            &token,
            &original,
            &generated,
            port,
        )
        .await;
    }

    // A response lost right after the store wrote (the pending version, the promotion): the
    // call fails, and `resume` finishes the same rotation.
    for (index, operation) in ["write_pending", "promote"].into_iter().enumerate() {
        let user = format!("lost_{index}");
        create_role(&admin, &user, INITIAL).await;
        let id = store.secret_id(&user);
        store.create(&id, &rds_json(port, &user, INITIAL)).await;
        let rotation_store = store.rotation_store();
        let original = rotation_store.current(&id).await.unwrap().version.id;
        let flaky = FailAfter::new(store.rotation_store(), operation);
        let first = rotator(flaky, &pg, Strategy::SingleUser, false);
        let mut events = first.subscribe();
        let err = first.rotate(&id).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
        // The audit trail names the rotation's token.
        let token = events
            .try_recv()
            .ok()
            .and_then(|event| event.token.map(|t| t.to_string()))
            .expect("the create event carries the token");
        let generated = match rotation_store.read_pending(&id, &token).await.unwrap() {
            Some(pending) => pending,
            // The promotion went through before the response was lost.
            None => rotation_store.current(&id).await.unwrap().value,
        };
        if rotation_store.pending_token(&id).await.unwrap().is_some() {
            let outcome = first.resume(&id).await.unwrap();
            assert!(
                matches!(&outcome, RotationOutcome::Rotated { token: t, .. } if *t == token),
                "{outcome:?}"
            );
        }
        // Re-running finish, as a caller whose response was lost would, is harmless.
        let again = first.step(&id, &token, Step::Finish).await.unwrap();
        assert_eq!(
            again,
            credswap::rotation::StepOutcome::AlreadyDone,
            "{operation}"
        );
        assert_agree(
            &store,
            rotation_store.as_ref(),
            &id,
            &token,
            &original,
            &generated,
            port,
        )
        .await;
    }
}

async fn assert_agree(
    store: &Store,
    rotation_store: &dyn RotationStore,
    id: &str,
    token: &str,
    original: &credswap::VersionId,
    generated: &credswap::SecretValue,
    port: u16,
) {
    let current = rotation_store.current(id).await.unwrap();
    assert_eq!(
        &current.value, generated,
        "exactly one new password: the one generated first"
    );
    assert!(rotation_store.is_current(id, token).await.unwrap());
    assert_eq!(
        rotation_store.pending_token(id).await.unwrap(),
        None,
        "no pending version left"
    );
    let previous = rotation_store
        .previous(id)
        .await
        .unwrap()
        .expect("a previous version");
    assert_eq!(&previous.version.id, original);
    let (user, password) = login_of(&current.value);
    let (_, old_password) = login_of(&previous.value);
    assert!(
        logs_in(port, &user, &password).await,
        "the database accepts the stored password"
    );
    assert!(
        !logs_in(port, &user, &old_password).await,
        "and only that one"
    );
    if let Store::Aws { client, .. } = store {
        let stages = client.describe_secret().secret_id(id).send().await.unwrap();
        let stages = stages.version_ids_to_stages().unwrap();
        let labelled = |label: &str| -> Vec<String> {
            stages
                .iter()
                .filter(|(_, labels)| labels.iter().any(|l| l == label))
                .map(|(version, _)| version.clone())
                .collect()
        };
        assert_eq!(labelled("AWSCURRENT"), vec![token.to_owned()]);
        assert_eq!(labelled("AWSPREVIOUS"), vec![original.as_str().to_owned()]);
        assert!(labelled("AWSPENDING").is_empty(), "{stages:?}");
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
    let mut target = PostgresTarget::new();
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
    let (_cache, handle) = handle(store.provider(), &id).await;
    let pools = pools_under_load(&handle, port).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let the load run first
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
    tokio::time::sleep(Duration::from_millis(1500)).await; // past a TTL: the pools refresh
    let (ok, errors) = pools.stop().await;
    assert!(
        errors.is_empty(),
        "{} errors reached callers: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(ok > 50, "{ok}");
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
            let held: Arc<dyn RotationStore> = Arc::new(HoldWhileOthersTry {
                inner: store.rotation_store(),
                answered: answered.clone(),
                release: 4,
            });
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
