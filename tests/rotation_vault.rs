//! The rotation engine with Vault KV v2 (a real OpenBao dev server) and a real PostgreSQL.

mod common;
mod pg_common;
mod rotation_common;

use credswap::provider::{VaultAuth, VaultSession};
use credswap::rotation::Strategy;
use credswap::testkit::OpenBaoServer;
use rotation_common::{Store, scenarios};

async fn vault() -> Store {
    let bao = tokio::task::spawn_blocking(OpenBaoServer::start)
        .await
        .unwrap()
        .expect("start OpenBao");
    let session = VaultSession::connect(
        bao.addr(),
        VaultAuth::Token(bao.root_token().to_owned().into()),
    )
    .await
    .expect("root login");
    Store::Vault { bao, session }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_user_ten_rotations_under_load_without_caller_errors() {
    scenarios::ten_rotations_under_load(vault().await, Strategy::SingleUser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_users_ten_rotations_under_load_drain_the_old_role() {
    scenarios::ten_rotations_under_load(vault().await, Strategy::alternating_users()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_any_step_then_a_rerun_makes_exactly_one_password() {
    scenarios::crash_after_each_step_then_rerun(vault().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_rolls_back_single_user() {
    scenarios::failing_test_rolls_back(vault().await, Strategy::SingleUser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_rolls_back_alternating_users() {
    scenarios::failing_test_rolls_back(vault().await, Strategy::alternating_users()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_rotators_at_once_make_one_rotation() {
    scenarios::five_rotators_one_rotation(vault().await).await;
}
