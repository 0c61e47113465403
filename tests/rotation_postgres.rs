//! The PostgreSQL target against a real server: no password in its statement log, role names with
//! quotes and spaces, the 63-byte limit, and no value in any log line, error or `Debug` output.
//! The store is the in-memory one; the AWS and Vault stores have their own tests.

mod common;
mod pg_common;
mod rotation_common;

use std::sync::Arc;

use common::capture::{Capture, assert_none_of};
use credswap::rotation::{MemoryRotationStore, RotationOutcome, RotationStore, Rotator, Strategy};
use credswap::testkit::PostgresServer;
use credswap::{ErrorKind, SecretValue};
use rotation_common::{Hooked, RecordPending, create_role, login_of, logs_in, postgres, rds_json};

fn rotator_for(
    store: &Arc<MemoryRotationStore>,
    pg: &PostgresServer,
    strategy: Strategy,
) -> Rotator {
    let mut target = rotation_common::target(pg);
    if strategy.needs_admin() {
        target = target.admin(
            PostgresServer::SUPERUSER,
            pg.superuser_password().to_owned(),
        );
    }
    Rotator::builder(store.clone(), Arc::new(target))
        .strategy(strategy)
        .build()
        .unwrap()
}

/// The password of a secret's current version.
async fn password_of(store: &MemoryRotationStore, id: &str) -> String {
    login_of(&store.current(id).await.unwrap().value).1
}

/// `store`, recording the password of every pending version written through it (rolled-back
/// ones too, which the store itself no longer shows as pending).
fn recording(store: &Arc<MemoryRotationStore>) -> Arc<Hooked<RecordPending>> {
    Arc::new(Hooked {
        inner: store.clone(),
        hooks: RecordPending::default(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_reaches_the_server_log_with_log_statement_all() {
    let (pg, admin) = postgres(&[("log_statement", "all")]).await;
    let port = pg.port();
    create_role(&admin, "single", "Initial-Logged-01").await;
    create_role(&admin, "pair", "Initial-Logged-02").await;
    let store = Arc::new(MemoryRotationStore::new());
    let _ = store.set("single", rds_json(port, "single", "Initial-Logged-01"));
    let _ = store.set("pair", rds_json(port, "pair", "Initial-Logged-02"));
    let single = rotator_for(&store, &pg, Strategy::SingleUser);
    let pair = rotator_for(&store, &pg, Strategy::alternating_users());
    // The initial passwords went through psql-free SQL above, as plain text: they are expected in
    // the log, and prove the scan below can see a password when there is one.
    let mut rotated = Vec::new();
    for _ in 0..3 {
        assert!(single.rotate("single").await.unwrap().rotated());
        rotated.push(password_of(&store, "single").await);
        assert!(pair.rotate("pair").await.unwrap().rotated());
        rotated.push(password_of(&store, "pair").await);
    }
    // A rolled-back rotation sends its untested password, and the restored one, as verifiers too.
    let recorded = recording(&store);
    let failing = Rotator::builder(
        recorded.clone(),
        Arc::new(rotation_common::target(&pg).test_query("SELECT * FROM no_such_table")),
    )
    .build()
    .unwrap();
    let err = failing.rotate("single").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RolledBack, "{err}");
    let (user, password) = login_of(&store.current("single").await.unwrap().value);
    assert!(logs_in(port, &user, &password).await);
    let rolled_back = recorded.hooks.passwords.lock().unwrap().clone();
    assert_eq!(rolled_back.len(), 1);
    assert!(
        !logs_in(port, &user, &rolled_back[0]).await,
        "it was rolled back"
    );
    rotated.extend(rolled_back);

    let log = pg.log();
    assert!(
        log.contains("Initial-Logged-01"),
        "the scan sees plaintext passwords"
    );
    assert!(
        log.contains("ALTER ROLE \"single\" PASSWORD 'SCRAM-SHA-256$4096:"),
        "statements are logged"
    );
    assert!(log.contains("CREATE ROLE \"pair_clone\" LOGIN PASSWORD 'SCRAM-SHA-256$4096:"));
    for password in &rotated {
        assert!(
            !log.contains(password.as_str()),
            "a rotated password is in the server log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_names_with_quotes_and_spaces_rotate_and_long_names_fail_first() {
    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    let odd = "o'brien \"ops\" app";
    create_role(&admin, odd, "Initial-Odd-0001").await;
    let store = Arc::new(MemoryRotationStore::new());
    let _ = store.set("odd", rds_json(port, odd, "Initial-Odd-0001"));
    // Single user, no admin: the role changes its own password.
    let single = rotator_for(&store, &pg, Strategy::SingleUser);
    assert!(single.rotate("odd").await.unwrap().rotated());
    let (user, password) = login_of(&store.current("odd").await.unwrap().value);
    assert_eq!(user, odd);
    assert!(logs_in(port, odd, &password).await);
    assert!(!logs_in(port, odd, "Initial-Odd-0001").await);
    // Alternating users create `o'brien "ops" app_clone`, a member of the odd role.
    let pair = rotator_for(&store, &pg, Strategy::alternating_users());
    assert!(pair.rotate("odd").await.unwrap().rotated());
    let (clone, clone_password) = login_of(&store.current("odd").await.unwrap().value);
    assert_eq!(clone, format!("{odd}_clone"));
    assert!(logs_in(port, &clone, &clone_password).await);
    let member: bool = admin
        .query_one("SELECT pg_has_role($1, $2, 'MEMBER')", &[&clone, &odd])
        .await
        .unwrap()
        .get(0);
    assert!(member);

    // 64 bytes: refused before anything changes (PostgreSQL would truncate it to another name).
    let long = "l".repeat(64);
    let before = store.set("long", rds_json(port, &long, "Initial-Long-001"));
    let err = single.rotate("long").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
    assert!(err.to_string().contains("64 bytes"), "{err}");
    assert!(err.to_string().contains("at most 63"), "{err}");
    assert_eq!(store.current("long").await.unwrap().version.id, before);
    assert_eq!(store.pending_token("long").await.unwrap(), None);
    // A 58-byte base whose clone would be 64 bytes: the same, also before anything changes.
    let base = "b".repeat(58);
    create_role(&admin, &base, "Initial-Base-001").await;
    let before = store.set("base", rds_json(port, &base, "Initial-Base-001"));
    let err = pair.rotate("base").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
    assert!(err.to_string().contains("_clone"), "{err}");
    assert_eq!(store.current("base").await.unwrap().version.id, before);
    let clones: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'bbbb%clone'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(clones, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_in_logs_events_errors_or_debug_output() {
    let capture = Capture::install();

    let (pg, _admin) = postgres(&[]).await;
    let port = pg.port();
    // Through psql, not a traced client: the capture should hold only what the engine logs.
    let _ = pg
        .execute("CREATE ROLE app LOGIN PASSWORD 'Initial-Redact-01'")
        .unwrap();
    let store = Arc::new(MemoryRotationStore::new());
    let _ = store.set("db", rds_json(port, "app", "Initial-Redact-01"));
    let rotator = rotator_for(&store, &pg, Strategy::alternating_users());
    let mut events = rotator.subscribe();
    let mut printed = vec![format!("{rotator:?}")];
    let mut passwords = vec![
        "Initial-Redact-01".to_owned(),
        pg.superuser_password().to_owned(),
    ];
    for _ in 0..2 {
        let outcome = rotator.rotate("db").await.unwrap();
        printed.push(format!("{outcome:?}"));
        passwords.push(password_of(&store, "db").await);
    }
    // Failures: a rolled-back rotation and a half-done one.
    let recorded = recording(&store);
    let failing = Rotator::builder(
        recorded.clone(),
        Arc::new(
            rotation_common::target(&pg)
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
    let mut failing_events = failing.subscribe();
    let err = failing.rotate("db").await.unwrap_err();
    printed.push(format!("{err} {err:?}"));
    let token = "7a0c5e9d-0000-4000-8000-000000000001";
    let _ = failing
        .step("db", token, credswap::rotation::Step::Create)
        .await
        .unwrap();
    let pending = store.read_pending("db", token).await.unwrap().unwrap();
    // Every pending password, the rolled-back one included.
    passwords.extend(recorded.hooks.passwords.lock().unwrap().iter().cloned());
    assert!(passwords.contains(&login_of(&pending).1));
    let patient = Rotator::builder(
        store.clone(),
        Arc::new(rotation_common::target(&pg).admin(
            PostgresServer::SUPERUSER,
            pg.superuser_password().to_owned(),
        )),
    )
    .strategy(Strategy::alternating_users())
    .resume_orphaned(false)
    .build()
    .unwrap();
    let under_way = patient.rotate("db").await.unwrap();
    assert!(matches!(under_way, RotationOutcome::UnderWay { .. }));
    printed.push(format!("{under_way:?} {pending:?} {store:?}"));
    assert_eq!(failing.abort("db").await.unwrap().as_deref(), Some(token));
    let bad = store.set(
        "db",
        SecretValue::from(r#"{"username": "app", "password": ["Sentinel-Array-01"]}"#),
    );
    passwords.push("Sentinel-Array-01".to_owned());
    let err = rotator.rotate("db").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    printed.push(format!("{err} {err:?} {bad:?}"));

    let mut count = 0;
    while let Ok(event) = events.try_recv() {
        printed.push(format!("{event:?}"));
        count += 1;
    }
    while let Ok(event) = failing_events.try_recv() {
        printed.push(format!("{event:?}"));
        count += 1;
    }
    assert!(count >= 12, "events were captured ({count})");
    let logs = capture.text();
    for expected in [
        "createSecret",
        "setSecret",
        "testSecret",
        "finishSecret",
        "rollback",
        "rolled_back",
    ] {
        assert!(logs.contains(expected), "the log lacks {expected}:\n{logs}");
    }
    let everything = format!("{logs}\n{}", printed.join("\n"));
    let passwords: Vec<&str> = passwords.iter().map(String::as_str).collect();
    assert_none_of(&passwords, &everything);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_over_the_timeout_is_cancelled_and_the_rotation_rolled_back() {
    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    create_role(&admin, "slow", "Initial-Slow-0001").await;
    let store = Arc::new(MemoryRotationStore::new());
    let before = store.set("slow", rds_json(port, "slow", "Initial-Slow-0001"));
    // A test query that would run for a minute: the server cancels it at the timeout.
    let rotator = Rotator::builder(
        store.clone(),
        Arc::new(
            rotation_common::target(&pg)
                .test_query("SELECT pg_sleep(60)")
                .statement_timeout(std::time::Duration::from_millis(200)),
        ),
    )
    .build()
    .unwrap();
    let err = rotator.rotate("slow").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RolledBack, "{err}");
    // 57014: query_canceled, by statement_timeout.
    assert!(err.to_string().contains("SQLSTATE 57014"), "{err}");
    assert_eq!(store.current("slow").await.unwrap().version.id, before);
    assert!(logs_in(port, "slow", "Initial-Slow-0001").await);
}
