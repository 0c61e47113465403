//! credswap against the official `aws_secretsmanager_caching` crate, on one moto-backed secret.
//!
//! 1. Hits: a handle read, a `SecretCache::get` hit, and the official client's
//!    `get_secret_value` hit; 1 and 2 threads, each thread driving its own current-thread Tokio
//!    runtime (the same for both libraries). Criterion measures each; an interleaved run in the
//!    same process gives the ratios.
//! 2. Store calls: 1,000 concurrent readers of a cold secret, then of an expired one, for each
//!    library, counted by the moto server.
//!
//! `cargo bench --bench aws --features aws,testkit`

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::{Credentials, Region};
use aws_secretsmanager_caching::SecretsManagerCachingClient;
use credswap::provider::AwsSecretsManagerProvider;
use credswap::testkit::MotoServer;
use credswap::{SecretCache, SecretHandle};
use criterion::Criterion;

const SECRET: &str = "prod/app/db";
const GET: &str = "secretsmanager.GetSecretValue";
const DESCRIBE: &str = "secretsmanager.DescribeSecret";

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Db {
    username: String,
    password: credswap::secrecy::SecretString,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn client(moto: &MotoServer) -> Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .load()
        .await;
    Client::new(&config)
}

fn official(client: &Client, ttl: Duration) -> SecretsManagerCachingClient {
    SecretsManagerCachingClient::new(client.clone(), NonZeroUsize::new(1000).unwrap(), ttl, false)
        .unwrap()
}

fn ours(client: &Client, ttl: Duration) -> SecretCache {
    SecretCache::builder(Arc::new(AwsSecretsManagerProvider::new(client.clone())))
        .ttl(ttl)
        .build()
        .unwrap()
}

/// Runs `op` `iters` times on each of `threads` threads, each with its own current-thread runtime;
/// returns the slowest thread's time.
fn on_threads<F, Fut>(threads: usize, iters: u64, op: F) -> Duration
where
    F: Fn() -> Fut + Sync,
    Fut: std::future::Future<Output = ()>,
{
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let rt = runtime();
                    let _ = barrier.wait();
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            op().await;
                        }
                        start.elapsed()
                    })
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .max()
            .unwrap()
    })
}

struct Readers {
    handle: SecretHandle<Db>,
    cache: SecretCache,
    official: SecretsManagerCachingClient,
}

fn hits(c: &mut Criterion, readers: &Readers) {
    let mut group = c.benchmark_group("aws_hit");
    for threads in [1usize, 2] {
        group.bench_function(format!("credswap_handle_load/{threads}t"), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, || async {
                    let _ = black_box(readers.handle.load().current().username.len());
                })
            })
        });
        group.bench_function(format!("credswap_cache_get/{threads}t"), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, || async {
                    let _ = black_box(readers.cache.get(SECRET).await.map(|v| v.value.len()));
                })
            })
        });
        group.bench_function(format!("official_get_secret_value/{threads}t"), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, || async {
                    let out = readers
                        .official
                        .get_secret_value(SECRET, None, None, false)
                        .await
                        .ok();
                    let _ = black_box(out.map(|o| o.secret_string.map(|s| s.len())));
                })
            })
        });
    }
    group.finish();
}

fn ratios(readers: &Readers) {
    println!("\ninterleaved, same process (20 rounds x 20,000 reads each):");
    for threads in [1usize, 2] {
        let (mut handle, mut get, mut official) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let n = 20_000u64;
        for _ in 0..20 {
            handle += on_threads(threads, n, || async {
                let _ = black_box(readers.handle.load().current().username.len());
            });
            get += on_threads(threads, n, || async {
                let _ = black_box(readers.cache.get(SECRET).await.map(|v| v.value.len()));
            });
            official += on_threads(threads, n, || async {
                let out = readers
                    .official
                    .get_secret_value(SECRET, None, None, false)
                    .await
                    .ok();
                let _ = black_box(out.map(|o| o.secret_string.map(|s| s.len())));
            });
        }
        let per = |d: Duration| d.as_secs_f64() * 1e9 / (20.0 * n as f64);
        println!(
            "  {threads} thread(s): handle {:.1} ns, cache get {:.1} ns, official {:.1} ns; \
             official/handle = {:.0}x, official/get = {:.1}x",
            per(handle),
            per(get),
            per(official),
            official.as_secs_f64() / handle.as_secs_f64(),
            official.as_secs_f64() / get.as_secs_f64(),
        );
    }
}

/// 1,000 readers at once, polled concurrently on one task (the official client's futures are not
/// `Send`, so both libraries are driven the same way).
async fn thousand_readers_ours(cache: &SecretCache) {
    let reads = (0..1000).map(|_| cache.get(SECRET));
    for result in futures_util::future::join_all(reads).await {
        let _ = result.unwrap();
    }
}

async fn thousand_readers_official(official: &SecretsManagerCachingClient) {
    let reads = (0..1000).map(|_| official.get_secret_value(SECRET, None, None, false));
    for result in futures_util::future::join_all(reads).await {
        let _ = result.unwrap();
    }
}

fn store_calls(rt: &tokio::runtime::Runtime, moto: &MotoServer, client: &Client) {
    println!("\nstore calls made for 1,000 concurrent readers (counted by the server):");
    println!(
        "| library | cold: GetSecretValue | cold: DescribeSecret | expired: GetSecretValue | expired: DescribeSecret |"
    );
    println!("|---|---|---|---|---|");
    rt.block_on(async {
        let ttl = Duration::from_millis(300);
        let cache = ours(client, ttl);
        moto.reset_request_log();
        thousand_readers_ours(&cache).await;
        let cold = (moto.request_count(GET), moto.request_count(DESCRIBE));
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        moto.reset_request_log();
        thousand_readers_ours(&cache).await;
        let expired = (moto.request_count(GET), moto.request_count(DESCRIBE));
        println!(
            "| credswap `SecretCache` | {} | {} | {} | {} |",
            cold.0, cold.1, expired.0, expired.1
        );

        let official = official(client, ttl);
        moto.reset_request_log();
        thousand_readers_official(&official).await;
        let cold = (moto.request_count(GET), moto.request_count(DESCRIBE));
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        moto.reset_request_log();
        thousand_readers_official(&official).await;
        let expired = (moto.request_count(GET), moto.request_count(DESCRIBE));
        println!(
            "| `aws_secretsmanager_caching` | {} | {} | {} | {} |",
            cold.0, cold.1, expired.0, expired.1
        );
    });
}

fn main() {
    let rt = runtime();
    let moto = MotoServer::start().expect("start moto");
    let client = rt.block_on(client(&moto));
    rt.block_on(async {
        client
            .create_secret()
            .name(SECRET)
            .secret_string(r#"{"username": "app", "password": "bench-only"}"#)
            .send()
            .await
            .unwrap();
    });
    // Readers on a multi-thread runtime, so that the cache's background tasks have somewhere to
    // run while the measuring threads block on their own runtimes.
    let background = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let readers = background.block_on(async {
        let cache = ours(&client, Duration::from_secs(3600));
        let handle = cache.handle::<Db>(SECRET).await.unwrap();
        let official = official(&client, Duration::from_secs(3600));
        let _ = official
            .get_secret_value(SECRET, None, None, false)
            .await
            .unwrap();
        Readers {
            handle,
            cache,
            official,
        }
    });

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        // No plots: the example charts enable plotters' `ab_glyph` fonts, which
        // criterion's report does not register. The numbers are what BENCHMARKS.md keeps.
        .without_plots()
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    hits(&mut criterion, &readers);
    criterion.final_summary();
    ratios(&readers);
    store_calls(&rt, &moto, &client);
}
