//! Where a deployment breaks first, for every store: answers lost after a promotion (the hooks
//! run exactly once anyway), and store calls that never answer (bounded).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use credswap::rotation::{RotationOutcome, RotationStore, Rotator};
use credswap::{Error, ErrorKind, Result};

use super::recovery::token_of;
use super::{Hooked, Hooks, INITIAL, Store, create_role, login_of, logs_in, postgres, rds_json};

/// The store answers until `operation` has really been done, then nothing more: the answer to it
/// and every later call fail, as when a rotator's network goes away right after the write.
pub struct DeadAfter {
    operation: &'static str,
    dead: AtomicBool,
}

impl DeadAfter {
    pub fn new(inner: Arc<dyn RotationStore>, operation: &'static str) -> Arc<Hooked<Self>> {
        Arc::new(Hooked {
            inner,
            hooks: DeadAfter {
                operation,
                dead: AtomicBool::new(false),
            },
        })
    }
}

fn unreachable_store() -> Error {
    Error::transient("injected", "the store stopped answering")
}

#[async_trait]
impl Hooks for DeadAfter {
    async fn before(&self, _operation: &'static str) -> Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(unreachable_store());
        }
        Ok(())
    }

    fn after(&self, operation: &'static str) -> Result<()> {
        if operation == self.operation {
            self.dead.store(true, Ordering::SeqCst);
            return Err(unreachable_store());
        }
        Ok(())
    }
}

/// Every `operation` call hangs until the test ends: a black-holed request.
pub struct Hang {
    operation: &'static str,
}

impl Hang {
    pub fn new(inner: Arc<dyn RotationStore>, operation: &'static str) -> Arc<Hooked<Self>> {
        Arc::new(Hooked {
            inner,
            hooks: Hang { operation },
        })
    }
}

#[async_trait]
impl Hooks for Hang {
    async fn before(&self, operation: &'static str) -> Result<()> {
        if operation == self.operation {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// The hook calls a rotator made: (the secret id it was given, the token).
type Calls = Arc<Mutex<Vec<(String, String)>>>;

fn counted(
    store: Arc<dyn RotationStore>,
    pg: &credswap::testkit::PostgresServer,
    calls: &Calls,
) -> Rotator {
    let calls = Arc::clone(calls);
    Rotator::builder(store, Arc::new(super::target(pg)))
        .on_finished(move |finished| {
            let calls = Arc::clone(&calls);
            async move {
                calls
                    .lock()
                    .unwrap()
                    .push((finished.secret_id.to_string(), finished.token.to_string()));
            }
        })
        .build()
        .unwrap()
}

/// A rotation whose store stops answering right after it promoted the new version is reported
/// once, by whichever call comes next (`resume`, `rotate_if_due`, `rotate`), with the store's
/// canonical name even when the caller used another spelling (AWS: the ARN); then never again.
pub async fn a_finished_rotation_runs_its_hooks_exactly_once(store: Store) {
    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    create_role(&admin, "hooked_app", INITIAL).await;
    let id = store.secret_id("hooked_app");
    store
        .create(&id, &rds_json(port, "hooked_app", INITIAL))
        .await;
    let canonical = store.rotation_store().canonical_id(&id).await.unwrap();
    // Callers name the secret as they like: AWS by ARN here.
    let called_as = match &store {
        Store::Aws { client, .. } => {
            let described = client
                .describe_secret()
                .secret_id(&id)
                .send()
                .await
                .unwrap();
            described.arn().unwrap().to_owned()
        }
        Store::Vault { .. } => id.clone(),
    };
    let calls: Calls = Arc::default();
    let healthy = counted(store.rotation_store(), &pg, &calls);
    let mut tokens = Vec::new();

    // 1. The answer to the promotion is lost, and so is everything after: the call fails and no
    // hook has run, but the store did promote.
    let before = store
        .rotation_store()
        .current(&id)
        .await
        .unwrap()
        .version
        .id;
    let dying = counted(
        DeadAfter::new(store.rotation_store(), "promote"),
        &pg,
        &calls,
    );
    let err = dying.rotate(&called_as).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(
        calls.lock().unwrap().is_empty(),
        "no hook without an answer"
    );
    let promoted = store.rotation_store().current(&id).await.unwrap();
    assert_ne!(promoted.version.id, before, "the store did promote");
    // `resume` finds the promoted, unannounced rotation: its hooks run, and it is reported.
    let resumed = healthy
        .resume(&called_as)
        .await
        .unwrap()
        .expect("a rotation to report");
    tokens.push(token_of(resumed));
    assert_eq!(calls.lock().unwrap().len(), 1);
    assert_eq!(
        healthy.resume(&called_as).await.unwrap(),
        None,
        "reported once"
    );

    // 2. The same loss; the next scheduled attempt (`rotate_if_due`) runs the missed hooks, then
    // finds the secret rotated a moment ago.
    let dying = counted(
        DeadAfter::new(store.rotation_store(), "promote"),
        &pg,
        &calls,
    );
    let _ = dying.rotate(&called_as).await.unwrap_err();
    let due = healthy
        .rotate_if_due(&called_as, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(matches!(due, RotationOutcome::NotDue { .. }), "{due:?}");
    assert_eq!(calls.lock().unwrap().len(), 2);
    tokens.push(calls.lock().unwrap()[1].1.clone());

    // 3. The same loss; a plain `rotate` runs the missed hooks, then rotates again.
    let dying = counted(
        DeadAfter::new(store.rotation_store(), "promote"),
        &pg,
        &calls,
    );
    let _ = dying.rotate(&called_as).await.unwrap_err();
    let rotated = healthy.rotate(&called_as).await.unwrap();
    let missed = calls.lock().unwrap()[2].1.clone();
    tokens.push(missed);
    tokens.push(token_of(rotated));
    assert_eq!(healthy.resume(&called_as).await.unwrap(), None);
    let due = healthy
        .rotate_if_due(&called_as, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(matches!(due, RotationOutcome::NotDue { .. }), "{due:?}");

    // Four rotations, four hook runs, one per token, each naming the secret canonically.
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        tokens
            .iter()
            .map(|token| (canonical.clone(), token.clone()))
            .collect::<Vec<_>>()
    );
    let mut distinct = tokens.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "{tokens:?}");
    // And the database has the stored password.
    let (user, password) = login_of(&store.rotation_store().current(&id).await.unwrap().value);
    assert!(logs_in(port, &user, &password).await);
    assert!(!logs_in(port, &user, INITIAL).await);
}

/// A store call that never answers gives up after the store timeout with a transient error, the
/// rotation lock goes with it, and the next run (the store answering again) finishes the job.
pub async fn a_store_call_that_never_answers_gives_up_and_frees_the_lock(store: Store) {
    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    create_role(&admin, "hanging_app", INITIAL).await;
    let id = store.secret_id("hanging_app");
    store
        .create(&id, &rds_json(port, "hanging_app", INITIAL))
        .await;
    // Between set and finish: the lockout window of a single-user rotation.
    let hanging = Rotator::builder(
        Hang::new(store.rotation_store(), "promote"),
        Arc::new(super::target(&pg)),
    )
    .store_timeout(Duration::from_secs(1))
    .build()
    .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(60), hanging.rotate(&id))
        .await
        .expect("the store timeout ends the call")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    // The lock is free: a healthy rotator finishes the rotation under way.
    let healthy = Rotator::builder(store.rotation_store(), Arc::new(super::target(&pg)))
        .build()
        .unwrap();
    let outcome = healthy.rotate(&id).await.unwrap();
    assert!(outcome.rotated(), "{outcome:?}");
    let (user, password) = login_of(&store.rotation_store().current(&id).await.unwrap().value);
    assert!(logs_in(port, &user, &password).await);
    assert_eq!(
        store.rotation_store().pending_token(&id).await.unwrap(),
        None
    );
}
