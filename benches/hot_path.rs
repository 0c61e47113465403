//! The read paths every request takes: `handle.load()` and a fresh-hit `cache.get()`, on one and
//! two threads, next to the `RwLock<Arc<T>>` a hand-rolled solution would use; then the same with
//! a metrics recorder installed and the cache watched.

use std::hint::black_box;
use std::sync::{Arc, Barrier, RwLock};
use std::time::{Duration, Instant};

use credswap::{MemoryProvider, SecretCache, SecretHandle};
use criterion::{Criterion, criterion_group, criterion_main};

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Creds {
    username: String,
    password: credswap::secrecy::SecretString,
}

fn setup() -> (tokio::runtime::Runtime, SecretCache, SecretHandle<Creds>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (cache, handle) = runtime.block_on(async {
        let store = Arc::new(MemoryProvider::new());
        let _ = store.set("db", r#"{"username": "app", "password": "pw"}"#);
        let cache = SecretCache::builder(store)
            .ttl(Duration::from_secs(3600))
            .build()
            .unwrap();
        let handle = cache.handle::<Creds>("db").await.unwrap();
        (cache, handle)
    });
    (runtime, cache, handle)
}

/// Runs `op` `iters` times on each of `threads` threads at once; returns the slowest thread's time,
/// so the reported figure is the per-operation latency under that much concurrency.
fn on_threads(threads: usize, iters: u64, op: impl Fn() + Sync) -> Duration {
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let _ = barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        op();
                    }
                    start.elapsed()
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

fn hot_path(c: &mut Criterion) {
    reads(c, "read");
    // The same reads with a Prometheus recorder installed and the cache watched by `Metrics`
    // (publishing every second): a hit must cost the same, as it records nothing itself.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    metrics::set_global_recorder(recorder).expect("no recorder installed yet");
    reads(c, "read_with_recorder");
    assert!(prometheus.render().contains("credswap_cache_hits_total"));
}

fn reads(c: &mut Criterion, name: &str) {
    let (runtime, cache, handle) = setup();
    let metrics = (name != "read").then(|| {
        let _guard = runtime.enter();
        let metrics = credswap::metrics::Metrics::builder()
            .interval(Duration::from_secs(1))
            .build()
            .unwrap();
        metrics.watch_cache("bench", &cache);
        metrics
    });
    let baseline = RwLock::new(Arc::new(String::from("app")));

    let mut group = c.benchmark_group(name);
    for threads in [1usize, 2] {
        group.bench_function(format!("handle_load/{threads}t"), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, || {
                    let _ = black_box(handle.load().current().username.len());
                })
            })
        });
        group.bench_function(format!("cache_get_hit/{threads}t"), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, || {
                    // A fresh hit never awaits: poll it once on this thread.
                    let value = runtime_free_poll(cache.get("db"));
                    let _ = black_box(value.map(|v| v.value.len()));
                })
            })
        });
        group.bench_function(format!("rwlock_arc_read/{threads}t"), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, || {
                    let _ = black_box(baseline.read().unwrap().len());
                })
            })
        });
    }
    group.finish();
    drop(metrics);
    drop(runtime);
}

/// Polls a future that completes without waiting (a cache hit) to its result, without a runtime's
/// scheduling cost in the measurement. Panics if it would wait: a benchmark set-up error.
fn runtime_free_poll<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("a cache hit must not wait"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        // No plots: the example charts enable plotters' `ab_glyph` fonts, which
        // criterion's report does not register. The numbers are what BENCHMARKS.md keeps.
        .without_plots()
        .measurement_time(Duration::from_secs(3));
    targets = hot_path
}
criterion_main!(benches);
