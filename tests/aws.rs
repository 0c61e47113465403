//! The AWS Secrets Manager provider against a real moto server (the Secrets Manager API).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::primitives::Blob;
use credswap::provider::AwsSecretsManagerProvider;
use credswap::secrecy::{ExposeSecret, SecretString};
use credswap::testkit::MotoServer;
use credswap::{ErrorKind, SecretCache, SecretProvider, Selector, Stage};
use serde::Deserialize;

const GET: &str = "secretsmanager.GetSecretValue";
const DESCRIBE: &str = "secretsmanager.DescribeSecret";

#[derive(Deserialize)]
#[allow(dead_code)]
struct RdsSecret {
    engine: String,
    host: String,
    port: u16,
    dbname: String,
    username: String,
    password: SecretString,
}

fn rds_json(password: &str) -> String {
    format!(
        r#"{{"engine": "postgres", "host": "db.internal", "port": 5432, "dbname": "orders",
            "username": "app", "password": "{password}"}}"#
    )
}

async fn moto() -> (MotoServer, Client) {
    MotoServer::start_with_client().await.expect("start moto")
}

async fn create(client: &Client, name: &str, value: &str) -> String {
    client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_owned()
}

/// The four-phase rotation's stage moves, done from outside the crate.
async fn rotate(client: &Client, name: &str, value: &str) -> (String, String) {
    let describe = client
        .describe_secret()
        .secret_id(name)
        .send()
        .await
        .unwrap();
    let old = describe
        .version_ids_to_stages()
        .unwrap()
        .iter()
        .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
        .map(|(id, _)| id.clone())
        .unwrap();
    // createSecret: the new value, labelled AWSPENDING.
    let new = client
        .put_secret_value()
        .secret_id(name)
        .client_request_token(format!("rotation-token-{:032x}", fastrand::u128(..)))
        .secret_string(value)
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_owned();
    // (setSecret and testSecret would change and check the database here.)
    // finishSecret: AWSCURRENT moves to the new version; the old one becomes AWSPREVIOUS.
    client
        .update_secret_version_stage()
        .secret_id(name)
        .version_stage("AWSCURRENT")
        .move_to_version_id(&new)
        .remove_from_version_id(&old)
        .send()
        .await
        .unwrap();
    (old, new)
}

#[tokio::test]
async fn reads_an_rds_secret_typed_through_a_handle() {
    let (_moto, client) = moto().await;
    let version = create(&client, "prod/app/db", &rds_json("first-pass")).await;
    let cache = SecretCache::builder(Arc::new(AwsSecretsManagerProvider::new(client)))
        .build()
        .unwrap();
    let handle = cache.handle::<RdsSecret>("prod/app/db").await.unwrap();
    let snapshot = handle.load();
    assert_eq!(snapshot.current().username, "app");
    assert_eq!(snapshot.current().port, 5432);
    assert_eq!(snapshot.current().password.expose_secret(), "first-pass");
    assert_eq!(snapshot.version().id.as_str(), version);
    assert!(snapshot.version().has_stage(&Stage::Current));
    assert!(snapshot.version().created_at.is_some());
}

#[tokio::test]
async fn an_aws_rotation_swaps_the_handle_and_previous_is_awsprevious() {
    let (_moto, client) = moto().await;
    let _ = create(&client, "prod/app/db", &rds_json("pass-one")).await;
    let provider = Arc::new(AwsSecretsManagerProvider::new(client.clone()));
    let cache = SecretCache::builder(provider.clone())
        .ttl(Duration::from_millis(400))
        .grace_period(Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = cache.handle::<RdsSecret>("prod/app/db").await.unwrap();

    let (old, new) = rotate(&client, "prod/app/db", &rds_json("pass-two")).await;
    // Within one refresh (the refresh point is at most 90 % of the TTL).
    let snapshot = tokio::time::timeout(Duration::from_secs(5), handle.changed())
        .await
        .expect("the handle swaps within a refresh");
    assert_eq!(snapshot.version().id.as_str(), new);
    assert_eq!(snapshot.current().password.expose_secret(), "pass-two");
    assert_eq!(snapshot.previous_version().unwrap().id.as_str(), old);

    // previous is the real AWSPREVIOUS.
    let previous = provider
        .fetch("prod/app/db", &Selector::Stage(Stage::Previous))
        .await
        .unwrap();
    assert_eq!(previous.version.id.as_str(), old);
    assert!(previous.version.has_stage(&Stage::Previous));
    let from_store: RdsSecret = serde_json::from_slice(previous.value.expose_secret()).unwrap();
    assert_eq!(
        from_store.password.expose_secret(),
        snapshot.previous().unwrap().password.expose_secret()
    );
    // Dual-read during grace.
    assert!(handle.accepts(|s| s.password.expose_secret() == "pass-one"));
    assert!(handle.accepts(|s| s.password.expose_secret() == "pass-two"));
    // A pending version can be read by stage, and by id.
    let by_id = provider
        .fetch("prod/app/db", &Selector::Version(new.as_str().into()))
        .await
        .unwrap();
    assert_eq!(by_id.version.id.as_str(), new);
}

#[tokio::test]
async fn an_unchanged_secret_costs_describe_calls_only() {
    let (moto, client) = moto().await;
    let _ = create(&client, "prod/app/api-key", "k-1").await;
    moto.reset_request_log();
    let cache = SecretCache::builder(Arc::new(AwsSecretsManagerProvider::new(client)))
        .ttl(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut reads = 0;
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let value = cache.get("prod/app/api-key").await.unwrap();
        assert_eq!(value.value.expose_str(), Some("k-1"));
        reads += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (gets, describes) = (moto.request_count(GET), moto.request_count(DESCRIBE));
    assert_eq!(gets, 1, "one GetSecretValue for {reads} reads");
    assert!(
        describes >= 8,
        "{describes} DescribeSecret calls across ~15 TTLs"
    );
    assert!(
        describes <= 20,
        "{describes} DescribeSecret calls: more than one per TTL"
    );
    assert_eq!(cache.stats().fetches, 1);
}

#[tokio::test]
async fn missing_deleted_binary_and_malformed_secrets() {
    let (_moto, client) = moto().await;
    let provider = Arc::new(AwsSecretsManagerProvider::new(client.clone()));
    let cache = SecretCache::builder(provider.clone()).build().unwrap();

    let err = cache.get("does/not/exist").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.id(), Some("does/not/exist"));
    assert!(
        err.to_string().contains("ResourceNotFoundException"),
        "{err}"
    );

    let _ = create(&client, "to-delete", "gone-value").await;
    client
        .delete_secret()
        .secret_id("to-delete")
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();
    let err = cache.get("to-delete").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
    assert!(!err.is_retryable());
    let err = provider
        .probe("to-delete", &Selector::Current)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(err.to_string().contains("scheduled for deletion"));

    client
        .create_secret()
        .name("tls/key")
        .secret_binary(Blob::new(vec![0u8, 159, 146, 150, 255]))
        .send()
        .await
        .unwrap();
    let raw = cache.handle_raw("tls/key").await.unwrap();
    assert!(!raw.load().current().is_text());
    assert_eq!(
        raw.load().current().expose_secret(),
        &[0u8, 159, 146, 150, 255]
    );

    let _ = create(&client, "not-json", "plain text, not JSON").await;
    let err = cache.handle::<RdsSecret>("not-json").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert!(!err.to_string().contains("plain text"));

    let err = provider
        .fetch("not-json", &Selector::Version("no-such-version".into()))
        .await
        .unwrap_err();
    assert_ne!(err.kind(), ErrorKind::Transient, "{err}");

    // No value in any of it.
    for secret in ["gone-value", "plain text"] {
        assert!(!format!("{err:?} {raw:?}").contains(secret));
    }
}

#[tokio::test]
async fn a_killed_server_is_invisible_within_max_stale_then_a_transient_error() {
    let (mut moto, client) = moto().await;
    let _ = create(&client, "prod/app/db", &rds_json("stale-ok")).await;
    let cache = SecretCache::builder(Arc::new(AwsSecretsManagerProvider::new(client)))
        .ttl(Duration::from_millis(300))
        .max_stale(Duration::from_millis(1500))
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .build()
        .unwrap();
    let handle = cache.handle::<RdsSecret>("prod/app/db").await.unwrap();
    let fetched = tokio::time::Instant::now();
    moto.kill();
    let killed = tokio::time::Instant::now();

    // Served stale until TTL + max_stale (1.8 s) after the store last answered, which was between
    // `fetched` and `killed`: reads until 1.4 s after the first are inside, 2.1 s after the second
    // outside, however slow the kill was.
    while fetched.elapsed() < Duration::from_millis(1400) {
        let value = cache.get("prod/app/db").await.expect("last-known-good");
        let secret: RdsSecret = serde_json::from_slice(value.value.expose_secret()).unwrap();
        assert_eq!(secret.password.expose_secret(), "stale-ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cache.stats().stale_serves > 0);
    // The handle keeps its value throughout.
    assert_eq!(handle.load().current().password.expose_secret(), "stale-ok");

    tokio::time::sleep_until(killed + Duration::from_millis(2100)).await;
    let err = cache.get("prod/app/db").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.is_retryable());
    assert!(!format!("{err} {err:?}").contains("stale-ok"));
}

#[tokio::test]
async fn a_replica_started_after_a_rotation_accepts_awsprevious_within_the_grace_period() {
    let (_moto, client) = moto().await;
    let _ = create(&client, "prod/app/api", &rds_json("key-one")).await;
    let (old, new) = rotate(&client, "prod/app/api", &rds_json("key-two")).await;
    // A new process: its cache has never seen version one.
    let cache = SecretCache::builder(Arc::new(AwsSecretsManagerProvider::new(client)))
        .grace_period(Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = cache.handle::<RdsSecret>("prod/app/api").await.unwrap();
    let snapshot = handle.load();
    assert_eq!(snapshot.version().id.as_str(), new);
    assert_eq!(snapshot.previous_version().unwrap().id.as_str(), old);
    assert!(handle.accepts(|s| s.password.expose_secret() == "key-one"));
    assert!(handle.accepts(|s| s.password.expose_secret() == "key-two"));
}
