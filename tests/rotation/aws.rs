//! The rotation engine with AWS Secrets Manager (a real moto server) and a real PostgreSQL.

use crate::{rotation_common, rotation_function};

use credswap::rotation::Strategy;
use rotation_common::{Store, edges, recovery, scenarios};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_user_ten_rotations_under_load_without_caller_errors() {
    scenarios::ten_rotations_under_load(Store::aws().await, Strategy::SingleUser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_users_ten_rotations_under_load_drain_the_old_role() {
    scenarios::ten_rotations_under_load(Store::aws().await, Strategy::alternating_users()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_user_a_crash_after_any_step_then_a_rerun_makes_exactly_one_password() {
    recovery::crash_after_each_step_then_rerun(Store::aws().await, Strategy::SingleUser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_users_a_crash_after_any_step_then_a_rerun_makes_exactly_one_password() {
    recovery::crash_after_each_step_then_rerun(Store::aws().await, Strategy::alternating_users())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_steps_of_an_old_rotation_change_nothing() {
    recovery::late_steps_of_an_old_rotation_change_nothing(Store::aws().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_the_rotation_fails_finish_and_is_kept() {
    recovery::a_write_during_the_rotation_is_kept(Store::aws().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_rollback_restores_the_previous_version() {
    recovery::alternating_rollback_restores_the_previous_version(Store::aws().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_rolls_back_single_user() {
    scenarios::failing_test_rolls_back(Store::aws().await, Strategy::SingleUser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_rolls_back_alternating_users() {
    scenarios::failing_test_rolls_back(Store::aws().await, Strategy::alternating_users()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_rotators_at_once_make_one_rotation() {
    scenarios::five_rotators_one_rotation(Store::aws().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_and_the_arn_of_a_secret_take_one_lock() {
    recovery::name_and_arn_take_one_lock(Store::aws().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_rotation_runs_its_hooks_exactly_once_across_lost_answers() {
    edges::a_finished_rotation_runs_its_hooks_exactly_once(Store::aws().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_call_that_never_answers_gives_up_and_frees_the_lock() {
    edges::a_store_call_that_never_answers_gives_up_and_frees_the_lock(Store::aws().await).await;
}

/// `RotateSecret` with a rotation function attached: moto stages `AWSPENDING` on the request
/// token before "invoking" the function, as AWS does (shape A: no value, `rotate_immediately`;
/// shape B: a copy of the current value, moto's way when not rotating at once). The example's
/// function body, driven with the four events and every one delivered twice, rotates for real:
/// the old password is refused, no mark is left, and later rotations work.
async fn a_rotation_function_body_rotates_what_rotate_secret_staged(rotate_immediately: bool) {
    use credswap::rotation::Step;
    use rotation_common::{INITIAL, create_role, login_of, logs_in, postgres, rds_json};
    use rotation_function::{RotationRequest, handle};

    let store = Store::aws().await;
    let Store::Aws { moto, client } = &store else {
        unreachable!()
    };
    let (pg, admin) = postgres(&[]).await;
    let port = pg.port();
    create_role(&admin, "fn_app", INITIAL).await;
    let id = store.secret_id("fn_app");
    store.create(&id, &rds_json(port, "fn_app", INITIAL)).await;
    let arn = client
        .describe_secret()
        .secret_id(&id)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned();
    let original = store
        .rotation_store()
        .current(&id)
        .await
        .unwrap()
        .version
        .id;

    let function = moto.rotation_function("fn-rotation").unwrap();
    let token = credswap::rotation::new_token().unwrap();
    let _ = client
        .rotate_secret()
        .secret_id(&arn)
        .client_request_token(&token)
        .rotation_lambda_arn(function)
        .rotate_immediately(rotate_immediately)
        .send()
        .await
        .unwrap();
    // The shape this test is about.
    let labelled = rotation_common::recovery::aws_labels(&store, &id).await;
    assert_eq!(labelled("AWSPENDING"), vec![token.clone()]);
    let staged = client
        .get_secret_value()
        .secret_id(&arn)
        .version_id(&token)
        .version_stage("AWSPENDING")
        .send()
        .await;
    if rotate_immediately {
        assert!(staged.is_err(), "shape A stages no value: {staged:?}");
    } else {
        let copied = staged.unwrap();
        assert_eq!(
            copied.secret_string(),
            Some(rds_json(port, "fn_app", INITIAL).as_str()),
            "shape B stages a copy of the current value"
        );
    }

    let mut endpoint = tokio_postgres::Config::new();
    let _ = endpoint.host("127.0.0.1").port(port).dbname("postgres");
    let rotator = rotation_function::rotator(client.clone(), endpoint).unwrap();
    for step in Step::ALL {
        for delivery in 0..2 {
            let request = RotationRequest {
                secret_id: arn.clone(),
                client_request_token: token.clone(),
                step: step.as_aws_str().to_owned(),
            };
            let _ = handle(&rotator, &request)
                .await
                .unwrap_or_else(|e| panic!("{step} (delivery {delivery}): {e}"));
        }
    }

    // The password changed, in the database and the store, and nothing else is left.
    let current = store.rotation_store().current(&id).await.unwrap();
    assert_eq!(
        current.version.id.as_str(),
        token,
        "the staged version is current"
    );
    let (user, password) = login_of(&current.value);
    assert_eq!(user, "fn_app");
    assert_ne!(
        password, INITIAL,
        "a rotation never reports the old password"
    );
    assert!(logs_in(port, "fn_app", &password).await);
    assert!(
        !logs_in(port, "fn_app", INITIAL).await,
        "the old password is refused"
    );
    let labelled = rotation_common::recovery::aws_labels(&store, &id).await;
    assert_eq!(labelled("AWSCURRENT"), vec![token.clone()]);
    assert_eq!(labelled("AWSPREVIOUS"), vec![original.as_str().to_owned()]);
    assert!(labelled("AWSPENDING").is_empty());
    assert_eq!(rotation_common::recovery::base_labels(&store, &id).await, 0);
    // The function's next invocation, or the engine's own rotation, works.
    let next = rotator.rotate(&arn).await.unwrap();
    assert!(next.rotated(), "{next:?}");
    let (_, newest) = login_of(&store.rotation_store().current(&id).await.unwrap().value);
    assert!(logs_in(port, "fn_app", &newest).await);
    assert!(!logs_in(port, "fn_app", &password).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_function_body_fills_a_version_rotate_secret_staged_empty() {
    a_rotation_function_body_rotates_what_rotate_secret_staged(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_function_body_replaces_a_staged_copy_of_the_current_value() {
    a_rotation_function_body_rotates_what_rotate_secret_staged(false).await;
}
