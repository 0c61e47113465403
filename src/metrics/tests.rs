//! The metrics a watched cache records, read back from a debugging recorder: names and labels
//! as the catalogue says, counts that follow what happened, and no value anywhere.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::metrics::Key;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};

use super::Metrics;
use super::catalogue::{self, Kind};
use crate::{Error, MemoryProvider, SecretCache};

const PASSWORD: &str = "hunter2-do-not-leak";

type Recorded = Vec<(CompositeKey, DebugValue)>;

/// Runs `test` on a current-thread runtime with paused time, recording into a local recorder
/// (every task runs on this thread, so every hook records there).
fn recorded<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) -> Recorded {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    ::metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(test());
    });
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect()
}

fn labels(key: &Key) -> HashMap<String, String> {
    key.labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect()
}

fn find<'a>(recorded: &'a Recorded, name: &str, with: &[(&str, &str)]) -> Vec<&'a DebugValue> {
    recorded
        .iter()
        .filter(|(key, _)| key.key().name() == name)
        .filter(|(key, _)| {
            let labels = labels(key.key());
            with.iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, value)| value)
        .collect()
}

fn counter(recorded: &Recorded, name: &str, with: &[(&str, &str)]) -> u64 {
    find(recorded, name, with)
        .into_iter()
        .map(|value| match value {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

fn store() -> Arc<MemoryProvider> {
    let store = Arc::new(MemoryProvider::new());
    let secret = format!(r#"{{"username": "app", "password": "{PASSWORD}"}}"#);
    let _ = store.set("prod/orders/db", secret.as_str());
    let _ = store.set("tenant-4711/api", secret.as_str());
    store
}

fn cache(store: &Arc<MemoryProvider>) -> SecretCache {
    SecretCache::builder(Arc::clone(store) as _)
        .ttl(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A cache that was read, hit, rotated, swapped and failed, watched under `main`.
fn a_busy_cache(metrics: impl FnOnce() -> Metrics + 'static) -> Recorded {
    recorded(|| async move {
        let store = store();
        let cache = cache(&store);
        let metrics = metrics();
        metrics.watch_cache("main", &cache);
        let handle = cache
            .handle::<serde_json::Value>("prod/orders/db")
            .await
            .unwrap();
        for _ in 0..10 {
            let _ = cache.get("prod/orders/db").await.unwrap();
        }
        let _ = cache.get("tenant-4711/api").await.unwrap();
        let _ = store.set(
            "prod/orders/db",
            r#"{"username": "app", "password": "new"}"#,
        );
        // Past the refresh rate limit.
        tokio::time::advance(Duration::from_secs(5)).await;
        let _ = handle.refresh().await.unwrap();
        assert_eq!(handle.load().current()["password"], "new");
        store.fail_with(Some(Error::transient("prod/orders/db", "store down")));
        tokio::time::advance(Duration::from_secs(61)).await;
        let _ = cache.get("prod/orders/db").await;
        metrics.publish();
        drop(handle);
    })
}

#[test]
fn a_cache_records_store_calls_reads_swaps_and_failures() {
    let recorded = a_busy_cache(|| {
        Metrics::builder()
            .name_secret("prod/orders/db", "orders-db")
            .build()
            .unwrap()
    });
    let main = [("cache", "main")];
    assert!(counter(&recorded, catalogue::CACHE_HITS, &main) >= 10);
    assert!(counter(&recorded, catalogue::CACHE_MISSES, &main) >= 2);
    let fetches_ok = [
        ("cache", "main"),
        ("provider", "memory"),
        ("operation", "fetch"),
        ("outcome", "ok"),
    ];
    assert!(counter(&recorded, catalogue::STORE_CALLS, &fetches_ok) >= 2);
    let failed = [("cache", "main"), ("outcome", "transient")];
    assert!(counter(&recorded, catalogue::STORE_CALLS, &failed) >= 1);
    let durations = find(&recorded, catalogue::STORE_CALL_DURATION, &fetches_ok);
    assert!(
        durations
            .iter()
            .any(|value| matches!(value, DebugValue::Histogram(v) if !v.is_empty())),
        "{durations:?}"
    );
    let named = [("cache", "main"), ("secret", "orders-db")];
    assert_eq!(counter(&recorded, catalogue::HANDLE_SWAPS, &named), 1);
    assert_eq!(counter(&recorded, catalogue::SECRET_ROTATIONS, &named), 1);
    let latency = find(&recorded, catalogue::HANDLE_UPDATE_LATENCY, &named);
    assert!(
        matches!(latency.as_slice(), [DebugValue::Histogram(v)] if v.len() == 1),
        "{latency:?}"
    );
    let failures = [
        ("cache", "main"),
        ("secret", "orders-db"),
        ("kind", "transient"),
    ];
    assert!(counter(&recorded, catalogue::CACHE_REFRESH_FAILURES, &failures) >= 1);
    // The stale gauge: past its TTL by a second while the store fails.
    let stale = find(&recorded, catalogue::SECRET_STALE, &named);
    assert!(
        matches!(stale.as_slice(), [DebugValue::Gauge(v)] if v.0 >= 1.0),
        "{stale:?}"
    );
    let bound = find(&recorded, catalogue::CACHE_MAX_STALE, &main);
    assert!(
        matches!(bound.as_slice(), [DebugValue::Gauge(v)] if v.0 == 900.0),
        "{bound:?}"
    );
}

#[test]
fn secret_ids_stay_out_of_labels_unless_named_or_opted_in() {
    let recorded = a_busy_cache(|| {
        Metrics::builder()
            .name_secret("prod/orders/db", "orders-db")
            .build()
            .unwrap()
    });
    let secrets: Vec<String> = recorded
        .iter()
        .filter_map(|(key, _)| labels(key.key()).remove("secret"))
        .collect();
    assert!(secrets.iter().any(|s| s == "orders-db"), "{secrets:?}");
    assert!(secrets.iter().any(|s| s == "other"), "{secrets:?}");
    assert!(
        !secrets
            .iter()
            .any(|s| s.contains("tenant") || s.contains("prod/")),
        "{secrets:?}"
    );

    let recorded = a_busy_cache(|| Metrics::builder().label_secret_ids(true).build().unwrap());
    let secrets: Vec<String> = recorded
        .iter()
        .filter_map(|(key, _)| labels(key.key()).remove("secret"))
        .collect();
    assert!(secrets.iter().any(|s| s == "prod/orders/db"), "{secrets:?}");
    assert!(
        secrets.iter().any(|s| s == "tenant-4711/api"),
        "{secrets:?}"
    );
}

#[test]
fn every_metric_recorded_is_in_the_catalogue_with_its_labels_and_no_value_anywhere() {
    let recorded = a_busy_cache(|| Metrics::builder().label_secret_ids(true).build().unwrap());
    assert!(!recorded.is_empty());
    for (key, _) in &recorded {
        let name = key.key().name();
        let spec = catalogue::ALL
            .iter()
            .find(|spec| spec.name == name)
            .unwrap_or_else(|| panic!("{name} is not in the catalogue"));
        let kind = match key.kind() {
            MetricKind::Counter => Kind::Counter,
            MetricKind::Gauge => Kind::Gauge,
            MetricKind::Histogram => Kind::Histogram,
        };
        assert_eq!(kind, spec.kind, "{name}");
        let mut got: Vec<String> = labels(key.key()).into_keys().collect();
        got.sort();
        let mut want: Vec<String> = spec.labels.iter().map(|l| (*l).to_owned()).collect();
        want.sort();
        assert_eq!(got, want, "labels of {name}");
        let text = format!("{key:?}");
        assert!(
            !text.contains(PASSWORD) && !text.contains("\"new\""),
            "{text}"
        );
    }
}

#[test]
fn the_catalogue_follows_prometheus_conventions() {
    let mut names = std::collections::HashSet::new();
    for spec in catalogue::ALL {
        assert!(names.insert(spec.name), "{} twice", spec.name);
        assert!(
            spec.name.starts_with("credswap_") || spec.name.starts_with("db_client_connection_"),
            "{}",
            spec.name
        );
        assert_eq!(
            spec.kind == Kind::Counter,
            spec.name.ends_with("_total"),
            "{}",
            spec.name
        );
        if spec.unit == "seconds" {
            assert!(spec.name.ends_with("_seconds"), "{}", spec.name);
        }
        if spec.name.ends_with("_seconds") {
            assert_eq!(spec.unit, "seconds", "{}", spec.name);
        }
    }
}

#[test]
fn the_guide_lists_every_metric_as_the_catalogue_has_it() {
    let guide = include_str!("../docs/metrics.md");
    let rows: Vec<Vec<String>> = guide
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), catalogue::ALL.len(), "one row per metric");
    for (row, spec) in rows.iter().zip(catalogue::ALL) {
        assert_eq!(row[0], format!("`{}`", spec.name));
        assert_eq!(row[1], spec.kind.as_str(), "{}", spec.name);
        let unit = if spec.unit.is_empty() { "" } else { spec.unit };
        assert_eq!(row[2], unit, "{}", spec.name);
        let labels: Vec<String> = spec.labels.iter().map(|l| format!("`{l}`")).collect();
        assert_eq!(row[3], labels.join(", "), "{}", spec.name);
    }
}

#[test]
fn publishing_stops_with_the_last_clone_and_a_gone_cache_is_forgotten() {
    let _ = recorded(|| async {
        let store = store();
        let cache = cache(&store);
        let metrics = Metrics::builder()
            .interval(Duration::from_secs(1))
            .build()
            .unwrap();
        metrics.watch_cache("main", &cache);
        assert_eq!(metrics.shared.sources.lock().unwrap().len(), 1);
        drop(cache);
        metrics.publish();
        assert_eq!(metrics.shared.sources.lock().unwrap().len(), 0);
        let weak = Arc::downgrade(&metrics.shared);
        drop(metrics);
        tokio::time::advance(Duration::from_secs(2)).await;
        tokio::task::yield_now().await;
        assert!(weak.upgrade().is_none());
    });
}

#[test]
fn a_publishing_interval_outside_a_runtime_is_a_config_error() {
    let error = Metrics::builder().build().unwrap_err();
    assert_eq!(error.kind(), crate::ErrorKind::Config);
    assert!(Metrics::builder().interval(Duration::ZERO).build().is_ok());
}

#[cfg(all(feature = "http-server", feature = "http-client"))]
#[test]
fn http_consumers_publish_their_counts_and_are_forgotten_when_gone() {
    use crate::http::{ApiKeyLayer, ApiKeys, AuthMiddleware, Bearer};
    use tower_layer::Layer as _;
    use tower_service::Service as _;

    /// The service behind the layer: always 200.
    #[derive(Clone)]
    struct Ok200;
    impl tower_service::Service<http::Request<()>> for Ok200 {
        type Response = http::Response<()>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<http::Response<()>, Self::Error>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::ready(Ok(http::Response::new(())))
        }
    }

    let recorded = recorded(|| async {
        let store = store();
        let _ = store.set("api/key", PASSWORD);
        let cache = cache(&store);
        let metrics = Metrics::builder().build().unwrap();
        let layer = ApiKeyLayer::bearer(ApiKeys::plain(&cache, "api/key").await.unwrap());
        let client = AuthMiddleware::new(cache.handle_raw("api/key").await.unwrap(), Bearer::new());
        metrics.watch_api_keys("orders-api", &layer);
        metrics.watch_http_client("payments", &client);
        let mut service = layer.layer(Ok200);
        for key in [Some(PASSWORD), Some("wrong"), None, Some(PASSWORD)] {
            let mut request = http::Request::new(());
            if let Some(key) = key {
                let _ = request
                    .headers_mut()
                    .insert("authorization", format!("Bearer {key}").parse().unwrap());
            }
            let _ = service.call(request).await.unwrap();
        }
        metrics.publish();
        drop((service, layer, client));
        metrics.publish();
        assert_eq!(metrics.shared.sources.lock().unwrap().len(), 0);
    });
    let count = |name: &str, with: &[(&str, &str)]| match find(&recorded, name, with)[..] {
        [DebugValue::Counter(n)] => *n,
        ref other => panic!("{name} {with:?}: {other:?}"),
    };
    let server = ("server", "orders-api");
    assert_eq!(
        count(
            catalogue::HTTP_SERVER_ACCEPTED,
            &[server, ("key", "current")]
        ),
        2
    );
    assert_eq!(
        count(
            catalogue::HTTP_SERVER_ACCEPTED,
            &[server, ("key", "previous")]
        ),
        0
    );
    assert_eq!(
        count(
            catalogue::HTTP_SERVER_REJECTED,
            &[server, ("reason", "unknown")]
        ),
        1
    );
    assert_eq!(
        count(
            catalogue::HTTP_SERVER_REJECTED,
            &[server, ("reason", "missing")]
        ),
        1
    );
    let client = ("client", "payments");
    assert_eq!(count(catalogue::HTTP_CLIENT_REJECTIONS, &[client]), 0);
    assert_eq!(
        count(
            catalogue::HTTP_CLIENT_UNRESOLVED,
            &[client, ("reason", "not_replayable")]
        ),
        0
    );
    let printed = format!("{recorded:?}");
    assert!(!printed.contains(PASSWORD), "{printed}");
}
