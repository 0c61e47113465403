//! A fleet of consumers of one secret over one store, simulated for a day on Tokio's paused
//! clock: how many store calls a second the fleet makes (mean and peak), how long until every
//! consumer holds a new version after a rotation, and what that costs on AWS Secrets Manager.
//!
//! Every consumer is a real [`SecretCache`] with a handle on the secret (each process of a fleet
//! has its own cache), over one counting store; with `push`, each also has a real push
//! [`Subscriber`] on an in-process bus, and every rotation is announced on it. The store rotates
//! the secret once an hour, at a random minute. Nothing here sleeps: a simulated day takes a
//! minute or two of CPU per scenario in a release build.
//!
//! ```text
//! cargo run --release --example fleet_sim --features push-postgres -- [--handles 10000] [--hours 24]
//! ```
//!
//! Scenarios: a 5-minute TTL with the cache's jittered refresh-ahead, the fleet starting as a
//! rolling deploy over the first TTL and all at once; the same all at once without jitter and
//! refresh-ahead (`refresh_ahead(1.0, 1.0)`); and push with a one-hour TTL as the backstop
//! (announcements spread over 10 s).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use credswap::push::{Announcement, Channel, Inbox, Published, Publisher, Subscriber};
use credswap::{
    Error, ErrorKind, Lease, MemoryProvider, Result, SecretCache, SecretEvent, SecretProvider,
    SecretValue, Selector, VersionId, Versioned,
};
use tokio::sync::broadcast;
use tokio::time::Instant;

const SECRET: &str = "prod/orders/db";

/// The store: a memory provider that counts its calls per simulated second.
struct Counting {
    store: MemoryProvider,
    started: Instant,
    /// Per second since the start: (fetches, probes).
    seconds: Mutex<HashMap<u64, (u32, u32)>>,
}

impl Counting {
    fn count(&self, fetch: bool) {
        let second = self.started.elapsed().as_secs();
        let mut seconds = self.seconds.lock().unwrap();
        let slot = seconds.entry(second).or_default();
        if fetch {
            slot.0 += 1;
        } else {
            slot.1 += 1;
        }
    }
}

#[async_trait]
impl SecretProvider for Counting {
    fn name(&self) -> &str {
        "counting"
    }

    async fn fetch(&self, id: &str, selector: &Selector) -> Result<Versioned<SecretValue>> {
        self.count(true);
        self.store.fetch(id, selector).await
    }

    async fn probe(&self, id: &str, selector: &Selector) -> Result<Option<VersionId>> {
        self.count(false);
        self.store.probe(id, selector).await
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<Option<Lease>> {
        self.store.renew_lease(lease).await
    }
}

/// An in-process broker: every subscriber of the fleet listens on it.
#[derive(Clone)]
struct Bus(broadcast::Sender<Vec<u8>>);

#[async_trait]
impl Publisher for Bus {
    fn describe(&self) -> String {
        "in-process bus".into()
    }

    async fn publish(&self, announcement: &Announcement) -> Result<Published> {
        let receivers = self.0.send(announcement.encode().into_bytes()).unwrap_or(0);
        Ok(Published::with_receivers(receivers as u64))
    }
}

struct BusInbox(broadcast::Receiver<Vec<u8>>);

#[async_trait]
impl Inbox for BusInbox {
    async fn recv(&mut self) -> Result<Vec<u8>> {
        self.0
            .recv()
            .await
            .map_err(|_| Error::new(ErrorKind::Transient).with_message("fell behind the bus"))
    }

    async fn ping(&mut self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl Channel for Bus {
    fn describe(&self) -> String {
        "in-process bus".into()
    }

    async fn listen(&self) -> Result<Box<dyn Inbox>> {
        Ok(Box::new(BusInbox(self.0.subscribe())))
    }
}

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    ttl: Duration,
    jitter: bool,
    rolling_start: bool,
    push: bool,
}

struct Outcome {
    fetches: u64,
    probes: u64,
    mean: f64,
    peak: u32,
    peak_second: u64,
    /// The peak after the first TTL (the start over).
    steady_peak: u32,
    worst_update: Duration,
    rotations: u32,
}

async fn run(scenario: Scenario, handles: usize, hours: u64) -> Outcome {
    let started = Instant::now();
    let store = Arc::new(Counting {
        store: MemoryProvider::new(),
        started,
        seconds: Mutex::new(HashMap::new()),
    });
    let _ = store.store.set(SECRET, "v-0");
    let bus = Bus(broadcast::channel(16).0);
    // When the current version was written, and the worst time any handle took to swap to it.
    let rotated_at = Arc::new(Mutex::new(started));
    let worst_nanos = Arc::new(AtomicU64::new(0));

    let mut fleet = Vec::with_capacity(handles);
    for n in 0..handles {
        if scenario.rolling_start {
            // A rolling deploy: instances come up one after another over the first TTL.
            let at = started + scenario.ttl.mul_f64(n as f64 / handles as f64);
            tokio::time::sleep_until(at).await;
        }
        let mut builder =
            SecretCache::builder(Arc::clone(&store) as Arc<dyn SecretProvider>).ttl(scenario.ttl);
        if !scenario.jitter {
            builder = builder.refresh_ahead(1.0, 1.0);
        }
        let (rotated_at, worst) = (Arc::clone(&rotated_at), Arc::clone(&worst_nanos));
        builder = builder.on_event(move |event| {
            if let SecretEvent::HandleSwapped { .. } = event {
                let took = rotated_at.lock().unwrap().elapsed();
                let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
                let _ = worst.fetch_max(nanos, Ordering::Relaxed);
            }
        });
        let cache = builder.build().expect("valid settings");
        let handle = cache.handle_raw(SECRET).await.expect("the secret exists");
        let subscriber = scenario.push.then(|| {
            Subscriber::builder(bus.clone())
                .cache(cache.clone())
                .keepalive(Duration::from_secs(3600))
                .spread(Duration::from_secs(10))
                .start()
                .expect("valid settings")
        });
        fleet.push((cache, handle, subscriber));
    }

    // One rotation an hour, at a random minute; announced when pushing.
    let mut rotations = 0;
    for hour in 0..hours {
        let at = started
            + Duration::from_secs(hour * 3600)
            + Duration::from_secs(fastrand::u64(60..3540));
        tokio::time::sleep_until(at).await;
        rotations += 1;
        *rotated_at.lock().unwrap() = Instant::now();
        let version = store.store.set(SECRET, format!("v-{rotations}").as_str());
        if scenario.push {
            let _ = credswap::push::announce(&bus, SECRET, &version).await;
        }
    }
    tokio::time::sleep_until(started + Duration::from_secs(hours * 3600)).await;
    for (cache, _, subscriber) in &fleet {
        if let Some(subscriber) = subscriber {
            subscriber.shutdown().await;
        }
        cache.shutdown().await;
    }

    let seconds = store.seconds.lock().unwrap();
    let (mut fetches, mut probes, mut peak, mut peak_second, mut steady_peak) = (0, 0, 0, 0, 0);
    for (second, (f, p)) in seconds.iter() {
        fetches += u64::from(*f);
        probes += u64::from(*p);
        if f + p > peak {
            peak = f + p;
            peak_second = *second;
        }
        if *second >= scenario.ttl.as_secs() * 2 {
            steady_peak = steady_peak.max(f + p);
        }
    }
    Outcome {
        fetches,
        probes,
        mean: (fetches + probes) as f64 / (hours * 3600) as f64,
        peak,
        peak_second,
        steady_peak,
        worst_update: Duration::from_nanos(worst_nanos.load(Ordering::Relaxed)),
        rotations,
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let handles = arg("--handles", 10_000) as usize;
    let hours = arg("--hours", 24);
    let minutes = |m: u64| Duration::from_secs(60 * m);
    let scenarios = [
        Scenario {
            name: "TTL 5 min, jittered refresh-ahead, rolling start",
            ttl: minutes(5),
            jitter: true,
            rolling_start: true,
            push: false,
        },
        Scenario {
            name: "TTL 5 min, jittered refresh-ahead, all at once",
            ttl: minutes(5),
            jitter: true,
            rolling_start: false,
            push: false,
        },
        Scenario {
            name: "TTL 5 min, no jitter or refresh-ahead, all at once",
            ttl: minutes(5),
            jitter: false,
            rolling_start: false,
            push: false,
        },
        Scenario {
            name: "push, TTL 1 h as backstop, rolling start",
            ttl: minutes(60),
            jitter: true,
            rolling_start: true,
            push: true,
        },
    ];
    println!(
        "{handles} handles over one store for {hours} simulated hours, one rotation an hour\n"
    );
    println!(
        "| scenario | store calls | GetSecretValue | DescribeSecret | mean /s | peak /s (at s) | peak /s after 2 TTLs | peak / mean | worst update | AWS $/month |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for scenario in scenarios {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime");
        let wall = std::time::Instant::now();
        let outcome = runtime.block_on(run(scenario, handles, hours));
        let calls = outcome.fetches + outcome.probes;
        // $0.05 per 10,000 API calls; a month of 30 days at this day's rate.
        let per_month = calls as f64 * (30.0 * 24.0 / hours as f64) / 10_000.0 * 0.05;
        println!(
            "| {} | {calls} | {} | {} | {:.1} | {} ({}) | {} | {:.1}x (steady {:.1}x) | {:.1?} | ${per_month:.0} |",
            scenario.name,
            outcome.fetches,
            outcome.probes,
            outcome.mean,
            outcome.peak,
            outcome.peak_second,
            outcome.steady_peak,
            outcome.peak as f64 / outcome.mean,
            outcome.steady_peak as f64 / outcome.mean,
            outcome.worst_update,
        );
        eprintln!(
            "  ({} rotations; simulated in {:.1?})",
            outcome.rotations,
            wall.elapsed()
        );
    }
    println!(
        "\nRegional quotas: 10,000 GetSecretValue and 40,000 DescribeSecret calls a second; the peaks above are a share of them."
    );
}
