//! Serves the crate's metrics on `/metrics` (Prometheus text format) and a readiness verdict on
//! `/ready`, while a secret rotates with the engine and a rotating pool serves traffic.
//!
//! Starts a throwaway PostgreSQL, moto (AWS Secrets Manager) and OpenBao from the test kit. A
//! rotating sqlx pool queries all the time on a handle of the secret in moto; the rotation engine
//! rotates it every few seconds (alternating users) and announces each new version over
//! PostgreSQL NOTIFY, which a push subscriber applies to the cache. A second pool logs in with
//! dynamic credentials from OpenBao's database engine, whose one-minute leases the cache renews.
//! An HTTP API of its own (`/api/orders`) takes an API key kept in moto and rotated as often,
//! announced like the database secret; a client of it, whose cache never refreshes on its own,
//! keeps its key while the API accepts it as the previous one, and follows from the 401 it gets
//! once the API does not. Everything is watched by `credswap::metrics::Metrics` and recorded by
//! `metrics-exporter-prometheus`; `dashboards/credswap.json` and `dashboards/alerts.yml` read
//! what it serves.
//!
//! ```text
//! cargo run --example metrics_server --features metrics,rotation,aws,vault,sqlx,push-postgres,http-client,http-server,testkit -- \
//!     --listen 127.0.0.1:9464 --rotate-every 10
//! curl -s localhost:9464/metrics | grep credswap_
//! curl -s localhost:9464/ready
//! ```
//!
//! Options: `--listen ADDR` (default `127.0.0.1:9464`; port 0 picks a free one), `--rotate-every
//! SECONDS` (default 10), `--rotations N` (stop rotating after N; default: never), `--run-for
//! SECONDS` (exit after that long; default: until interrupted). It prints `listening on
//! http://ADDR` once it serves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_secretsmanager::config::{Credentials, Region};
use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use credswap::SecretCache;
use credswap::health::Readiness;
use credswap::http::{ApiKeyLayer, ApiKeys, AuthMiddleware, Bearer};
use credswap::metrics::{BUCKETS, Metrics};
use credswap::pg::{PgCredentials, RetryAndDrain, RotatingPgPool};
use credswap::provider::{
    AwsSecretsManagerProvider, VaultAuth, VaultDatabaseProvider, VaultSession,
};
use credswap::push::{DEFAULT_CHANNEL, PgListener, PgPublisher, Publisher, Subscriber};
use credswap::rotation::{AwsRotationStore, PostgresTarget, Rotator, Strategy};
use credswap::testkit::{MotoServer, OpenBaoServer, PostgresServer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const SECRET_ID: &str = "example/orders/db";
const REPORTS_ID: &str = "creds/reports";
const API_KEY_ID: &str = "example/orders/api-key";

struct Options {
    listen: SocketAddr,
    rotate_every: Duration,
    rotations: Option<u64>,
    run_for: Option<Duration>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        rotate_every: Duration::from_secs(10),
        rotations: None,
        run_for: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let seconds = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{flag}: {value:?} is not a number of seconds"))
        };
        match flag.as_str() {
            "--listen" => {
                options.listen = value
                    .parse()
                    .map_err(|_| format!("--listen: {value:?} is not an address"))?;
            }
            "--rotate-every" => options.rotate_every = seconds()?,
            "--run-for" => options.run_for = Some(seconds()?),
            "--rotations" => {
                options.rotations = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--rotations: {value:?} is not a count"))?,
                );
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options().map_err(|error| format!("metrics_server: {error}"))?;

    // The recorder first: everything recorded before it would be lost.
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)?
        .install_recorder()?;
    let metrics = Metrics::builder()
        .interval(Duration::from_secs(1))
        .name_secret(SECRET_ID, "orders-db")
        .name_secret(REPORTS_ID, "reports-db")
        .build()?;

    // The servers: PostgreSQL (the database, and the push broker) and moto (the secret store).
    let pg = tokio::task::spawn_blocking(PostgresServer::start).await??;
    pg.execute("CREATE ROLE orders_app LOGIN PASSWORD 'first-password-from-setup'")?;
    let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("example", "example", None, None, "static"))
        .load()
        .await;
    let client = aws_sdk_secretsmanager::Client::new(&aws);
    let secret = serde_json::json!({
        "engine": "postgres", "host": "127.0.0.1", "port": pg.port(), "dbname": "postgres",
        "username": "orders_app", "password": "first-password-from-setup",
    });
    let _ = client
        .create_secret()
        .name(SECRET_ID)
        .secret_string(secret.to_string())
        .send()
        .await?;

    // The application: a cache, a handle, a rotating pool querying all the time.
    let cache = SecretCache::builder(Arc::new(AwsSecretsManagerProvider::new(client.clone())))
        .ttl(Duration::from_secs(30))
        .min_refresh_interval(Duration::from_millis(100))
        .build()?;
    metrics.watch_cache("main", &cache);
    let handle = cache.handle::<PgCredentials>(SECRET_ID).await?;
    let pool = RotatingPgPool::builder(handle.clone())
        .pool_options(PgPoolOptions::new().max_connections(4))
        .connect_options(PgConnectOptions::new().database("postgres"))
        // Old credentials' connections go two seconds after a rotation (30 by default), so the
        // drain and first-login metrics move within a short run.
        .retry_and_drain(RetryAndDrain::default().drain_delay(Duration::from_secs(2)))
        .connect()
        .await?;
    metrics.watch_pool("orders", &pool.monitor());

    // Dynamic credentials: OpenBao's database engine issues a user per lease.
    let bao = tokio::task::spawn_blocking(OpenBaoServer::start).await??;
    mount_database_engine(&bao, &pg)?;
    let session = VaultSession::connect(
        bao.addr(),
        VaultAuth::Token(bao.root_token().to_owned().into()),
    )
    .await?;
    let leased = SecretCache::builder(Arc::new(VaultDatabaseProvider::new(session, "database")))
        .ttl(Duration::from_secs(300))
        .build()?;
    metrics.watch_cache("vault", &leased);
    let reports_handle = leased.handle::<PgCredentials>(REPORTS_ID).await?;
    let reports = RotatingPgPool::builder(reports_handle.clone())
        .pool_options(PgPoolOptions::new().max_connections(2))
        .connect_options(
            PgConnectOptions::new()
                .host("127.0.0.1")
                .port(pg.port())
                .database("postgres"),
        )
        .connect()
        .await?;
    metrics.watch_pool("reports", &reports.monitor());

    let readiness = Readiness::new()
        .require("orders-db", &handle)
        .require("reports-db", &reports_handle);
    let traffic = [(pool.clone(), 20), (reports.clone(), 200)].map(|(pool, every_ms)| {
        tokio::spawn(async move {
            loop {
                let result: Result<i32, _> = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await;
                if let Err(error) = result {
                    eprintln!("metrics_server: a query failed: {error}");
                }
                tokio::time::sleep(Duration::from_millis(every_ms)).await;
            }
        })
    });

    // Push: every new version is announced over NOTIFY and applied to the cache at once.
    let mut broker = tokio_postgres::Config::new();
    let _ = broker
        .host("127.0.0.1")
        .port(pg.port())
        .dbname("postgres")
        .user(PostgresServer::SUPERUSER)
        .password(pg.superuser_password());
    let subscriber = Subscriber::builder(PgListener::new(broker.clone(), DEFAULT_CHANNEL)?)
        .cache(cache.clone())
        .start()?;
    metrics.watch_subscriber("fleet", &subscriber);
    let publisher = Arc::new(PgPublisher::connect(&broker, DEFAULT_CHANNEL).await?);

    // The rotation engine, with the admin credential pinned to the endpoint configured here (the
    // throwaway server listens on loopback: plaintext is an explicit opt-in).
    let mut endpoint = tokio_postgres::Config::new();
    let _ = endpoint
        .host("127.0.0.1")
        .port(pg.port())
        .dbname("postgres");
    let target = PostgresTarget::new()
        .connection(endpoint)
        .admin(
            PostgresServer::SUPERUSER,
            pg.superuser_password().to_owned(),
        )
        .allow_plaintext();
    let key_store = client.clone();
    let api_publisher = Arc::clone(&publisher);
    let rotator = Rotator::builder(Arc::new(AwsRotationStore::new(client)), Arc::new(target))
        .strategy(Strategy::alternating_users())
        .on_finished(move |finished| {
            let publisher = Arc::clone(&publisher);
            async move {
                if let Err(error) = publisher
                    .announce(&finished.secret_id, &finished.version)
                    .await
                {
                    eprintln!("metrics_server: announcing the rotation failed: {error}");
                }
            }
        })
        .build()?;
    metrics.watch_rotator("orders-db", &rotator);
    let rotations = {
        let (every, limit) = (options.rotate_every, options.rotations);
        tokio::spawn(async move {
            let mut done = 0u64;
            while limit.is_none_or(|limit| done < limit) {
                tokio::time::sleep(every).await;
                match rotator.rotate(SECRET_ID).await {
                    Ok(outcome) => println!("rotated: {outcome:?}"),
                    Err(error) => eprintln!("metrics_server: a rotation failed: {error}"),
                }
                done += 1;
            }
        })
    };

    // Our own API, guarded by a key in moto that the server's cache follows (TTL and push), and
    // a client of it with a cache of its own that never refreshes by itself: it learns of each
    // new key from the 401 its old one gets, and replays the request.
    let _ = key_store
        .create_secret()
        .name(API_KEY_ID)
        .secret_string("api-key-0")
        .send()
        .await?;
    let api_keys = ApiKeyLayer::bearer(ApiKeys::plain(&cache, API_KEY_ID).await?);
    metrics.watch_api_keys("orders-api", &api_keys);
    let client_cache =
        SecretCache::builder(Arc::new(AwsSecretsManagerProvider::new(key_store.clone())))
            .ttl(Duration::from_secs(3600))
            .build()?;
    let auth = AuthMiddleware::new(client_cache.handle_raw(API_KEY_ID).await?, Bearer::new());
    metrics.watch_http_client("orders-client", &auth);
    let key_rotations = {
        let (every, limit) = (options.rotate_every, options.rotations);
        tokio::spawn(async move {
            let mut done = 0u64;
            while limit.is_none_or(|limit| done < limit) {
                tokio::time::sleep(every).await;
                done += 1;
                let put = key_store
                    .put_secret_value()
                    .secret_id(API_KEY_ID)
                    .secret_string(format!("api-key-{done}"))
                    .send()
                    .await;
                let version = match put.map(|out| out.version_id().map(str::to_owned)) {
                    Ok(Some(version)) => credswap::VersionId::new(version),
                    other => {
                        eprintln!("metrics_server: rotating the API key failed: {other:?}");
                        continue;
                    }
                };
                if let Err(error) = api_publisher.announce(API_KEY_ID, &version).await {
                    eprintln!("metrics_server: announcing the API key failed: {error}");
                }
            }
        })
    };

    let api = Router::new()
        .route("/api/orders", get(|| async { "[]" }))
        .route_layer(api_keys);
    let app = Router::new()
        .merge(api)
        .route("/metrics", get(move || render(prometheus.clone())))
        .route(
            "/ready",
            get(move || {
                let report = readiness.check();
                let status = if report.is_ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                async move {
                    (
                        status,
                        [("content-type", "application/json")],
                        report.to_json(),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let local = listener.local_addr()?;
    let api_client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(auth)
        .build();
    let api_traffic = tokio::spawn(async move {
        loop {
            match api_client
                .get(format!("http://{local}/api/orders"))
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => eprintln!("metrics_server: the API answered {}", response.status()),
                Err(error) => eprintln!("metrics_server: calling the API failed: {error}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    println!("listening on http://{local}");
    let serve = axum::serve(listener, app);
    match options.run_for {
        Some(run_for) => {
            let _ = tokio::time::timeout(run_for, serve).await;
        }
        None => serve.await?,
    }
    rotations.abort();
    key_rotations.abort();
    api_traffic.abort();
    for task in traffic {
        task.abort();
    }
    subscriber.shutdown().await;
    let _ = leased.shutdown_revoking_leases().await;
    drop((pg, moto, bao));
    Ok(())
}

/// Mounts OpenBao's database engine on `pg` (as its superuser) with the dynamic role `reports`:
/// one-minute leases, renewable up to ten.
fn mount_database_engine(
    bao: &OpenBaoServer,
    pg: &PostgresServer,
) -> Result<(), Box<dyn std::error::Error>> {
    let _ = bao.cli(&["secrets", "enable", "database"])?;
    let url = format!(
        "connection_url=postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port()
    );
    let password = format!("password={}", pg.superuser_password());
    let _ = bao.cli(&[
        "write",
        "database/config/pg",
        "plugin_name=postgresql-database-plugin",
        &url,
        "username=postgres",
        &password,
        "allowed_roles=reports",
    ])?;
    let _ = bao.cli(&[
        "write",
        "database/roles/reports",
        "db_name=pg",
        "creation_statements=CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
        "default_ttl=60s",
        "max_ttl=10m",
    ])?;
    Ok(())
}

async fn render(prometheus: PrometheusHandle) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        prometheus.render(),
    )
}
