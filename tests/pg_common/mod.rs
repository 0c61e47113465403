//! A real PostgreSQL (test kit), a role whose password we rotate from outside, a secret store, and a
//! load generator that counts what callers see.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use credswap::pg::PgCredentials;
use credswap::testkit::PostgresServer;
use credswap::{MemoryProvider, SecretCache, SecretHandle};
use futures_util::future::BoxFuture;

pub mod scenarios;

pub struct Fixture {
    pub pg: Arc<std::sync::Mutex<PostgresServer>>,
    pub superuser_password: String,
    pub port: u16,
    pub admin: tokio_postgres::Client,
    pub store: Arc<MemoryProvider>,
    pub cache: SecretCache,
    pub handle: SecretHandle<PgCredentials>,
}

pub fn creds_json(user: &str, password: &str) -> String {
    format!(r#"{{"engine": "postgres", "username": "{user}", "password": "{password}"}}"#)
}

pub async fn admin_client(pg: &PostgresServer) -> tokio_postgres::Client {
    admin_client_at(pg.port(), pg.superuser_password()).await
}

pub async fn admin_client_at(port: u16, password: &str) -> tokio_postgres::Client {
    let config =
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres password={password}");
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .expect("superuser connects");
    let _task = tokio::spawn(connection);
    client
}

/// A throwaway PostgreSQL, with `setup` run as the superuser, and a superuser session.
pub async fn start_postgres(setup: &str) -> (PostgresServer, tokio_postgres::Client) {
    let pg = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
        .expect("start PostgreSQL");
    let admin = admin_client(&pg).await;
    admin.batch_execute(setup).await.unwrap();
    (pg, admin)
}

/// PostgreSQL with role `app` (password `pw-0`) and roles `app_a`/`app_b` (password `ab`), and a
/// cache whose secret `db` holds app's credentials.
pub async fn fixture() -> Fixture {
    let (pg, admin) = start_postgres(
        "CREATE ROLE app LOGIN PASSWORD 'pw-0';
         CREATE ROLE app_a LOGIN PASSWORD 'ab';
         CREATE ROLE app_b LOGIN PASSWORD 'ab';
         CREATE TABLE items (id bigserial PRIMARY KEY, n int);
         GRANT ALL ON items, items_id_seq TO app, app_a, app_b;",
    )
    .await;
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("db", creds_json("app", "pw-0"));
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_secs(2))
        .min_refresh_interval(Duration::from_millis(200))
        .grace_period(Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = cache.handle::<PgCredentials>("db").await.unwrap();
    let port = pg.port();
    Fixture {
        superuser_password: pg.superuser_password().to_owned(),
        pg: Arc::new(std::sync::Mutex::new(pg)),
        port,
        admin,
        store,
        cache,
        handle,
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Order {
    DatabaseFirst,
    SecretFirst,
}

/// Changes app's password in the database and in the store, in `order`, 50 ms apart.
pub async fn rotate(fixture: &Fixture, round: usize, order: Order) {
    let password = format!("pw-{round}");
    let alter = format!("ALTER ROLE app PASSWORD '{password}'");
    match order {
        Order::DatabaseFirst => {
            fixture.admin.batch_execute(&alter).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = fixture.store.set("db", creds_json("app", &password));
        }
        Order::SecretFirst => {
            let _ = fixture.store.set("db", creds_json("app", &password));
            tokio::time::sleep(Duration::from_millis(50)).await;
            fixture.admin.batch_execute(&alter).await.unwrap();
        }
    }
}

pub type Query = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

pub struct Load {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicU64>,
    pub errors: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// `tasks` tasks running `query` in a loop until stopped.
pub fn start_load(tasks: usize, query: Query) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks = (0..tasks)
        .map(|_| {
            let (stop, ok, errors, query) =
                (stop.clone(), ok.clone(), errors.clone(), query.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match query().await {
                        Ok(()) => {
                            let _ = ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errors.lock().unwrap().push(e),
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    Load {
        stop,
        ok,
        errors,
        tasks,
    }
}

impl Load {
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let errors = self.errors.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), errors)
    }
}

/// How many sessions `user` has open.
pub async fn sessions_of(admin: &tokio_postgres::Client, user: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
}

/// Puts `json` in the store and makes the handle take it now (past the refresh rate limit).
pub async fn switch_secret(fixture: &Fixture, json: &str) -> credswap::VersionId {
    let version = fixture.store.set("db", json);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let snapshot = fixture.handle.refresh().await.unwrap();
    assert_eq!(snapshot.version().id, version);
    version
}

/// The drain deadline a pool gave `version`, once the pool has taken in its replacement (the pool
/// follows the handle in the background, so that can come a moment after the switch).
pub async fn deadline_of(
    monitor: &credswap::pg::PoolMonitor,
    version: &credswap::VersionId,
) -> tokio::time::Instant {
    let started = tokio::time::Instant::now();
    loop {
        let found = monitor
            .rotations()
            .into_iter()
            .find(|record| &record.version == version)
            .and_then(|record| record.drain_deadline);
        if let Some(deadline) = found {
            return deadline;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the pool never replaced version {version:?}: {:?}",
            monitor.rotations()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A PostgreSQL with role `app`, a counting store, and a handle with an hour-long TTL, for storms
/// of rejected logins.
pub struct Storm {
    pub pg: PostgresServer,
    pub admin: tokio_postgres::Client,
    pub provider: Arc<crate::common::GatedProvider>,
    pub cache: SecretCache,
    pub handle: SecretHandle<PgCredentials>,
}

pub async fn storm() -> Storm {
    let (pg, admin) = start_postgres("CREATE ROLE app LOGIN PASSWORD 'pw-0'").await;
    let provider = crate::common::GatedProvider::new();
    let _ = provider.store.set("db", creds_json("app", "pw-0"));
    let cache = SecretCache::builder(provider.clone())
        .ttl(Duration::from_secs(3600))
        .min_refresh_interval(Duration::from_secs(2))
        .build()
        .unwrap();
    let handle = cache.handle::<PgCredentials>("db").await.unwrap();
    Storm {
        pg,
        admin,
        provider,
        cache,
        handle,
    }
}

impl Storm {
    /// Changes the password in the database and the store, behind the handle's back (its TTL is an
    /// hour), waits out the refresh rate limit, and returns the store's call count.
    pub async fn rotate_behind_the_handle(&self) -> u64 {
        self.admin
            .batch_execute("ALTER ROLE app PASSWORD 'pw-1'")
            .await
            .unwrap();
        let _ = self.provider.store.set("db", creds_json("app", "pw-1"));
        tokio::time::sleep(Duration::from_millis(2100)).await;
        self.provider.calls()
    }
}

/// A TCP proxy on loopback in front of PostgreSQL that holds every new connection for a while
/// before connecting it upstream (a slow network, a busy proxy), and counts the connections.
pub struct Proxy {
    pub port: u16,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: u16, delay: Duration) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let _ = counter.fetch_add(1, Ordering::SeqCst);
                let _piping = tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Proxy {
            port,
            accepted,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlx,
    Deadpool,
}

/// A rotating pool of either kind, with what the tests need of it.
#[derive(Clone)]
pub enum TestPool {
    Sqlx(credswap::pg::RotatingPgPool),
    Deadpool(deadpool_postgres::Pool, credswap::pg::PoolMonitor),
}

/// A connection taken from a [`TestPool`], returned on drop.
pub enum Held {
    Sqlx(sqlx::pool::PoolConnection<sqlx::Postgres>),
    Deadpool(deadpool_postgres::Object),
}

impl Held {
    /// `SELECT 1` on this connection.
    pub async fn select_one(&mut self) -> Result<(), String> {
        match self {
            Held::Sqlx(conn) => sqlx::query_scalar::<_, i32>("SELECT 1")
                .fetch_one(&mut **conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Held::Deadpool(client) => client
                .query_one("SELECT 1", &[])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }
}

impl TestPool {
    /// A pool of `kind` on `handle`, to 127.0.0.1:`port` (database `postgres`), with `config`.
    pub async fn open(
        kind: Kind,
        handle: &SecretHandle<PgCredentials>,
        port: u16,
        max: u32,
        config: credswap::pg::RetryAndDrain,
    ) -> TestPool {
        match kind {
            Kind::Sqlx => TestPool::Sqlx(
                credswap::pg::RotatingPgPool::builder(handle.clone())
                    .pool_options(sqlx::postgres::PgPoolOptions::new().max_connections(max))
                    .connect_options(
                        sqlx::postgres::PgConnectOptions::new()
                            .host("127.0.0.1")
                            .port(port)
                            .database("postgres"),
                    )
                    .retry_and_drain(config)
                    .build()
                    .unwrap(),
            ),
            Kind::Deadpool => {
                let mut target = tokio_postgres::Config::new();
                let _ = target.host("127.0.0.1").port(port).dbname("postgres");
                let (pool, monitor) = credswap::pg::RotatingDeadpoolBuilder::new(handle.clone())
                    .pg_config(target)
                    .max_size(max as usize)
                    .wait_timeout(Some(Duration::from_secs(30)))
                    .retry_and_drain(config)
                    .build_monitored()
                    .unwrap();
                TestPool::Deadpool(pool, monitor)
            }
        }
    }

    pub async fn hold(&self) -> Result<Held, String> {
        match self {
            TestPool::Sqlx(pool) => pool
                .acquire()
                .await
                .map(Held::Sqlx)
                .map_err(|e| e.to_string()),
            TestPool::Deadpool(pool, _) => pool
                .get()
                .await
                .map(Held::Deadpool)
                .map_err(|e| e.to_string()),
        }
    }

    /// `SELECT current_user` through the pool.
    pub async fn query(&self) -> Result<String, String> {
        match self {
            TestPool::Sqlx(pool) => sqlx::query_scalar::<_, String>("SELECT current_user::text")
                .fetch_one(pool)
                .await
                .map_err(|e| e.to_string()),
            TestPool::Deadpool(pool, _) => {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                client
                    .query_one("SELECT current_user::text", &[])
                    .await
                    .map(|row| row.get(0))
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Connections the pool holds now.
    pub fn size(&self) -> usize {
        match self {
            TestPool::Sqlx(pool) => pool.inner().size() as usize,
            TestPool::Deadpool(pool, _) => pool.status().size,
        }
    }

    pub fn monitor(&self) -> credswap::pg::PoolMonitor {
        match self {
            TestPool::Sqlx(pool) => pool.monitor(),
            TestPool::Deadpool(_, monitor) => monitor.clone(),
        }
    }
}

/// A cache whose secret `db` can be switched at once (no refresh rate limit), over `store`.
pub async fn switchable(
    store: &Arc<MemoryProvider>,
    json: &str,
) -> (SecretCache, SecretHandle<PgCredentials>) {
    let _ = store.set("db", json);
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_secs(3600))
        .min_refresh_interval(Duration::ZERO)
        .grace_period(Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = cache.handle::<PgCredentials>("db").await.unwrap();
    (cache, handle)
}

/// Puts `json` in the store and makes the handle take it now; returns when it did.
pub async fn switch_now(
    store: &MemoryProvider,
    handle: &SecretHandle<PgCredentials>,
    json: &str,
) -> credswap::VersionId {
    let version = store.set("db", json);
    let snapshot = handle.refresh().await.unwrap();
    assert_eq!(snapshot.version().id, version);
    version
}
