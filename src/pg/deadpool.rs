//! deadpool-postgres connections that follow a credentials handle, in an ordinary
//! `deadpool_postgres::Pool`.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, Runtime, Timeouts};
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, NoTls, Socket};

use super::auth_failure::AuthFailurePolicy;
use super::config::RetryAndDrain;
use super::connection::with_credentials;
use super::credentials::PgCredentials;
use super::events::{ConnectionTiming, Connections};
use super::monitor::PoolMonitor;
use super::rotation::{Rotation, spawn_follower, with_auth_retry};
use crate::error::{Error, Result};
use crate::handle::SecretHandle;
use crate::time::Instant;

/// A [`deadpool_postgres::Connect`] that opens every connection with the handle's newest
/// credentials, and retries rejected logins: one coalesced refresh, the previous credentials while
/// inside their grace period (alternating users), jittered backoff, within the
/// [`RetryAndDrain`] budget. It records which credentials each connection used, so that
/// [`pre_recycle`](Self::pre_recycle) retires it once those are past their drain deadline.
///
/// Most users build a whole pool with [`RotatingDeadpoolBuilder`] instead; use this to assemble a
/// [`Manager`] of your own:
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run(cache: credswap::SecretCache) -> Result<(), Box<dyn std::error::Error>> {
/// use credswap::pg::{PgCredentials, RotatingConnect, RetryAndDrain};
/// use deadpool_postgres::{Manager, ManagerConfig, Pool};
///
/// let creds = cache.handle::<PgCredentials>("prod/orders/db").await?;
/// let connect = RotatingConnect::new(creds, RetryAndDrain::default(), tokio_postgres::NoTls);
/// let retire = connect.pre_recycle();
/// let manager = Manager::from_connect(tokio_postgres::Config::new(), connect, ManagerConfig::default());
/// let pool = Pool::builder(manager).max_size(8).pre_recycle(retire).build()?;
/// # drop(pool);
/// # Ok(()) }
/// ```
pub struct RotatingConnect<T = NoTls> {
    rotation: Arc<Rotation>,
    tls: T,
}

impl<T> fmt::Debug for RotatingConnect<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingConnect")
            .field("secret", &self.rotation.handle.id())
            .field("stats", &self.rotation.stats())
            .finish_non_exhaustive()
    }
}

impl<T> RotatingConnect<T> {
    /// Connects with `handle`'s newest credentials through `tls`, with the default
    /// authentication-failure policy.
    pub fn new(handle: SecretHandle<PgCredentials>, config: RetryAndDrain, tls: T) -> Self {
        Self::with_policy(handle, config, None, tls)
    }

    fn with_policy(
        handle: SecretHandle<PgCredentials>,
        config: RetryAndDrain,
        policy: Option<Arc<dyn AuthFailurePolicy>>,
        tls: T,
    ) -> Self {
        // Each connection attempt reads the credentials itself: nothing to push.
        let rotation = Rotation::new(handle, config, policy, Box::new(|_| {}));
        RotatingConnect { rotation, tls }
    }

    /// A deadpool `pre_recycle` hook that closes connections whose credentials are past their
    /// drain deadline.
    pub fn pre_recycle(&self) -> Hook {
        let retire = Arc::downgrade(&self.rotation);
        Hook::sync_fn(move |_client, metrics| {
            if retire.upgrade().is_some_and(|r| r.retire(metrics.age())) {
                Err(HookError::Message(
                    "opened with credentials that have been rotated".into(),
                ))
            } else {
                Ok(())
            }
        })
    }

    /// A monitor of the connections this opens: counters, a record per version, events.
    pub fn monitor(&self) -> PoolMonitor {
        PoolMonitor {
            rotation: Arc::clone(&self.rotation),
        }
    }
}

impl<T> deadpool_postgres::Connect for RotatingConnect<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn connect(
        &self,
        pg_config: &Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let base = pg_config.clone();
        let endpoint = self.rotation.config.endpoint;
        Box::pin(async move {
            with_auth_retry(&self.rotation, |chosen| {
                let config = with_credentials(&base, chosen.credentials(), endpoint == super::Endpoint::FromSecret);
                let tls = self.tls.clone();
                let rotation = &self.rotation;
                async move {
                    let started = Instant::now();
                    let (client, connection) = config.connect(tls).await?;
                    rotation.timing(ConnectionTiming::Created(started.elapsed()));
                    let task = tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "credswap: PostgreSQL connection ended with an error");
                        }
                    });
                    // The credentials read before this login started, whatever happened since.
                    rotation.login_finished(chosen.epoch);
                    Ok((client, task))
                }
            })
            .await
        })
    }
}

/// Builds an ordinary [`deadpool_postgres::Pool`] whose connections follow a credentials handle.
///
/// New connections use the newest credentials and retry rejected logins ([`RotatingConnect`]);
/// each version of the credentials gets its own drain deadline when it is replaced, after which a
/// `pre_recycle` hook retires its connections and idle ones are swept with `Pool::retain` (then
/// every second for a while, as busy ones come back).
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run(cache: credswap::SecretCache) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use credswap::pg::{PgCredentials, RotatingDeadpoolBuilder};
///
/// let creds = cache.handle::<PgCredentials>("prod/orders/db").await?;
/// let mut target = tokio_postgres::Config::new();
/// target.host("db.internal").dbname("orders");
/// let pool: deadpool_postgres::Pool = RotatingDeadpoolBuilder::new(creds)
///     .pg_config(target)
///     .max_size(16)
///     .wait_timeout(Some(Duration::from_secs(5)))
///     .build()?;
/// let client = pool.get().await?;
/// client.query_one("SELECT 1", &[]).await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct RotatingDeadpoolBuilder<T = NoTls> {
    handle: SecretHandle<PgCredentials>,
    pg_config: Config,
    tls: T,
    manager_config: ManagerConfig,
    max_size: usize,
    timeouts: Timeouts,
    config: RetryAndDrain,
    policy: Option<Arc<dyn AuthFailurePolicy>>,
}

impl<T> fmt::Debug for RotatingDeadpoolBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingDeadpoolBuilder")
            .field("handle", &self.handle)
            .field("max_size", &self.max_size)
            .field("timeouts", &self.timeouts)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RotatingDeadpoolBuilder<NoTls> {
    /// A builder for a pool following `handle`, without TLS.
    pub fn new(handle: SecretHandle<PgCredentials>) -> Self {
        RotatingDeadpoolBuilder {
            handle,
            pg_config: Config::new(),
            tls: NoTls,
            manager_config: ManagerConfig::default(),
            max_size: 16,
            timeouts: Timeouts::default(),
            config: RetryAndDrain::default(),
            policy: None,
        }
    }
}

impl<T> RotatingDeadpoolBuilder<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    /// Connects through `tls`.
    pub fn tls<U>(self, tls: U) -> RotatingDeadpoolBuilder<U> {
        RotatingDeadpoolBuilder {
            handle: self.handle,
            pg_config: self.pg_config,
            tls,
            manager_config: self.manager_config,
            max_size: self.max_size,
            timeouts: self.timeouts,
            config: self.config,
            policy: self.policy,
        }
    }

    /// Connection settings (host, port, database, TLS mode, keepalives, application name, ...).
    /// The secret's username and password go on top, with its host, port and database unless the
    /// [`Endpoint`](super::Endpoint) says otherwise; its `sslmode` only when stricter. Every other
    /// setting stays.
    pub fn pg_config(mut self, config: Config) -> Self {
        self.pg_config = config;
        self
    }

    /// deadpool-postgres's manager settings (recycling method).
    pub fn manager_config(mut self, config: ManagerConfig) -> Self {
        self.manager_config = config;
        self
    }

    /// Largest number of connections. Default: 16.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size;
        self
    }

    /// All of deadpool's timeouts at once. Default: none (a `get` may wait forever when every
    /// connection is busy: set at least [`wait_timeout`](Self::wait_timeout)).
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The longest `get` waits for a free connection.
    pub fn wait_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeouts.wait = timeout;
        self
    }

    /// The longest opening a connection may take (logins retried after a rejection included).
    pub fn create_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeouts.create = timeout;
        self
    }

    /// The longest checking a connection before reuse may take.
    pub fn recycle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeouts.recycle = timeout;
        self
    }

    /// Retry, drain and endpoint settings.
    pub fn retry_and_drain(mut self, config: RetryAndDrain) -> Self {
        self.config = config;
        self
    }

    /// How to recognise an authentication failure. Default: [`SqlStatePolicy`](super::SqlStatePolicy).
    pub fn auth_failure_policy(mut self, policy: impl AuthFailurePolicy) -> Self {
        self.policy = Some(Arc::new(policy));
        self
    }

    /// Builds the pool (connections open on first use).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) when deadpool refuses the settings.
    pub fn build(self) -> Result<Pool> {
        self.build_monitored().map(|(pool, _)| pool)
    }

    /// Builds the pool and a monitor of its rotations.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_monitored(self) -> Result<(Pool, PoolMonitor)> {
        let connect =
            RotatingConnect::with_policy(self.handle.clone(), self.config, self.policy, self.tls);
        let rotation = Arc::clone(&connect.rotation);
        let retire = connect.pre_recycle();
        let manager = Manager::from_connect(self.pg_config, connect, self.manager_config);
        let pool = Pool::builder(manager)
            .max_size(self.max_size)
            .timeouts(self.timeouts)
            .runtime(Runtime::Tokio1)
            .pre_recycle(retire)
            .build()
            .map_err(|e| Error::config(format!("deadpool rejected the pool settings: {e}")))?;

        let counted = pool.weak();
        rotation.count_connections_with(move || {
            counted.upgrade().map_or_else(Connections::default, |pool| {
                let status = pool.status();
                Connections {
                    used: status.size.saturating_sub(status.available) as u64,
                    idle: status.available as u64,
                    max: status.max_size as u64,
                    pending: status.waiting as u64,
                }
            })
        });
        let weak_pool = pool.weak();
        let sweep: Weak<Rotation> = Arc::downgrade(&rotation);
        spawn_follower(
            Arc::downgrade(&rotation),
            self.handle,
            rotation.shutdown_signal(),
            move || {
                let (Some(pool), Some(rotation)) = (weak_pool.upgrade(), sweep.upgrade()) else {
                    return;
                };
                let _ = pool.retain(|_, metrics| !rotation.retire(metrics.age()));
            },
        );
        Ok((pool, PoolMonitor { rotation }))
    }

    /// Builds the pool and opens one connection, so that bad settings or credentials show now.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) when deadpool refuses the settings;
    /// [`ErrorKind::AuthRejected`](crate::ErrorKind::AuthRejected) when the database keeps
    /// rejecting the credentials past the retry budget; [`ErrorKind::Transient`](crate::ErrorKind::Transient)
    /// when it cannot be reached.
    pub async fn connect(self) -> Result<(Pool, PoolMonitor)> {
        let (pool, monitor) = self.build_monitored()?;
        let id = monitor.handle().id().to_owned();
        match pool.get().await {
            Ok(client) => drop(client),
            Err(error) => {
                let auth = std::error::Error::source(&error)
                    .is_some_and(|source| monitor.rotation.is_auth_failure(source))
                    || monitor.rotation.is_auth_failure(&error);
                let kind = if auth {
                    crate::ErrorKind::AuthRejected
                } else {
                    crate::ErrorKind::Transient
                };
                let code = super::sqlstate(&error).unwrap_or_default();
                return Err(Error::new(kind)
                    .with_id(id)
                    .with_message(format!("could not open a connection (SQLSTATE {code})")));
            }
        }
        Ok((pool, monitor))
    }
}
