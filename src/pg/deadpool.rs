//! deadpool-postgres connections that follow a credentials handle, in an ordinary
//! `deadpool_postgres::Pool`.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, Runtime, Timeouts};
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, NoTls, Socket};

use super::auth_failure::AuthFailurePolicy;
use super::config::RotationConfig;
use super::credentials::{PgCredentials, TlsLevel};
use super::monitor::PoolMonitor;
use super::rotation::{Rotation, spawn_follower, with_auth_retry};
use crate::error::{Error, Result};
use crate::handle::SecretHandle;

/// A [`deadpool_postgres::Connect`] that opens every connection with the handle's newest
/// credentials, and retries rejected logins: one coalesced refresh, the previous credentials while
/// inside their grace period (alternating users), jittered backoff, within the
/// [`RotationConfig`] budget. It records which credentials each connection used, so that
/// [`pre_recycle`](Self::pre_recycle) retires it once those are past their drain deadline.
///
/// Most users build a whole pool with [`RotatingDeadpoolBuilder`] instead; use this to assemble a
/// [`Manager`] of your own:
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run(cache: credswap::SecretCache) -> Result<(), Box<dyn std::error::Error>> {
/// use credswap::pg::{PgCredentials, RotatingConnect, RotationConfig};
/// use deadpool_postgres::{Manager, ManagerConfig, Pool};
///
/// let creds = cache.handle::<PgCredentials>("prod/orders/db").await?;
/// let connect = RotatingConnect::new(creds, RotationConfig::default(), tokio_postgres::NoTls);
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
    pub fn new(handle: SecretHandle<PgCredentials>, config: RotationConfig, tls: T) -> Self {
        Self::with_policy(handle, config, None, tls)
    }

    fn with_policy(
        handle: SecretHandle<PgCredentials>,
        config: RotationConfig,
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

fn ssl_mode(level: TlsLevel) -> SslMode {
    // tokio-postgres only knows whether to use TLS; verifying the server is the TLS connector's
    // job (native-tls and rustls connectors verify by default).
    match level {
        TlsLevel::Disable => SslMode::Disable,
        TlsLevel::Allow | TlsLevel::Prefer => SslMode::Prefer,
        TlsLevel::Require | TlsLevel::VerifyCa | TlsLevel::VerifyFull => SslMode::Require,
    }
}

fn level_of(mode: SslMode) -> TlsLevel {
    match mode {
        SslMode::Disable => TlsLevel::Disable,
        SslMode::Prefer => TlsLevel::Prefer,
        _ => TlsLevel::Require,
    }
}

/// `base` with the credentials applied: the user and password; the host and port the secret
/// names, unless the endpoint keeps the configured ones; the database it names; its `sslmode` if
/// stricter. Every other setting of `base` (keepalives, `tcp_user_timeout`, `hostaddr`,
/// `application_name`, options, timeouts, channel binding, ...) stays.
fn apply_credentials(base: &Config, creds: &PgCredentials, endpoint: super::Endpoint) -> Config {
    let login = creds.login(endpoint);
    let moves_target = login.host.is_some() || login.port.is_some();
    let mut config = if moves_target {
        // tokio-postgres can only add hosts and ports: build the target anew, with everything else.
        let mut fresh = settings_of(base);
        match login.host {
            Some(host) => {
                let _ = fresh.host(host);
            }
            None => {
                for host in base.get_hosts() {
                    let _ = match host {
                        tokio_postgres::config::Host::Tcp(name) => fresh.host(name),
                        #[cfg(unix)]
                        tokio_postgres::config::Host::Unix(path) => fresh.host_path(path),
                    };
                }
                for addr in base.get_hostaddrs() {
                    let _ = fresh.hostaddr(*addr);
                }
            }
        }
        match login.port {
            Some(port) => {
                let _ = fresh.port(port);
            }
            None => {
                for port in base.get_ports() {
                    let _ = fresh.port(*port);
                }
            }
        }
        fresh
    } else {
        base.clone()
    };
    let _ = config.user(login.username).password(login.password);
    if let Some(dbname) = login.dbname {
        let _ = config.dbname(dbname);
    }
    if let Some(level) = login.tls_at_least {
        if level > level_of(base.get_ssl_mode()) {
            let _ = config.ssl_mode(ssl_mode(level));
        }
    }
    config
}

/// Every setting of `config` but its hosts, host addresses and ports.
fn settings_of(config: &Config) -> Config {
    let mut fresh = Config::new();
    if let Some(user) = config.get_user() {
        let _ = fresh.user(user);
    }
    if let Some(password) = config.get_password() {
        let _ = fresh.password(password);
    }
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
    if let Some(timeout) = config.get_tcp_user_timeout() {
        let _ = fresh.tcp_user_timeout(*timeout);
    }
    if let Some(interval) = config.get_keepalives_interval() {
        let _ = fresh.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        let _ = fresh.keepalives_retries(retries);
    }
    let _ = fresh
        .ssl_mode(config.get_ssl_mode())
        .ssl_negotiation(config.get_ssl_negotiation())
        .keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle())
        .target_session_attrs(config.get_target_session_attrs())
        .channel_binding(config.get_channel_binding())
        .load_balance_hosts(config.get_load_balance_hosts());
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
        let endpoint = self.rotation.config.endpoint;
        Box::pin(async move {
            with_auth_retry(&self.rotation, |chosen| {
                let config = apply_credentials(&base, chosen.credentials(), endpoint);
                let tls = self.tls.clone();
                let rotation = &self.rotation;
                async move {
                    let (client, connection) = config.connect(tls).await?;
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
    config: RotationConfig,
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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::pg::Endpoint;

    fn rds(json_extra: &str) -> PgCredentials {
        serde_json::from_str(&format!(
            r#"{{"username": "app", "password": "pw", "dbname": "orders"{json_extra}}}"#
        ))
        .unwrap()
    }

    fn base() -> Config {
        let mut config = Config::new();
        let _ = config
            .host("proxy.internal")
            .hostaddr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)))
            .port(6432)
            .application_name("orders")
            .ssl_mode(SslMode::Require)
            .keepalives_idle(Duration::from_secs(17))
            .keepalives_interval(Duration::from_secs(3))
            .keepalives_retries(4)
            .tcp_user_timeout(Duration::from_secs(9))
            .connect_timeout(Duration::from_secs(5))
            .options("-c statement_timeout=5000");
        config
    }

    fn assert_settings_kept(config: &Config) {
        assert_eq!(config.get_application_name(), Some("orders"));
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(17));
        assert_eq!(
            config.get_keepalives_interval(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(config.get_keepalives_retries(), Some(4));
        assert_eq!(config.get_tcp_user_timeout(), Some(&Duration::from_secs(9)));
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(5)));
        assert_eq!(config.get_options(), Some("-c statement_timeout=5000"));
        assert_eq!(config.get_user(), Some("app"));
        assert_eq!(config.get_password(), Some(&b"pw"[..]));
        assert_eq!(config.get_dbname(), Some("orders"));
    }

    #[test]
    fn the_secrets_target_replaces_the_configured_one_and_keeps_every_other_setting() {
        let creds = rds(r#", "host": "db.internal", "port": 5432, "ssl_mode": "disable""#);
        let config = apply_credentials(&base(), &creds, Endpoint::FromSecret);
        assert_settings_kept(&config);
        assert_eq!(config.get_hosts().len(), 1);
        assert_eq!(config.get_ports(), &[5432], "one port, not two");
        assert!(
            config.get_hostaddrs().is_empty(),
            "the proxy's address is not the secret host's"
        );
        // The secret cannot lower the TLS the pool was given.
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn the_configured_target_stays_when_asked_and_tls_can_only_go_up() {
        let creds = rds(r#", "host": "db.internal", "port": 5432, "ssl_mode": "verify-full""#);
        let mut plain = base();
        let _ = plain.ssl_mode(SslMode::Prefer);
        let config = apply_credentials(&plain, &creds, Endpoint::Configured);
        assert_settings_kept(&config);
        assert_eq!(config.get_ports(), &[6432]);
        assert_eq!(config.get_hostaddrs().len(), 1);
        assert!(
            matches!(&config.get_hosts()[0], tokio_postgres::config::Host::Tcp(h) if h == "proxy.internal")
        );
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        // A port alone in the secret replaces the configured one (not a second port).
        let port_only = rds(r#", "port": 5433"#);
        let config = apply_credentials(&base(), &port_only, Endpoint::FromSecret);
        assert_eq!(config.get_ports(), &[5433]);
        assert_settings_kept(&config);
    }
}
