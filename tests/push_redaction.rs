//! No secret value reaches a log line, an error, an event or `Debug` output on the push paths.
//!
//! Runs subscribers and publishers over real PostgreSQL and Redis servers with a TRACE-level
//! subscriber capturing everything: rotations announced and applied, payloads that carry a secret
//! by mistake, broker passwords (right and wrong), a broker going away. Then scans all captured
//! text for the values used.

mod common;
mod push_common;

use std::sync::Arc;
use std::time::Duration;

use common::capture::{Capture, assert_none_of, printed as printed_error};
use credswap::push::{
    Announcement, PgListener, PgPublisher, Publisher, PushEvent, RedisListener, RedisPublisher,
    Subscriber,
};
use credswap::testkit::{PostgresServer, RedisServer};
use credswap::{Error, MemoryProvider, SecretCache};
use push_common::EventLog;

const STORE_VALUES: &[&str] = &["Sentinel-Store-0001", "Sentinel-Store-0002"];
const PG_PASSWORD: &str = "Sentinel-PgPass-0003";
const REDIS_PASSWORD: &str = "Sentinel-RedisPass-0004";
const WRONG_PASSWORD: &str = "Sentinel-Wrong-0005";
const IN_PAYLOAD: &str = "Sentinel-InPayload-0006";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_in_push_logs_errors_events_or_debug_output() {
    let capture = Capture::install();
    let mut printed: Vec<String> = Vec::new();
    let record_err = |printed: &mut Vec<String>, err: &Error| printed.push(printed_error(err));

    let pg = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
        .expect("start PostgreSQL");
    // psql and the Redis test client block: keep them off the runtime's workers.
    tokio::task::block_in_place(|| {
        pg.execute(&format!(
            "CREATE ROLE listener LOGIN PASSWORD '{PG_PASSWORD}'"
        ))
    })
    .unwrap();
    let mut redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap()
        .expect("start Redis");
    let _ = tokio::task::block_in_place(|| {
        redis.command(&[
            "ACL",
            "SETUSER",
            "listener",
            "on",
            &format!(">{REDIS_PASSWORD}"),
            "~*",
            "&*",
            "+@all",
        ])
    })
    .unwrap();

    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("db", STORE_VALUES[0]);
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_secs(3600))
        .min_refresh_interval(Duration::ZERO)
        .build()
        .unwrap();
    let handle = cache.handle_raw("db").await.unwrap();

    let pg_config = |password: &str| {
        let mut config = tokio_postgres::Config::new();
        let _ = config
            .host("127.0.0.1")
            .port(pg.port())
            .user("listener")
            .password(password)
            .dbname("postgres");
        config
    };
    let mut admin = pg_config(pg.superuser_password());
    let _ = admin.user(PostgresServer::SUPERUSER);
    let redis_url =
        |password: &str| format!("redis://listener:{password}@127.0.0.1:{}", redis.port());

    let events = EventLog::default();
    let pg_listener = PgListener::new(pg_config(PG_PASSWORD), "credswap").unwrap();
    let redis_listener = RedisListener::open(&redis_url(REDIS_PASSWORD), "credswap").unwrap();
    printed.push(format!("{pg_listener:?} {redis_listener:?}"));
    let pg_subscriber = Subscriber::builder(pg_listener)
        .cache(cache.clone())
        .follow_up(Duration::from_millis(50), 3)
        .on_event(events.hook())
        .start()
        .unwrap();
    let redis_subscriber = Subscriber::builder(redis_listener)
        .cache(cache.clone())
        .follow_up(Duration::from_millis(50), 3)
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .on_event(events.hook())
        .start()
        .unwrap();
    let _ = events
        .wait_for(2, "connections", |e| {
            matches!(e, PushEvent::Connected { .. })
        })
        .await;

    // A rotation, announced on both brokers.
    let pg_publisher = PgPublisher::connect(&admin, "credswap").await.unwrap();
    let redis_publisher = RedisPublisher::open(&redis.url(), "credswap").unwrap();
    printed.push(format!("{pg_publisher:?} {redis_publisher:?}"));
    let version = store.set("db", STORE_VALUES[1]);
    let _ = pg_publisher.announce("db", &version).await.unwrap();
    let _ = redis_publisher.announce("db", &version).await.unwrap();
    assert!(
        common::eventually(Duration::from_secs(30), || handle.load().version().id
            == version)
        .await
    );

    // Payloads that carry a secret by mistake: malformed ones, and a valid one with an extra field.
    for payload in [
        IN_PAYLOAD.to_owned(),
        format!(r#"{{"password": "{IN_PAYLOAD}"}}"#),
        format!(r#"{{"id": ["{IN_PAYLOAD}"]}}"#),
        format!(r#"{{"id": "db", "version": 7, "password": "{IN_PAYLOAD}"}}"#),
        format!(r#"{{"id": "unwatched", "password": "{IN_PAYLOAD}"}}"#),
    ] {
        let _ = tokio::task::block_in_place(|| redis.command(&["PUBLISH", "credswap", &payload]))
            .unwrap();
        match Announcement::decode(payload.as_bytes()) {
            Ok(announcement) => printed.push(format!("{announcement:?}")),
            Err(err) => {
                printed.push(format!("{err} {err:?}"));
                record_err(&mut printed, &Error::from(err));
            }
        }
    }
    let _ = events
        .wait_for(4, "malformed payloads", |e| {
            matches!(e, PushEvent::Malformed { .. })
        })
        .await;
    let _ = events
        .wait_for(1, "an ignored announcement", |e| {
            matches!(e, PushEvent::Ignored { .. })
        })
        .await;

    // Wrong broker passwords: errors, retried connections.
    record_err(
        &mut printed,
        &PgPublisher::connect(&pg_config(WRONG_PASSWORD), "credswap")
            .await
            .unwrap_err(),
    );
    let refused =
        Subscriber::builder(RedisListener::open(&redis_url(WRONG_PASSWORD), "c").unwrap())
            .backoff(Duration::from_millis(20), Duration::from_millis(40))
            .on_event(events.hook())
            .start()
            .unwrap();
    let refused_pg = Subscriber::builder(PgListener::new(pg_config(WRONG_PASSWORD), "c").unwrap())
        .backoff(Duration::from_millis(20), Duration::from_millis(40))
        .on_event(events.hook())
        .start()
        .unwrap();
    let _ = events
        .wait_for(4, "refused logins", |e| {
            matches!(
                e,
                PushEvent::Reconnecting {
                    kind: credswap::ErrorKind::AccessDenied,
                    ..
                }
            )
        })
        .await;
    printed.push(format!("{refused:?} {refused_pg:?}"));
    refused.shutdown().await;
    refused_pg.shutdown().await;

    // The broker goes away under a subscriber and a publisher.
    tokio::task::block_in_place(|| redis.stop());
    let _ = events
        .wait_for(1, "a disconnect", |e| {
            matches!(e, PushEvent::Disconnected { .. })
        })
        .await;
    record_err(
        &mut printed,
        &redis_publisher.announce("db", &version).await.unwrap_err(),
    );
    tokio::task::block_in_place(|| redis.restart()).unwrap();

    printed.push(format!(
        "{pg_subscriber:?} {redis_subscriber:?} {:?} {:?}",
        pg_subscriber.stats(),
        redis_subscriber.stats()
    ));
    pg_subscriber.shutdown().await;
    redis_subscriber.shutdown().await;
    for event in &events.all() {
        printed.push(format!("{event:?} {event:#?}"));
    }

    let logs = capture.text();
    for expected in [
        "connected",
        "applied",
        "malformed",
        "ignored",
        "reconnecting",
        "disconnected",
        "announcement received",
        "credswap.push",
    ] {
        assert!(logs.contains(expected), "log lacks {expected}:\n{logs}");
    }
    let everything = format!("{logs}\n{}", printed.join("\n"));
    let secrets = [
        STORE_VALUES[0],
        STORE_VALUES[1],
        PG_PASSWORD,
        REDIS_PASSWORD,
        WRONG_PASSWORD,
        IN_PAYLOAD,
    ];
    assert_none_of(&secrets, &everything);
}
