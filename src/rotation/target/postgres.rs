//! PostgreSQL as a rotation target: roles re-passworded with client-side SCRAM verifiers, an
//! advisory lock per secret.

use std::any::TypeId;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::{ChannelBinding, Host, SslMode};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, NoTls, Socket};

use super::no_cleartext::NoCleartext;
use super::sql::{
    check_role_name, lock_key, map_pg_error, quote_identifier, quote_literal, scram_iterations,
    scram_verifier,
};
use super::{RotationTarget, TargetSession};
use crate::error::{Error, ErrorKind, Result};
use crate::pg::PgCredentials;
use crate::pg::with_credentials;
use crate::rotation::strategy::{Strategy, parse_json};
use crate::value::SecretValue;

/// How long the server may spend on one statement of the engine's, unless set otherwise.
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// What the client waits beyond the statement timeout before giving up on an answer.
const ANSWER_SLACK: Duration = Duration::from_secs(5);

/// A PostgreSQL server whose roles' passwords rotate.
///
/// - **No password in SQL.** `set` computes the SCRAM-SHA-256 verifier on the client (with the
///   server's `scram_iterations` when that is above 4,096) and sends `ALTER ROLE "<role>" PASSWORD
///   '<verifier>'`; the server (and its statement log) never sees the password. Role names are quoted identifiers, so any name works; names over 63 bytes are
///   refused before anything changes (the server would truncate them).
/// - **One rotator per secret.** A session holds `pg_try_advisory_lock(<64-bit key from the
///   store's canonical name of the secret>)` for the whole call; a rotator that cannot take it
///   reports the rotation as under way. The lock lives with the session, so a crashed rotator's
///   lock goes with its connection. Rotators of one secret must use the same database.
/// - **Where to connect.** Host, port and database come from the secret (the RDS JSON shape)
///   unless [`connection`](Self::connection) names them. Nothing the secret says decides where an
///   **admin** credential goes: with one, `connection` must name the host (the rotation fails
///   with [`ErrorKind::Config`] before connecting otherwise), and a secret that names another
///   host or port is refused ([`ErrorKind::InvalidRequest`]) whoever logs in, as AWS's multi-user
///   rotation function refuses a master/current host mismatch. Only the first host is used.
/// - **TLS, or an explicit opt-in to plaintext.** Give a connector with [`tls`](Self::tls) (any
///   `MakeTlsConnect`, as tokio-postgres takes): every connection then requires TLS, and the
///   admin logs in only with channel binding (SCRAM-SHA-256-PLUS, so a server that asks for a
///   cleartext or MD5 password, or a machine in the middle, gets nothing; the connector must
///   support channel binding, as tokio-postgres-rustls and postgres-openssl do). Without one,
///   the target refuses to connect ([`ErrorKind::Config`]) unless
///   [`allow_plaintext`](Self::allow_plaintext) says plaintext is meant: then the SCRAM verifier
///   `set` sends, and the logins, cross the network in clear (see `docs::rotation` for what that
///   exposes), and a server that asks for a cleartext password is refused before anything is
///   sent. The secret's `ssl_mode` (`sslmode`) can only make TLS stricter: `require`,
///   `verify-ca` and `verify-full` need a connector (verifying the server's certificate and name
///   is the connector's job, as in tokio-postgres).
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
/// // Pinned: the admin password goes to this host only, whatever the secret says.
/// let mut endpoint = tokio_postgres::Config::new();
/// endpoint.host("orders-db.internal").port(5432).dbname("orders");
/// let target = PostgresTarget::new()
///     .connection(endpoint)
///     .admin("rotator", std::env::var("ROTATOR_PASSWORD").unwrap())
///     .test_query("SELECT count(*) FROM orders WHERE false")
///     .statement_timeout(Duration::from_secs(10))
///     .allow_plaintext(); // a private network; in production give it .tls(connector)
/// # drop(target);
/// ```
pub struct PostgresTarget<T = NoTls> {
    connection: Config,
    admin: Option<(String, SecretString)>,
    tls: T,
    /// Whether `tls` can do TLS at all (`NoTls` cannot).
    has_tls: bool,
    /// Whether connections without TLS were asked for.
    plaintext: bool,
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
            plaintext: self.plaintext,
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
            .field("plaintext", &self.plaintext)
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
    /// A target with no TLS connector yet: give it one ([`tls`](Self::tls)), or opt in to
    /// plaintext ([`allow_plaintext`](Self::allow_plaintext)). It connects where the secret says
    /// unless [`connection`](Self::connection) names a host (which an admin credential needs).
    pub fn new() -> Self {
        PostgresTarget {
            connection: Config::new(),
            admin: None,
            tls: NoTls,
            has_tls: false,
            plaintext: false,
            test_query: "SELECT 1".to_owned(),
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
        }
    }
}

impl<T> PostgresTarget<T> {
    /// Connection settings that take precedence over the secret's: host, port and database when
    /// set here, and anything else tokio-postgres offers (timeouts, SSL mode, application name).
    /// User and password are always those of the credential in use; the secret's `ssl_mode` may
    /// still raise the SSL mode. A host set here pins the endpoint: a secret that names another
    /// host or port is refused.
    pub fn connection(mut self, config: Config) -> Self {
        self.connection = config;
        self
    }

    /// The credential that takes the lock and changes roles (needed for alternating users). It
    /// is sent only to the host [`connection`](Self::connection) names, never to one a secret
    /// names.
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
    /// lets the client wait for answers forever). PostgreSQL counts in milliseconds: a timeout
    /// under one is one, never zero (which the server would read as none).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout.min(crate::time::MAX_SETTING);
        self
    }

    /// Connects without TLS, on purpose: for a database on loopback or a private network you
    /// trust. The SCRAM verifier `set` sends is password-equivalent to anyone who also sees one
    /// login (RFC 5802 section 9), and logins cross the network in clear; a warning says so in
    /// the log. A server that asks for a cleartext password is still refused. With a
    /// [`tls`](Self::tls) connector this changes nothing: TLS is then required.
    pub fn allow_plaintext(mut self) -> Self {
        tracing::warn!(
            target: "credswap::rotation",
            "credswap: PostgresTarget::allow_plaintext: the rotation engine's connections will \
             not be encrypted; the SCRAM verifiers it sends can be replayed by anyone who also \
             sees one login"
        );
        self.plaintext = true;
        self
    }

    /// Connects with TLS (required on every connection; the admin also needs channel binding).
    pub fn tls<U: 'static>(self, tls: U) -> PostgresTarget<U> {
        PostgresTarget {
            connection: self.connection,
            admin: self.admin,
            has_tls: TypeId::of::<U>() != TypeId::of::<NoTls>(),
            plaintext: self.plaintext,
            tls,
            test_query: self.test_query,
            statement_timeout: self.statement_timeout,
        }
    }

    /// Settings for logging in as `username` (the admin when `admin`) at the place the
    /// connection settings pin, or else the one `location` (a secret) names.
    fn config(
        &self,
        secret_id: &str,
        location: &PgCredentials,
        username: &str,
        password: &SecretString,
        admin: bool,
    ) -> Result<Config> {
        if !self.has_tls && !self.plaintext {
            return Err(Error::config(
                "this PostgresTarget has no TLS connector: give it one with PostgresTarget::tls, \
                 or opt in to plaintext with PostgresTarget::allow_plaintext",
            )
            .with_id(secret_id));
        }
        let pinned = self.connection.get_hosts().first();
        match pinned {
            Some(pinned) => {
                check_endpoint(secret_id, pinned, self.connection.get_ports(), location)?
            }
            None if admin => {
                return Err(Error::config(
                    "an admin credential goes only to a host the rotator's configuration names, \
                     never to one a secret names: pin it with PostgresTarget::connection",
                )
                .with_id(secret_id));
            }
            None if location.host.is_none() => {
                return Err(Error::config(
                    "no database host: the secret has no `host` and PostgresTarget::connection \
                     names none",
                )
                .with_id(secret_id));
            }
            None => {}
        }
        // The one mapping the pools use too: who logs in (here: `username`), where (the pinned
        // endpoint, or the secret's), which database, and the secret's ssl_mode when stricter.
        let mut login = location.clone();
        login.username = username.to_owned();
        login.password = password.clone();
        let mut config = with_credentials(&self.connection, &login, pinned.is_none());
        if config.get_connect_timeout().is_none() {
            let _ = config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            let _ = config.application_name("credswap-rotation");
        }
        if self.has_tls {
            let _ = config.ssl_mode(SslMode::Require);
            if admin {
                // tokio-postgres then refuses cleartext and MD5 before sending anything.
                let _ = config.channel_binding(ChannelBinding::Require);
            }
        } else if config.get_ssl_mode() == SslMode::Require {
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
        } else {
            let _ = config.ssl_mode(SslMode::Disable);
        }
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

fn credentials(secret_id: &str, value: &SecretValue) -> Result<PgCredentials> {
    parse_json(secret_id, value)
}

/// Runs a connection's I/O until it ends.
/// Logs in over `socket`, watched so that a request for a cleartext password is refused before
/// tokio-postgres can answer it; the flag says whether that is why the login failed.
async fn connect_refusing_cleartext<S>(
    config: &Config,
    socket: S,
) -> (
    std::result::Result<Client, tokio_postgres::Error>,
    Arc<AtomicBool>,
)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stream = NoCleartext::new(socket);
    let refused = Arc::clone(&stream.refused);
    let connected = config.connect_raw(stream, NoTls).await;
    (
        connected.map(|(client, connection)| {
            drive(connection);
            client
        }),
        refused,
    )
}

fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _task = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "credswap: rotation connection ended with an error");
        }
    });
}

/// A `statement_timeout` in PostgreSQL's whole milliseconds, rounded up: a timeout under a
/// millisecond must not become 0, which PostgreSQL reads as no timeout at all.
fn timeout_millis(timeout: Duration) -> u128 {
    timeout.as_nanos().div_ceil(1_000_000)
}

/// Refuses a secret that names another endpoint than the pinned one: credentials go where the
/// rotator's configuration says, and a secret pointing elsewhere is a mistake or an attack.
fn check_endpoint(
    secret_id: &str,
    pinned: &Host,
    pinned_ports: &[u16],
    location: &PgCredentials,
) -> Result<()> {
    let pinned_port = pinned_ports.first().copied().unwrap_or(5432);
    let pinned_name = match pinned {
        Host::Tcp(name) => name.clone(),
        Host::Unix(path) => path.display().to_string(),
    };
    let host_differs = location
        .host
        .as_deref()
        .is_some_and(|host| !host.eq_ignore_ascii_case(&pinned_name));
    let port_differs = location.port.is_some_and(|port| port != pinned_port);
    if host_differs || port_differs {
        return Err(Error::invalid_request(
            secret_id,
            format!(
                "the secret names the database at {}:{}, but the rotator is configured for \
                 {pinned_name}:{pinned_port}; refusing to send credentials where a secret says",
                location
                    .host
                    .as_deref()
                    .unwrap_or(&pinned_name)
                    .escape_debug(),
                location.port.unwrap_or(pinned_port)
            ),
        ));
    }
    Ok(())
}

impl<T> PostgresTarget<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync + 'static,
    T::TlsConnect: Send + Sync,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    async fn connect(&self, secret_id: &str, config: &Config, what: &str) -> Result<Client> {
        if !self.has_tls {
            return self.connect_plaintext(secret_id, config, what).await;
        }
        let connecting = async {
            config
                .connect(self.tls.clone())
                .await
                .map_err(|e| map_pg_error(secret_id, what, e))
        };
        let (client, connection) = self.bounded(secret_id, what, connecting).await?;
        drive(connection);
        Ok(client)
    }

    /// A plaintext connection whose authentication is watched: a server that asks for the
    /// password in cleartext is refused before tokio-postgres can send it.
    async fn connect_plaintext(
        &self,
        secret_id: &str,
        config: &Config,
        what: &str,
    ) -> Result<Client> {
        let host = config.get_hosts().first().cloned();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let unreachable = |error: std::io::Error| {
            Error::transient(secret_id, format!("{what}: connecting failed: {error}"))
        };
        // As tokio-postgres does: `hostaddr` skips the name lookup, `connect_timeout` bounds
        // reaching the server (each attempt; the whole login is bounded below).
        let hostaddr = config.get_hostaddrs().first().copied();
        let connect_timeout = config.get_connect_timeout().copied();
        let timed_out = || {
            Error::transient(
                secret_id,
                format!("{what}: connecting timed out after {connect_timeout:?}"),
            )
        };
        let connecting = async {
            let (client, refused) = match host {
                Some(Host::Tcp(name)) => {
                    let reaching = async {
                        match hostaddr {
                            Some(addr) => tokio::net::TcpStream::connect((addr, port)).await,
                            None => tokio::net::TcpStream::connect((name.as_str(), port)).await,
                        }
                    };
                    let socket = match connect_timeout {
                        Some(limit) => tokio::time::timeout(limit, reaching)
                            .await
                            .map_err(|_| timed_out())?,
                        None => reaching.await,
                    }
                    .map_err(unreachable)?;
                    let _ = socket.set_nodelay(true);
                    connect_refusing_cleartext(config, socket).await
                }
                #[cfg(unix)]
                Some(Host::Unix(dir)) => {
                    let path = dir.join(format!(".s.PGSQL.{port}"));
                    let socket = tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(unreachable)?;
                    connect_refusing_cleartext(config, socket).await
                }
                _ => return Err(Error::config("no database host to connect to").with_id(secret_id)),
            };
            match client {
                Ok(client) => Ok(client),
                Err(_) if refused.load(Ordering::Acquire) => Err(Error::config(format!(
                    "{what}: the server asked for the password in cleartext; refused, nothing was \
                     sent (require scram-sha-256 in its pg_hba.conf)"
                ))
                .with_id(secret_id)),
                Err(error) => Err(map_pg_error(secret_id, what, error)),
            }
        };
        self.bounded(secret_id, what, connecting).await
    }

    /// Sets the statement timeout on a connection that will run statements.
    async fn limit_statements(&self, secret_id: &str, client: &Client) -> Result<()> {
        let sql = format!(
            "SET statement_timeout = {}",
            timeout_millis(self.statement_timeout)
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
        let config = self.config(secret_id, &creds, &creds.username, &creds.password, false)?;
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
                let config = self.config(secret_id, &location, user, password, true)?;
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
            iterations: None,
        })))
    }
}

/// A lock session: the advisory lock is held until released or until the connection closes.
struct PostgresSession<T> {
    target: PostgresTarget<T>,
    secret_id: String,
    control: Client,
    key: i64,
    /// The server's SCRAM rounds for new verifiers, once asked.
    iterations: Option<u32>,
}

impl<T> PostgresSession<T> {
    /// The server's `scram_iterations` (PostgreSQL 16 and later) when above 4,096, else 4,096.
    async fn scram_iterations(&mut self) -> Result<u32> {
        if let Some(iterations) = self.iterations {
            return Ok(iterations);
        }
        let id = self.secret_id.as_str();
        let what = "reading scram_iterations";
        let asking = async {
            self.control
                .query_one("SELECT current_setting('scram_iterations', true)", &[])
                .await
                .map_err(|e| map_pg_error(id, what, e))
        };
        let setting: Option<String> = self.target.bounded(id, what, asking).await?.get(0);
        let iterations = scram_iterations(setting.as_deref());
        self.iterations = Some(iterations);
        Ok(iterations)
    }
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
        let iterations = self.scram_iterations().await?;
        let id = self.secret_id.as_str();
        let target = &self.target;
        let creds = credentials(id, credential)?;
        check_role_name(id, &creds.username)?;
        let verifier = scram_verifier(&creds.password, iterations).await?;
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
#[path = "../tests/postgres_target.rs"]
mod tests;
