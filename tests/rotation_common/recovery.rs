//! What every store must survive, against real servers: a rotator that dies after any step, late
//! and repeated steps of an old rotation, a write to the secret during a rotation, a rollback to
//! the previous version, and two spellings of one secret.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use credswap::rotation::{RotationOutcome, Rotator, Step, StepOutcome, Strategy};
use credswap::testkit::PostgresServer;
use credswap::{ErrorKind, SecretValue, VersionId};

use super::{
    FailAfter, HoldWhileOthersTry, INITIAL, Store, create_role, login_of, logs_in, postgres,
    rds_json, rotator, wait_for,
};

/// Stopping after each step (a crash) and running the protocol again with the same token gives
/// exactly one new password, and the database and the store agree. The rerun is either the steps
/// with the same token, as AWS retries them, or a plain `rotate`, which finds the pending version
/// and finishes it; both are used, at different crash points.
pub async fn crash_after_each_step_then_rerun(store: Store, strategy: Strategy) {
    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    let alternating = strategy.needs_admin();
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
            let first = rotator(store.rotation_store(), &pg, strategy.clone(), alternating);
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
        let second = rotator(store.rotation_store(), &pg, strategy.clone(), alternating);
        if index % 2 == 0 {
            for step in Step::ALL {
                let _ = second
                    .step(&id, &token, step)
                    .await
                    .unwrap_or_else(|e| panic!("{step} after a crash after {stop_after}: {e}"));
            }
        } else {
            let outcome = second.rotate(&id).await.unwrap();
            assert!(
                matches!(&outcome, RotationOutcome::Rotated { token: t, .. } if **t == *token),
                "rotate finishes the orphan: {outcome:?}"
            );
        }
        assert_agree(&store, &id, &token, &original, &generated, port, &strategy).await;
    }

    // A response lost right after the store wrote. The pending version: the call fails, and
    // `resume` finishes the same rotation. The promotion: the call sees that the store did
    // promote, and finishes it itself.
    for (index, operation) in ["write_pending", "promote"].into_iter().enumerate() {
        let user = format!("lost_{index}");
        create_role(&admin, &user, INITIAL).await;
        let id = store.secret_id(&user);
        store.create(&id, &rds_json(port, &user, INITIAL)).await;
        let rotation_store = store.rotation_store();
        let original = rotation_store.current(&id).await.unwrap().version.id;
        let flaky = FailAfter::new(store.rotation_store(), operation);
        let first = rotator(flaky, &pg, strategy.clone(), alternating);
        let mut events = first.subscribe();
        let result = first.rotate(&id).await;
        // The audit trail names the rotation's token.
        let token = events
            .try_recv()
            .ok()
            .and_then(|event| event.token.map(|t| t.to_string()))
            .expect("the create event carries the token");
        let generated = match rotation_store.read_pending(&id, &token).await.unwrap() {
            Some(pending) => pending,
            None => rotation_store.current(&id).await.unwrap().value,
        };
        if operation == "promote" {
            assert!(
                matches!(&result, Ok(RotationOutcome::Rotated { token: t, .. }) if **t == *token),
                "a lost answer to a promotion that happened: {result:?}"
            );
        } else {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
            let outcome = first.resume(&id).await.unwrap();
            assert!(
                matches!(&outcome, Some(RotationOutcome::Rotated { token: t, .. }) if **t == *token),
                "{outcome:?}"
            );
        }
        // Re-running finish, as a caller whose response was lost would, is harmless.
        let again = first.step(&id, &token, Step::Finish).await.unwrap();
        assert_eq!(again, StepOutcome::AlreadyDone, "{operation}");
        assert_agree(&store, &id, &token, &original, &generated, port, &strategy).await;
    }
}

async fn assert_agree(
    store: &Store,
    id: &str,
    token: &str,
    original: &VersionId,
    generated: &SecretValue,
    port: u16,
    strategy: &Strategy,
) {
    let rotation_store = store.rotation_store();
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
    let (old_user, old_password) = login_of(&previous.value);
    assert!(
        logs_in(port, &user, &password).await,
        "the database accepts the stored password"
    );
    if strategy.needs_admin() {
        assert_ne!(user, old_user, "the secret moved to the other role");
        assert!(
            logs_in(port, &old_user, &old_password).await,
            "the previous role still works for consumers on the previous version"
        );
    } else {
        assert!(
            !logs_in(port, &user, &old_password).await,
            "and only that one"
        );
    }
    if let Store::Aws { .. } = store {
        let labelled = aws_labels(store, id).await;
        assert_eq!(labelled("AWSCURRENT"), vec![token.to_owned()]);
        assert_eq!(labelled("AWSPREVIOUS"), vec![original.as_str().to_owned()]);
        assert!(labelled("AWSPENDING").is_empty());
        assert!(
            labelled("credswap-base").is_empty(),
            "no rotation marks left"
        );
    }
}

/// The versions holding each stage label of an AWS secret.
pub async fn aws_labels(store: &Store, id: &str) -> impl Fn(&str) -> Vec<String> + use<> {
    let Store::Aws { client, .. } = store else {
        panic!("not AWS")
    };
    let described = client.describe_secret().secret_id(id).send().await.unwrap();
    let stages = described
        .version_ids_to_stages()
        .cloned()
        .unwrap_or_default();
    move |label: &str| {
        let mut holders: Vec<String> = stages
            .iter()
            .filter(|(_, labels)| labels.iter().any(|l| l == label))
            .map(|(version, _)| version.clone())
            .collect();
        holders.sort();
        holders
    }
}

/// How many `credswap-base-…` labels an AWS secret carries.
pub async fn base_labels(store: &Store, id: &str) -> usize {
    let Store::Aws { client, .. } = store else {
        panic!("not AWS")
    };
    let described = client.describe_secret().secret_id(id).send().await.unwrap();
    described
        .version_ids_to_stages()
        .into_iter()
        .flat_map(|stages| stages.values().flatten())
        .filter(|label| label.starts_with("credswap-base-"))
        .count()
}

/// The token of a rotation that happened (a test failure otherwise).
pub fn token_of(outcome: RotationOutcome) -> String {
    match outcome {
        RotationOutcome::Rotated { token, .. } => token.to_string(),
        other => panic!("{other:?}"),
    }
}

/// After two rotations, a late or repeated `setSecret`/`testSecret`/`finishSecret` for the first
/// one changes nothing: the database keeps the stored current password. With a third rotation
/// under way they are conflicts and leave it alone.
pub async fn late_steps_of_an_old_rotation_change_nothing(store: Store) {
    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    create_role(&admin, "late", INITIAL).await;
    let id = store.secret_id("late");
    store.create(&id, &rds_json(port, "late", INITIAL)).await;
    let rotation_store = store.rotation_store();
    let rotator = rotator(store.rotation_store(), &pg, Strategy::SingleUser, false);
    let first = token_of(rotator.rotate(&id).await.unwrap());
    let first_password = login_of(&rotation_store.current(&id).await.unwrap().value).1;
    let _second = token_of(rotator.rotate(&id).await.unwrap());
    let stored = rotation_store.current(&id).await.unwrap();
    let (user, password) = login_of(&stored.value);
    for step in [Step::Set, Step::Test, Step::Finish] {
        let err = rotator.step(&id, &first, step).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{step}: {err}");
        assert!(logs_in(port, &user, &password).await, "after a late {step}");
        assert!(
            !logs_in(port, &user, &first_password).await,
            "after a late {step}"
        );
    }
    let third = "6d3e8a5f-0000-4000-8000-000000000003";
    let _ = rotator.step(&id, third, Step::Create).await.unwrap();
    for step in [Step::Set, Step::Test] {
        let err = rotator.step(&id, &first, step).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{step}: {err}");
        assert!(logs_in(port, &user, &password).await, "after a late {step}");
    }
    assert_eq!(
        rotation_store.pending_token(&id).await.unwrap().as_deref(),
        Some(third),
        "the rotation under way is intact"
    );
    assert_eq!(
        rotation_store.current(&id).await.unwrap().version.id,
        stored.version.id
    );
    assert_eq!(rotator.abort(&id).await.unwrap().as_deref(), Some(third));
    assert!(logs_in(port, &user, &password).await);
}

/// An operator writes the secret between `testSecret` and `finishSecret`: `finish` refuses to
/// throw the write away, puts the database back on the operator's credential, and removes the
/// pending version.
pub async fn a_write_during_the_rotation_is_kept(store: Store) {
    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    create_role(&admin, "written", INITIAL).await;
    let id = store.secret_id("written");
    store.create(&id, &rds_json(port, "written", INITIAL)).await;
    let rotation_store = store.rotation_store();
    let rotator = rotator(store.rotation_store(), &pg, Strategy::SingleUser, false);
    let token = "6d3e8a5f-0000-4000-8000-000000000010";
    for step in [Step::Create, Step::Set, Step::Test] {
        let _ = rotator.step(&id, token, step).await.unwrap();
    }
    let pending = login_of(
        &rotation_store
            .read_pending(&id, token)
            .await
            .unwrap()
            .unwrap(),
    )
    .1;
    store
        .write(&id, &rds_json(port, "written", "Operator-Pass-0001"))
        .await;
    let operator = rotation_store.current(&id).await.unwrap().version.id;
    let err = rotator.step(&id, token, Step::Finish).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RolledBack, "{err}");
    assert!(
        err.to_string().contains("written during the rotation"),
        "{err}"
    );
    let current = rotation_store.current(&id).await.unwrap();
    assert_eq!(current.version.id, operator, "the operator's version stays");
    assert_eq!(login_of(&current.value).1, "Operator-Pass-0001");
    assert!(
        logs_in(port, "written", "Operator-Pass-0001").await,
        "the database is back on the stored credential"
    );
    assert!(!logs_in(port, "written", &pending).await);
    assert_eq!(rotation_store.pending_token(&id).await.unwrap(), None);
    assert!(!rotation_store.is_current(&id, token).await.unwrap());
    if let Store::Aws { .. } = &store {
        let labelled = aws_labels(&store, &id).await;
        assert_eq!(labelled("AWSCURRENT"), vec![operator.as_str().to_owned()]);
        assert!(labelled("AWSPENDING").is_empty());
        assert_eq!(base_labels(&store, &id).await, 0);
    }
    // The next rotation starts from the operator's version.
    assert!(rotator.rotate(&id).await.unwrap().rotated());
    assert_eq!(
        rotation_store
            .previous(&id)
            .await
            .unwrap()
            .unwrap()
            .version
            .id,
        operator
    );
}

/// Alternating users, second rotation: `test` fails, and the role being re-passworded (`app`,
/// the previous version's) gets its previous password back, so consumers still on the previous
/// version keep working.
pub async fn alternating_rollback_restores_the_previous_version(store: Store) {
    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    create_role(&admin, "app", INITIAL).await;
    let id = store.secret_id("back");
    store.create(&id, &rds_json(port, "app", INITIAL)).await;
    let rotation_store = store.rotation_store();
    let working = rotator(
        store.rotation_store(),
        &pg,
        Strategy::alternating_users(),
        true,
    );
    assert!(working.rotate(&id).await.unwrap().rotated()); // app -> app_clone
    let current = rotation_store.current(&id).await.unwrap();
    let (clone, clone_password) = login_of(&current.value);
    assert_eq!(clone, "app_clone");
    let failing = Rotator::builder(
        store.rotation_store(),
        Arc::new(
            super::target(&pg)
                .admin(
                    PostgresServer::SUPERUSER,
                    pg.superuser_password().to_owned(),
                )
                .test_query("SELECT * FROM no_such_table"),
        ),
    )
    .strategy(Strategy::alternating_users())
    .build()
    .unwrap();
    let err = failing.rotate(&id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RolledBack, "{err}");
    assert!(
        err.to_string()
            .contains("role `app` was restored to previous version"),
        "{err}"
    );
    assert!(
        logs_in(port, "app", INITIAL).await,
        "the previous version works again"
    );
    assert!(
        logs_in(port, &clone, &clone_password).await,
        "and the current"
    );
    assert_eq!(
        rotation_store.current(&id).await.unwrap().version.id,
        current.version.id
    );
    assert_eq!(rotation_store.pending_token(&id).await.unwrap(), None);
}

/// A rotation function gets the secret's ARN, a job uses its name: started together, they take
/// one lock, so one rotates and the other finds it under way.
pub async fn name_and_arn_take_one_lock(store: Store) {
    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    create_role(&admin, "named", INITIAL).await;
    let id = store.secret_id("named");
    store.create(&id, &rds_json(port, "named", INITIAL)).await;
    let Store::Aws { client, .. } = &store else {
        panic!("AWS only: secrets there have a name and an ARN")
    };
    let described = client
        .describe_secret()
        .secret_id(&id)
        .send()
        .await
        .unwrap();
    let arn = described.arn().unwrap().to_owned();
    assert_ne!(arn, id);
    let answered = Arc::new(AtomicUsize::new(0));
    // The job by name is held inside its rotation (after taking the lock) until the other answers.
    let by_name = rotator(
        HoldWhileOthersTry::new(store.rotation_store(), answered.clone(), 1),
        &pg,
        Strategy::SingleUser,
        false,
    );
    let by_arn = rotator(store.rotation_store(), &pg, Strategy::SingleUser, false);
    let job = {
        let id = id.clone();
        tokio::spawn(async move { by_name.rotate(&id).await })
    };
    let locked = wait_for(Duration::from_secs(30), || async {
        let held: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        held > 0
    })
    .await;
    assert!(locked, "the job took the lock");
    let function = by_arn.rotate(&arn).await;
    let _ = answered.fetch_add(1, Ordering::SeqCst);
    let job = job.await.unwrap();
    assert!(
        matches!(function, Ok(RotationOutcome::UnderWay { .. })),
        "{function:?}"
    );
    assert!(
        matches!(job, Ok(RotationOutcome::Rotated { .. })),
        "{job:?}"
    );
    let rotation_store = store.rotation_store();
    let previous = rotation_store.previous(&id).await.unwrap().unwrap();
    assert_eq!(login_of(&previous.value).1, INITIAL, "exactly one rotation");
    let (user, password) = login_of(&rotation_store.current(&id).await.unwrap().value);
    assert!(logs_in(port, &user, &password).await);
}
