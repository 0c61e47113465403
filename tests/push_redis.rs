//! Push invalidation over Redis pub/sub, against a real `redis-server` from the test kit.
//! Latencies are printed (`--nocapture`), never asserted; counts are.

mod common;
mod push_common;

use std::sync::Arc;

use async_trait::async_trait;
use credswap::push::{Channel, Publisher, RedisListener, RedisPublisher};
use credswap::testkit::RedisServer;
use push_common::{Broker, CHANNEL};

/// Subscribers log in as the ACL user `listener`; publishers and the test as the default user.
struct Redis {
    server: RedisServer,
}

impl Redis {
    async fn start() -> Self {
        let server = tokio::task::spawn_blocking(RedisServer::start)
            .await
            .unwrap()
            .expect("start Redis");
        let redis = Redis { server };
        redis.create_listener_user();
        redis
    }

    fn create_listener_user(&self) {
        let _ = self.command(&[
            "ACL",
            "SETUSER",
            "listener",
            "on",
            ">listen-pw",
            "~*",
            "&*",
            "+@all",
        ]);
    }

    fn command(&self, args: &[&str]) -> String {
        tokio::task::block_in_place(|| self.server.command(args))
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }
}

#[async_trait]
impl Broker for Redis {
    fn listener(&self) -> Arc<dyn Channel> {
        let url = format!(
            "redis://listener:listen-pw@127.0.0.1:{}",
            self.server.port()
        );
        Arc::new(RedisListener::open(&url, CHANNEL).unwrap())
    }

    async fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(RedisPublisher::open(&self.server.url(), CHANNEL).unwrap())
    }

    async fn publish_raw(&self, payload: &str) {
        let _ = self.command(&["PUBLISH", CHANNEL, payload]);
    }

    async fn kill_listeners(&self) -> usize {
        self.command(&["CLIENT", "KILL", "TYPE", "pubsub"])
            .parse()
            .unwrap()
    }

    async fn listeners(&self) -> usize {
        // "channel\ncount"
        let reply = self.command(&["PUBSUB", "NUMSUB", CHANNEL]);
        reply.lines().last().unwrap().parse().unwrap()
    }

    async fn lock_out_listeners(&self) {
        let _ = self.command(&["ACL", "SETUSER", "listener", "off"]);
        let _ = self.command(&["CLIENT", "KILL", "USER", "listener"]);
    }

    async fn let_in_listeners(&self) {
        let _ = self.command(&["ACL", "SETUSER", "listener", "on"]);
    }

    fn stop(&mut self) {
        self.server.stop();
    }

    fn start(&mut self) {
        self.server.restart().expect("restart Redis");
        // Nothing is persisted: the ACL user is gone with the old process.
        self.create_listener_user();
    }

    fn max_payload(&self) -> usize {
        512 * 1024 * 1024
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_caches_follow_one_announcement() {
    let broker = Redis::start().await;
    push_common::fifty_caches_follow_one_announcement(&broker, "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_reconnects_and_catches_up() {
    let broker = Redis::start().await;
    push_common::a_killed_listener_reconnects_and_catches_up(&broker, "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_is_survived() {
    let mut broker = Redis::start().await;
    push_common::a_broker_restart_is_survived(&mut broker, "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_and_garbage_cost_bounded_store_calls() {
    let broker = Redis::start().await;
    push_common::floods_and_garbage_cost_bounded_store_calls(&broker, "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_subscriber_costs_nothing() {
    let broker = Redis::start().await;
    push_common::a_stopped_subscriber_costs_nothing(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_access_denied_and_retried() {
    let broker = Redis::start().await;
    let url = format!("redis://listener:wrong@127.0.0.1:{}", broker.server.port());
    let log = push_common::EventLog::default();
    let subscriber =
        credswap::push::Subscriber::builder(RedisListener::open(&url, CHANNEL).unwrap())
            .backoff(
                std::time::Duration::from_millis(20),
                std::time::Duration::from_millis(40),
            )
            .on_event(log.hook())
            .start()
            .unwrap();
    let _ = log
        .wait_for(3, "refused attempts", |e| {
            matches!(
                e,
                credswap::push::PushEvent::Reconnecting {
                    kind: credswap::ErrorKind::AccessDenied,
                    ..
                }
            )
        })
        .await;
    assert!(!subscriber.is_connected());
    subscriber.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_the_subscriber_cannot_keep_up_with_ends_the_connection_not_the_memory() {
    let broker = Redis::start().await;
    let listener = broker.listener();
    let mut inbox = listener.listen().await.unwrap();
    let publisher = broker.publisher().await;
    // Nobody reads while 5,000 announcements are sent: more than the inbox holds. Once it is
    // full, the connection ends, and later ones reach nobody.
    let version = credswap::VersionId::new("v1");
    let mut delivered = 0;
    for _ in 0..5_000 {
        let published = publisher.announce("db", &version).await.unwrap();
        delivered += published.receivers.unwrap_or(0);
    }
    assert!(delivered > 4_096, "{delivered}");
    let mut received = 0usize;
    let error = loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(30), inbox.recv())
            .await
            .expect("the inbox answers");
        match next {
            Ok(_) => received += 1,
            Err(error) => break error,
        }
    };
    // The announcements it dropped are reported as missed, so the subscriber reconnects and
    // re-checks; nothing past the bound was held.
    assert!(received <= 4_096, "{received}");
    assert_eq!(error.kind(), credswap::ErrorKind::Transient);
    assert!(error.to_string().contains("dropped"), "{error}");
}
