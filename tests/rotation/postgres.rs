//! The PostgreSQL target against a real server: no password in its statement log, role names with
//! quotes and spaces, the 63-byte limit, and no value in any log line, error or `Debug` output.
//! The store is the in-memory one; the AWS and Vault stores have their own tests.

use crate::{common, rotation_common};

use std::sync::Arc;

use common::capture::{Capture, assert_none_of};
use credswap::MemoryProvider;
use credswap::rotation::{RotationOutcome, RotationStore, Rotator, Strategy};
use credswap::testkit::PostgresServer;
use credswap::{ErrorKind, SecretValue};
use rotation_common::{Hooked, RecordPending, create_role, login_of, logs_in, postgres, rds_json};

fn rotator_for(store: &Arc<MemoryProvider>, pg: &PostgresServer, strategy: Strategy) -> Rotator {
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
async fn password_of(store: &MemoryProvider, id: &str) -> String {
    login_of(&store.current(id).await.unwrap().value).1
}

/// `store`, recording the password of every pending version written through it (rolled-back
/// ones too, which the store itself no longer shows as pending).
fn recording(store: &Arc<MemoryProvider>) -> Arc<Hooked<RecordPending>> {
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
    let store = Arc::new(MemoryProvider::new());
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
    let store = Arc::new(MemoryProvider::new());
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
    let store = Arc::new(MemoryProvider::new());
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
    let store = Arc::new(MemoryProvider::new());
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

/// Holds `promote` until the test opens the gate: the rotation stands between `set` and
/// `finish`, where a single-user database accepts only the pending password.
struct HoldPromote {
    open: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl rotation_common::Hooks for HoldPromote {
    async fn before(&self, operation: &'static str) -> credswap::Result<()> {
        if operation == "promote" {
            self.open.notified().await;
        }
        Ok(())
    }
}

/// A rotator over `store` whose `promote` waits until the returned gate is opened.
fn held_at_promote(
    store: &Arc<MemoryProvider>,
    pg: &PostgresServer,
) -> (Rotator, Arc<tokio::sync::Notify>) {
    let open = Arc::new(tokio::sync::Notify::new());
    let gated = Arc::new(Hooked {
        inner: store.clone(),
        hooks: HoldPromote { open: open.clone() },
    });
    let rotator = Rotator::builder(gated, Arc::new(rotation_common::target(pg)))
        .build()
        .unwrap();
    (rotator, open)
}

/// Waits for the `setSecret` event of `secret`.
async fn set_done(
    events: &mut tokio::sync::broadcast::Receiver<credswap::rotation::RotationEvent>,
    secret: &str,
) {
    use credswap::rotation::{AuditActivity, AuditOutcome, Step};
    loop {
        let event = events.recv().await.expect("the rotator's events");
        if &*event.secret_id == secret
            && event.activity == AuditActivity::Step(Step::Set)
            && event.outcome == AuditOutcome::Done
        {
            return;
        }
    }
}

/// Whether the store's current password logs in and nothing is pending: consumers are fine.
async fn settled(store: &MemoryProvider, port: u16, id: &str) -> bool {
    let (user, password) = login_of(&store.current(id).await.unwrap().value);
    store.pending_token(id).await.unwrap().is_none() && logs_in(port, &user, &password).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_dropped_between_set_and_finish_still_ends_with_a_working_password() {
    use credswap::rotation::Schedule;
    use std::time::Duration;

    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    let store = Arc::new(MemoryProvider::new());
    for user in ["dropped_call", "dropped_schedule"] {
        create_role(&admin, user, "Initial-Drop-0001").await;
        let _ = store.set(user, rds_json(port, user, "Initial-Drop-0001"));
    }
    let (rotator, open) = held_at_promote(&store, &pg);

    // The future of `rotate`, dropped as soon as `set` changed the database.
    let mut events = rotator.subscribe();
    tokio::select! {
        outcome = rotator.rotate("dropped_call") => panic!("promote is held: {outcome:?}"),
        () = set_done(&mut events, "dropped_call") => {}
    }
    // The database now takes only the pending password; the caller is gone.
    assert!(!settled(&store, port, "dropped_call").await);
    open.notify_one();
    let done = rotation_common::wait_for(Duration::from_secs(30), || {
        settled(&store, port, "dropped_call")
    })
    .await;
    assert!(done, "the dropped rotation was abandoned half done");
    assert_ne!(
        password_of(&store, "dropped_call").await,
        "Initial-Drop-0001"
    );

    // A schedule dropped (its handle going out of scope) at the same point.
    let schedule = rotator
        .schedule(
            "dropped_schedule",
            Schedule::every(Duration::from_secs(3600)).min_age(Duration::ZERO),
        )
        .unwrap();
    set_done(&mut events, "dropped_schedule").await;
    drop(schedule);
    assert!(!settled(&store, port, "dropped_schedule").await);
    open.notify_one();
    let done = rotation_common::wait_for(Duration::from_secs(30), || {
        settled(&store, port, "dropped_schedule")
    })
    .await;
    assert!(
        done,
        "the dropped schedule abandoned its rotation half done"
    );
    assert_ne!(
        password_of(&store, "dropped_schedule").await,
        "Initial-Drop-0001"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_waits_for_the_rotation_under_way() {
    use credswap::rotation::Schedule;
    use std::time::Duration;

    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    create_role(&admin, "shut_down", "Initial-Shut-0001").await;
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set(
        "shut_down",
        rds_json(port, "shut_down", "Initial-Shut-0001"),
    );
    let (rotator, open) = held_at_promote(&store, &pg);
    let mut events = rotator.subscribe();
    let schedule = rotator
        .schedule(
            "shut_down",
            Schedule::every(Duration::from_secs(3600)).min_age(Duration::ZERO),
        )
        .unwrap();
    set_done(&mut events, "shut_down").await;
    let shutdown = tokio::spawn(schedule.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!shutdown.is_finished(), "shutdown waits for the rotation");
    open.notify_one();
    tokio::time::timeout(Duration::from_secs(30), shutdown)
        .await
        .expect("shutdown returns once the rotation ended")
        .unwrap();
    // When it returns, the database and the store agree.
    assert!(settled(&store, port, "shut_down").await);
}

/// A server on loopback that asks every client for its password in cleartext and records every
/// byte it receives.
struct CleartextListener {
    port: u16,
    received: Arc<std::sync::Mutex<Vec<u8>>>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl CleartextListener {
    async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (sink, count) = (received.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let _ = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let sink = sink.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    let mut asked = false;
                    loop {
                        let n = match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        sink.lock().unwrap().extend_from_slice(&buffer[..n]);
                        if !asked {
                            // AuthenticationCleartextPassword.
                            let _ = socket.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await;
                            asked = true;
                        }
                    }
                });
            }
        });
        CleartextListener {
            port,
            received,
            accepted,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_asking_for_a_cleartext_password_gets_nothing() {
    let listener = CleartextListener::start().await;
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set(
        "lure",
        rds_json(listener.port, "lured_app", "App-Password-0001"),
    );
    let mut endpoint = tokio_postgres::Config::new();
    let _ = endpoint
        .host("127.0.0.1")
        .port(listener.port)
        .dbname("postgres");
    for strategy in [Strategy::SingleUser, Strategy::alternating_users()] {
        let target = credswap::rotation::PostgresTarget::new()
            .allow_plaintext()
            .connection(endpoint.clone())
            .admin("admin", "Admin-Password-0001");
        let rotator = Rotator::builder(store.clone(), Arc::new(target))
            .strategy(strategy.clone())
            .build()
            .unwrap();
        let err = rotator.rotate("lure").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{}: {err}", strategy.name());
        assert!(err.to_string().contains("cleartext"), "{err}");
    }
    assert!(
        listener.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the rotator did connect"
    );
    let received = String::from_utf8_lossy(&listener.received.lock().unwrap()).into_owned();
    assert_none_of(&["Admin-Password-0001", "App-Password-0001"], &received);
    // The startup packet went out, and no password message ('p') followed it.
    assert!(received.contains("postgres"), "{received:?}");
    assert_eq!(store.current("lure").await.unwrap().value, {
        SecretValue::from(rds_json(listener.port, "lured_app", "App-Password-0001"))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_naming_another_database_is_refused_before_anything_is_sent() {
    let (pg, admin) = postgres(&[]).await;
    create_role(&admin, "moved_app", "Initial-Move-0001").await;
    // A listener where the secret now points: it must see no connection at all.
    let elsewhere = CleartextListener::start().await;
    let store = Arc::new(MemoryProvider::new());
    let before = store.set(
        "moved",
        rds_json(elsewhere.port, "moved_app", "Initial-Move-0001"),
    );
    for strategy in [Strategy::SingleUser, Strategy::alternating_users()] {
        let rotator = rotator_for(&store, &pg, strategy.clone());
        let err = rotator.rotate("moved").await.unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidRequest,
            "{}: {err}",
            strategy.name()
        );
        assert!(err.to_string().contains("refusing"), "{err}");
    }
    assert_eq!(
        elsewhere.accepted.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert_eq!(store.current("moved").await.unwrap().version.id, before);
    assert_eq!(store.pending_token("moved").await.unwrap(), None);
    assert!(logs_in(pg.port(), "moved_app", "Initial-Move-0001").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_trusts_every_login_is_refused_before_the_store_promotes() {
    let (pg, admin) = postgres(&[]).await;
    create_role(&admin, "trusted_app", "Initial-Trust-0001").await;
    // pg_hba.conf with `trust`: any password "logs in".
    let hba: String = admin
        .query_one(
            "SELECT setting FROM pg_settings WHERE name = 'hba_file'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    admin
        .batch_execute(&format!(
            "COPY (SELECT 'host all all 127.0.0.1/32 trust' UNION ALL \
             SELECT 'local all all trust') TO '{}'; SELECT pg_reload_conf();",
            hba.replace('\'', "''")
        ))
        .await
        .unwrap();
    assert!(
        rotation_common::wait_for(std::time::Duration::from_secs(10), || {
            logs_in(pg.port(), "trusted_app", "anything at all")
        })
        .await,
        "the server trusts logins now"
    );
    let store = Arc::new(MemoryProvider::new());
    let before = store.set(
        "trusted",
        rds_json(pg.port(), "trusted_app", "Initial-Trust-0001"),
    );
    let rotator = rotator_for(&store, &pg, Strategy::SingleUser);
    let err = rotator.rotate("trusted").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("any password"), "{err}");
    assert_eq!(store.current("trusted").await.unwrap().version.id, before);
    assert_eq!(store.pending_token("trusted").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_target_connects_to_its_hostaddr_without_a_name_lookup() {
    let (pg, admin) = postgres(&[]).await;
    create_role(&admin, "addr_app", "Initial-Addr-0001").await;
    // A host name that cannot resolve: only `hostaddr` gets the connection to the server.
    let host = "db.credswap.invalid";
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set(
        "by-addr",
        serde_json::json!({
            "engine": "postgres", "host": host, "port": pg.port(), "dbname": "postgres",
            "username": "addr_app", "password": "Initial-Addr-0001",
        })
        .to_string(),
    );
    let mut endpoint = tokio_postgres::Config::new();
    let _ = endpoint
        .host(host)
        .hostaddr(std::net::IpAddr::from([127, 0, 0, 1]))
        .port(pg.port())
        .dbname("postgres")
        .connect_timeout(std::time::Duration::from_secs(5));
    let target = credswap::rotation::PostgresTarget::new()
        .allow_plaintext()
        .connection(endpoint);
    let rotator = Rotator::builder(store.clone(), Arc::new(target))
        .build()
        .unwrap();
    let outcome = rotator.rotate("by-addr").await.unwrap();
    assert!(
        matches!(outcome, RotationOutcome::Rotated { .. }),
        "{outcome:?}"
    );
    let (user, password) = login_of(&store.current("by-addr").await.unwrap().value);
    assert_eq!(user, "addr_app");
    assert_ne!(password, "Initial-Addr-0001");
}
