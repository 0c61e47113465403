//! A sqlx PostgreSQL pool that follows a credentials handle.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use sqlx::pool::{PoolConnection, PoolConnectionMetadata};
use sqlx::postgres::{
    PgConnectOptions, PgConnection, PgPoolOptions, PgQueryResult, PgRow, PgSslMode,
};
use sqlx::{Either, Execute, Executor, PgPool, Postgres, Transaction};

use super::auth_failure::AuthFailurePolicy;
use super::config::{Endpoint, RetryAndDrain};
use super::credentials::{PgCredentials, TlsLevel};
use super::events::{ConnectionTiming, Connections, PoolStats};
use super::monitor::PoolMonitor;
use super::rotation::{Rotation, spawn_follower, with_auth_retry};
use crate::error::{Error, Result};
use crate::handle::SecretHandle;
use crate::time::Instant;

tokio::task_local! {
    /// The epoch of the credentials in force when this task's acquire started: a login inside it
    /// used those or newer ones.
    static LOGIN_EPOCH: Login;
}

/// What a login inside an acquire knows of it.
#[derive(Clone, Copy)]
struct Login {
    epoch: u64,
    /// When the acquire (which opened the connection) started.
    started: Instant,
}

type AfterConnect = Arc<
    dyn for<'c> Fn(&'c mut PgConnection, PoolConnectionMetadata) -> BoxFuture<'c, sqlx::Result<()>>
        + Send
        + Sync,
>;
type Check = Arc<
    dyn for<'c> Fn(
            &'c mut PgConnection,
            PoolConnectionMetadata,
        ) -> BoxFuture<'c, sqlx::Result<bool>>
        + Send
        + Sync,
>;

/// A sqlx `PgPool` that keeps working while its database credentials rotate.
///
/// - Every new version of the handle becomes the pool's connect options at once
///   (`set_connect_options`); open connections are not touched.
/// - When opening a connection fails with an authentication failure (SQLSTATE `28P01`/`28000`, or
///   whatever the [`AuthFailurePolicy`] says), it asks the handle for the newest credentials
///   (coalesced: a storm of failures costs the store one call), falls back to the previous
///   credentials while they are inside their grace period (alternating users only: with one user
///   the previous password no longer works), and retries with a jittered backoff, within
///   [`RetryAndDrain::retry_attempts`] and [`retry_budget`](RetryAndDrain::retry_budget). Only
///   then does the caller see the error.
/// - Each connection is judged by the credentials its login used, logins that were in flight at a
///   rotation included. Each version of the credentials gets its own deadline when it is replaced
///   ([`drain_delay`](RetryAndDrain::drain_delay) later, or before its lease ends); its
///   connections are closed when they come back to, or are taken from, the pool after it, and idle
///   ones are swept then. A query in flight is never interrupted.
///
/// `&RotatingPgPool` is an [`Executor`], like `&PgPool`: `sqlx::query(..).fetch_all(&pool)` works
/// unchanged.
///
/// The pool needs sqlx's `before_acquire`, `after_release` and `after_connect` callbacks: set yours
/// on the [builder](RotatingPgPoolBuilder::before_acquire), which runs them after its own, not on
/// the [`PgPoolOptions`] (whose callbacks it replaces).
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run(cache: credswap::SecretCache) -> Result<(), Box<dyn std::error::Error>> {
/// use credswap::pg::{PgCredentials, RotatingPgPool};
/// use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
///
/// let creds = cache.handle::<PgCredentials>("prod/orders/db").await?;
/// let pool = RotatingPgPool::builder(creds)
///     .pool_options(PgPoolOptions::new().max_connections(16))
///     .connect_options(PgConnectOptions::new().host("db.internal").database("orders"))
///     .connect()
///     .await?;
/// let rows = sqlx::query("SELECT 1").fetch_all(&pool).await?;
/// # drop(rows);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RotatingPgPool {
    shared: Arc<Shared>,
}

struct Shared {
    pool: PgPool,
    rotation: Arc<Rotation>,
    /// Callers inside `acquire` now.
    waiting: Arc<AtomicU64>,
}

/// Counts a caller waiting in `acquire` until it is dropped (the acquire ended or was cancelled).
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(waiting: &'a AtomicU64) -> Self {
        let _ = waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let _ = self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for RotatingPgPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the connect options: their Debug prints the password.
        f.debug_struct("RotatingPgPool")
            .field("size", &self.shared.pool.size())
            .field("idle", &self.shared.pool.num_idle())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Builds a [`RotatingPgPool`].
#[must_use]
pub struct RotatingPgPoolBuilder {
    handle: SecretHandle<PgCredentials>,
    pool_options: PgPoolOptions,
    connect_options: PgConnectOptions,
    config: RetryAndDrain,
    policy: Option<Arc<dyn AuthFailurePolicy>>,
    after_connect: Option<AfterConnect>,
    before_acquire: Option<Check>,
    after_release: Option<Check>,
}

impl fmt::Debug for RotatingPgPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingPgPoolBuilder")
            .field("handle", &self.handle)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn pg_ssl_mode(level: TlsLevel) -> PgSslMode {
    match level {
        TlsLevel::Disable => PgSslMode::Disable,
        TlsLevel::Allow => PgSslMode::Allow,
        TlsLevel::Prefer => PgSslMode::Prefer,
        TlsLevel::Require => PgSslMode::Require,
        TlsLevel::VerifyCa => PgSslMode::VerifyCa,
        TlsLevel::VerifyFull => PgSslMode::VerifyFull,
    }
}

fn level_of(mode: PgSslMode) -> TlsLevel {
    match mode {
        PgSslMode::Disable => TlsLevel::Disable,
        PgSslMode::Allow => TlsLevel::Allow,
        PgSslMode::Prefer => TlsLevel::Prefer,
        PgSslMode::Require => TlsLevel::Require,
        PgSslMode::VerifyCa => TlsLevel::VerifyCa,
        PgSslMode::VerifyFull => TlsLevel::VerifyFull,
    }
}

/// Connect options with the credentials applied: the user and password; the host and port the
/// secret names, unless `endpoint` keeps the configured ones; the database it names; its
/// `sslmode` if stricter than the options' own. Every other setting of `base` stays.
pub(crate) fn apply_credentials(
    base: &PgConnectOptions,
    creds: &PgCredentials,
    endpoint: Endpoint,
) -> PgConnectOptions {
    let login = creds.login_at(endpoint == Endpoint::FromSecret);
    let mut options = base
        .clone()
        .username(login.username)
        .password(login.password);
    if let Some(host) = login.host {
        options = options.host(host);
    }
    if let Some(port) = login.port {
        options = options.port(port);
    }
    if let Some(dbname) = login.dbname {
        options = options.database(dbname);
    }
    if let Some(level) = login.tls_at_least {
        if level > level_of(base.get_ssl_mode()) {
            options = options.ssl_mode(pg_ssl_mode(level));
        }
    }
    options
}

impl RotatingPgPoolBuilder {
    /// Pool settings (size, timeouts). Default: `PgPoolOptions::new()`. Its `after_connect`,
    /// `before_acquire` and `after_release` are replaced: set yours on this builder.
    pub fn pool_options(mut self, options: PgPoolOptions) -> Self {
        self.pool_options = options;
        self
    }

    /// Connection settings (host, port, database, TLS, application name, ...). The secret's
    /// username and password go on top, with its host, port and database unless the
    /// [`Endpoint`] says otherwise; its `sslmode` only when stricter. Default:
    /// `PgConnectOptions::new()` (libpq environment variables).
    pub fn connect_options(mut self, options: PgConnectOptions) -> Self {
        self.connect_options = options;
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

    /// sqlx's `after_connect`, run after the pool's own bookkeeping for each new connection.
    pub fn after_connect<F>(mut self, callback: F) -> Self
    where
        F: for<'c> Fn(
                &'c mut PgConnection,
                PoolConnectionMetadata,
            ) -> BoxFuture<'c, sqlx::Result<()>>
            + Send
            + Sync
            + 'static,
    {
        self.after_connect = Some(Arc::new(callback));
        self
    }

    /// sqlx's `before_acquire`, run for connections the pool keeps (one opened with retired
    /// credentials is closed first, without calling it).
    pub fn before_acquire<F>(mut self, callback: F) -> Self
    where
        F: for<'c> Fn(
                &'c mut PgConnection,
                PoolConnectionMetadata,
            ) -> BoxFuture<'c, sqlx::Result<bool>>
            + Send
            + Sync
            + 'static,
    {
        self.before_acquire = Some(Arc::new(callback));
        self
    }

    /// sqlx's `after_release`, run for connections the pool keeps (as for `before_acquire`).
    pub fn after_release<F>(mut self, callback: F) -> Self
    where
        F: for<'c> Fn(
                &'c mut PgConnection,
                PoolConnectionMetadata,
            ) -> BoxFuture<'c, sqlx::Result<bool>>
            + Send
            + Sync
            + 'static,
    {
        self.after_release = Some(Arc::new(callback));
        self
    }

    /// Builds the pool without connecting; connections open on first use.
    ///
    /// # Errors
    ///
    /// None today; the signature matches the deadpool builder's.
    pub fn build(self) -> Result<RotatingPgPool> {
        let base = self.connect_options;
        let endpoint = self.config.endpoint;
        // The rotation applies credentials to the pool, which needs the rotation's callbacks to
        // exist first: the pool goes in this slot once built.
        let slot: Arc<OnceLock<PgPool>> = Arc::new(OnceLock::new());
        let apply_slot = Arc::clone(&slot);
        let apply_base = base.clone();
        let rotation = Rotation::new(
            self.handle.clone(),
            self.config,
            self.policy,
            Box::new(move |chosen| {
                if let Some(pool) = apply_slot.get() {
                    pool.set_connect_options(apply_credentials(
                        &apply_base,
                        chosen.credentials(),
                        endpoint,
                    ));
                }
            }),
        );
        let initial = apply_credentials(&base, rotation.current().credentials(), endpoint);
        // The longest a login can take: sqlx gives up connecting after the acquire timeout.
        let login_bound = self.pool_options.get_acquire_timeout();
        let options = with_callbacks(
            self.pool_options,
            Arc::downgrade(&rotation),
            login_bound,
            Callbacks {
                after_connect: self.after_connect,
                before_acquire: self.before_acquire,
                after_release: self.after_release,
            },
        );
        let pool = options.connect_lazy_with(initial);
        let _ = slot.set(pool.clone());
        // A rotation that landed while the pool was being built found no pool: apply again.
        rotation.reapply();

        let drain_pool = pool.clone();
        spawn_follower(
            Arc::downgrade(&rotation),
            self.handle,
            rotation.shutdown_signal(),
            move || sweep_idle(&drain_pool),
        );
        let waiting = Arc::new(AtomicU64::new(0));
        let (counted, counted_waiting) = (pool.clone(), Arc::clone(&waiting));
        rotation.count_connections_with(move || {
            let (size, idle) = (u64::from(counted.size()), counted.num_idle() as u64);
            Connections {
                used: size.saturating_sub(idle),
                idle,
                max: u64::from(counted.options().get_max_connections()),
                pending: counted_waiting.load(Ordering::Relaxed),
            }
        });
        Ok(RotatingPgPool {
            shared: Arc::new(Shared {
                pool,
                rotation,
                waiting,
            }),
        })
    }

    /// Builds the pool and opens one connection, so that bad settings or credentials show now.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::AuthRejected`](crate::ErrorKind::AuthRejected) when the database keeps
    /// rejecting the credentials past the retry budget; [`ErrorKind::Transient`](crate::ErrorKind::Transient)
    /// when it cannot be reached.
    pub async fn connect(self) -> Result<RotatingPgPool> {
        let pool = self.build()?;
        let conn = pool.acquire().await.map_err(|e| to_error(&pool, e))?;
        drop(conn);
        Ok(pool)
    }
}

/// The user's callbacks, run after the pool's own.
struct Callbacks {
    after_connect: Option<AfterConnect>,
    before_acquire: Option<Check>,
    after_release: Option<Check>,
}

fn with_callbacks(
    options: PgPoolOptions,
    rotation: Weak<Rotation>,
    login_bound: std::time::Duration,
    user: Callbacks,
) -> PgPoolOptions {
    let before = retiring(rotation.clone(), user.before_acquire);
    let after = retiring(rotation.clone(), user.after_release);
    let after_connect = user.after_connect;
    options
        .after_connect(move |conn, meta| {
            if let Some(rotation) = rotation.upgrade() {
                // Which credentials did this login use? Those in force when our acquire started,
                // or newer; a login outside it (sqlx's own upkeep, `inner()`) is judged by the
                // oldest it may have used.
                match LOGIN_EPOCH.try_with(|login| *login) {
                    Ok(login) => {
                        rotation.timing(ConnectionTiming::Created(login.started.elapsed()));
                        rotation.login_finished(login.epoch);
                    }
                    Err(_) => rotation.login_finished_unseen(login_bound),
                }
            }
            match &after_connect {
                Some(user) => user(conn, meta),
                None => Box::pin(async { Ok(()) }),
            }
        })
        .before_acquire(move |conn, meta| before(conn, meta))
        .after_release(move |conn, meta| after(conn, meta))
}

/// A sqlx check (`before_acquire`, `after_release`) that closes connections whose credentials
/// are past their drain deadline, and runs the user's own check on the others.
fn retiring(rotation: Weak<Rotation>, user: Option<Check>) -> Check {
    Arc::new(
        move |conn: &mut PgConnection,
              meta: PoolConnectionMetadata|
              -> BoxFuture<'_, sqlx::Result<bool>> {
            if rotation.upgrade().is_some_and(|r| r.retire(meta.age)) {
                return Box::pin(async { Ok(false) });
            }
            match &user {
                Some(user) => user(conn, meta),
                None => Box::pin(async { Ok(true) }),
            }
        },
    )
}

/// Takes every idle connection out and puts it back, so `after_release` closes the old ones.
fn sweep_idle(pool: &PgPool) {
    for _ in 0..pool.num_idle() {
        match pool.try_acquire() {
            // Dropping returns it through `after_release`, which retires it if it is old.
            Some(conn) => drop(conn),
            None => break,
        }
    }
}

fn to_error(pool: &RotatingPgPool, error: sqlx::Error) -> Error {
    let auth = pool.shared.rotation.is_auth_failure(&error);
    let message = match &error {
        sqlx::Error::Database(db) => format!(
            "the database refused the connection (SQLSTATE {})",
            db.code().unwrap_or_default()
        ),
        other => other.to_string(),
    };
    let kind = if auth {
        crate::ErrorKind::AuthRejected
    } else {
        crate::ErrorKind::Transient
    };
    Error::new(kind)
        .with_id(pool.shared.rotation.handle.id())
        .with_message(message)
}

impl RotatingPgPool {
    /// Starts building a pool over `handle`.
    pub fn builder(handle: SecretHandle<PgCredentials>) -> RotatingPgPoolBuilder {
        RotatingPgPoolBuilder {
            handle,
            pool_options: PgPoolOptions::new(),
            connect_options: PgConnectOptions::new(),
            config: RetryAndDrain::default(),
            policy: None,
            after_connect: None,
            before_acquire: None,
            after_release: None,
        }
    }

    /// A connection from the pool, opening one with the newest credentials if needed, and
    /// retrying rejected logins as described on [`RotatingPgPool`].
    ///
    /// # Errors
    ///
    /// sqlx's error: the last authentication failure once the retry budget is spent
    /// (`as_database_error().code()` is `28P01` or `28000`), or any other error at once.
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        let shared = &self.shared;
        let started = Instant::now();
        let _waiting = Waiting::new(&shared.waiting);
        let result = with_auth_retry(&shared.rotation, |chosen| {
            let login = Login {
                epoch: chosen.epoch,
                started: Instant::now(),
            };
            LOGIN_EPOCH.scope(login, shared.pool.acquire())
        })
        .await;
        shared
            .rotation
            .timing(ConnectionTiming::Waited(started.elapsed()));
        result
    }

    /// A transaction on a connection from [`acquire`](Self::acquire).
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let conn = self.acquire().await?;
        Transaction::begin(conn, None).await
    }

    /// The underlying sqlx pool (its connect options follow the handle). Connections acquired
    /// from it directly are drained like the others but not retried on authentication failures.
    pub fn inner(&self) -> &PgPool {
        &self.shared.pool
    }

    /// The credentials handle the pool follows.
    pub fn handle(&self) -> &SecretHandle<PgCredentials> {
        &self.shared.rotation.handle
    }

    /// Counters: authentication failures, retries, refreshes, drained connections, update latency.
    pub fn stats(&self) -> PoolStats {
        self.shared.rotation.stats()
    }

    /// A monitor of the pool: counters, a record per version of the credentials, events.
    pub fn monitor(&self) -> PoolMonitor {
        PoolMonitor {
            rotation: Arc::clone(&self.shared.rotation),
        }
    }

    /// Closes the pool: waits for connections in use to come back, then closes all.
    pub async fn close(&self) {
        self.shared.pool.close().await;
    }
}

impl<'p> Executor<'p> for &'_ RotatingPgPool {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let pool = self.clone();
        async_stream::try_stream! {
            let mut conn = pool.acquire().await?;
            let mut rows = conn.fetch_many(query);
            while let Some(row) = rows.try_next().await? {
                yield row;
            }
        }
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let pool = self.clone();
        Box::pin(async move { pool.acquire().await?.fetch_optional(query).await })
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [sqlx::postgres::PgTypeInfo],
    ) -> BoxFuture<'e, Result<sqlx::postgres::PgStatement, sqlx::Error>>
    where
        'p: 'e,
    {
        let pool = self.clone();
        Box::pin(async move { pool.acquire().await?.prepare_with(sql, parameters).await })
    }

    fn describe<'e>(
        self,
        sql: sqlx::SqlStr,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Postgres>, sqlx::Error>> {
        let pool = self.clone();
        Box::pin(async move { pool.acquire().await?.describe(sql).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_on_top_of_the_options_and_tls_only_goes_up() {
        let creds: PgCredentials = serde_json::from_str(
            r#"{"host": "db.internal", "port": 5432, "dbname": "orders", "username": "app",
                "password": "pw", "ssl_mode": "disable"}"#,
        )
        .unwrap();
        let base = PgConnectOptions::new()
            .host("proxy.internal")
            .port(6432)
            .application_name("orders-api")
            .ssl_mode(PgSslMode::Require);
        let options = apply_credentials(&base, &creds, Endpoint::FromSecret);
        assert_eq!(
            (options.get_host(), options.get_port()),
            ("db.internal", 5432)
        );
        assert_eq!(options.get_username(), "app");
        assert_eq!(options.get_database(), Some("orders"));
        assert_eq!(options.get_application_name(), Some("orders-api"));
        assert!(matches!(options.get_ssl_mode(), PgSslMode::Require));
        let options = apply_credentials(&base, &creds, Endpoint::Configured);
        assert_eq!(
            (options.get_host(), options.get_port()),
            ("proxy.internal", 6432)
        );
        let strict: PgCredentials = serde_json::from_str(
            r#"{"username": "app", "password": "pw", "sslmode": "verify-full"}"#,
        )
        .unwrap();
        let options = apply_credentials(&base, &strict, Endpoint::FromSecret);
        assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyFull));
    }
}
