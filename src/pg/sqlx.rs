//! A sqlx PostgreSQL pool that follows a credentials handle.

use std::fmt;
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use secrecy::ExposeSecret;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult, PgRow, PgSslMode};
use sqlx::{Either, Execute, Executor, PgPool, Postgres, Transaction};

use super::classify::AuthFailurePolicy;
use super::credentials::PgCredentials;
use super::rotation::{PoolStats, Rotation, RotationConfig, spawn_follower, with_auth_retry};
use crate::error::{Error, Result};
use crate::handle::SecretHandle;

/// A sqlx `PgPool` that keeps working while its database credentials rotate.
///
/// - Every new version of the handle becomes the pool's connect options at once
///   (`set_connect_options`); open connections are not touched.
/// - When opening a connection fails with an authentication failure (SQLSTATE `28P01`/`28000`, or
///   whatever the [`AuthFailurePolicy`] says), it asks the handle for the newest credentials
///   (coalesced: a storm of failures costs the store one call), falls back to the previous
///   credentials while they are inside their grace period (alternating users), and retries with a
///   jittered backoff, within [`RotationConfig::retry_attempts`] and
///   [`retry_budget`](RotationConfig::retry_budget). Only then does the caller see the error.
/// - Connections opened before a rotation are closed when they come back to, or are taken from,
///   the pool after [`drain_delay`](RotationConfig::drain_delay) (and before the old credentials'
///   lease ends); idle ones are swept at that moment. A query in flight is never interrupted.
///
/// `&RotatingPgPool` is an [`Executor`], like `&PgPool`: `sqlx::query(..).fetch_all(&pool)` works
/// unchanged.
///
/// The pool installs its own `before_acquire`, `after_release` and `after_connect` callbacks on the
/// [`PgPoolOptions`] it is given, replacing any set there.
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
    config: RotationConfig,
    policy: Option<Arc<dyn AuthFailurePolicy>>,
}

impl fmt::Debug for RotatingPgPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingPgPoolBuilder")
            .field("handle", &self.handle)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Connect options with the credentials (and whatever target the secret names) applied.
pub fn apply_credentials(base: &PgConnectOptions, creds: &PgCredentials) -> PgConnectOptions {
    let mut options = base
        .clone()
        .username(&creds.username)
        .password(creds.password.expose_secret());
    if let Some(host) = &creds.host {
        options = options.host(host);
    }
    if let Some(port) = creds.port {
        options = options.port(port);
    }
    if let Some(dbname) = &creds.dbname {
        options = options.database(dbname);
    }
    if let Some(mode) = &creds.ssl_mode {
        match mode.parse::<PgSslMode>() {
            Ok(mode) => options = options.ssl_mode(mode),
            Err(_) => tracing::warn!(
                ssl_mode = %mode,
                "credswap: unknown ssl_mode in the database secret; keeping the pool's"
            ),
        }
    }
    options
}

impl RotatingPgPoolBuilder {
    /// Pool settings (size, timeouts). Default: `PgPoolOptions::new()`.
    pub fn pool_options(mut self, options: PgPoolOptions) -> Self {
        self.pool_options = options;
        self
    }

    /// Connection settings the secret does not carry (host, port, database, TLS, application
    /// name); the secret's username and password, and any host, port, database or SSL mode it
    /// names, are applied on top. Default: `PgConnectOptions::new()` (libpq environment variables).
    pub fn connect_options(mut self, options: PgConnectOptions) -> Self {
        self.connect_options = options;
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

    fn build(self) -> RotatingPgPool {
        let base = self.connect_options;
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
                    pool.set_connect_options(apply_credentials(&apply_base, chosen.credentials()));
                }
            }),
        );
        let initial = apply_credentials(&base, rotation.current().credentials());

        let retire = Arc::downgrade(&rotation);
        let retire_on_release = retire.clone();
        let connected = retire.clone();
        let options = self
            .pool_options
            .before_acquire(move |_conn, meta| {
                let retire = retire.upgrade().is_some_and(|r| r.retire(meta.age));
                Box::pin(async move { Ok(!retire) })
            })
            .after_release(move |_conn, meta| {
                let retire = retire_on_release
                    .upgrade()
                    .is_some_and(|r| r.retire(meta.age));
                Box::pin(async move { Ok(!retire) })
            })
            .after_connect(move |_conn, _meta| {
                if let Some(rotation) = connected.upgrade() {
                    rotation.record_connected(rotation.epoch());
                }
                Box::pin(async { Ok(()) })
            });
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
        RotatingPgPool {
            shared: Arc::new(Shared { pool, rotation }),
        }
    }

    /// Builds the pool and opens one connection, so that bad settings or credentials show now.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::AuthRejected`](crate::ErrorKind::AuthRejected) when the database keeps
    /// rejecting the credentials past the retry budget; [`ErrorKind::Transient`](crate::ErrorKind::Transient)
    /// when it cannot be reached.
    pub async fn connect(self) -> Result<RotatingPgPool> {
        let pool = self.build();
        let conn = pool.acquire().await.map_err(|e| to_error(&pool, e))?;
        drop(conn);
        Ok(pool)
    }

    /// Builds the pool without connecting; connections open on first use.
    pub fn connect_lazy(self) -> Result<RotatingPgPool> {
        Ok(self.build())
    }
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
            config: RotationConfig::default(),
            policy: None,
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
        let pool = &self.shared.pool;
        with_auth_retry(&self.shared.rotation, |_chosen| pool.acquire()).await
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
