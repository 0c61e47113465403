//! The protocol's logic against an in-memory store and a stand-in database (the real database and
//! stores are exercised by the integration tests).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::error::{Error, ErrorKind, Result};
use crate::value::SecretValue;

/// Roles with passwords and memberships, a lock table, and a switch that makes `verify` fail.
#[derive(Default)]
struct FakeDatabase {
    roles: Mutex<HashMap<String, (String, Option<String>)>>,
    locks: Mutex<HashSet<String>>,
    fail_verify: Mutex<bool>,
    applies: AtomicUsize,
}

fn login(value: &SecretValue) -> (String, String) {
    let parsed: serde_json::Value = serde_json::from_str(value.expose_str().unwrap()).unwrap();
    (
        parsed["username"].as_str().unwrap().to_owned(),
        parsed["password"].as_str().unwrap().to_owned(),
    )
}

impl FakeDatabase {
    fn accepts(&self, value: &SecretValue) -> bool {
        let (user, password) = login(value);
        self.roles.lock().unwrap().get(&user).map(|r| &r.0) == Some(&password)
    }

    fn password_of(&self, user: &str) -> Option<String> {
        self.roles.lock().unwrap().get(user).map(|r| r.0.clone())
    }
}

struct FakeTarget(Arc<FakeDatabase>);

struct FakeSession {
    db: Arc<FakeDatabase>,
    secret_id: String,
}

#[async_trait]
impl RotationTarget for FakeTarget {
    fn name(&self) -> &str {
        "fake"
    }

    fn check_username(&self, secret_id: &str, username: &str) -> Result<()> {
        super::sql::check_role_name(secret_id, username)
    }

    async fn begin(
        &self,
        secret_id: &str,
        _strategy: &Strategy,
        _current: &SecretValue,
        _pending: Option<&SecretValue>,
    ) -> Result<Option<Box<dyn TargetSession>>> {
        if !self.0.locks.lock().unwrap().insert(secret_id.to_owned()) {
            return Ok(None);
        }
        Ok(Some(Box::new(FakeSession {
            db: self.0.clone(),
            secret_id: secret_id.to_owned(),
        })))
    }
}

impl Drop for FakeSession {
    fn drop(&mut self) {
        let _ = self.db.locks.lock().unwrap().remove(&self.secret_id);
    }
}

#[async_trait]
impl TargetSession for FakeSession {
    async fn logs_in(&mut self, credential: &SecretValue) -> Result<bool> {
        Ok(self.db.accepts(credential))
    }

    async fn apply(&mut self, credential: &SecretValue, clone_of: Option<&str>) -> Result<()> {
        let _ = self.db.applies.fetch_add(1, Ordering::SeqCst);
        let (user, password) = login(credential);
        let mut roles = self.db.roles.lock().unwrap();
        match roles.get_mut(&user) {
            Some(role) => role.0 = password,
            None if clone_of.is_some() => {
                let _ = roles.insert(user, (password, clone_of.map(str::to_owned)));
            }
            None => return Err(Error::invalid_request(&*self.secret_id, "no such role")),
        }
        Ok(())
    }

    async fn verify(&mut self, credential: &SecretValue) -> Result<()> {
        if *self.db.fail_verify.lock().unwrap() || !self.db.accepts(credential) {
            return Err(Error::new(ErrorKind::AuthRejected).with_message("test login failed"));
        }
        Ok(())
    }

    async fn release(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

struct Setup {
    db: Arc<FakeDatabase>,
    store: Arc<MemoryRotationStore>,
    rotator: Rotator,
    finished: Arc<AtomicUsize>,
}

fn setup(strategy: Strategy, user: &str) -> Setup {
    let db = Arc::new(FakeDatabase::default());
    let _ = db
        .roles
        .lock()
        .unwrap()
        .insert(user.to_owned(), ("first-Pass-0".to_owned(), None));
    let store = Arc::new(MemoryRotationStore::new());
    let _ = store.set(
        "db",
        format!(r#"{{"engine": "postgres", "host": "h", "port": 5432, "username": "{user}", "password": "first-Pass-0"}}"#),
    );
    let finished = Arc::new(AtomicUsize::new(0));
    let counter = finished.clone();
    let rotator = Rotator::builder(store.clone(), Arc::new(FakeTarget(db.clone())))
        .strategy(strategy)
        .on_finished(move |_, _| {
            let _ = counter.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    Setup {
        db,
        store,
        rotator,
        finished,
    }
}

async fn current(store: &MemoryRotationStore) -> SecretValue {
    store.current("db").await.unwrap().value
}

#[tokio::test]
async fn single_user_rotation_changes_the_database_and_the_store_together() {
    let s = setup(Strategy::SingleUser, "app");
    let outcome = s.rotator.rotate("db").await.unwrap();
    let RotationOutcome::Rotated {
        token,
        old_version,
        new_version,
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(new_version.as_str(), token);
    assert_eq!(old_version.as_str(), "v1");
    let now = current(&s.store).await;
    assert!(s.db.accepts(&now));
    let (user, password) = login(&now);
    assert_eq!(user, "app");
    assert_ne!(password, "first-Pass-0");
    assert_eq!(password.len(), 32);
    // Every other field is kept.
    let parsed: serde_json::Value = serde_json::from_str(now.expose_str().unwrap()).unwrap();
    assert_eq!(parsed["host"], "h");
    assert_eq!(parsed["port"], 5432);
    assert_eq!(s.store.pending_token("db").await.unwrap(), None);
    assert_eq!(s.finished.load(Ordering::SeqCst), 1);
    assert!(
        s.db.locks.lock().unwrap().is_empty(),
        "the lock is released"
    );
}

#[tokio::test]
async fn alternating_users_create_the_clone_once_then_flip() {
    let s = setup(Strategy::alternating_users(), "app");
    assert!(s.rotator.rotate("db").await.unwrap().rotated());
    let (user, _) = login(&current(&s.store).await);
    assert_eq!(user, "app_clone");
    assert_eq!(
        s.db.roles.lock().unwrap()["app_clone"].1.as_deref(),
        Some("app"),
        "the clone is a member of app"
    );
    // The previous role was not touched: consumers still on it keep working.
    assert_eq!(s.db.password_of("app").as_deref(), Some("first-Pass-0"));
    assert!(s.rotator.rotate("db").await.unwrap().rotated());
    let (user, _) = login(&current(&s.store).await);
    assert_eq!(user, "app");
    let previous = s.store.previous("db").await.unwrap().unwrap();
    assert!(
        s.db.accepts(&previous.value),
        "the previous role still works"
    );
    assert!(s.db.accepts(&current(&s.store).await));
}

#[tokio::test]
async fn re_running_every_step_does_no_harm_and_makes_one_password() {
    let s = setup(Strategy::SingleUser, "app");
    let token = "3f1e1c1a-0000-4000-8000-000000000001";
    for step in Step::ALL {
        assert_eq!(
            s.rotator.step("db", token, step).await.unwrap(),
            StepOutcome::Done
        );
        let pending = s.store.read_pending("db", token).await.unwrap();
        // Run every step done so far again, as a retry after a lost response would.
        for again in Step::ALL.iter().filter(|a| **a <= step) {
            let outcome = s.rotator.step("db", token, *again).await.unwrap();
            // `test` changes nothing, so it simply tests again until the token is current.
            let expected = if *again == Step::Test && step != Step::Finish {
                StepOutcome::Done
            } else {
                StepOutcome::AlreadyDone
            };
            assert_eq!(outcome, expected, "{again} after {step}");
        }
        assert_eq!(
            s.store.read_pending("db", token).await.unwrap().is_some(),
            step != Step::Finish
        );
        if let (Some(before), Some(after)) =
            (pending, s.store.read_pending("db", token).await.unwrap())
        {
            assert_eq!(before, after, "one password per token");
        }
    }
    assert!(s.store.is_current("db", token).await.unwrap());
    assert_eq!(s.db.applies.load(Ordering::SeqCst), 1, "set applied once");
    // The hook runs again on a re-run of finish, so a lost announcement is repeated.
    assert_eq!(s.finished.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_failed_test_rolls_the_database_back_and_removes_the_pending_version() {
    let s = setup(Strategy::SingleUser, "app");
    let before = current(&s.store).await;
    *s.db.fail_verify.lock().unwrap() = true;
    let err = s.rotator.rotate("db").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RolledBack, "{err}");
    let text = err.to_string();
    assert!(text.contains("testSecret failed"), "{text}");
    assert!(text.contains("restored to current version v1"), "{text}");
    assert!(s.db.accepts(&before), "the old password works again");
    assert_eq!(s.store.pending_token("db").await.unwrap(), None);
    assert_eq!(current(&s.store).await, before);
    assert_eq!(s.finished.load(Ordering::SeqCst), 0);
    *s.db.fail_verify.lock().unwrap() = false;
    assert!(s.rotator.rotate("db").await.unwrap().rotated());
}

#[tokio::test]
async fn alternating_rollback_restores_the_other_role_to_the_previous_version() {
    let s = setup(Strategy::alternating_users(), "app");
    assert!(s.rotator.rotate("db").await.unwrap().rotated()); // app -> app_clone
    let previous = s.store.previous("db").await.unwrap().unwrap();
    *s.db.fail_verify.lock().unwrap() = true;
    let err = s.rotator.rotate("db").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RolledBack, "{err}");
    assert!(
        err.to_string()
            .contains("role `app` was restored to previous version"),
        "{err}"
    );
    assert!(
        s.db.accepts(&previous.value),
        "consumers on the previous version keep working"
    );
    assert!(s.db.accepts(&current(&s.store).await));
}

#[tokio::test]
async fn a_held_lock_or_a_pending_version_means_under_way_and_nothing_changes() {
    let s = setup(Strategy::SingleUser, "app");
    let _ = s.db.locks.lock().unwrap().insert("db".to_owned());
    let outcome = s.rotator.rotate("db").await.unwrap();
    assert_eq!(outcome, RotationOutcome::UnderWay { token: None });
    let err = s.rotator.step("db", "t", Step::Create).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let _ = s.db.locks.lock().unwrap().remove("db");

    // A rotator that crashed after `set` left its pending version.
    let token = "3f1e1c1a-0000-4000-8000-000000000002";
    let _ = s.rotator.step("db", token, Step::Create).await.unwrap();
    let _ = s.rotator.step("db", token, Step::Set).await.unwrap();
    let outcome = s.rotator.rotate("db").await.unwrap();
    assert_eq!(
        outcome,
        RotationOutcome::UnderWay {
            token: Some(token.to_owned())
        }
    );
    let err = s
        .rotator
        .step("db", "another-token", Step::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    // `resume` finishes it with the same password.
    let pending = s.store.read_pending("db", token).await.unwrap().unwrap();
    let outcome = s.rotator.resume("db").await.unwrap();
    assert!(outcome.rotated());
    assert_eq!(current(&s.store).await, pending);
    assert!(
        s.rotator.resume("db").await.is_err(),
        "nothing left to resume"
    );
}

#[tokio::test]
async fn abort_undoes_a_rotation_left_half_done() {
    let s = setup(Strategy::SingleUser, "app");
    let before = current(&s.store).await;
    let token = "3f1e1c1a-0000-4000-8000-000000000003";
    let _ = s.rotator.step("db", token, Step::Create).await.unwrap();
    let _ = s.rotator.step("db", token, Step::Set).await.unwrap();
    assert!(
        !s.db.accepts(&before),
        "single user: only the new password works now"
    );
    assert_eq!(s.rotator.abort("db").await.unwrap().as_deref(), Some(token));
    assert!(s.db.accepts(&before));
    assert_eq!(s.store.pending_token("db").await.unwrap(), None);
    assert_eq!(s.rotator.abort("db").await.unwrap(), None);
}

#[tokio::test]
async fn a_name_over_63_bytes_fails_before_anything_changes() {
    let base = "r".repeat(58); // with "_clone" it is 64 bytes
    let s = setup(Strategy::alternating_users(), &base);
    let err = s.rotator.rotate("db").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
    assert!(err.to_string().contains("64 bytes"), "{err}");
    assert_eq!(s.store.pending_token("db").await.unwrap(), None);
    assert_eq!(s.db.applies.load(Ordering::SeqCst), 0);
    assert_eq!(
        s.store.current("db").await.unwrap().version.id.as_str(),
        "v1"
    );
}

#[tokio::test]
async fn rotate_if_due_skips_a_fresh_secret() {
    let s = setup(Strategy::SingleUser, "app");
    let outcome = s
        .rotator
        .rotate_if_due("db", Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(
        matches!(outcome, RotationOutcome::NotDue { .. }),
        "{outcome:?}"
    );
    assert!(
        s.rotator
            .rotate_if_due("db", Duration::ZERO)
            .await
            .unwrap()
            .rotated()
    );
}

#[tokio::test]
async fn events_tell_every_step_and_never_a_password() {
    let s = setup(Strategy::SingleUser, "app");
    let mut events = s.rotator.subscribe();
    let _ = s.rotator.rotate("db").await.unwrap();
    let (_, password) = login(&current(&s.store).await);
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        let printed = format!("{event:?}");
        assert!(
            !printed.contains(&password) && !printed.contains("first-Pass-0"),
            "{printed}"
        );
        seen.push((event.activity, event.outcome));
    }
    let expected: Vec<_> = Step::ALL
        .iter()
        .map(|s| (Activity::Step(*s), Outcome::Done))
        .chain([(Activity::Rotation, Outcome::Done)])
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test(start_paused = true)]
async fn a_schedule_rotates_once_per_period_and_replicas_do_not_double_up() {
    let s = setup(Strategy::SingleUser, "app");
    let period = Duration::from_secs(3600);
    // Two replicas on the same schedule, same store and database.
    let mut first = s
        .rotator
        .schedule("db", Schedule::every(period).min_age(Duration::ZERO))
        .unwrap();
    let second_rotator = s.rotator.clone();
    let mut second = second_rotator
        .schedule("db", Schedule::every(period).min_age(period / 2))
        .unwrap();
    let started = tokio::time::Instant::now();
    let attempts = first.next_attempt().await;
    assert!(matches!(
        attempts.last,
        Some(Ok(RotationOutcome::Rotated { .. }))
    ));
    let attempts = second.next_attempt().await;
    // The second replica found the secret freshly rotated (or the rotation under way).
    assert!(
        matches!(
            attempts.last,
            Some(Ok(
                RotationOutcome::NotDue { .. } | RotationOutcome::UnderWay { .. }
            ))
        ),
        "{:?}",
        attempts.last
    );
    let attempts = first.next_attempt().await;
    assert_eq!(attempts.count, 2);
    assert!(attempts.last.unwrap().unwrap().rotated());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= period && elapsed < period + Duration::from_secs(1),
        "{elapsed:?}"
    );
    first.stop();
    second.stop();
}
