//! deadpool-postgres connections that follow a credentials handle, in an ordinary
//! `deadpool_postgres::Pool`.

use std::fmt;
use std::sync::Arc;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, Runtime};
use futures_util::future::BoxFuture;
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, NoTls, Socket};

use super::classify::AuthFailurePolicy;
use super::credentials::PgCredentials;
use super::rotation::{PoolStats, Rotation, RotationConfig, spawn_follower, with_auth_retry};
use crate::error::{Error, Result};
use crate::handle::SecretHandle;

/// A [`deadpool_postgres::Connect`] that opens every connection with the handle's newest
/// credentials, and retries rejected logins: one coalesced refresh, the previous credentials while
/// inside their grace period, jittered backoff, within the [`RotationConfig`] budget.
///
/// Most users build a whole pool with [`RotatingDeadpoolBuilder`] instead.
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

fn apply_credentials(config: &mut Config, creds: &PgCredentials) {
    if let Some(host) = &creds.host {
        *config = with_host(config, host);
    }
    let _ = config
        .user(&creds.username)
        .password(creds.password.expose_secret());
    if let Some(port) = creds.port {
        let _ = config.port(port);
    }
    if let Some(dbname) = &creds.dbname {
        let _ = config.dbname(dbname);
    }
    if let Some(mode) = &creds.ssl_mode {
        use tokio_postgres::config::SslMode;
        let parsed = match mode.as_str() {
            "disable" => Some(SslMode::Disable),
            "prefer" | "allow" => Some(SslMode::Prefer),
            "require" | "verify-ca" | "verify-full" => Some(SslMode::Require),
            _ => None,
        };
        match parsed {
            Some(parsed) => {
                let _ = config.ssl_mode(parsed);
            }
            None => tracing::warn!(
                ssl_mode = %mode,
                "credswap: unknown ssl_mode in the database secret; keeping the pool's"
            ),
        }
    }
}

/// `config` aimed at `host` alone. tokio-postgres can only add hosts, so the settings that matter
/// for a connection are copied into a new config.
fn with_host(config: &Config, host: &str) -> Config {
    let mut fresh = Config::new();
    let _ = fresh.host(host);
    if let Some(dbname) = config.get_dbname() {
        let _ = fresh.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        let _ = fresh.options(options);
    }
    if let Some(name) = config.get_application_name() {
        let _ = fresh.application_name(name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        let _ = fresh.connect_timeout(*timeout);
    }
    if let Some(port) = config.get_ports().first() {
        let _ = fresh.port(*port);
    }
    let _ = fresh
        .ssl_mode(config.get_ssl_mode())
        .target_session_attrs(config.get_target_session_attrs())
        .channel_binding(config.get_channel_binding())
        .keepalives(config.get_keepalives());
    fresh
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
        Box::pin(async move {
            with_auth_retry(&self.rotation, |chosen| {
                let mut config = base.clone();
                apply_credentials(&mut config, chosen.credentials());
                let tls = self.tls.clone();
                let rotation = &self.rotation;
                async move {
                    let (client, connection) = config.connect(tls).await?;
                    let task = tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "credswap: PostgreSQL connection ended with an error");
                        }
                    });
                    rotation.record_connected(chosen.epoch);
                    Ok((client, task))
                }
            })
            .await
        })
    }
}

/// Builds an ordinary [`deadpool_postgres::Pool`] whose connections follow a credentials handle.
///
/// New connections use the newest credentials and retry rejected logins ([`RotatingConnect`]); a
/// `pre_recycle` hook retires connections opened before a rotation once the drain delay has passed,
/// and idle ones are swept at that moment with `Pool::retain`.
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run(cache: credswap::SecretCache) -> Result<(), Box<dyn std::error::Error>> {
/// use credswap::pg::{PgCredentials, RotatingDeadpoolBuilder};
///
/// let creds = cache.handle::<PgCredentials>("prod/orders/db").await?;
/// let mut target = tokio_postgres::Config::new();
/// target.host("db.internal").dbname("orders");
/// let pool: deadpool_postgres::Pool = RotatingDeadpoolBuilder::new(creds)
///     .pg_config(target)
///     .max_size(16)
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
    config: RotationConfig,
    policy: Option<Arc<dyn AuthFailurePolicy>>,
}

impl<T> fmt::Debug for RotatingDeadpoolBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingDeadpoolBuilder")
            .field("handle", &self.handle)
            .field("max_size", &self.max_size)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Watches a pool built by [`RotatingDeadpoolBuilder::build_monitored`]: its counters.
#[derive(Clone)]
pub struct PoolMonitor {
    rotation: Arc<Rotation>,
}

impl fmt::Debug for PoolMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolMonitor")
            .field("stats", &self.stats())
            .finish()
    }
}

impl PoolMonitor {
    /// Counters: authentication failures, retries, refreshes, drained connections, update latency.
    pub fn stats(&self) -> PoolStats {
        self.rotation.stats()
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
            config: RotationConfig::default(),
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
            config: self.config,
            policy: self.policy,
        }
    }

    /// Connection settings the secret does not carry (host, port, database, application name);
    /// the secret's username and password, and any host, port or database it names, go on top.
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

    /// Retry and drain settings.
    pub fn rotation(mut self, config: RotationConfig) -> Self {
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

    /// Builds the pool and a monitor of its rotation counters.
    pub fn build_monitored(self) -> Result<(Pool, PoolMonitor)> {
        let rotation = Rotation::new(
            self.handle.clone(),
            self.config,
            self.policy,
            // Each connection attempt reads the credentials itself: nothing to push.
            Box::new(|_| {}),
        );
        let connect = RotatingConnect {
            rotation: Arc::clone(&rotation),
            tls: self.tls,
        };
        let manager = Manager::from_connect(self.pg_config, connect, self.manager_config);
        let retire = Arc::downgrade(&rotation);
        let pool = Pool::builder(manager)
            .max_size(self.max_size)
            .runtime(Runtime::Tokio1)
            .pre_recycle(Hook::sync_fn(move |_client, metrics| {
                if retire.upgrade().is_some_and(|r| r.retire(metrics.age())) {
                    Err(HookError::Message(
                        "opened with credentials that have been rotated".into(),
                    ))
                } else {
                    Ok(())
                }
            }))
            .build()
            .map_err(|e| Error::config(format!("deadpool rejected the pool settings: {e}")))?;

        let weak_pool = pool.weak();
        let sweep = Arc::downgrade(&rotation);
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
}
