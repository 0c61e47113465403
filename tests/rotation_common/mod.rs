//! What the rotation tests share: real servers (PostgreSQL, moto, OpenBao), the store under test,
//! pools under load, and store wrappers that fail or wait at a chosen point.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use credswap::pg::{
    PgCredentials, PoolMonitor, RetryAndDrain, RotatingDeadpoolBuilder, RotatingPgPool,
};
use credswap::rotation::{PostgresTarget, RotationStore, Rotator, Strategy};
use credswap::testkit::PostgresServer;
use credswap::{
    Error, ErrorKind, Result, SecretCache, SecretHandle, SecretProvider, SecretValue, VersionId,
    Versioned,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::pg_common::{Load, Query, start_load};

pub mod edges;
pub mod recovery;
pub mod scenarios;

/// The password every test role starts with.
pub const INITIAL: &str = "Initial-Pass-0001";

/// The secret store a test rotates in, on its own throwaway server.
pub enum Store {
    Aws {
        moto: credswap::testkit::MotoServer,
        client: aws_sdk_secretsmanager::Client,
    },
    Vault {
        bao: credswap::testkit::OpenBaoServer,
        session: credswap::provider::VaultSession,
    },
}

impl Store {
    /// A throwaway moto server and a client for it.
    pub async fn aws() -> Store {
        let (moto, client) = credswap::testkit::MotoServer::start_with_client()
            .await
            .expect("start moto");
        Store::Aws { moto, client }
    }

    /// A throwaway OpenBao dev server and a root session on it.
    pub async fn vault() -> Store {
        let bao = tokio::task::spawn_blocking(credswap::testkit::OpenBaoServer::start)
            .await
            .unwrap()
            .expect("start OpenBao");
        let session = credswap::provider::VaultSession::connect(
            bao.addr(),
            credswap::provider::VaultAuth::Token(bao.root_token().to_owned().into()),
        )
        .await
        .expect("root login");
        Store::Vault { bao, session }
    }

    /// The secret id tests use in this store.
    pub fn secret_id(&self, name: &str) -> String {
        match self {
            Store::Aws { .. } => format!("prod/{name}/db"),
            Store::Vault { .. } => format!("{name}/db"),
        }
    }

    pub async fn create(&self, id: &str, json: &str) {
        match self {
            Store::Aws { client, .. } => {
                let _ = client
                    .create_secret()
                    .name(id)
                    .secret_string(json)
                    .send()
                    .await
                    .expect("create the secret");
            }
            Store::Vault { .. } => self.write(id, json).await,
        }
    }

    /// Writes a new current version, as an operator would (`PutSecretValue`, `kv put`).
    pub async fn write(&self, id: &str, json: &str) {
        match self {
            Store::Aws { client, .. } => {
                let _ = client
                    .put_secret_value()
                    .secret_id(id)
                    .secret_string(json)
                    .send()
                    .await
                    .expect("write the secret");
            }
            Store::Vault { bao, .. } => {
                let path = format!("secret/{id}");
                let file = bao.work_dir().join("value.json");
                std::fs::write(&file, json).unwrap();
                let _ = bao
                    .cli(&["kv", "put", &path, &format!("@{}", file.display())])
                    .expect("write the secret");
            }
        }
    }

    pub fn rotation_store(&self) -> Arc<dyn RotationStore> {
        match self {
            Store::Aws { client, .. } => {
                Arc::new(credswap::rotation::AwsRotationStore::new(client.clone()))
            }
            Store::Vault { session, .. } => Arc::new(
                credswap::rotation::VaultKvRotationStore::new(session.clone(), "secret"),
            ),
        }
    }

    pub fn provider(&self) -> Arc<dyn SecretProvider> {
        match self {
            Store::Aws { client, .. } => Arc::new(
                credswap::provider::AwsSecretsManagerProvider::new(client.clone()),
            ),
            Store::Vault { session, .. } => Arc::new(credswap::provider::VaultKvProvider::new(
                session.clone(),
                "secret",
            )),
        }
    }
}

/// PostgreSQL (optionally with server settings) and a superuser session.
pub async fn postgres(
    settings: &'static [(&'static str, &'static str)],
) -> (PostgresServer, tokio_postgres::Client) {
    let pg = tokio::task::spawn_blocking(move || PostgresServer::start_with(settings))
        .await
        .unwrap()
        .expect("start PostgreSQL");
    let admin = crate::pg_common::admin_client(&pg).await;
    (pg, admin)
}

/// The secret of `user` in the RDS shape, pointing at `port`.
pub fn rds_json(port: u16, user: &str, password: &str) -> String {
    serde_json::json!({
        "engine": "postgres", "host": "127.0.0.1", "port": port, "dbname": "postgres",
        "username": user, "password": password, "note": "kept as is",
    })
    .to_string()
}

/// Creates `user` (LOGIN, `password`) and a table it may use.
pub async fn create_role(admin: &tokio_postgres::Client, user: &str, password: &str) {
    let role = format!("\"{}\"", user.replace('"', "\"\""));
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{}';
             CREATE TABLE IF NOT EXISTS items (id bigserial PRIMARY KEY, n int);
             GRANT ALL ON items, items_id_seq TO {role};",
            password.replace('\'', "''")
        ))
        .await
        .unwrap();
}

/// Whether `user`/`password` logs in (an authentication failure is `false`).
pub async fn logs_in(port: u16, user: &str, password: &str) -> bool {
    let mut config = tokio_postgres::Config::new();
    let _ = config
        .host("127.0.0.1")
        .port(port)
        .dbname("postgres")
        .user(user)
        .password(password);
    match config.connect(tokio_postgres::NoTls).await {
        Ok(_) => true,
        Err(error) => {
            let code = error.code().map(|c| c.code().to_owned());
            assert!(
                matches!(code.as_deref(), Some("28P01" | "28000")),
                "unexpected login error: {error:?}"
            );
            false
        }
    }
}

pub fn login_of(value: &SecretValue) -> (String, String) {
    let parsed: serde_json::Value = serde_json::from_str(value.expose_str().unwrap()).unwrap();
    (
        parsed["username"].as_str().unwrap().to_owned(),
        parsed["password"].as_str().unwrap().to_owned(),
    )
}

/// A target for `pg`, pinned to it (the secrets name the same host and port), without TLS: the
/// test servers listen on loopback only.
pub fn target(pg: &PostgresServer) -> PostgresTarget {
    let mut endpoint = tokio_postgres::Config::new();
    let _ = endpoint
        .host("127.0.0.1")
        .port(pg.port())
        .dbname("postgres");
    PostgresTarget::new().allow_plaintext().connection(endpoint)
}

/// A rotator for `store` with the superuser as admin (alternating users need one), or none.
pub fn rotator(
    store: Arc<dyn RotationStore>,
    pg: &PostgresServer,
    strategy: Strategy,
    admin: bool,
) -> Rotator {
    let mut target = target(pg);
    if admin {
        target = target.admin(
            PostgresServer::SUPERUSER,
            pg.superuser_password().to_owned(),
        );
    }
    Rotator::builder(store, Arc::new(target))
        .strategy(strategy)
        .build()
        .unwrap()
}

/// A cache with a short TTL over `provider`, as an application would read the rotated secret.
pub async fn handle(
    provider: Arc<dyn SecretProvider>,
    id: &str,
) -> (SecretCache, SecretHandle<PgCredentials>) {
    let cache = SecretCache::builder(provider)
        .ttl(Duration::from_secs(1))
        .min_refresh_interval(Duration::from_millis(100))
        .grace_period(Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = cache.handle::<PgCredentials>(id).await.unwrap();
    (cache, handle)
}

/// How long the pools keep connections of a replaced version.
pub const DRAIN_DELAY: Duration = Duration::from_millis(500);

fn pool_rotation() -> RetryAndDrain {
    let mut config = RetryAndDrain::default();
    config.drain_delay = DRAIN_DELAY;
    config.retry_budget = Duration::from_secs(30);
    config.retry_attempts = 20;
    config
}

/// A sqlx and a deadpool pool on `handle`, each under continuous load (4 tasks each).
pub struct Pools {
    pub sqlx: RotatingPgPool,
    pub deadpool: deadpool_postgres::Pool,
    pub monitor: PoolMonitor,
    pub sqlx_load: Load,
    pub deadpool_load: Load,
    churn: tokio::task::JoinHandle<()>,
}

pub async fn pools_under_load(handle: &SecretHandle<PgCredentials>, port: u16) -> Pools {
    let sqlx = RotatingPgPool::builder(handle.clone())
        .pool_options(
            PgPoolOptions::new()
                .max_connections(4)
                .max_lifetime(Duration::from_secs(3)),
        )
        .connect_options(
            PgConnectOptions::new()
                .host("127.0.0.1")
                .port(port)
                .database("postgres"),
        )
        .retry_and_drain(pool_rotation())
        .connect()
        .await
        .expect("the sqlx pool connects");
    // Host and port come from the secret (RDS shape). Setting a port here as well currently
    // makes the pool's config carry two ports for one host, which tokio-postgres rejects as an
    // invalid configuration on every connect (a defect of the pool to fix, not of rotation).
    let mut target = tokio_postgres::Config::new();
    let _ = target.dbname("postgres");
    let (deadpool, monitor) = RotatingDeadpoolBuilder::new(handle.clone())
        .pg_config(target)
        .max_size(4)
        .retry_and_drain(pool_rotation())
        .build_monitored()
        .unwrap();
    // deadpool has no max lifetime: retire old connections so new logins keep happening.
    let churn = {
        let pool = deadpool.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = pool.retain(|_, m| m.age() < Duration::from_secs(3));
            }
        })
    };
    let sqlx_query: Query = {
        let pool = sqlx.clone();
        Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move {
                let n: i32 = sqlx::query_scalar("SELECT 1")
                    .fetch_one(&pool)
                    .await
                    .map_err(|e| format!("sqlx: {e}"))?;
                sqlx::query("INSERT INTO items (n) VALUES ($1)")
                    .bind(n)
                    .execute(&pool)
                    .await
                    .map_err(|e| format!("sqlx: {e}"))?;
                Ok(())
            })
        })
    };
    let deadpool_query: Query = {
        let pool = deadpool.clone();
        Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move {
                let client = pool.get().await.map_err(|e| format!("deadpool: {e}"))?;
                let _ = client
                    .query_one("SELECT 1", &[])
                    .await
                    .map_err(|e| format!("deadpool: {e}"))?;
                Ok(())
            })
        })
    };
    Pools {
        sqlx_load: start_load(4, sqlx_query),
        deadpool_load: start_load(4, deadpool_query),
        sqlx,
        deadpool,
        monitor,
        churn,
    }
}

impl Pools {
    /// Stops the load; the queries that succeeded and every error callers saw.
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.churn.abort();
        let (ok_sqlx, mut errors) = self.sqlx_load.stop().await;
        let (ok_deadpool, more) = self.deadpool_load.stop().await;
        errors.extend(more);
        (ok_sqlx + ok_deadpool, errors)
    }
}

/// Waits until `condition` holds, checking every 50 ms, for at most `limit`.
pub async fn wait_for<F, Fut>(limit: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a [`Hooked`] store does around the real store's operations.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Before `operation` runs; an error stops it.
    async fn before(&self, operation: &'static str) -> Result<()> {
        let _ = operation;
        Ok(())
    }

    /// After `operation` succeeded; an error is what the caller sees instead (a lost response).
    fn after(&self, operation: &'static str) -> Result<()> {
        let _ = operation;
        Ok(())
    }

    /// A value about to be written as pending.
    fn pending(&self, value: &SecretValue) {
        let _ = value;
    }
}

/// A store that forwards to `inner`, with `hooks` around each operation.
pub struct Hooked<H> {
    pub inner: Arc<dyn RotationStore>,
    pub hooks: H,
}

impl<H: Hooks> Hooked<H> {
    async fn run<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        self.hooks.before(operation).await?;
        let result = call.await?;
        self.hooks.after(operation)?;
        Ok(result)
    }
}

#[async_trait]
impl<H: Hooks> RotationStore for Hooked<H> {
    fn name(&self) -> &str {
        "hooked"
    }
    async fn canonical_id(&self, id: &str) -> Result<String> {
        self.run("canonical_id", self.inner.canonical_id(id)).await
    }
    async fn current(&self, id: &str) -> Result<Versioned<SecretValue>> {
        self.run("current", self.inner.current(id)).await
    }
    async fn previous(&self, id: &str) -> Result<Option<Versioned<SecretValue>>> {
        self.run("previous", self.inner.previous(id)).await
    }
    async fn pending_token(&self, id: &str) -> Result<Option<String>> {
        self.run("pending_token", self.inner.pending_token(id))
            .await
    }
    async fn read_pending(&self, id: &str, token: &str) -> Result<Option<SecretValue>> {
        self.run("read_pending", self.inner.read_pending(id, token))
            .await
    }
    async fn read_created(&self, id: &str, token: &str) -> Result<Option<SecretValue>> {
        self.run("read_created", self.inner.read_created(id, token))
            .await
    }
    async fn write_pending(
        &self,
        id: &str,
        token: &str,
        value: &SecretValue,
        base: &VersionId,
    ) -> Result<()> {
        self.hooks.pending(value);
        self.run(
            "write_pending",
            self.inner.write_pending(id, token, value, base),
        )
        .await
    }
    async fn promote(&self, id: &str, token: &str) -> Result<VersionId> {
        self.run("promote", self.inner.promote(id, token)).await
    }
    async fn incomplete_token(&self, id: &str) -> Result<Option<String>> {
        self.run("incomplete_token", self.inner.incomplete_token(id))
            .await
    }
    async fn complete(&self, id: &str, token: &str) -> Result<()> {
        self.run("complete", self.inner.complete(id, token)).await
    }
    async fn remove_pending(&self, id: &str, token: &str) -> Result<()> {
        self.run("remove_pending", self.inner.remove_pending(id, token))
            .await
    }
    async fn is_current(&self, id: &str, token: &str) -> Result<bool> {
        self.run("is_current", self.inner.is_current(id, token))
            .await
    }
}

/// Fails once, at a chosen operation, *after* the real store did it: a crash or a lost response
/// right after the write.
pub struct FailAfter {
    operation: &'static str,
    armed: AtomicBool,
}

impl FailAfter {
    pub fn new(inner: Arc<dyn RotationStore>, operation: &'static str) -> Arc<Hooked<Self>> {
        Arc::new(Hooked {
            inner,
            hooks: FailAfter {
                operation,
                armed: AtomicBool::new(true),
            },
        })
    }
}

#[async_trait]
impl Hooks for FailAfter {
    fn after(&self, operation: &'static str) -> Result<()> {
        if operation == self.operation && self.armed.swap(false, Ordering::SeqCst) {
            return Err(Error::transient(
                "injected",
                format!("connection lost after {operation}"),
            ));
        }
        Ok(())
    }
}

/// Holds `write_pending` until `release` other rotators have answered, so the rotator that won
/// the lock still holds it while the others try.
pub struct HoldWhileOthersTry {
    pub answered: Arc<AtomicUsize>,
    pub release: usize,
}

impl HoldWhileOthersTry {
    pub fn new(
        inner: Arc<dyn RotationStore>,
        answered: Arc<AtomicUsize>,
        release: usize,
    ) -> Arc<Hooked<Self>> {
        Arc::new(Hooked {
            inner,
            hooks: HoldWhileOthersTry { answered, release },
        })
    }
}

#[async_trait]
impl Hooks for HoldWhileOthersTry {
    async fn before(&self, operation: &'static str) -> Result<()> {
        if operation != "write_pending" {
            return Ok(());
        }
        let waited = wait_for(Duration::from_secs(60), || {
            let answered = self.answered.load(Ordering::SeqCst);
            async move { answered >= self.release }
        })
        .await;
        if !waited {
            return Err(
                Error::new(ErrorKind::Transient).with_message("the other rotators never answered")
            );
        }
        Ok(())
    }
}

/// Remembers the password of every value written as pending, rolled-back ones included.
#[derive(Default)]
pub struct RecordPending {
    pub passwords: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl Hooks for RecordPending {
    fn pending(&self, value: &SecretValue) {
        self.passwords.lock().unwrap().push(login_of(value).1);
    }
}
