//! PostgreSQL `LISTEN`/`NOTIFY` transport: no new infrastructure for consumers that already talk
//! to PostgreSQL. One connection per subscriber; announcements are `NOTIFY` payloads.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OnceCell, mpsc};
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Client, Config, Connection, NoTls, Socket, Statement};

use super::announcement::Announcement;
use super::channel::{Channel, INBOX_QUEUE, Inbox, Published, Publisher, check_channel};
use crate::error::{Error, ErrorKind, Result};

/// PostgreSQL's longest identifier, in bytes (`NAMEDATALEN - 1`); longer channel names are cut by
/// `LISTEN` but refused by `pg_notify`, so they would never meet.
const MAX_CHANNEL_BYTES: usize = 63;

/// Announcements from PostgreSQL `NOTIFY` on one channel: the [`Channel`] of a
/// [`Subscriber`](crate::push::Subscriber) for fleets whose consumers already talk to PostgreSQL.
///
/// Each subscriber holds one connection (plan `max_connections` for one per process, plus the
/// pools); it shows in `pg_stat_activity` with `application_name` `credswap-push` unless the
/// config names another. The role needs only `LOGIN` and `CONNECT` on the database.
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run() -> credswap::Result<()> {
/// use std::sync::Arc;
/// use credswap::push::{DEFAULT_CHANNEL, PgListener, Subscriber};
/// use credswap::{FileProvider, SecretCache};
///
/// let cache = SecretCache::builder(Arc::new(FileProvider::new("/var/run/secrets"))).build()?;
/// let config: tokio_postgres::Config = "host=db.internal user=listener dbname=app"
///     .parse()
///     .expect("a valid connection string");
/// let subscriber = Subscriber::builder(PgListener::new(config, DEFAULT_CHANNEL)?)
///     .cache(cache)
///     .start()?;
/// # drop(subscriber);
/// # Ok(()) }
/// ```
pub struct PgListener {
    config: Config,
    channel: Arc<str>,
    connect: Connect,
}

impl fmt::Debug for PgListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the config: only where it points (its Debug hides the password, but a listener need
        // not show even the user).
        f.debug_struct("PgListener")
            .field("server", &server(&self.config))
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// Opens a connection and starts the task that reads its notifications.
type Connect = Arc<dyn Fn(Config, Arc<str>) -> BoxFuture<'static, Result<Link>> + Send + Sync>;

/// One open connection: the client, the notifications its task forwards, and that task.
struct Link {
    client: Client,
    notifications: mpsc::Receiver<Result<Vec<u8>>>,
    /// Notifications the driver dropped because the queue was full, not yet reported.
    shed: Arc<AtomicU64>,
    driver: JoinHandle<()>,
}

impl PgListener {
    /// Listens on `channel` of the server `config` points to, without TLS.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when `channel` is empty, longer than 63 bytes or holds a control
    /// character.
    pub fn new(config: Config, channel: &str) -> Result<Self> {
        Self::with_tls(config, channel, NoTls)
    }

    /// Listens on `channel` through `tls` (for example `postgres-native-tls` or
    /// `tokio-postgres-rustls` connectors).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_tls<T>(mut config: Config, channel: &str, tls: T) -> Result<Self>
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + Sync + 'static,
        T::TlsConnect: Send + Sync,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        check_pg_channel(channel)?;
        if config.get_application_name().is_none() {
            let _ = config.application_name("credswap-push");
        }
        let connect: Connect = Arc::new(move |config: Config, channel: Arc<str>| {
            let tls = tls.clone();
            Box::pin(async move {
                let (client, connection) = config
                    .connect(tls)
                    .await
                    .map_err(|e| pg_error(e, "connecting to PostgreSQL"))?;
                let (sender, notifications) = mpsc::channel(INBOX_QUEUE);
                let shed = Arc::new(AtomicU64::new(0));
                let driver = tokio::spawn(drive(connection, channel, sender, Arc::clone(&shed)));
                Ok(Link {
                    client,
                    notifications,
                    shed,
                    driver,
                })
            })
        });
        Ok(PgListener {
            config,
            channel: Arc::from(channel),
            connect,
        })
    }

    /// The channel name.
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

#[async_trait]
impl Channel for PgListener {
    fn describe(&self) -> String {
        format!("postgres {} channel {}", server(&self.config), self.channel)
    }

    async fn listen(&self) -> Result<Box<dyn Inbox>> {
        let link = (self.connect)(self.config.clone(), Arc::clone(&self.channel)).await?;
        // The channel is an identifier here (quoted, so any name we accepted is taken verbatim,
        // as `pg_notify` takes it); notifications flow once this returns.
        link.client
            .batch_execute(&format!("LISTEN {}", quote_identifier(&self.channel)))
            .await
            .map_err(|e| pg_error(e, "subscribing with LISTEN"))?;
        Ok(Box::new(PgInbox { link }))
    }
}

struct PgInbox {
    link: Link,
}

impl Drop for PgInbox {
    fn drop(&mut self) {
        self.link.driver.abort();
    }
}

#[async_trait]
impl Inbox for PgInbox {
    async fn recv(&mut self) -> Result<Vec<u8>> {
        match self.link.notifications.recv().await {
            Some(received) => received,
            None => Err(Error::new(ErrorKind::Transient)
                .with_message("the PostgreSQL connection was closed")),
        }
    }

    async fn ping(&mut self) -> Result<()> {
        self.link
            .client
            .batch_execute("SELECT 1")
            .await
            .map_err(|e| pg_error(e, "pinging PostgreSQL"))
    }

    fn shed(&mut self) -> u64 {
        self.link.shed.swap(0, Ordering::Relaxed)
    }
}

/// Drives the connection and forwards the notifications of `channel` into the inbox's bounded
/// queue, shedding (and counting in `shed`) what it cannot take, so the connection is always read
/// and answers pings; forwards the error that ends the connection, then stops.
async fn drive<S, T>(
    mut connection: Connection<S, T>,
    channel: Arc<str>,
    sender: mpsc::Sender<Result<Vec<u8>>>,
    shed: Arc<AtomicU64>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
        let forward = match message {
            Some(Ok(AsyncMessage::Notification(notification))) => {
                if notification.channel() != &*channel {
                    continue;
                }
                Ok(notification.payload().as_bytes().to_vec())
            }
            // Notices, and whatever later versions add.
            Some(Ok(_)) => continue,
            Some(Err(error)) => Err(pg_error(error, "reading from PostgreSQL")),
            None => Err(Error::new(ErrorKind::Transient)
                .with_message("the PostgreSQL connection was closed")),
        };
        if forward.is_err() {
            // The end of the connection is always delivered, whatever the queue holds.
            let _ = sender.send(forward).await;
            return;
        }
        match sender.try_send(forward) {
            Ok(()) => {}
            // Shed, and go on reading: the connection stays up and memory stays bounded.
            Err(TrySendError::Full(_)) => {
                let _ = shed.fetch_add(1, Ordering::Relaxed);
            }
            // The inbox is gone: nobody listens any more.
            Err(TrySendError::Closed(_)) => return,
        }
    }
}

/// Announces through PostgreSQL `NOTIFY` (`SELECT pg_notify($1, $2)`, channel and payload as
/// parameters: nothing is spliced into SQL).
///
/// Notifications are delivered when the publishing transaction commits, to the sessions that are
/// listening at that moment; a client in autocommit mode (as here) commits at once.
///
/// A publisher does not reconnect: once its connection is lost, every publish fails with a
/// transient error. Long-lived rotation code should make a new one then (or publish through a
/// pool's client, see [`docs::push`](crate::docs::push)).
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run(version: credswap::VersionId) -> credswap::Result<()> {
/// use credswap::push::{DEFAULT_CHANNEL, PgPublisher, Publisher};
///
/// let config: tokio_postgres::Config = "host=db.internal user=rotator dbname=app"
///     .parse()
///     .expect("a valid connection string");
/// let publisher = PgPublisher::connect(&config, DEFAULT_CHANNEL).await?;
/// publisher.announce("prod/db", &version).await?;
/// # Ok(()) }
/// ```
pub struct PgPublisher {
    client: Client,
    channel: Arc<str>,
    server: String,
    statement: OnceCell<Statement>,
    driver: Option<JoinHandle<()>>,
}

impl fmt::Debug for PgPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgPublisher")
            .field("server", &self.server)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Drop for PgPublisher {
    fn drop(&mut self) {
        if let Some(driver) = self.driver.take() {
            driver.abort();
        }
    }
}

impl PgPublisher {
    /// Publishes on `channel` through `client`, a connection you opened (and whose connection
    /// future you drive).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for a channel name [`PgListener::new`] would refuse.
    pub fn new(client: Client, channel: &str) -> Result<Self> {
        check_pg_channel(channel)?;
        Ok(PgPublisher {
            client,
            channel: Arc::from(channel),
            server: "postgres".into(),
            statement: OnceCell::new(),
            driver: None,
        })
    }

    /// Opens a connection to the server `config` points to (without TLS) and publishes on
    /// `channel` through it: what a rotation function or a command line needs.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for a bad channel name, [`ErrorKind::Transient`] when the server
    /// cannot be reached, [`ErrorKind::AccessDenied`] when it refuses the login.
    pub async fn connect(config: &Config, channel: &str) -> Result<Self> {
        Self::connect_with_tls(config, channel, NoTls).await
    }

    /// As [`connect`](Self::connect), through `tls` (for example `postgres-native-tls` or
    /// `tokio-postgres-rustls` connectors, as for [`PgListener::with_tls`]). With
    /// `sslmode=require` in `config`, a server without TLS is refused.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect); a failed TLS handshake is [`ErrorKind::Transient`].
    pub async fn connect_with_tls<T>(config: &Config, channel: &str, tls: T) -> Result<Self>
    where
        T: MakeTlsConnect<Socket> + Send,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        check_pg_channel(channel)?;
        let (client, connection) = config
            .connect(tls)
            .await
            .map_err(|e| pg_error(e, "connecting to PostgreSQL"))?;
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(target: "credswap::push", %error, "publisher connection ended");
            }
        });
        let mut publisher = Self::new(client, channel)?;
        publisher.server = format!("postgres {}", server(config));
        publisher.driver = Some(driver);
        Ok(publisher)
    }
}

#[async_trait]
impl Publisher for PgPublisher {
    fn describe(&self) -> String {
        format!("{} channel {}", self.server, self.channel)
    }

    async fn publish(&self, announcement: &Announcement) -> Result<Published> {
        let statement = self
            .statement
            .get_or_try_init(|| self.client.prepare("SELECT pg_notify($1, $2)"))
            .await
            .map_err(|e| pg_error(e, "preparing NOTIFY"))?;
        let payload = announcement.encode();
        let _rows = self
            .client
            .execute(statement, &[&&*self.channel, &payload])
            .await
            .map_err(|e| pg_error(e, "sending NOTIFY"))?;
        Ok(Published::unknown())
    }
}

/// Checks a channel name both `LISTEN` (quoted) and `pg_notify` take the same way.
fn check_pg_channel(channel: &str) -> Result<()> {
    check_channel(
        "PostgreSQL",
        channel,
        MAX_CHANNEL_BYTES,
        "PostgreSQL's limit for identifiers",
    )
}

/// `name` as a quoted SQL identifier: in double quotes, inner double quotes doubled.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Where a config points, for logs: hosts and ports, never the user or password.
fn server(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    match (hosts.is_empty(), ports.is_empty()) {
        (true, _) => "(default host)".into(),
        (false, true) => hosts.join(","),
        (false, false) => format!("{}:{}", hosts.join(","), ports.join(",")),
    }
}

/// Maps a PostgreSQL error to our kinds: a refused login or permission is access denied, a bad
/// parameter an invalid request, everything else (I/O, a closed connection, a server going down)
/// passing.
fn pg_error(error: tokio_postgres::Error, context: &str) -> Error {
    use tokio_postgres::error::SqlState;
    let kind = match error.code() {
        Some(code)
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                || *code == SqlState::INSUFFICIENT_PRIVILEGE =>
        {
            ErrorKind::AccessDenied
        }
        Some(code) if *code == SqlState::INVALID_PARAMETER_VALUE => ErrorKind::InvalidRequest,
        _ => ErrorKind::Transient,
    };
    Error::new(kind)
        .with_message(context.to_owned())
        .with_source(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_checked_and_quoted() {
        assert!(check_pg_channel("credswap").is_ok());
        assert!(check_pg_channel("Rotations.prod-eu/1").is_ok());
        assert!(check_pg_channel(&"c".repeat(63)).is_ok());
        for bad in ["", "a\nb", "a\0b", &"c".repeat(64)] {
            let err = check_pg_channel(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
        }
        assert_eq!(quote_identifier("credswap"), "\"credswap\"");
        assert_eq!(
            quote_identifier(r#"a"; DROP TABLE x; --"#),
            r#""a""; DROP TABLE x; --""#
        );
    }

    #[test]
    fn connecting_a_publisher_through_tls_can_run_on_any_worker() {
        fn on_any_worker<F: std::future::Future + Send>(_: F) {}
        // Built, never polled: no connection is made.
        on_any_worker(PgPublisher::connect_with_tls(&Config::new(), "c", NoTls));
    }

    #[test]
    fn a_listener_shows_where_it_points_but_not_who_logs_in() {
        let config: Config = "host=db.internal port=6432 user=listener password=Sentinel-Pw-1"
            .parse()
            .unwrap();
        let listener = PgListener::new(config, "credswap").unwrap();
        let shown = format!("{listener:?} {}", listener.describe());
        assert!(shown.contains("db.internal:6432"), "{shown}");
        assert!(!shown.contains("Sentinel-Pw-1"), "{shown}");
        assert!(!shown.contains("user"), "{shown}");
    }
}
