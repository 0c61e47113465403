//! A cache's metrics: store calls and events from its hooks, counters and per-secret gauges from
//! its snapshot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::metrics::{SharedString, counter, gauge, histogram};

use super::catalogue as m;
use super::labels::SecretLabels;
use super::{Source, secs};
use crate::cache::events::{SecretEvent, StoreCall};
use crate::cache::{SecretCache, WeakCache};
use crate::handle::HandleStatus;

pub(super) fn watch(
    name: &str,
    cache: &SecretCache,
    labels: &Arc<SecretLabels>,
) -> Box<dyn Source> {
    let name = SharedString::from(name.to_owned());
    let (calls, events) = (name.clone(), name.clone());
    cache.on_store_call(move |call: &StoreCall| {
        let labels = [
            ("cache", calls.clone()),
            ("provider", SharedString::from(call.provider.to_string())),
            (
                "operation",
                SharedString::const_str(call.operation.as_str()),
            ),
            ("outcome", SharedString::const_str(call.outcome())),
        ];
        counter!(m::STORE_CALLS, &labels).increment(1);
        histogram!(m::STORE_CALL_DURATION, &labels).record(secs(call.duration));
    });
    let hook_labels = Arc::clone(labels);
    cache.on_event(move |event| record(&events, &hook_labels, event));
    // The series the dashboards and alerts read exist from the start, at zero.
    let cache_label = [("cache", name.clone())];
    for counter_name in [
        m::CACHE_HITS,
        m::CACHE_MISSES,
        m::CACHE_COALESCED,
        m::CACHE_STALE_SERVES,
        m::CACHE_NEGATIVE_HITS,
        m::LEASE_REPLACEMENTS,
    ] {
        counter!(counter_name, &cache_label).absolute(0);
    }
    Box::new(CacheSource {
        name,
        cache: cache.downgrade(),
        labelled: HashMap::new(),
    })
}

fn record(cache: &SharedString, labels: &SecretLabels, event: &SecretEvent) {
    let secret = || [("cache", cache.clone()), ("secret", labels.of(event.id()))];
    match event {
        SecretEvent::RefreshFailed { kind, .. } => {
            let [cache, secret] = secret();
            let labels = [
                cache,
                secret,
                ("kind", SharedString::const_str(kind.as_str())),
            ];
            counter!(m::CACHE_REFRESH_FAILURES, &labels).increment(1);
        }
        SecretEvent::Rotated { .. } => counter!(m::SECRET_ROTATIONS, &secret()).increment(1),
        SecretEvent::HandleSwapped { since_created, .. } => {
            counter!(m::HANDLE_SWAPS, &secret()).increment(1);
            if let Some(latency) = since_created {
                histogram!(m::HANDLE_UPDATE_LATENCY, &secret()).record(secs(*latency));
            }
        }
        SecretEvent::LeaseRenewed { .. } => counter!(m::LEASE_RENEWALS, &secret()).increment(1),
        SecretEvent::HandleStatusChanged {
            status: HandleStatus::LeaseExpired { .. },
            ..
        } => counter!(m::LEASE_EXPIRIES, &secret()).increment(1),
        _ => {}
    }
}

struct CacheSource {
    name: SharedString,
    cache: WeakCache,
    /// The secret labels with gauges, and whether they were published last time.
    labelled: HashMap<SharedString, bool>,
}

/// The worst of several secrets' gauges (those counted together under `other`).
#[derive(Default)]
struct Worst {
    age: Option<Duration>,
    lease: Option<Duration>,
    stale: Duration,
}

impl Worst {
    fn add(&mut self, age: Option<Duration>, lease: Option<Duration>, stale: Option<Duration>) {
        self.age = self.age.max(age);
        self.lease = match (self.lease, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.stale = self.stale.max(stale.unwrap_or_default());
    }
}

impl Source for CacheSource {
    fn publish(&mut self, labels: &SecretLabels) -> bool {
        let Some(cache) = self.cache.upgrade() else {
            return false;
        };
        let stats = cache.stats();
        let cache_label = [("cache", self.name.clone())];
        counter!(m::CACHE_HITS, &cache_label).absolute(stats.hits);
        counter!(m::CACHE_MISSES, &cache_label).absolute(stats.misses);
        counter!(m::CACHE_COALESCED, &cache_label).absolute(stats.coalesced_waits);
        counter!(m::CACHE_STALE_SERVES, &cache_label).absolute(stats.stale_serves);
        counter!(m::CACHE_NEGATIVE_HITS, &cache_label).absolute(stats.negative_hits);
        gauge!(m::CACHE_ENTRIES, &cache_label).set(cache.len() as f64);
        gauge!(m::CACHE_MAX_STALE, &cache_label).set(secs(cache.max_stale()));

        // Per secret label: the worst of the secrets behind it (one, unless it is `other`).
        let mut worst: HashMap<SharedString, Worst> = HashMap::new();
        for held in cache.held() {
            worst.entry(labels.of(&held.id)).or_default().add(
                held.since_created,
                held.lease_remaining,
                held.stale_for,
            );
        }
        for published in self.labelled.values_mut() {
            *published = false;
        }
        for (label, worst) in &worst {
            let secret = [("cache", self.name.clone()), ("secret", label.clone())];
            if let Some(age) = worst.age {
                gauge!(m::SECRET_VERSION_AGE, &secret).set(secs(age));
            }
            if let Some(lease) = worst.lease {
                gauge!(m::SECRET_LEASE_REMAINING, &secret).set(secs(lease));
            }
            gauge!(m::SECRET_STALE, &secret).set(secs(worst.stale));
            let _ = self.labelled.insert(label.clone(), true);
        }
        // A secret the cache no longer holds is not stale: say so rather than leave its last
        // value standing.
        for (label, published) in &self.labelled {
            if !published {
                let secret = [("cache", self.name.clone()), ("secret", label.clone())];
                gauge!(m::SECRET_STALE, &secret).set(0.0);
            }
        }
        counter!(m::LEASE_REPLACEMENTS, &cache_label).absolute(stats.lease_replacements);
        true
    }
}
