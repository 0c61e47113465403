//! The seam between the shared push mechanism and a broker: a [`Publisher`] sends announcements, a
//! [`Channel`] opens connections ([`Inbox`]es) that receive them.

use std::sync::Arc;

use async_trait::async_trait;

use super::announcement::Announcement;
use crate::error::Result;
use crate::value::VersionId;

/// A channel name for publishers and listeners of both brokers, when you need only one.
pub const DEFAULT_CHANNEL: &str = "credswap";

/// Payloads a broker connection holds for the subscriber before it reads them. Past that, a
/// connection sheds what arrives (and counts it, see [`Inbox::shed`]) rather than holding it or
/// hanging up: a flood can neither grow a subscriber's memory nor make it reconnect (and re-check
/// every secret), whether the subscriber reads the junk or drops it.
#[cfg(any(feature = "push-postgres", feature = "push-redis"))]
pub(super) const INBOX_QUEUE: usize = 4096;

/// Checks a broker channel name: not empty, at most `max_bytes` (the broker's limit, `why` says
/// which), no control character (which could split a command or forge a log line).
#[cfg(any(feature = "push-postgres", feature = "push-redis", test))]
pub(super) fn check_channel(
    broker: &str,
    channel: &str,
    max_bytes: usize,
    why: &str,
) -> Result<()> {
    let problem = if channel.is_empty() {
        "is empty".to_owned()
    } else if channel.len() > max_bytes {
        format!("is longer than {max_bytes} bytes, {why}")
    } else if channel.chars().any(char::is_control) {
        "contains a control character".to_owned()
    } else {
        return Ok(());
    };
    Err(crate::error::Error::config(format!(
        "{broker} channel name {channel:?} {problem}"
    )))
}

/// What a broker said about one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Published {
    /// How many subscriber connections received the announcement, when the broker tells (Redis
    /// `PUBLISH` does; PostgreSQL `NOTIFY` does not).
    pub receivers: Option<u64>,
}

impl Published {
    /// The broker did not say how many received it.
    pub fn unknown() -> Self {
        Published { receivers: None }
    }

    /// `receivers` connections received it.
    pub fn with_receivers(receivers: u64) -> Self {
        Published {
            receivers: Some(receivers),
        }
    }
}

/// Sends [`Announcement`]s to every subscriber of a broker channel.
///
/// Call [`announce`](Self::announce) after a new version of a secret became current (after the
/// rotation's last step, never before: subscribers refresh at once and must find the new version).
/// Implementations: [`PgPublisher`](crate::push::PgPublisher) (feature `push-postgres`) and
/// [`RedisPublisher`](crate::push::RedisPublisher) (feature `push-redis`); see [`Channel`] for a
/// complete example of a broker of your own.
///
/// The trait is object safe: rotation code can hold an `Arc<dyn Publisher>`.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Where announcements go, for logs: a broker address and a channel name, never credentials.
    fn describe(&self) -> String;

    /// Sends one announcement.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Transient`](crate::ErrorKind::Transient) when the broker cannot be reached
    /// (retry later: nothing was sent), [`ErrorKind::AccessDenied`](crate::ErrorKind::AccessDenied)
    /// when it refused our credentials or the command.
    async fn publish(&self, announcement: &Announcement) -> Result<Published>;

    /// Announces that `version` is now the current version of secret `id`: builds the
    /// announcement (stamped with the time now) and publishes it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest) when `id` or `version` cannot
    /// be announced (empty, a control character, too long); otherwise as
    /// [`publish`](Self::publish).
    ///
    /// Logs the outcome (target `credswap::push`): `info` with the number of receivers when the
    /// broker tells it, `warn` with the error kind when it failed.
    async fn announce(&self, id: &str, version: &VersionId) -> Result<Published> {
        let published = match Announcement::new(id, version) {
            Ok(announcement) => self.publish(&announcement).await,
            Err(error) => Err(error.into()),
        };
        match &published {
            Ok(published) => tracing::info!(
                target: "credswap::push",
                id,
                %version,
                to = %self.describe(),
                receivers = ?published.receivers,
                "announced secret change"
            ),
            Err(error) => tracing::warn!(
                target: "credswap::push",
                id,
                %version,
                to = %self.describe(),
                kind = %error.kind(),
                %error,
                "announcement failed"
            ),
        }
        published
    }
}

#[async_trait]
impl<P: Publisher + ?Sized> Publisher for Arc<P> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    async fn publish(&self, announcement: &Announcement) -> Result<Published> {
        (**self).publish(announcement).await
    }
}

/// Announces through any publisher that `version` is now the current version of secret `id`, and
/// logs it (as [`Publisher::announce`] does): the one call a rotation function, the rotation
/// engine or a command line makes after promoting a new version.
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run(client: tokio_postgres::Client) -> credswap::Result<()> {
/// # let _ = &client;
/// # #[cfg(feature = "push-postgres")] {
/// use credswap::VersionId;
/// use credswap::push::{DEFAULT_CHANNEL, PgPublisher, announce};
///
/// let publisher = PgPublisher::new(client, DEFAULT_CHANNEL)?;
/// announce(&publisher, "prod/db", &VersionId::new("v8")).await?;
/// # }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// As [`Publisher::announce`].
pub async fn announce<P: Publisher + ?Sized>(
    publisher: &P,
    id: &str,
    version: &VersionId,
) -> Result<Published> {
    // `Publisher::announce` logs the outcome.
    publisher.announce(id, version).await
}

/// Where a [`Subscriber`](crate::push::Subscriber) receives announcements from: something that
/// can open a subscribed connection, again and again.
///
/// The subscriber calls [`listen`](Self::listen) to connect, reads payloads from the returned
/// [`Inbox`] until it fails, and then calls `listen` again after a backoff. A channel only moves
/// bytes: decoding, refreshing caches, reconnecting and re-checking are the subscriber's, shared by
/// every broker.
///
/// # Example
///
/// A complete broker inside one process, over a Tokio broadcast channel (a real one crosses
/// processes, but the contract is the same):
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use async_trait::async_trait;
/// use credswap::push::{Announcement, Channel, Inbox, PushEvent, Published, Publisher, Subscriber};
/// use credswap::{Error, ErrorKind, MemoryProvider, Result, SecretCache};
/// use tokio::sync::broadcast;
///
/// #[derive(Clone)]
/// struct LocalBus(broadcast::Sender<Vec<u8>>);
///
/// #[async_trait]
/// impl Publisher for LocalBus {
///     fn describe(&self) -> String {
///         "local bus".into()
///     }
///
///     async fn publish(&self, announcement: &Announcement) -> Result<Published> {
///         // Only the encoded announcement travels: ids and versions, never values.
///         let receivers = self.0.send(announcement.encode().into_bytes()).unwrap_or(0);
///         Ok(Published::with_receivers(receivers as u64))
///     }
/// }
///
/// struct LocalInbox(broadcast::Receiver<Vec<u8>>);
///
/// #[async_trait]
/// impl Inbox for LocalInbox {
///     async fn recv(&mut self) -> Result<Vec<u8>> {
///         match self.0.recv().await {
///             Ok(payload) => Ok(payload),
///             // Missed announcements must not pass silently: report the connection as lost,
///             // and the subscriber reconnects and re-checks every secret it watches. (A broker
///             // reachable by others sheds instead and says so in `Inbox::shed`: a flood must
///             // not make every subscriber reconnect.)
///             Err(broadcast::error::RecvError::Lagged(_)) => {
///                 Err(Error::new(ErrorKind::Transient).with_message("fell behind the bus"))
///             }
///             Err(broadcast::error::RecvError::Closed) => {
///                 Err(Error::new(ErrorKind::Transient).with_message("the bus is gone"))
///             }
///         }
///     }
///
///     async fn ping(&mut self) -> Result<()> {
///         Ok(()) // nothing between us and the bus can break silently
///     }
/// }
///
/// #[async_trait]
/// impl Channel for LocalBus {
///     fn describe(&self) -> String {
///         "local bus".into()
///     }
///
///     async fn listen(&self) -> Result<Box<dyn Inbox>> {
///         Ok(Box::new(LocalInbox(self.0.subscribe())))
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = Arc::new(MemoryProvider::new());
/// store.set("api-key", "k-1");
/// let cache = SecretCache::builder(store.clone())
///     .ttl(Duration::from_secs(3600)) // push does the work; the TTL is the backstop
///     .min_refresh_interval(Duration::ZERO) // a doc example need not wait a second
///     .build()?;
/// let handle = cache.handle_raw("api-key").await?;
///
/// let bus = LocalBus(broadcast::channel(64).0);
/// let subscriber = Subscriber::builder(bus.clone()).cache(cache.clone()).start()?;
/// let mut events = subscriber.subscribe();
/// while !subscriber.is_connected() {
///     let _ = events.recv().await;
/// }
///
/// let version = store.set("api-key", "k-2");
/// bus.announce("api-key", &version).await?;
/// loop {
///     if let Ok(PushEvent::Applied { id, .. }) = events.recv().await {
///         assert_eq!(&*id, "api-key");
///         break;
///     }
/// }
/// assert_eq!(handle.load().version().id, version);
/// subscriber.shutdown().await;
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// Where announcements come from, for events and logs: a broker address and a channel name,
    /// never credentials.
    fn describe(&self) -> String;

    /// Connects and subscribes. Returns once every announcement published from now on will
    /// arrive through the returned inbox.
    ///
    /// # Errors
    ///
    /// Any error: the subscriber reports its kind and tries again after a backoff.
    async fn listen(&self) -> Result<Box<dyn Inbox>>;
}

#[async_trait]
impl<C: Channel + ?Sized> Channel for Arc<C> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    async fn listen(&self) -> Result<Box<dyn Inbox>> {
        (**self).listen().await
    }
}

/// One subscribed connection to a broker, as returned by [`Channel::listen`]. Dropping it closes
/// the connection.
#[async_trait]
pub trait Inbox: Send {
    /// The next payload, as the broker delivered it (the subscriber decodes it).
    ///
    /// # Cancellation
    ///
    /// Must be cancel safe: the subscriber stops waiting to send keepalive pings, and a payload
    /// must not be lost when it does.
    ///
    /// # Errors
    ///
    /// Any error ends the connection: the subscriber drops the inbox, reconnects, and re-checks
    /// every secret it watches. Return one also when announcements may have been missed.
    async fn recv(&mut self) -> Result<Vec<u8>>;

    /// A round trip to the broker, sent when nothing arrived for a while: finds connections that
    /// died without a word (a peer gone, a silent network), which `recv` alone would wait on
    /// forever.
    ///
    /// # Errors
    ///
    /// The connection is not usable; the subscriber treats it like a failed `recv`.
    async fn ping(&mut self) -> Result<()>;

    /// How many payloads this connection dropped since the last call because they arrived faster
    /// than the subscriber handled them (the connection stays up). The subscriber counts them
    /// ([`PushStats::shed`](crate::push::PushStats::shed)) and reports them as
    /// [`PushEvent::Shed`](crate::push::PushEvent::Shed); a real announcement among them is
    /// caught by the caches' TTL. The default: an inbox that never drops any.
    fn shed(&mut self) -> u64 {
        0
    }
}

// Publishers and channels are used as trait objects: keep them object safe.
const _: Option<&dyn Publisher> = None;
const _: Option<&dyn Channel> = None;
const _: Option<&dyn Inbox> = None;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn channel_names_are_checked_against_the_brokers_limit() {
        assert!(check_channel("Redis", "credswap:rotations", 8, "a test limit").is_err());
        assert!(check_channel("Redis", "credswap", 8, "a test limit").is_ok());
        for bad in ["", "a\nb", "a\0b", "a\r\nPUBLISH x y", "ninebytes"] {
            let err = check_channel("PostgreSQL", bad, 8, "a test limit").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
            assert!(err.to_string().contains("PostgreSQL channel name"), "{err}");
        }
    }
}
