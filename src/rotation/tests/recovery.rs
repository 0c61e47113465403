//! When things go wrong: rollback, rotations left half done, locks, and two rotators at once.

use super::*;

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
async fn a_rollback_that_cannot_remove_the_pending_version_says_the_database_is_back() {
    let s = setup(Strategy::SingleUser, "app");
    let before = current(&s.store).await;
    *s.db.fail_verify.lock().unwrap() = true;
    s.store.fail_remove_pending.store(true, Ordering::SeqCst);
    let err = s.rotator.rotate("db").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    let text = err.to_string();
    assert!(text.contains("the database was restored"), "{text}");
    assert!(text.contains("REMOVING PENDING VERSION"), "{text}");
    assert!(!text.contains("may accept only"), "{text}");
    assert!(s.db.accepts(&before));
    // `abort` finishes the job.
    s.store.fail_remove_pending.store(false, Ordering::SeqCst);
    assert!(s.rotator.abort("db").await.unwrap().is_some());
    assert_eq!(s.store.pending_token("db").await.unwrap(), None);
}

#[tokio::test]
async fn a_held_lock_means_under_way_and_nothing_changes() {
    let s = setup(Strategy::SingleUser, "app");
    let _ = s.db.locks.lock().unwrap().insert("db".to_owned());
    let outcome = s.rotator.rotate("db").await.unwrap();
    assert_eq!(outcome, RotationOutcome::UnderWay { token: None });
    let err = s.rotator.step("db", "t", Step::Create).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(matches!(
        s.rotator.resume("db").await.unwrap(),
        Some(RotationOutcome::UnderWay { .. })
    ));
    assert_eq!(
        s.rotator.abort("db").await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(s.db.applies.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn rotate_finishes_a_rotation_whose_rotator_died() {
    let s = setup(Strategy::SingleUser, "app");
    // A rotator that crashed after `set` left its pending version (and a database on it).
    let token = "3f1e1c1a-0000-4000-8000-000000000002";
    let _ = s.rotator.step("db", token, Step::Create).await.unwrap();
    let _ = s.rotator.step("db", token, Step::Set).await.unwrap();
    let pending = s.store.read_pending("db", token).await.unwrap().unwrap();
    let err = s
        .rotator
        .step("db", "another-token", Step::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let outcome = s.rotator.rotate("db").await.unwrap();
    let RotationOutcome::Rotated {
        token: finished,
        old_version,
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(&*finished, token, "the orphan's own token");
    assert_eq!(old_version.as_str(), "v1");
    assert_eq!(current(&s.store).await, pending, "with its own password");
    assert!(s.db.accepts(&pending));
    assert_eq!(
        s.db.applies.load(Ordering::SeqCst),
        1,
        "set was not repeated"
    );
    assert_eq!(s.rotator.resume("db").await.unwrap(), None, "nothing left");
    assert_eq!(s.rotator.abort("db").await.unwrap(), None, "nothing left");
}

#[tokio::test]
async fn without_resume_orphaned_a_pending_version_is_left_to_resume() {
    let s = setup_with(Strategy::SingleUser, "app", KnobStore::default(), |b| {
        b.resume_orphaned(false)
    });
    let token = "3f1e1c1a-0000-4000-8000-000000000004";
    let _ = s.rotator.step("db", token, Step::Create).await.unwrap();
    let outcome = s.rotator.rotate("db").await.unwrap();
    assert_eq!(
        outcome,
        RotationOutcome::UnderWay {
            token: Some(token.into())
        }
    );
    let resumed = s.rotator.resume("db").await.unwrap().unwrap();
    assert!(matches!(&resumed, RotationOutcome::Rotated { token: t, .. } if &**t == token));
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
async fn two_spellings_of_one_secret_take_one_lock_and_events_use_one_name() {
    let store = KnobStore {
        case_insensitive: true,
        ..KnobStore::default()
    };
    let s = setup_with(Strategy::SingleUser, "app", store, |b| b);
    // A rotator working on "db" holds the lock; one asked for "DB" must see it.
    let _ = s.db.locks.lock().unwrap().insert("db".to_owned());
    let outcome = s.rotator.rotate("DB").await.unwrap();
    assert_eq!(outcome, RotationOutcome::UnderWay { token: None });
    let _ = s.db.locks.lock().unwrap().remove("db");
    let mut events = s.rotator.subscribe();
    assert!(s.rotator.rotate("DB").await.unwrap().rotated());
    for event in drain(&mut events) {
        assert_eq!(&*event.secret_id, "db", "{event:?}");
    }
}

#[tokio::test]
async fn a_pending_version_that_appears_before_create_writes_means_under_way() {
    let other = "3f1e1c1a-0000-4000-8000-000000000005";
    let store = KnobStore::default();
    *store.slip_in_before_write.lock().unwrap() =
        Some((other.to_owned(), secret("app", "someone-Else-1").into()));
    let s = setup_with(Strategy::SingleUser, "app", store, |b| b);
    let outcome = s.rotator.rotate("db").await.unwrap();
    assert_eq!(
        outcome,
        RotationOutcome::UnderWay {
            token: Some(other.into())
        }
    );
    assert_eq!(s.db.applies.load(Ordering::SeqCst), 0);
    assert!(s.db.accepts(&current(&s.store).await));
}
