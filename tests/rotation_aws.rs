//! The rotation engine with AWS Secrets Manager (a real moto server) and a real PostgreSQL.

mod common;
mod pg_common;
mod rotation_common;

use std::time::Duration;

use aws_sdk_secretsmanager::config::{Credentials, Region};
use credswap::rotation::Strategy;
use credswap::testkit::MotoServer;
use rotation_common::{Store, scenarios};

async fn aws() -> Store {
    let moto = tokio::task::spawn_blocking(MotoServer::start)
        .await
        .unwrap()
        .expect("start moto");
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(10))
                .build(),
        )
        .load()
        .await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    Store::Aws { moto, client }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_user_ten_rotations_under_load_without_caller_errors() {
    scenarios::ten_rotations_under_load(aws().await, Strategy::SingleUser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_users_ten_rotations_under_load_drain_the_old_role() {
    scenarios::ten_rotations_under_load(aws().await, Strategy::alternating_users()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_any_step_then_a_rerun_makes_exactly_one_password() {
    scenarios::crash_after_each_step_then_rerun(aws().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_rolls_back_single_user() {
    scenarios::failing_test_rolls_back(aws().await, Strategy::SingleUser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_rolls_back_alternating_users() {
    scenarios::failing_test_rolls_back(aws().await, Strategy::alternating_users()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_rotators_at_once_make_one_rotation() {
    scenarios::five_rotators_one_rotation(aws().await).await;
}
