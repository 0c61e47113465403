//! PostgreSQL as a rotation target: roles re-passworded with client-side SCRAM verifiers, an
//! advisory lock per secret.

use std::any::TypeId;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, NoTls, Socket};

use super::sql::{
    check_role_name, lock_key, map_pg_error, quote_identifier, quote_literal, scram_verifier,
};
use super::strategy::{Strategy, parse_json};
use super::target::{RotationTarget, TargetSession};
use crate::error::{Error, ErrorKind, Result};
use crate::pg::PgCredentials;
use crate::pg::TlsLevel;
use crate::value::SecretValue;

/// How long the server may spend on one statement of the engine's, unless set otherwise.
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// What the client waits beyond the statement timeout before giving up on an answer.
const ANSWER_SLACK: Duration = Duration::from_secs(5);

/// A PostgreSQL server whose roles' passwords rotate.
///
/// - **No password in SQL.** `set` computes the SCRAM-SHA-256 verifier on the client and sends
///   `ALTER ROLE "<role>" PASSWORD '<verifier>'`; the server (and its statement log) never sees the
///   password. Role names are quoted identifiers, so any name works; names over 63 bytes are
///   refused before anything changes (the server would truncate them).
/// - **One rotator per secret.** A session holds `pg_try_advisory_lock(<64-bit key from the
///   store's canonical name of the secret>)` for the whole call; a rotator that cannot take it
///   reports the rotation as under way. The lock lives with the session, so a crashed rotator's
///   lock goes with its connection. Rotators of one secret must use the same database.
/// - **Where to connect.** Host, port and database come from the secret (the RDS JSON shape) unless
///   [`connection`](Self::connection) names them; TLS through any `MakeTlsConnect`, as
///   tokio-postgres does ([`NoTls`] by default). The secret's `ssl_mode` (`sslmode`) can only make
///   TLS stricter than the connection settings, as for the pools: `require`, `verify-ca` and
///   `verify-full` need a TLS connector ([`tls`](Self::tls)), and without one the rotation fails
///   with [`ErrorKind::Config`] before connecting (verifying the server's certificate and name is
///   the connector's job, as in tokio-postgres).
/// - **Who connects.** With an [`admin`](Self::admin) credential, the lock session and `set` use
///   it (required for alternating users; the admin needs `CREATEROLE`, and from PostgreSQL 16
///   `ADMIN OPTION` on the rotated roles). Without one (single user), the role changes its own
///   password, logging in with the current credential, or with the pending one after a crash that
///   happened after `set`.
/// - **Test.** `test` logs in with the pending credential on a new connection and runs the test
///   query (`SELECT 1` unless [`test_query`](Self::test_query) says otherwise).
/// - **Bounded.** Every statement runs under a `statement_timeout` (30 s unless
///   [`statement_timeout`](Self::statement_timeout) says otherwise), and the client stops waiting
///   for an answer a few seconds after it: a role locked by another session or a silent network
///   fails the step ([`ErrorKind::Transient`]) instead of holding the rotation lock forever.
///
/// ```no_run
/// # #![allow(dead_code)]
/// use std::time::Duration;
/// use credswap::rotation::PostgresTarget;
///
/// let target = PostgresTarget::new()
///     .admin("rotator", std::env::var("ROTATOR_PASSWORD").unwrap())
///     .test_query("SELECT count(*) FROM orders WHERE false")
///     .statement_timeout(Duration::from_secs(10));
/// # drop(target);
/// ```
pub struct PostgresTarget<T = NoTls> {
    connection: Config,
    admin: Option<(String, SecretString)>,
    tls: T,
    /// Whether `tls` can do TLS at all (`NoTls` cannot).
    has_tls: bool,
    test_query: String,
    statement_timeout: Duration,
}

impl<T: Clone> Clone for PostgresTarget<T> {
    fn clone(&self) -> Self {
        PostgresTarget {
            connection: self.connection.clone(),
            admin: self.admin.clone(),
            tls: self.tls.clone(),
            has_tls: self.has_tls,
            test_query: self.test_query.clone(),
            statement_timeout: self.statement_timeout,
        }
    }
}

impl<T> fmt::Debug for PostgresTarget<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio-postgres's Config redacts its password in Debug.
        f.debug_struct("PostgresTarget")
            .field("connection", &self.connection)
            .field("admin", &self.admin.as_ref().map(|(user, _)| user))
            .field("tls", &self.has_tls)
            .field("test_query", &self.test_query)
            .field("statement_timeout", &self.statement_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for PostgresTarget<NoTls> {
    fn default() -> Self {
        Self::new()
    }
}

impl PostgresTarget<NoTls> {
    /// A target that connects where the secret says, without TLS.
    pub fn new() -> Self {
        PostgresTarget {
            connection: Config::new(),
            admin: None,
            tls: NoTls,
            has_tls: false,
            test_query: "SELECT 1".to_owned(),
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
        }
    }
}

impl<T> PostgresTarget<T> {
    /// Connection settings that take precedence over the secret's: host, port and database when
    /// set here, and anything else tokio-postgres offers (timeouts, SSL mode, application name).
    /// User and password are always those of the credential in use; the secret's `ssl_mode` may
    /// still raise the SSL mode.
    pub fn connection(mut self, config: Config) -> Self {
        self.connection = config;
        self
    }

    /// The credential that takes the lock and changes roles (needed for alternating users).
    pub fn admin(mut self, username: impl Into<String>, password: impl Into<SecretString>) -> Self {
        self.admin = Some((username.into(), password.into()));
        self
    }

    /// The query `test` runs as the pending credential (default `SELECT 1`).
    pub fn test_query(mut self, sql: impl Into<String>) -> Self {
        self.test_query = sql.into();
        self
    }

    /// The `statement_timeout` of the engine's sessions (default 30 s; zero for none, which also
    /// lets the client wait for answers forever).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout.min(crate::time::MAX_SETTING);
        self
    }

    /// Connects with TLS.
    pub fn tls<U: 'static>(self, tls: U) -> PostgresTarget<U> {
        PostgresTarget {
            connection: self.connection,
            admin: self.admin,
            has_tls: TypeId::of::<U>() != TypeId::of::<NoTls>(),
            tls,
            test_query: self.test_query,
            statement_timeout: self.statement_timeout,
        }
    }

    /// Settings for logging in as `username` at the place `location` (a secret) names.
    fn config(
        &self,
        secret_id: &str,
        location: &PgCredentials,
        username: &str,
        password: &SecretString,
    ) -> Result<Config> {
        let mut config = self.connection.clone();
        if config.get_hosts().is_empty() {
            let host = location.host.as_deref().ok_or_else(|| {
                Error::config(
                    "no database host: the secret has no `host` and PostgresTarget::connection \
                     names none",
                )
                .with_id(secret_id)
            })?;
            let _ = config.host(host);
        }
        if config.get_ports().is_empty() {
            if let Some(port) = location.port {
                let _ = config.port(port);
            }
        }
        if config.get_dbname().is_none() {
            if let Some(dbname) = &location.dbname {
                let _ = config.dbname(dbname);
            }
        }
        if config.get_connect_timeout().is_none() {
            let _ = config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            let _ = config.application_name("credswap-rotation");
        }
        if let Some(mode) = location.ssl_mode.as_deref() {
            if requires_tls(secret_id, mode)? {
                let _ = config.ssl_mode(SslMode::Require);
            }
        }
        if config.get_ssl_mode() == SslMode::Require && !self.has_tls {
            return Err(Error::config(format!(
                "TLS is required ({}) but this PostgresTarget has no TLS connector: give it one \
                 with PostgresTarget::tls",
                location
                    .ssl_mode
                    .as_deref()
                    .map_or("by the connection settings".to_owned(), |mode| format!(
                        "the secret's ssl_mode is `{mode}`"
                    ))
            ))
            .with_id(secret_id));
        }
        let _ = config
            .user(username)
            .password(password.expose_secret().as_bytes());
        Ok(config)
    }

    /// `work`, given up on (as [`ErrorKind::Transient`]) when no answer comes within the
    /// statement timeout and some slack.
    async fn bounded<R>(
        &self,
        secret_id: &str,
        what: &str,
        work: impl Future<Output = Result<R>>,
    ) -> Result<R> {
        if self.statement_timeout.is_zero() {
            return work.await;
        }
        let limit = self.statement_timeout + ANSWER_SLACK;
        tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(Error::transient(
                secret_id,
                format!("{what}: no answer from the database within {limit:?}"),
            ))
        })
    }
}

/// Whether libpq-style `mode` asks for TLS (read as the pools read it: it only ever makes TLS
/// stricter).
fn requires_tls(secret_id: &str, mode: &str) -> Result<bool> {
    match TlsLevel::parse(mode) {
        Some(level) => Ok(level >= TlsLevel::Require),
        // The admin credential may travel over this connection: refuse to guess.
        None => Err(Error::config(format!(
            "the secret's ssl_mode `{}` is not one of disable, allow, prefer, require, verify-ca, \
             verify-full",
            mode.escape_debug()
        ))
        .with_id(secret_id)),
    }
}

fn credentials(secret_id: &str, value: &SecretValue) -> Result<PgCredentials> {
    parse_json(secret_id, value)
}

impl<T> PostgresTarget<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync + 'static,
    T::TlsConnect: Send + Sync,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    async fn connect(&self, secret_id: &str, config: &Config, what: &str) -> Result<Client> {
        let connecting = async {
            config
                .connect(self.tls.clone())
                .await
                .map_err(|e| map_pg_error(secret_id, what, e))
        };
        let (client, connection) = self.bounded(secret_id, what, connecting).await?;
        let _task = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "credswap: rotation connection ended with an error");
            }
        });
        Ok(client)
    }

    /// Sets the statement timeout on a connection that will run statements.
    async fn limit_statements(&self, secret_id: &str, client: &Client) -> Result<()> {
        let sql = format!(
            "SET statement_timeout = {}",
            self.statement_timeout.as_millis()
        );
        self.execute(secret_id, client, &sql, "setting the statement timeout")
            .await
    }

    /// Runs `sql` (no parameters, no rows) on `client`, bounded.
    async fn execute(&self, secret_id: &str, client: &Client, sql: &str, what: &str) -> Result<()> {
        let running = async {
            client
                .batch_execute(sql)
                .await
                .map_err(|e| map_pg_error(secret_id, what, e))
        };
        self.bounded(secret_id, what, running).await
    }

    async fn login(&self, secret_id: &str, credential: &SecretValue, what: &str) -> Result<Client> {
        let creds = credentials(secret_id, credential)?;
        let config = self.config(secret_id, &creds, &creds.username, &creds.password)?;
        self.connect(secret_id, &config, what).await
    }
}

#[async_trait]
impl<T> RotationTarget for PostgresTarget<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync + 'static,
    T::TlsConnect: Send + Sync,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn name(&self) -> &str {
        "postgres"
    }

    fn check_username(&self, secret_id: &str, username: &str) -> Result<()> {
        check_role_name(secret_id, username)
    }

    async fn begin(
        &self,
        secret_id: &str,
        strategy: &Strategy,
        current: &SecretValue,
        pending: Option<&SecretValue>,
    ) -> Result<Option<Box<dyn TargetSession>>> {
        let location = credentials(secret_id, current)?;
        let control = match &self.admin {
            Some((user, password)) => {
                let config = self.config(secret_id, &location, user, password)?;
                self.connect(secret_id, &config, "admin login").await?
            }
            None if strategy.needs_admin() => {
                return Err(Error::config(
                    "alternating users create and re-password another role: give the target an \
                     admin credential (PostgresTarget::admin)",
                )
                .with_id(secret_id));
            }
            None => match self
                .login(secret_id, current, "login as the current role")
                .await
            {
                // After a crash between `set` and `finish`, only the pending password works.
                Err(error) if error.kind() == ErrorKind::AuthRejected && pending.is_some() => {
                    let pending = pending.unwrap_or(current);
                    self.login(secret_id, pending, "login as the pending role")
                        .await?
                }
                other => other?,
            },
        };
        self.limit_statements(secret_id, &control).await?;
        let key = lock_key(secret_id);
        let what = "taking the rotation lock";
        let locking = async {
            control
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .await
                .map_err(|e| map_pg_error(secret_id, what, e))
        };
        let locked: bool = self.bounded(secret_id, what, locking).await?.get(0);
        if !locked {
            return Ok(None);
        }
        Ok(Some(Box::new(PostgresSession {
            target: self.clone(),
            secret_id: secret_id.to_owned(),
            control,
            key,
        })))
    }
}

/// A lock session: the advisory lock is held until released or until the connection closes.
struct PostgresSession<T> {
    target: PostgresTarget<T>,
    secret_id: String,
    control: Client,
    key: i64,
}

#[async_trait]
impl<T> TargetSession for PostgresSession<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync + 'static,
    T::TlsConnect: Send + Sync,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    async fn logs_in(&mut self, credential: &SecretValue) -> Result<bool> {
        match self
            .target
            .login(&self.secret_id, credential, "login as the pending role")
            .await
        {
            Ok(_client) => Ok(true),
            Err(error) if error.kind() == ErrorKind::AuthRejected => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn apply(&mut self, credential: &SecretValue, clone_of: Option<&str>) -> Result<()> {
        let id = self.secret_id.as_str();
        let target = &self.target;
        let creds = credentials(id, credential)?;
        check_role_name(id, &creds.username)?;
        let verifier = scram_verifier(&creds.password).await?;
        let role = quote_identifier(&creds.username);
        let password = quote_literal(&verifier);
        if let Some(base) = clone_of {
            check_role_name(id, base)?;
            let what = "looking up the clone role";
            let looking = async {
                self.control
                    .query_opt(
                        "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                        &[&creds.username],
                    )
                    .await
                    .map_err(|e| map_pg_error(id, what, e))
            };
            if target.bounded(id, what, looking).await?.is_none() {
                // Statements sent together run as one transaction: both or neither.
                let sql = format!(
                    "CREATE ROLE {role} LOGIN PASSWORD {password}; GRANT {} TO {role}",
                    quote_identifier(base)
                );
                return target
                    .execute(id, &self.control, &sql, "creating the clone role")
                    .await;
            }
        }
        let sql = format!("ALTER ROLE {role} PASSWORD {password}");
        target
            .execute(id, &self.control, &sql, "setting the role's password")
            .await
    }

    async fn verify(&mut self, credential: &SecretValue) -> Result<()> {
        let id = self.secret_id.as_str();
        let target = &self.target;
        let client = target
            .login(id, credential, "login with the pending credential")
            .await?;
        target.limit_statements(id, &client).await?;
        target
            .execute(id, &client, &target.test_query, "the test query")
            .await
    }

    async fn release(self: Box<Self>) -> Result<()> {
        let id = self.secret_id.as_str();
        let what = "releasing the rotation lock";
        let releasing = async {
            self.control
                .query_one("SELECT pg_advisory_unlock($1)", &[&self.key])
                .await
                .map_err(|e| map_pg_error(id, what, e))
        };
        let _released: bool = self.target.bounded(id, what, releasing).await?.get(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(ssl_mode: Option<&str>) -> PgCredentials {
        let mut secret = serde_json::json!({
            "host": "db.internal", "port": 5432, "username": "app", "password": "Pw-Location-1",
        });
        if let Some(mode) = ssl_mode {
            secret["ssl_mode"] = mode.into();
        }
        serde_json::from_value(secret).unwrap()
    }

    fn config_of<T>(target: &PostgresTarget<T>, ssl_mode: Option<&str>) -> Result<Config> {
        let password = SecretString::from("Pw-Admin-1");
        target.config("db", &location(ssl_mode), "rotator", &password)
    }

    /// Stands for a real connector (rustls, openssl): only its type matters here.
    #[derive(Clone)]
    struct SomeTls;

    #[test]
    fn the_secrets_ssl_mode_raises_tls_and_needs_a_connector() {
        let plain = PostgresTarget::new();
        for mode in [None, Some("disable"), Some("prefer"), Some("allow")] {
            let config = config_of(&plain, mode).unwrap();
            assert_eq!(config.get_ssl_mode(), SslMode::Prefer, "{mode:?}");
        }
        for mode in ["require", "verify-ca", "verify-full", "VERIFY_FULL"] {
            let err = config_of(&plain, Some(mode)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{mode}: {err}");
            assert!(err.to_string().contains("PostgresTarget::tls"), "{err}");
            let with_tls = PostgresTarget::new().tls(SomeTls);
            let config = config_of(&with_tls, Some(mode)).unwrap();
            assert_eq!(config.get_ssl_mode(), SslMode::Require, "{mode}");
        }
        // A connection that itself asks for TLS needs a connector too.
        let mut required = Config::new();
        let _ = required.ssl_mode(SslMode::Require);
        let err = config_of(&PostgresTarget::new().connection(required), None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        // A mode nobody knows is not guessed at.
        let err = config_of(&plain, Some("requir")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(!err.to_string().contains("Pw-"), "{err}");
    }
}
