//! The rotation engine with Vault KV v2 (a real OpenBao dev server) and a real PostgreSQL.

mod common;
mod pg_common;
mod rotation_common;

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
