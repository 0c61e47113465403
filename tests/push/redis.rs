//! Push invalidation over Redis pub/sub, against a real `redis-server` from the test kit.
//! Latencies are printed (`--nocapture`), never asserted; counts are.

use crate::{common, push_common};

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

    async fn publish_burst(&self, payloads: &[String]) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", self.server.port()))
            .await
            .unwrap();
        let mut commands = Vec::with_capacity(payloads.len() * 64);
        for payload in payloads {
            let parts = ["PUBLISH", CHANNEL, payload.as_str()];
            commands.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
            for part in parts {
                commands.extend_from_slice(format!("${}\r\n{part}\r\n", part.len()).as_bytes());
            }
        }
        let (mut read, mut write) = socket.split();
        // Every command is answered with one integer reply (`:N\r\n`): read them all back while
        // writing, so neither side's buffer fills up.
        let reading = async {
            let mut buffer = vec![0u8; 64 * 1024];
            let mut replies = 0;
            while replies < payloads.len() {
                let n = read.read(&mut buffer).await.unwrap();
                assert!(n > 0, "Redis closed the connection");
                replies += buffer[..n].iter().filter(|b| **b == b'\n').count();
            }
        };
        let writing = async { write.write_all(&commands).await.unwrap() };
        let ((), ()) = tokio::join!(reading, writing);
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
async fn a_flood_the_subscriber_cannot_keep_up_with_is_shed_not_held_and_not_a_hang_up() {
    let broker = Redis::start().await;
    let listener = broker.listener();
    let mut inbox = listener.listen().await.unwrap();
    let publisher = broker.publisher().await;
    // Nobody reads while 5,000 announcements are sent: more than the inbox holds. What it
    // cannot hold is dropped and counted; the connection stays up.
    let version = credswap::VersionId::new("v1");
    let mut delivered = 0;
    for _ in 0..5_000 {
        let published = publisher.announce("db", &version).await.unwrap();
        delivered += published.receivers.unwrap_or(0);
    }
    assert_eq!(delivered, 5_000);
    // While nobody reads, the inbox holds 4,096 and sheds the rest (once the client has handed
    // them over: poll its count).
    let mut shed = 0u64;
    let settled = common::eventually(std::time::Duration::from_secs(30), || {
        shed += inbox.shed();
        shed >= 5_000 - 4_096
    })
    .await;
    assert!(settled, "shed {shed}");
    assert_eq!(shed, 5_000 - 4_096);
    // Exactly what it held is read, and then nothing: the connection stays up.
    for n in 0..4_096 {
        let payload = tokio::time::timeout(std::time::Duration::from_secs(10), inbox.recv())
            .await
            .unwrap_or_else(|_| panic!("payload {n} of the 4,096 held"));
        let _ = payload.expect("the connection stays up");
    }
    let nothing_more =
        tokio::time::timeout(std::time::Duration::from_millis(200), inbox.recv()).await;
    assert!(nothing_more.is_err(), "only 4,096 were held");
    assert_eq!(inbox.shed(), 0);
    // The same connection still delivers, and answers pings.
    inbox.ping().await.unwrap();
    let _ = publisher
        .announce("db", &credswap::VersionId::new("v2"))
        .await
        .unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(30), inbox.recv())
        .await
        .expect("the next announcement arrives")
        .unwrap();
    assert!(String::from_utf8_lossy(&next).contains("v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junk_flood_costs_no_reconnect_and_no_store_call() {
    let broker = Redis::start().await;
    push_common::a_junk_flood_costs_no_reconnect_and_no_store_call(&broker, "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_announcements_apply_and_forged_ones_do_not() {
    let broker = Redis::start().await;
    push_common::signed_announcements_apply_and_forged_ones_do_not(&broker, "redis").await;
}
