//! Redis pub/sub transport: a broker made for fan-out, for fleets where one PostgreSQL connection
//! per pod is too many. One connection per subscriber; announcements are `PUBLISH` messages.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;

use super::announcement::Announcement;
use super::channel::{Channel, INBOX_QUEUE, Inbox, Published, Publisher, check_channel};
use crate::error::{Error, ErrorKind, Result};

/// Longest channel name we accept. Redis has no limit of its own; a name this long is a mistake.
const MAX_CHANNEL_BYTES: usize = 1024;

/// How long a publisher waits to connect or for an answer.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Announcements from Redis pub/sub on one channel: the [`Channel`] of a
/// [`Subscriber`](crate::push::Subscriber) for large fleets.
///
/// Each subscriber holds one connection in subscribed mode. Redis delivers each `PUBLISH` to the
/// connections subscribed at that moment and keeps nothing for the others, which is why the
/// subscriber re-checks after every reconnect. With ACLs, the user needs `+subscribe +ping` and
/// `&<channel>`.
///
/// A connection holds at most 4,096 announcements the subscriber has not read yet. What a flood
/// brings beyond that is shed and counted ([`Inbox::shed`]); the connection stays up, so a flood
/// neither grows memory nor makes the subscriber reconnect and re-check every secret.
///
/// TLS (`rediss://`) is not supported yet: such a URL is refused with a configuration error. Reach
/// Redis over a network you trust, or use [`PgListener`](crate::push::PgListener), which supports
/// TLS.
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run() -> credswap::Result<()> {
/// use std::sync::Arc;
/// use credswap::push::{DEFAULT_CHANNEL, RedisListener, Subscriber};
/// use credswap::{FileProvider, SecretCache};
///
/// let cache = SecretCache::builder(Arc::new(FileProvider::new("/var/run/secrets"))).build()?;
/// let listener = RedisListener::open("redis://push-broker.internal:6379", DEFAULT_CHANNEL)?;
/// let subscriber = Subscriber::builder(listener).cache(cache).start()?;
/// # drop(subscriber);
/// # Ok(()) }
/// ```
pub struct RedisListener {
    client: Client,
    channel: Arc<str>,
}

impl fmt::Debug for RedisListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisListener")
            .field("server", &server(&self.client))
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl RedisListener {
    /// Listens on `channel` of the server `client` points to.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when `channel` is empty, longer than 1,024 bytes, or holds a control
    /// character.
    pub fn new(client: Client, channel: &str) -> Result<Self> {
        check_redis_channel(channel)?;
        Ok(RedisListener {
            client,
            channel: Arc::from(channel),
        })
    }

    /// Listens on `channel` of the server at `url` (`redis://[user:password@]host:port[/db]`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for a URL that does not parse (the error does not repeat it: it may
    /// hold a password), a `rediss://` URL (TLS is not supported yet), or a bad channel name.
    pub fn open(url: &str, channel: &str) -> Result<Self> {
        Self::new(open_client(url)?, channel)
    }

    /// The channel name.
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

#[async_trait]
impl Channel for RedisListener {
    fn describe(&self) -> String {
        format!("redis {} channel {}", server(&self.client), self.channel)
    }

    async fn listen(&self) -> Result<Box<dyn Inbox>> {
        let mut pubsub = self
            .client
            .get_async_pubsub()
            .await
            .map_err(|e| redis_error(e, "connecting to Redis"))?;
        // Returns once Redis confirmed the subscription: messages flow from here on.
        pubsub
            .subscribe(&*self.channel)
            .await
            .map_err(|e| redis_error(e, "subscribing"))?;
        let (sink, stream) = pubsub.split();
        let (sender, payloads) = mpsc::channel(INBOX_QUEUE);
        let shed = Arc::new(AtomicU64::new(0));
        let forwarder = tokio::spawn(forward(
            stream,
            Arc::clone(&self.channel),
            sender,
            Arc::clone(&shed),
        ));
        Ok(Box::new(RedisInbox {
            sink,
            payloads,
            shed,
            forwarder,
        }))
    }
}

struct RedisInbox {
    sink: PubSubSink,
    payloads: mpsc::Receiver<Vec<u8>>,
    /// Payloads dropped because the queue was full, not yet reported.
    shed: Arc<AtomicU64>,
    forwarder: JoinHandle<()>,
}

impl Drop for RedisInbox {
    fn drop(&mut self) {
        // The forwarder owns the stream; dropping it stops the connection's reading task.
        self.forwarder.abort();
    }
}

/// Moves the payloads of `channel` from the redis client's (unbounded) stream into the inbox's
/// bounded queue. What the queue cannot take is dropped and counted in `shed`: the connection
/// stays up and keeps being read, so memory stays bounded and a flood costs no reconnect. Ends
/// when the connection does (or the inbox is gone).
async fn forward(
    mut stream: PubSubStream,
    channel: Arc<str>,
    sender: mpsc::Sender<Vec<u8>>,
    shed: Arc<AtomicU64>,
) {
    while let Some(message) = stream.next().await {
        if message.get_channel_name() != &*channel {
            continue;
        }
        match sender.try_send(message.get_payload_bytes().to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let _ = shed.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Closed(_)) => return,
        }
    }
}

#[async_trait]
impl Inbox for RedisInbox {
    async fn recv(&mut self) -> Result<Vec<u8>> {
        // A channel receive: cancel safe.
        match self.payloads.recv().await {
            Some(payload) => Ok(payload),
            None => {
                Err(Error::new(ErrorKind::Transient)
                    .with_message("the Redis connection was closed"))
            }
        }
    }

    fn shed(&mut self) -> u64 {
        self.shed.swap(0, Ordering::Relaxed)
    }

    async fn ping(&mut self) -> Result<()> {
        self.sink
            .ping::<redis::Value>()
            .await
            .map(drop)
            .map_err(|e| redis_error(e, "pinging Redis"))
    }
}

/// Announces through Redis `PUBLISH`, and reports how many subscriber connections received each
/// announcement. The connection is opened on first use and opened again after a failure.
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run(version: credswap::VersionId) -> credswap::Result<()> {
/// use credswap::push::{DEFAULT_CHANNEL, Publisher, RedisPublisher};
///
/// let publisher = RedisPublisher::open("redis://push-broker.internal:6379", DEFAULT_CHANNEL)?;
/// let published = publisher.announce("prod/db", &version).await?;
/// println!("{:?} subscribers told", published.receivers);
/// # Ok(()) }
/// ```
pub struct RedisPublisher {
    client: Client,
    channel: Arc<str>,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl fmt::Debug for RedisPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPublisher")
            .field("server", &server(&self.client))
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl RedisPublisher {
    /// Publishes on `channel` of the server `client` points to.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for a channel name [`RedisListener::new`] would refuse.
    pub fn new(client: Client, channel: &str) -> Result<Self> {
        check_redis_channel(channel)?;
        Ok(RedisPublisher {
            client,
            channel: Arc::from(channel),
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// Publishes on `channel` of the server at `url`.
    ///
    /// # Errors
    ///
    /// As [`RedisListener::open`].
    pub fn open(url: &str, channel: &str) -> Result<Self> {
        Self::new(open_client(url)?, channel)
    }

    /// The open connection, or a new one. Multiplexed: clones share it.
    async fn connection(&self) -> Result<MultiplexedConnection> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = &*slot {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(PUBLISH_TIMEOUT))
            .set_response_timeout(Some(PUBLISH_TIMEOUT));
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| redis_error(e, "connecting to Redis"))?;
        *slot = Some(connection.clone());
        Ok(connection)
    }
}

#[async_trait]
impl Publisher for RedisPublisher {
    fn describe(&self) -> String {
        format!("redis {} channel {}", server(&self.client), self.channel)
    }

    async fn publish(&self, announcement: &Announcement) -> Result<Published> {
        let mut connection = self.connection().await?;
        let sent = redis::cmd("PUBLISH")
            .arg(&*self.channel)
            .arg(announcement.encode())
            .query_async::<u64>(&mut connection)
            .await;
        match sent {
            Ok(receivers) => Ok(Published::with_receivers(receivers)),
            Err(error) => {
                if error.is_io_error() || error.is_connection_dropped() || error.is_timeout() {
                    // Open a new connection next time.
                    *self.connection.lock().await = None;
                }
                Err(redis_error(error, "sending PUBLISH"))
            }
        }
    }
}

fn open_client(url: &str) -> Result<Client> {
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    if matches!(scheme.as_deref(), Some("rediss" | "valkeys")) {
        return Err(Error::config(
            "TLS to Redis (a rediss:// URL) is not supported yet: use redis:// on a network you \
             trust, or push over PostgreSQL with TLS",
        ));
    }
    // Redis's parse error can quote the URL, and the URL can hold a password: keep neither.
    Client::open(url).map_err(|_| {
        Error::config("the Redis URL does not parse (expected redis://[user:password@]host:port)")
    })
}

/// Where a client points, for logs: host and port, never the user or password.
fn server(client: &Client) -> String {
    client.get_connection_info().addr().to_string()
}

fn check_redis_channel(channel: &str) -> Result<()> {
    check_channel(
        "Redis",
        channel,
        MAX_CHANNEL_BYTES,
        "more than any channel name needs",
    )
}

/// Maps a Redis error to our kinds: a refused login or command is access denied, everything else
/// (I/O, a closed connection, a server loading or going down) passing.
fn redis_error(error: redis::RedisError, context: &str) -> Error {
    let denied = error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"));
    let kind = if denied {
        ErrorKind::AccessDenied
    } else {
        ErrorKind::Transient
    };
    Error::new(kind)
        .with_message(context.to_owned())
        .with_source(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_checked() {
        assert!(check_redis_channel("credswap:rotations").is_ok());
        for bad in ["", "a\r\nPUBLISH x y", &"c".repeat(1025)] {
            assert_eq!(
                check_redis_channel(bad).unwrap_err().kind(),
                ErrorKind::Config
            );
        }
    }

    #[test]
    fn a_tls_url_is_a_clear_config_error_not_a_parse_error() {
        for url in [
            "rediss://app:Sentinel-Pw-4@cache.internal:6380",
            "REDISS://cache.internal",
            "valkeys://cache.internal",
        ] {
            let err = RedisListener::open(url, "c").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            let shown = format!("{err} {err:?}");
            assert!(shown.contains("TLS"), "{shown}");
            assert!(!shown.contains("does not parse"), "{shown}");
            assert!(!shown.contains("Sentinel-Pw-4"), "{shown}");
            let err = RedisPublisher::open(url, "c").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
        }
    }

    #[test]
    fn urls_with_passwords_are_never_repeated() {
        let err = RedisListener::open("redis://:Sentinel-Pw-2@[not a host", "c").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(!format!("{err} {err:?}").contains("Sentinel-Pw-2"));

        let listener =
            RedisListener::open("redis://app:Sentinel-Pw-3@cache.internal:6380", "c").unwrap();
        let publisher =
            RedisPublisher::open("redis://app:Sentinel-Pw-3@cache.internal:6380", "c").unwrap();
        let shown = format!(
            "{listener:?} {} {publisher:?} {}",
            listener.describe(),
            publisher.describe()
        );
        assert!(shown.contains("cache.internal:6380"), "{shown}");
        assert!(!shown.contains("Sentinel-Pw-3"), "{shown}");
    }
}
