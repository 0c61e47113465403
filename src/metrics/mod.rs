//! Metrics for operators, through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`): the crate records, the application installs a recorder (for Prometheus,
//! `metrics-exporter-prometheus`) and decides where the numbers go. Every name, type, unit and
//! label, and the SLI each serves, is in the guide [`docs::metrics`](crate::docs::metrics).
//!
//! [`Metrics`] is a thin layer over what the parts already report: the events and counters of
//! the caches, pools, rotators and push subscribers it watches. Counters and gauges are
//! published from their snapshots every [`interval`](MetricsBuilder::interval) (so a cache hit
//! writes nothing shared: its counter is sharded by thread); durations and per-event counts come
//! from the components' hooks as they happen.
//!
//! Labels never carry a value. A secret's id appears in a `secret` label only when you
//! [opt in](MetricsBuilder::label_secret_ids) or [give it a name](MetricsBuilder::name_secret);
//! other secrets are counted together under `secret="other"` (gauges report the worst of them),
//! so ids that say more than they should (a tenant, a customer) stay out of the metrics system
//! and the number of series stays bounded. Caches, pools, rotators and subscribers carry the name
//! you give them when you watch them.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> credswap::Result<()> {
//! use std::sync::Arc;
//! use credswap::{MemoryProvider, SecretCache};
//! use credswap::metrics::Metrics;
//!
//! let store = Arc::new(MemoryProvider::new());
//! let _ = store.set("prod/orders/db", r#"{"username": "app", "password": "pw"}"#);
//! let cache = SecretCache::builder(store).build()?;
//!
//! // Install a recorder first (metrics_exporter_prometheus::PrometheusBuilder, say).
//! let metrics = Metrics::builder()
//!     .name_secret("prod/orders/db", "orders-db")
//!     .build()?;
//! metrics.watch_cache("main", &cache);
//! let _ = cache.get("prod/orders/db").await?;
//! metrics.publish(); // also done every interval in the background
//! # Ok(())
//! # }
//! ```

mod cache;
pub(crate) mod catalogue;
#[cfg(any(feature = "http-client", feature = "http-server"))]
mod http;
mod labels;
#[cfg(any(feature = "sqlx", feature = "deadpool"))]
mod pool;
#[cfg(any(feature = "push-postgres", feature = "push-redis"))]
mod push;
#[cfg(feature = "rotation")]
mod rotation;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::cache::SecretCache;
use crate::error::{Error, Result};

use self::labels::SecretLabels;

/// Bucket bounds, in seconds, that suit the crate's histograms (store calls of milliseconds to
/// consumer updates of minutes): hand them to your recorder, e.g.
/// `PrometheusBuilder::set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)`.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Something whose snapshot is published every interval: a watched component. `false` once the
/// component is gone.
trait Source: Send {
    fn publish(&mut self, labels: &SecretLabels) -> bool;
}

struct Shared {
    labels: Arc<SecretLabels>,
    sources: Mutex<Vec<Box<dyn Source>>>,
}

/// Publishes the metrics of the components it watches. See the [module](self) docs.
///
/// Cheap to clone; the background publishing stops when the last clone is dropped.
#[derive(Clone)]
pub struct Metrics {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let watched = self.shared.sources.lock().map_or(0, |s| s.len());
        f.debug_struct("Metrics")
            .field("watched", &watched)
            .finish()
    }
}

/// Settings of [`Metrics`].
#[derive(Debug, Clone)]
pub struct MetricsBuilder {
    interval: Duration,
    secret_ids: bool,
    names: HashMap<String, String>,
}

impl MetricsBuilder {
    /// How often counters and gauges are published from the components' snapshots. Default:
    /// 5 seconds (well inside a usual scrape interval). `Duration::ZERO`: never in the
    /// background, only when you call [`Metrics::publish`].
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Label every secret with its id (`secret="prod/orders/db"`). Off by default: ids can say
    /// more than they should and can be many. Names given with [`name_secret`](Self::name_secret)
    /// win over ids.
    pub fn label_secret_ids(mut self, label: bool) -> Self {
        self.secret_ids = label;
        self
    }

    /// Label the secret `id` as `name` (`secret="orders-db"`).
    pub fn name_secret(mut self, id: impl Into<String>, name: impl Into<String>) -> Self {
        let _ = self.names.insert(id.into(), name.into());
        self
    }

    /// Describes every metric to the installed recorder (units and help texts) and, with a
    /// non-zero interval, starts publishing in the background.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) with a non-zero interval outside a Tokio
    /// runtime.
    pub fn build(self) -> Result<Metrics> {
        let shared = Arc::new(Shared {
            labels: Arc::new(SecretLabels::new(self.secret_ids, self.names)),
            sources: Mutex::new(Vec::new()),
        });
        catalogue::describe();
        if !self.interval.is_zero() {
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                Error::config("Metrics with a publishing interval need a Tokio runtime")
            })?;
            drop(runtime.spawn(publish_every(Arc::downgrade(&shared), self.interval)));
        }
        Ok(Metrics { shared })
    }
}

async fn publish_every(shared: Weak<Shared>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let _ = ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        publish(&shared);
    }
}

fn publish(shared: &Shared) {
    let mut sources = shared.sources.lock().unwrap_or_else(|e| e.into_inner());
    sources.retain_mut(|source| source.publish(&shared.labels));
}

impl Metrics {
    /// Starts building: 5-second interval, no secret ids in labels.
    pub fn builder() -> MetricsBuilder {
        MetricsBuilder {
            interval: Duration::from_secs(5),
            secret_ids: false,
            names: HashMap::new(),
        }
    }

    fn add(&self, mut source: Box<dyn Source>) {
        // Publish at once, so the series exist (at zero) from the start.
        let _ = source.publish(&self.shared.labels);
        self.shared
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(source);
    }

    /// Publishes every watched component's counters and gauges now.
    pub fn publish(&self) {
        publish(&self.shared);
    }

    /// Records the metrics of `cache` under `cache="name"`: store calls and their durations,
    /// hits, misses, coalesced waits, stale serves, negative hits, refresh failures, rotations,
    /// handle swaps and their update latency, leases, and per secret the age of its version,
    /// the time left on its lease and how stale it is. Watching does not keep the cache alive.
    pub fn watch_cache(&self, name: &str, cache: &SecretCache) {
        self.add(cache::watch(name, cache, &self.shared.labels));
    }

    /// Records the metrics of a rotating pool (either kind) under `pool="name"`: authentication
    /// failures, retries, fallbacks, credential swaps, drained connections and the time to
    /// retire old credentials, the update latency, and OpenTelemetry's `db.client.connection.*`.
    #[cfg(any(feature = "sqlx", feature = "deadpool"))]
    pub fn watch_pool(&self, name: &str, monitor: &crate::pg::PoolMonitor) {
        self.add(pool::watch(name, monitor));
    }

    /// Records a rotator's attempts, steps, outcomes, durations and rollbacks under
    /// `secret="name"`.
    #[cfg(feature = "rotation")]
    pub fn watch_rotator(&self, name: &str, rotator: &crate::rotation::Rotator) {
        self.add(rotation::watch(name, rotator));
    }

    /// Records a push subscriber's announcements (received, applied and how fast, ignored,
    /// rejected), reconnects and connection state under `subscriber="name"`.
    #[cfg(any(feature = "push-postgres", feature = "push-redis"))]
    pub fn watch_subscriber(&self, name: &str, subscriber: &crate::push::Subscriber) {
        self.add(push::watch(name, subscriber));
    }

    /// Publishes an HTTP client middleware's counters under `client="name"`: rejections,
    /// refreshes, replays and the rejections its callers saw.
    #[cfg(feature = "http-client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http-client")))]
    pub fn watch_http_client<T, S>(
        &self,
        name: &str,
        middleware: &crate::http::AuthMiddleware<T, S>,
    ) where
        T: Send + Sync + 'static,
        S: crate::http::AuthScheme<T>,
    {
        self.add(http::watch_client(name, middleware.counters()));
    }

    /// Publishes an API-key layer's counters under `server="name"`: requests accepted by key
    /// version and refused by reason.
    #[cfg(feature = "http-server")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http-server")))]
    pub fn watch_api_keys(&self, name: &str, layer: &crate::http::ApiKeyLayer) {
        self.add(http::watch_server(name, layer.counters()));
    }
}

/// Seconds as a histogram or gauge records them.
fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

#[cfg(test)]
mod tests;
