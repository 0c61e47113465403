//! The rotation engine with Vault KV v2 (a real OpenBao dev server) and a real PostgreSQL.

use crate::rotation_common;

use credswap::rotation::Strategy;
use rotation_common::{Store, edges, recovery, scenarios};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_user_ten_rotations_under_load_without_caller_errors() {
    scenarios::ten_rotations_under_load(Store::vault().await, Strategy::SingleUser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_users_ten_rotations_under_load_drain_the_old_role() {
    scenarios::ten_rotations_under_load(Store::vault().await, Strategy::alternating_users()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_user_a_crash_after_any_step_then_a_rerun_makes_exactly_one_password() {
    recovery::crash_after_each_step_then_rerun(Store::vault().await, Strategy::SingleUser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_users_a_crash_after_any_step_then_a_rerun_makes_exactly_one_password() {
    recovery::crash_after_each_step_then_rerun(Store::vault().await, Strategy::alternating_users())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_steps_of_an_old_rotation_change_nothing() {
    recovery::late_steps_of_an_old_rotation_change_nothing(Store::vault().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_the_rotation_fails_finish_and_is_kept() {
    recovery::a_write_during_the_rotation_is_kept(Store::vault().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_rollback_restores_the_previous_version() {
    recovery::alternating_rollback_restores_the_previous_version(Store::vault().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_rolls_back_single_user() {
    scenarios::failing_test_rolls_back(Store::vault().await, Strategy::SingleUser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_rolls_back_alternating_users() {
    scenarios::failing_test_rolls_back(Store::vault().await, Strategy::alternating_users()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_rotators_at_once_make_one_rotation() {
    scenarios::five_rotators_one_rotation(Store::vault().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_rotation_runs_its_hooks_exactly_once_across_lost_answers() {
    edges::a_finished_rotation_runs_its_hooks_exactly_once(Store::vault().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_call_that_never_answers_gives_up_and_frees_the_lock() {
    edges::a_store_call_that_never_answers_gives_up_and_frees_the_lock(Store::vault().await).await;
}

/// A token whose policy may read and write KV but not delete: the engine cannot remove its
/// pending slot after a rotation. The slot is marked completed instead, and the next rotations
/// run (never `UnderWay` for ever), each with its hook run exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_without_delete_does_not_wedge_rotations() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use credswap::provider::{VaultAuth, VaultSession};
    use credswap::rotation::{RotationOutcome, Rotator, VaultKvRotationStore};
    use rotation_common::{INITIAL, create_role, login_of, logs_in, postgres, rds_json};

    let store = Store::vault().await;
    let Store::Vault { bao, .. } = &store else {
        unreachable!()
    };
    let policy = bao.work_dir().join("no-delete.hcl");
    std::fs::write(
        &policy,
        r#"path "secret/data/*" { capabilities = ["create", "read", "update", "list"] }
path "secret/metadata/*" { capabilities = ["read", "list"] }
"#,
    )
    .unwrap();
    let _ = bao
        .cli(&[
            "policy",
            "write",
            "no-delete",
            &policy.display().to_string(),
        ])
        .unwrap();
    let token = bao
        .cli(&["token", "create", "-policy=no-delete", "-field=token"])
        .unwrap();
    let session =
        VaultSession::connect(bao.addr(), VaultAuth::Token(token.trim().to_owned().into()))
            .await
            .unwrap();

    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    create_role(&admin, "no_delete_app", INITIAL).await;
    let id = store.secret_id("no_delete_app");
    store
        .create(&id, &rds_json(port, "no_delete_app", INITIAL))
        .await;
    let finished = Arc::new(AtomicUsize::new(0));
    let rotator = {
        let finished = Arc::clone(&finished);
        Rotator::builder(
            Arc::new(VaultKvRotationStore::new(session, "secret")),
            Arc::new(rotation_common::target(&pg)),
        )
        .on_finished(move |_| {
            let finished = Arc::clone(&finished);
            async move {
                let _ = finished.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .unwrap()
    };
    let mut tokens = Vec::new();
    for round in 1..=3 {
        let outcome = rotator.rotate(&id).await.unwrap();
        let RotationOutcome::Rotated { token, .. } = outcome else {
            panic!("round {round}: {outcome:?}");
        };
        tokens.push(token);
        assert_eq!(
            finished.load(Ordering::SeqCst),
            round,
            "one hook run per rotation"
        );
        assert_eq!(
            rotator.resume(&id).await.unwrap(),
            None,
            "nothing left to resume"
        );
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 3);
    // The policy did refuse the delete: the last rotation's slot is still there, marked done.
    let slot = bao
        .cli(&[
            "kv",
            "get",
            "-format=json",
            &format!("secret/credswap-pending/{id}"),
        ])
        .unwrap();
    let slot: serde_json::Value = serde_json::from_str(&slot).unwrap();
    assert_eq!(slot["data"]["data"]["completed"], true, "{slot}");
    assert_eq!(slot["data"]["data"]["token"], *tokens[2], "{slot}");
    let (user, password) = login_of(&store.rotation_store().current(&id).await.unwrap().value);
    assert!(logs_in(port, &user, &password).await);
    assert_eq!(finished.load(Ordering::SeqCst), 3);
}

/// Ids that would change the path they are spliced into are refused, by name, before any
/// request: `credswap-pending/../x` must not alias the real secret `x`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_change_the_path_are_refused_by_reader_and_rotator() {
    use credswap::{ErrorKind, Selector};

    let store = Store::vault().await;
    store
        .create("x", r#"{"username": "x", "password": "Never-Shown-0001"}"#)
        .await;
    let (pg, _admin) = rotation_common::postgres(&[]).await;
    let rotator = rotation_common::rotator(
        store.rotation_store(),
        &pg,
        credswap::rotation::Strategy::SingleUser,
        false,
    );
    for id in [
        "credswap-pending/../x",
        "a/./b",
        "a//b",
        "x?version=1",
        "x#y",
        "",
    ] {
        let read = store
            .provider()
            .fetch(id, &Selector::Current)
            .await
            .unwrap_err();
        assert_eq!(read.kind(), ErrorKind::InvalidRequest, "{id:?}: {read}");
        assert!(read.to_string().contains(&format!("`{id}`")), "{read}");
        let rotated = rotator.rotate(id).await.unwrap_err();
        assert_eq!(
            rotated.kind(),
            ErrorKind::InvalidRequest,
            "{id:?}: {rotated}"
        );
    }
    // The real secret is untouched and readable by its own name.
    let value = store
        .provider()
        .fetch("x", &Selector::Current)
        .await
        .unwrap();
    assert!(
        value
            .value
            .expose_str()
            .unwrap()
            .contains("Never-Shown-0001")
    );
}
