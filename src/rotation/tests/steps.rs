//! The four steps: what each changes, that re-runs change nothing more, and that steps for a
//! token that is not the rotation under way change nothing at all.

use super::*;

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
    assert_eq!(new_version.as_str(), &*token);
    assert_eq!(old_version.as_str(), "v1");
    let now = current(&s.store).await;
    assert!(s.db.accepts(&now));
    let (user, password) = login(&now);
    assert_eq!(user, "app");
    assert_ne!(password, FIRST);
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
    assert_eq!(s.db.password_of("app").as_deref(), Some(FIRST));
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
    // The hook ran once: a re-run of finish finds the rotation completed.
    assert_eq!(s.finished.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn late_set_and_test_for_an_old_token_change_nothing() {
    let s = setup(Strategy::SingleUser, "app");
    let old = "3f1e1c1a-0000-4000-8000-0000000000a1";
    let newer = "3f1e1c1a-0000-4000-8000-0000000000a2";
    for token in [old, newer] {
        for step in Step::ALL {
            let _ = s.rotator.step("db", token, step).await.unwrap();
        }
    }
    let applies = s.db.applies.load(Ordering::SeqCst);
    // `old` is the previous version now: a duplicate or late invocation for it must not put its
    // password back on the role.
    for step in [Step::Set, Step::Test, Step::Finish] {
        let err = s.rotator.step("db", old, step).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{step}: {err}");
    }
    let err = s.rotator.step("db", old, Step::Create).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    // With another rotation under way, the old token is a conflict, and that rotation is intact.
    let third = "3f1e1c1a-0000-4000-8000-0000000000a3";
    let _ = s.rotator.step("db", third, Step::Create).await.unwrap();
    for step in [Step::Set, Step::Test] {
        let err = s.rotator.step("db", old, step).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{step}: {err}");
        assert!(err.to_string().contains(third), "{err}");
    }
    assert_eq!(
        s.db.applies.load(Ordering::SeqCst),
        applies,
        "no ALTER ROLE"
    );
    assert!(s.store.is_current("db", newer).await.unwrap());
    assert!(
        s.db.accepts(&current(&s.store).await),
        "current still logs in"
    );
    assert_eq!(
        s.store.pending_token("db").await.unwrap().as_deref(),
        Some(third)
    );
}

#[tokio::test]
async fn a_rolled_back_token_created_again_reuses_its_password() {
    let s = setup(Strategy::SingleUser, "app");
    let token = "3f1e1c1a-0000-4000-8000-0000000000b1";
    let _ = s.rotator.step("db", token, Step::Create).await.unwrap();
    let first = s.store.read_pending("db", token).await.unwrap().unwrap();
    let _ = s.rotator.step("db", token, Step::Set).await.unwrap();
    *s.db.fail_verify.lock().unwrap() = true;
    let err = s.rotator.step("db", token, Step::Test).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RolledBack, "{err}");
    // The retried `test` after the rollback acts on nothing.
    let err = s.rotator.step("db", token, Step::Test).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    *s.db.fail_verify.lock().unwrap() = false;
    assert_eq!(
        s.rotator.step("db", token, Step::Create).await.unwrap(),
        StepOutcome::AlreadyDone
    );
    assert_eq!(
        s.store.read_pending("db", token).await.unwrap(),
        Some(first)
    );
    for step in [Step::Set, Step::Test, Step::Finish] {
        let _ = s.rotator.step("db", token, step).await.unwrap();
    }
    assert!(s.db.accepts(&current(&s.store).await));
}

#[tokio::test]
async fn a_write_during_the_rotation_fails_finish_and_rolls_the_database_back() {
    let s = setup(Strategy::SingleUser, "app");
    let token = "3f1e1c1a-0000-4000-8000-0000000000c1";
    for step in [Step::Create, Step::Set, Step::Test] {
        let _ = s.rotator.step("db", token, step).await.unwrap();
    }
    // An operator writes the secret (and not the database) while the rotation is under way.
    let operator = s.store.inner.set("db", secret("app", "operator-Pass-7"));
    let mut events = s.rotator.subscribe();
    let err = s.rotator.step("db", token, Step::Finish).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RolledBack, "{err}");
    let text = err.to_string();
    assert!(text.contains("finishSecret failed"), "{text}");
    assert!(text.contains("written during the rotation"), "{text}");
    assert!(
        text.contains(&format!("restored to current version {operator}")),
        "{text}"
    );
    assert_eq!(s.store.current("db").await.unwrap().version.id, operator);
    assert!(
        s.db.accepts(&current(&s.store).await),
        "the operator's one works"
    );
    assert_eq!(s.store.pending_token("db").await.unwrap(), None);
    assert_eq!(s.finished.load(Ordering::SeqCst), 0, "nothing announced");
    let seen: Vec<_> = drain(&mut events)
        .into_iter()
        .map(|e| (e.activity, e.outcome))
        .collect();
    assert_eq!(
        seen,
        [
            (AuditActivity::Rollback, AuditOutcome::Done),
            (AuditActivity::Step(Step::Finish), AuditOutcome::RolledBack)
        ]
    );
}

#[tokio::test]
async fn events_tell_every_step_and_never_a_password() {
    let s = setup(Strategy::SingleUser, "app");
    let mut events = s.rotator.subscribe();
    let _ = s.rotator.rotate("db").await.unwrap();
    let (_, password) = login(&current(&s.store).await);
    let mut seen = Vec::new();
    for event in drain(&mut events) {
        let printed = format!("{event:?}");
        assert!(
            !printed.contains(&password) && !printed.contains(FIRST),
            "{printed}"
        );
        seen.push((event.activity, event.outcome));
    }
    let expected: Vec<_> = Step::ALL
        .iter()
        .map(|s| (AuditActivity::Step(*s), AuditOutcome::Done))
        .chain([(AuditActivity::Rotation, AuditOutcome::Done)])
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_failed_rotation_closes_with_its_token_and_old_version() {
    let s = setup(Strategy::SingleUser, "app");
    *s.db.fail_verify.lock().unwrap() = true;
    let mut events = s.rotator.subscribe();
    let _ = s.rotator.rotate("db").await.unwrap_err();
    let events = drain(&mut events);
    let create = &events[0];
    let closing = events.last().unwrap();
    assert_eq!(closing.activity, AuditActivity::Rotation);
    assert_eq!(closing.outcome, AuditOutcome::RolledBack);
    assert!(closing.token.is_some());
    assert_eq!(closing.token, create.token);
    assert_eq!(
        closing.old_version.as_ref().map(VersionId::as_str),
        Some("v1")
    );
}

#[tokio::test]
async fn a_panicking_hook_does_not_undo_a_finished_rotation() {
    let s = setup_with(
        Strategy::SingleUser,
        "app",
        KnobStore::default(),
        |builder| {
            builder.on_finished(|_| async {
                if true {
                    panic!("the announcement failed");
                }
            })
        },
    );
    let mut events = s.rotator.subscribe();
    let outcome = s.rotator.rotate("db").await.unwrap();
    assert!(outcome.rotated(), "{outcome:?}");
    assert!(s.db.accepts(&current(&s.store).await));
    let seen: Vec<_> = drain(&mut events)
        .into_iter()
        .map(|e| (e.activity, e.outcome))
        .collect();
    assert_eq!(
        &seen[seen.len() - 2..],
        [
            (AuditActivity::Step(Step::Finish), AuditOutcome::Done),
            (AuditActivity::Rotation, AuditOutcome::Done)
        ]
    );
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
