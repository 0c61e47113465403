//! Push invalidation over PostgreSQL `LISTEN`/`NOTIFY`, against a real server from the test kit.
//! Latencies are printed (`--nocapture`), never asserted; counts are.

use crate::push_common;

use std::sync::Arc;

use async_trait::async_trait;
use credswap::push::{Channel, MAX_ANNOUNCEMENT_BYTES, PgListener, PgPublisher, Publisher};
use credswap::testkit::PostgresServer;
use push_common::{Broker, CHANNEL};

/// Subscribers log in as `listener`; publishers and the test as the superuser.
struct Postgres {
    server: PostgresServer,
}

impl Postgres {
    async fn start() -> Self {
        let server = tokio::task::spawn_blocking(PostgresServer::start)
            .await
            .unwrap()
            .expect("start PostgreSQL");
        // psql blocks: keep it off the runtime's workers.
        let server = tokio::task::spawn_blocking(move || {
            server
                .execute("CREATE ROLE listener LOGIN PASSWORD 'listen-pw'")
                .map(|_| server)
        })
        .await
        .unwrap()
        .unwrap();
        Postgres { server }
    }

    fn config(&self, user: &str, password: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        let _ = config
            .host("127.0.0.1")
            .port(self.server.port())
            .user(user)
            .password(password)
            .dbname("postgres");
        config
    }

    fn admin_config(&self) -> tokio_postgres::Config {
        self.config(PostgresServer::SUPERUSER, self.server.superuser_password())
    }

    async fn admin(&self) -> tokio_postgres::Client {
        let (client, connection) = self
            .admin_config()
            .connect(tokio_postgres::NoTls)
            .await
            .expect("superuser connects");
        let _task = tokio::spawn(connection);
        client
    }

    async fn count(&self, sql: &str) -> usize {
        let n: i64 = self.admin().await.query_one(sql, &[]).await.unwrap().get(0);
        n as usize
    }
}

#[async_trait]
impl Broker for Postgres {
    fn listener(&self) -> Arc<dyn Channel> {
        Arc::new(PgListener::new(self.config("listener", "listen-pw"), CHANNEL).unwrap())
    }

    async fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(
            PgPublisher::connect(&self.admin_config(), CHANNEL)
                .await
                .unwrap(),
        )
    }

    async fn publish_raw(&self, payload: &str) {
        let _ = self
            .admin()
            .await
            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await
            .unwrap();
    }

    async fn publish_burst(&self, payloads: &[String]) {
        // One statement, one transaction: PostgreSQL delivers them all at its commit.
        let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
        let _ = self
            .admin()
            .await
            .execute(
                "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload",
                &[&CHANNEL, &payloads],
            )
            .await
            .unwrap();
    }

    async fn kill_listeners(&self) -> usize {
        self.count(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'credswap-push'",
        )
        .await
    }

    async fn listeners(&self) -> usize {
        self.count("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'credswap-push'")
            .await
    }

    async fn lock_out_listeners(&self) {
        self.admin()
            .await
            .batch_execute(
                "ALTER ROLE listener NOLOGIN;
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'listener';",
            )
            .await
            .unwrap();
    }

    async fn let_in_listeners(&self) {
        self.admin()
            .await
            .batch_execute("ALTER ROLE listener LOGIN")
            .await
            .unwrap();
    }

    fn stop(&mut self) {
        self.server.stop();
    }

    fn start(&mut self) {
        self.server.restart().expect("restart PostgreSQL");
    }

    fn max_payload(&self) -> usize {
        MAX_ANNOUNCEMENT_BYTES
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_caches_follow_one_announcement() {
    let broker = Postgres::start().await;
    push_common::fifty_caches_follow_one_announcement(&broker, "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_reconnects_and_catches_up() {
    let broker = Postgres::start().await;
    push_common::a_killed_listener_reconnects_and_catches_up(&broker, "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_is_survived() {
    let mut broker = Postgres::start().await;
    push_common::a_broker_restart_is_survived(&mut broker, "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_and_garbage_cost_bounded_store_calls() {
    let broker = Postgres::start().await;
    push_common::floods_and_garbage_cost_bounded_store_calls(&broker, "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_subscriber_costs_nothing() {
    let broker = Postgres::start().await;
    push_common::a_stopped_subscriber_costs_nothing(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_postgres_cannot_carry_is_refused_before_it_is_sent() {
    let broker = Postgres::start().await;
    let publisher = broker.publisher().await;
    // Our limit is under PostgreSQL's: an announcement we build always fits a NOTIFY, signed or
    // not (room for the signature is kept).
    let longest_id = "i".repeat(MAX_ANNOUNCEMENT_BYTES - 140);
    let version = credswap::VersionId::new("v1");
    let _ = publisher.announce(&longest_id, &version).await.unwrap();
    let signed = credswap::push::SignedPublisher::new(
        broker.publisher().await,
        credswap::push::AnnouncementKey::fixed(credswap::SecretValue::from(
            "a key of at least sixteen bytes",
        )),
    );
    let _ = signed.announce(&longest_id, &version).await.unwrap();
    let err = publisher
        .announce(&"i".repeat(MAX_ANNOUNCEMENT_BYTES), &version)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), credswap::ErrorKind::InvalidRequest);
    // A bad channel name is a configuration error, before any connection.
    let err = PgListener::new(tokio_postgres::Config::new(), "").unwrap_err();
    assert_eq!(err.kind(), credswap::ErrorKind::Config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_name_that_needs_quoting_is_published_and_received() {
    let broker = Postgres::start().await;
    // Upper case and a double quote: `LISTEN` must quote it as `pg_notify` takes it, verbatim.
    let channel = r#"Rotations."Prod"-EU"#;
    let store = Arc::new(credswap::MemoryProvider::new());
    let _ = store.set("db", "one");
    let cache = credswap::SecretCache::builder(store.clone())
        .ttl(std::time::Duration::from_secs(3600))
        .min_refresh_interval(std::time::Duration::from_millis(100))
        .build()
        .unwrap();
    let handle = cache.handle_raw("db").await.unwrap();
    let listener = PgListener::new(broker.config("listener", "listen-pw"), channel).unwrap();
    let log = push_common::EventLog::default();
    let subscriber = push_common::subscriber(
        Arc::new(listener),
        &cache,
        &log,
        std::time::Duration::from_millis(100),
    );
    let _ = log
        .wait_for(1, "a confirming re-check", push_common::is_confirming)
        .await;
    // Through the TLS-generic constructor (the test server speaks plain TCP on loopback).
    let publisher =
        PgPublisher::connect_with_tls(&broker.admin_config(), channel, tokio_postgres::NoTls)
            .await
            .unwrap();
    let version = store.set("db", "two");
    let _ = publisher.announce("db", &version).await.unwrap();
    let _ = log
        .wait_for(
            1,
            "the announcement applied",
            |e| matches!(e, credswap::push::PushEvent::Applied { version: v, .. } if *v == version),
        )
        .await;
    assert_eq!(handle.load().version().id, version);
    // Another channel that differs only in case hears nothing.
    let quiet = PgListener::new(
        broker.config("listener", "listen-pw"),
        "rotations.\"prod\"-eu",
    )
    .unwrap();
    let mut inbox = quiet.listen().await.unwrap();
    let _ = publisher.announce("db", &version).await.unwrap();
    let heard = tokio::time::timeout(std::time::Duration::from_millis(500), inbox.recv()).await;
    assert!(heard.is_err(), "a channel of another case heard it");
    subscriber.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junk_flood_costs_no_reconnect_and_no_store_call() {
    let broker = Postgres::start().await;
    push_common::a_junk_flood_costs_no_reconnect_and_no_store_call(&broker, "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_announcements_apply_and_forged_ones_do_not() {
    let broker = Postgres::start().await;
    push_common::signed_announcements_apply_and_forged_ones_do_not(&broker, "postgres").await;
}
