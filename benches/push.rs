//! Fan-out of push invalidation on loopback, and what push saves a fleet in store calls.
//!
//! For each broker (PostgreSQL `LISTEN`/`NOTIFY`, Redis pub/sub) and N = 10, 100, 1,000
//! subscribers, each with its own connection, cache and handle over one store: rotate the secret,
//! announce once, and time every handle's swap from the moment before the announcement was sent.
//! Several rounds per N; p50/p99/max over all swaps. Then the store calls one announcement and one
//! reconnect cost per cache (counted by the store), and the arithmetic for a fleet: store calls per
//! day with push and a one-hour TTL against polling with a five-minute TTL, and the AWS bill.
//!
//! `cargo bench --bench push --features push-postgres,push-redis,testkit`
//! (`CREDSWAP_BENCH_PUSH_SIZES=10,100` to run fewer sizes).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use credswap::push::{
    Channel, PgListener, PgPublisher, Publisher, PushEvent, RecheckPass, RedisListener,
    RedisPublisher, Subscriber,
};
use credswap::testkit::{PostgresServer, RedisServer};
use credswap::{MemoryProvider, SecretCache, SecretEvent, SecretHandle, SecretValue};

const CHANNEL: &str = "credswap_bench";
/// The caches' `min_refresh_interval`: rounds are spaced past it so each announcement's refresh
/// reaches the store.
const INTERVAL: Duration = Duration::from_millis(200);

/// How one broker is reached and how its listener connections are cut (to measure a reconnect).
trait Broker {
    fn name(&self) -> &'static str;
    fn listener(&self) -> Arc<dyn Channel>;
    fn kill_listeners(&self);
}

struct Postgres {
    server: PostgresServer,
}

impl Postgres {
    fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        let _ = config
            .host("127.0.0.1")
            .port(self.server.port())
            .user(PostgresServer::SUPERUSER)
            .password(self.server.superuser_password())
            .dbname("postgres");
        config
    }
}

impl Broker for Postgres {
    fn name(&self) -> &'static str {
        "PostgreSQL LISTEN/NOTIFY"
    }

    fn listener(&self) -> Arc<dyn Channel> {
        Arc::new(PgListener::new(self.config(), CHANNEL).unwrap())
    }

    fn kill_listeners(&self) {
        let _ = self
            .server
            .execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = 'credswap-push'",
            )
            .unwrap();
    }
}

struct Redis {
    server: RedisServer,
}

impl Broker for Redis {
    fn name(&self) -> &'static str {
        "Redis pub/sub"
    }

    fn listener(&self) -> Arc<dyn Channel> {
        Arc::new(RedisListener::open(&self.server.url(), CHANNEL).unwrap())
    }

    fn kill_listeners(&self) {
        let _ = self
            .server
            .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
            .unwrap();
    }
}

/// N caches, each with a handle and a subscriber of its own, over one store.
struct Fleet {
    store: Arc<MemoryProvider>,
    members: Vec<(SecretHandle<SecretValue>, Subscriber)>,
    swaps: Arc<Mutex<Vec<Instant>>>,
    confirmed: Arc<Mutex<usize>>,
}

impl Fleet {
    async fn start(broker: &dyn Broker, size: usize) -> Fleet {
        let store = Arc::new(MemoryProvider::new());
        let _ = store.set("db", r#"{"password": "round-0"}"#);
        let swaps: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let confirmed: Arc<Mutex<usize>> = Arc::default();
        let mut members = Vec::with_capacity(size);
        // Connect in batches, as pods roll out: a thousand simultaneous logins only measure the
        // broker's login speed.
        for batch in 0..size.div_ceil(100) {
            for _ in 0..100.min(size - batch * 100) {
                let cache = SecretCache::builder(store.clone())
                    .ttl(Duration::from_secs(3600))
                    .min_refresh_interval(INTERVAL)
                    .build()
                    .unwrap();
                let recorded = swaps.clone();
                cache.on_event(move |event| {
                    if let SecretEvent::HandleSwapped { .. } = event {
                        recorded.lock().unwrap().push(Instant::now());
                    }
                });
                let handle = cache.handle_raw("db").await.unwrap();
                let counted = confirmed.clone();
                let subscriber = Subscriber::builder(broker.listener())
                    .cache(cache)
                    .follow_up(INTERVAL, 3)
                    .broker_timeout(Duration::from_secs(60))
                    .on_event(move |event| {
                        if let PushEvent::Rechecked {
                            pass: RecheckPass::Confirming,
                            ..
                        } = event
                        {
                            *counted.lock().unwrap() += 1;
                        }
                    })
                    .start()
                    .unwrap();
                members.push((handle, subscriber));
            }
            let expected = members.len();
            assert!(
                wait(Duration::from_secs(120), || *confirmed.lock().unwrap()
                    >= expected)
                .await
            );
        }
        Fleet {
            store,
            members,
            swaps,
            confirmed,
        }
    }

    fn store_calls(&self) -> u64 {
        self.store.fetch_calls() + self.store.probe_calls()
    }

    async fn shutdown(self) {
        for (_, subscriber) in self.members {
            subscriber.shutdown().await;
        }
    }
}

async fn wait(limit: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    condition()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Measured {
    broker: &'static str,
    size: usize,
    rounds: usize,
    latencies: Vec<Duration>,
    calls_per_announcement: f64,
    calls_per_reconnect: f64,
}

async fn measure(broker: &dyn Broker, publisher: &dyn Publisher, size: usize) -> Measured {
    let setup = Instant::now();
    let fleet = Fleet::start(broker, size).await;
    eprintln!(
        "  {} × {size}: fleet up in {:.1?}",
        broker.name(),
        setup.elapsed()
    );
    let rounds = match size {
        0..=10 => 20,
        11..=100 => 10,
        _ => 5,
    };
    let mut latencies = Vec::with_capacity(size * rounds);
    let calls_before = fleet.store_calls();
    for round in 1..=rounds {
        // Past the caches' rate limit, so the announcement's refresh reaches the store.
        tokio::time::sleep(INTERVAL + Duration::from_millis(50)).await;
        fleet.swaps.lock().unwrap().clear();
        let version = fleet
            .store
            .set("db", format!(r#"{{"password": "round-{round}"}}"#));
        let sent = Instant::now();
        let _ = publisher.announce("db", &version).await.unwrap();
        let done = wait(Duration::from_secs(60), || {
            fleet.swaps.lock().unwrap().len() >= size
        })
        .await;
        assert!(done, "round {round}: not every handle swapped");
        assert!(
            fleet
                .members
                .iter()
                .all(|(handle, _)| handle.load().version().id == version)
        );
        latencies.extend(
            fleet
                .swaps
                .lock()
                .unwrap()
                .iter()
                .map(|at| at.saturating_duration_since(sent)),
        );
    }
    let calls_per_announcement =
        (fleet.store_calls() - calls_before) as f64 / (size * rounds) as f64;

    // One reconnect of the whole fleet: the re-check's store calls per cache (one secret each).
    tokio::time::sleep(INTERVAL + Duration::from_millis(50)).await;
    let calls_before = fleet.store_calls();
    let confirmed_before = *fleet.confirmed.lock().unwrap();
    tokio::task::block_in_place(|| broker.kill_listeners());
    let reconnected = wait(Duration::from_secs(120), || {
        *fleet.confirmed.lock().unwrap() >= confirmed_before + size
    })
    .await;
    assert!(reconnected, "the fleet did not reconnect");
    let calls_per_reconnect = (fleet.store_calls() - calls_before) as f64 / size as f64;
    fleet.shutdown().await;
    latencies.sort();
    Measured {
        broker: broker.name(),
        size,
        rounds,
        latencies,
        calls_per_announcement,
        calls_per_reconnect,
    }
}

/// Store calls per day and the AWS bill for a fleet, from the per-cache costs measured above.
fn fleet_arithmetic(calls_per_announcement: f64, calls_per_reconnect: f64) {
    const PODS: f64 = 1_000.0;
    const SECRETS: f64 = 10.0;
    const ROTATIONS_PER_SECRET_PER_DAY: f64 = 1.0;
    const RECONNECTS_PER_POD_PER_DAY: f64 = 1.0;
    const DOLLARS_PER_CALL: f64 = 0.05 / 10_000.0;
    // The cache refreshes an entry at a point drawn from 75–90 % of its TTL: 82.5 % on average.
    let refreshes_per_day = |ttl_secs: f64| 86_400.0 / (ttl_secs * 0.825);
    // Polling: each refresh is one call (a DescribeSecret probe, or a GetSecretValue for stores
    // without one); a rotation adds one GetSecretValue per pod and secret.
    let polling = PODS * SECRETS * (refreshes_per_day(300.0) + ROTATIONS_PER_SECRET_PER_DAY);
    // Push: the hourly backstop refresh, the measured cost of each announcement, and a reconnect
    // re-check per pod and day.
    let push = PODS * SECRETS * refreshes_per_day(3_600.0)
        + PODS * SECRETS * ROTATIONS_PER_SECRET_PER_DAY * calls_per_announcement
        + PODS * RECONNECTS_PER_POD_PER_DAY * SECRETS * calls_per_reconnect;
    println!();
    println!(
        "fleet: {PODS} pods × {SECRETS} secrets, {ROTATIONS_PER_SECRET_PER_DAY} rotation per secret \
         per day, {RECONNECTS_PER_POD_PER_DAY} broker reconnect per pod per day"
    );
    println!("| | store calls per day | AWS per month (30 days) |");
    println!("|---|---|---|");
    println!(
        "| polling, 5-minute TTL | {:.0} | ${:.2} |",
        polling,
        polling * DOLLARS_PER_CALL * 30.0
    );
    println!(
        "| push, 1-hour TTL | {:.0} | ${:.2} |",
        push,
        push * DOLLARS_PER_CALL * 30.0
    );
    println!("| ratio | {:.1}× fewer | |", polling / push);
}

fn main() {
    let sizes: Vec<usize> = std::env::var("CREDSWAP_BENCH_PUSH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1_000]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut results = Vec::new();
    runtime.block_on(async {
        let postgres = Postgres {
            server: tokio::task::spawn_blocking(|| {
                PostgresServer::start_with(&[("max_connections", "1200")])
            })
            .await
            .unwrap()
            .expect("start PostgreSQL"),
        };
        let publisher = PgPublisher::connect(&postgres.config(), CHANNEL)
            .await
            .unwrap();
        for &size in &sizes {
            results.push(measure(&postgres, &publisher, size).await);
        }
        drop(publisher);
        drop(postgres);

        let redis = Redis {
            server: tokio::task::spawn_blocking(RedisServer::start)
                .await
                .unwrap()
                .expect("start Redis"),
        };
        let publisher = RedisPublisher::open(&redis.server.url(), CHANNEL).unwrap();
        for &size in &sizes {
            results.push(measure(&redis, &publisher, size).await);
        }
    });

    println!(
        "fan-out: one announcement to N handles, each subscriber its own connection and cache"
    );
    println!(
        "| broker | N | swaps timed | p50 | p99 | max | store calls per cache per announcement | per cache per reconnect |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for m in &results {
        println!(
            "| {} | {} | {} ({} rounds) | {:.1?} | {:.1?} | {:.1?} | {:.2} | {:.2} |",
            m.broker,
            m.size,
            m.latencies.len(),
            m.rounds,
            percentile(&m.latencies, 0.5),
            percentile(&m.latencies, 0.99),
            m.latencies[m.latencies.len() - 1],
            m.calls_per_announcement,
            m.calls_per_reconnect,
        );
    }
    let worst_announcement = results
        .iter()
        .map(|m| m.calls_per_announcement)
        .fold(0.0, f64::max);
    let worst_reconnect = results
        .iter()
        .map(|m| m.calls_per_reconnect)
        .fold(0.0, f64::max);
    fleet_arithmetic(worst_announcement, worst_reconnect);
}
