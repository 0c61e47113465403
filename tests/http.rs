//! HTTP credentials that rotate, against a real moto (the store) and a real axum server on
//! loopback: the client middleware follows keys rotated from outside, the server layer accepts the
//! current and, within grace, the previous key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use credswap::http::header::HeaderName;
use credswap::http::{
    AcceptedKey, ApiKeyLayer, ApiKeys, AuthMiddleware, Bearer, NamedHeader, NotReplayed,
    RejectionStats,
};
use credswap::provider::AwsSecretsManagerProvider;
use credswap::testkit::MotoServer;
use credswap::{HandleStatus, SecretCache};
use sha2::{Digest, Sha256};

const GET: &str = "secretsmanager.GetSecretValue";

async fn moto() -> (MotoServer, Client) {
    MotoServer::start_with_client().await.expect("start moto")
}

async fn create(client: &Client, name: &str, value: &str) {
    let _ = client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap();
}

/// A new current version (moto moves AWSPREVIOUS to the old one), as a rotation from outside
/// the crate does.
async fn put(client: &Client, name: &str, value: &str) -> String {
    client
        .put_secret_value()
        .secret_id(name)
        .secret_string(value)
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_owned()
}

/// A third-party API that accepts exactly one key: the one it was last given.
#[derive(Clone, Default)]
struct Api {
    key: Arc<RwLock<String>>,
    refused: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
}

impl Api {
    fn check(&self, headers: &HeaderMap) -> StatusCode {
        let expected = format!("Bearer {}", self.key.read().unwrap());
        if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&expected) {
            let _ = self.served.fetch_add(1, Ordering::Relaxed);
            StatusCode::OK
        } else {
            let _ = self.refused.fetch_add(1, Ordering::Relaxed);
            StatusCode::UNAUTHORIZED
        }
    }
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn start_api(first_key: &str) -> (Api, String) {
    let api = Api::default();
    *api.key.write().unwrap() = first_key.to_owned();
    let app = axum::Router::new()
        .route(
            "/balance",
            get(|State(api): State<Api>, headers: HeaderMap| async move { api.check(&headers) }),
        )
        .route(
            "/charge",
            post(
                |State(api): State<Api>, headers: HeaderMap, body: String| async move {
                    let status = api.check(&headers);
                    (status, body)
                },
            ),
        )
        .with_state(api.clone());
    (api.clone(), serve(app).await)
}

/// The client's cache: a long TTL, so every refresh in these tests is one the middleware asked
/// for, and a short rate limit, so rotations a few hundred milliseconds apart are each seen.
fn client_cache(client: &Client) -> SecretCache {
    SecretCache::builder(Arc::new(AwsSecretsManagerProvider::new(client.clone())))
        .ttl(Duration::from_secs(3600))
        .min_refresh_interval(Duration::from_millis(200))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_follows_five_outside_rotations_with_no_error_and_one_fetch_each() {
    let (moto, store) = moto().await;
    create(&store, "payments/api-key", "key-0").await;
    let (api, base) = start_api("key-0").await;
    let cache = client_cache(&store);
    let handle = cache.handle_raw("payments/api-key").await.unwrap();
    let (fetches_at_open, gets_at_open) = (cache.stats().fetches, moto.request_count(GET));
    let auth = AuthMiddleware::new(handle.clone(), Bearer::new());
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(auth.clone())
        .build();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for caller in 0..8 {
        let (client, base, stop, ok) = (client.clone(), base.clone(), stop.clone(), ok.clone());
        callers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // GETs and POSTs with a (clonable) body, which a replay sends again.
                let sent = if caller % 2 == 0 {
                    client.get(format!("{base}/balance")).send().await
                } else {
                    client
                        .post(format!("{base}/charge"))
                        .body(format!("amount={caller}"))
                        .send()
                        .await
                };
                match sent {
                    Ok(response) if response.status() == StatusCode::OK => {
                        if caller % 2 == 1 {
                            assert_eq!(response.text().await.unwrap(), format!("amount={caller}"));
                        }
                        let _ = ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(response) => failures.push(format!("status {}", response.status())),
                    Err(error) => failures.push(error.to_string()),
                }
            }
            failures
        }));
    }
    let served_at_least = |n: u64| {
        let ok = ok.clone();
        async move {
            let target = ok.load(Ordering::Relaxed) + n;
            while ok.load(Ordering::Relaxed) < target {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    served_at_least(50).await;
    for round in 1..=5 {
        let key = format!("key-{round}");
        let version = put(&store, "payments/api-key", &key).await;
        // The API switches to the new key once the store has it: from now on the old key is
        // refused, and every caller in flight sees a 401.
        *api.key.write().unwrap() = key;
        tokio::time::timeout(Duration::from_secs(20), async {
            while handle.load().version().id.as_str() != version {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the middleware refreshes after the first 401");
        served_at_least(50).await;
        // Past the cache's refresh rate limit, so the next rotation's refresh is not held back.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for caller in callers {
        failures.extend(caller.await.unwrap());
    }
    assert!(failures.is_empty(), "callers saw errors: {failures:?}");

    let stats = auth.stats();
    // The API refused the old key to requests in flight, and each was replayed.
    assert!(api.refused.load(Ordering::Relaxed) >= 5, "{stats:?}");
    assert_eq!(stats.rejections, api.refused.load(Ordering::Relaxed));
    assert_eq!(stats.replays, stats.rejections, "{stats:?}");
    assert_eq!(stats.not_replayed, 0);
    assert_eq!(stats.nothing_newer, 0);
    // One refresh per rotation, however many requests were refused: the first 401 refreshes,
    // the rest find the newer version.
    assert_eq!(stats.refreshes, 5, "{stats:?}");
    // One GetSecretValue per rotation.
    assert_eq!(cache.stats().fetches - fetches_at_open, 5);
    assert_eq!(moto.request_count(GET) - gets_at_open, 5);
}

#[tokio::test]
async fn a_body_that_cannot_be_cloned_is_not_replayed_and_the_caller_gets_the_401() {
    let (_moto, store) = moto().await;
    create(&store, "payments/api-key", "key-0").await;
    let (api, base) = start_api("key-0").await;
    let cache = client_cache(&store);
    let handle = cache.handle_raw("payments/api-key").await.unwrap();
    let auth = AuthMiddleware::new(handle.clone(), Bearer::new());
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(auth.clone())
        .build();
    let _ = put(&store, "payments/api-key", "key-1").await;
    *api.key.write().unwrap() = "key-1".into();

    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>("amount=5".as_bytes())]);
    let error = client
        .post(format!("{base}/charge"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap_err();
    let not_replayed = NotReplayed::from_error(&error).expect("a NotReplayed error");
    assert_eq!(not_replayed.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(not_replayed.secret_id(), "payments/api-key");
    let response = not_replayed.take_response().expect("the server's response");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(not_replayed.take_response().is_none());
    let message = error.to_string();
    assert!(message.contains("cannot be cloned"), "{message}");
    assert!(!message.contains("key-"), "{message}");
    assert_eq!(auth.stats().not_replayed, 1);

    // The refresh happened: the next request carries the new key, without another store call.
    let fetches = cache.stats().fetches;
    let response = client.get(format!("{base}/balance")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(cache.stats().fetches, fetches);
    assert_eq!(handle.load().current().expose_str(), Some("key-1"));
}

#[tokio::test]
async fn a_rejection_the_store_cannot_fix_is_returned_as_it_is() {
    let (_moto, store) = moto().await;
    create(&store, "payments/api-key", "key-0").await;
    // The API wants a key the store does not have.
    let (api, base) = start_api("key-elsewhere").await;
    let cache = client_cache(&store);
    let handle = cache.handle_raw("payments/api-key").await.unwrap();
    let auth = AuthMiddleware::new(handle, Bearer::new());
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(auth.clone())
        .build();
    let calls_at_open = cache.stats().provider_calls;
    let started = tokio::time::Instant::now();
    // The first rejection asks the store, even right after the open.
    let response = client.get(format!("{base}/balance")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let stats = auth.stats();
    assert_eq!(
        (
            stats.rejections,
            stats.refreshes,
            stats.nothing_newer,
            stats.replays
        ),
        (1, 1, 1, 0)
    );
    // Sent once: nothing newer, nothing replayed.
    assert_eq!(api.refused.load(Ordering::Relaxed), 1);
    // A storm of such rejections is held to the cache's refresh interval (200 ms): one store
    // call per interval at most, however many rejections.
    for _ in 0..50 {
        let response = client.get(format!("{base}/balance")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let periods = started.elapsed().as_millis() / 200 + 1;
    assert!(auth.stats().refreshes as u128 <= periods);
    let calls = u128::from(cache.stats().provider_calls - calls_at_open);
    assert!(
        calls >= 1 && calls <= periods,
        "{calls} store calls in {periods} periods"
    );
    assert_eq!(auth.stats().rejections, 51);
}

fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Our own service, protected by the layer; the handler says which version the key matched.
async fn start_service(layer: ApiKeyLayer) -> String {
    let app = axum::Router::new()
        .route(
            "/orders",
            get(
                |axum::Extension(key): axum::Extension<AcceptedKey>| async move {
                    if key.previous { "previous" } else { "current" }
                },
            ),
        )
        .layer(layer);
    serve(app).await
}

async fn call(
    client: &reqwest::Client,
    base: &str,
    header: &str,
    key: Option<&str>,
) -> (u16, String) {
    let mut request = client.get(format!("{base}/orders"));
    if let Some(key) = key {
        request = request.header(header, key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

const GRACE: Duration = Duration::from_secs(5);

/// The server's cache: it follows the store within a 200 ms TTL.
fn server_cache(client: &Client, grace: Duration) -> SecretCache {
    SecretCache::builder(Arc::new(AwsSecretsManagerProvider::new(client.clone())))
        .ttl(Duration::from_millis(200))
        .grace_period(grace)
        .build()
        .unwrap()
}

/// Stores a new key and waits until the server's keys hold it (polling: a swap can land before
/// a `changed()` would start listening).
async fn rotate_and_wait(store: &Client, keys: &ApiKeys, id: &str, value: &str) {
    let version = put(store, id, value).await;
    tokio::time::timeout(Duration::from_secs(20), async {
        while keys.version().as_str() != version {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the server's keys follow the store within a refresh");
}

#[tokio::test]
async fn the_server_accepts_the_previous_key_within_grace_over_five_rotations() {
    let (_moto, store) = moto().await;
    create(&store, "orders/api-key", "key-0").await;
    let cache = server_cache(&store, GRACE);
    let keys = ApiKeys::plain(&cache, "orders/api-key").await.unwrap();
    let layer = ApiKeyLayer::header(keys.clone(), HeaderName::from_static("x-api-key"));
    let base = start_service(layer.clone()).await;
    let http = reqwest::Client::new();

    assert_eq!(
        call(&http, &base, "x-api-key", Some("key-0")).await,
        (200, "current".into())
    );
    for round in 1..=5 {
        rotate_and_wait(&store, &keys, "orders/api-key", &format!("key-{round}")).await;
        let (new, old) = (format!("key-{round}"), format!("key-{}", round - 1));
        assert_eq!(
            call(&http, &base, "x-api-key", Some(&new)).await,
            (200, "current".into())
        );
        assert_eq!(
            call(&http, &base, "x-api-key", Some(&old)).await,
            (200, "previous".into())
        );
        if round >= 2 {
            let older = format!("key-{}", round - 2);
            assert_eq!(call(&http, &base, "x-api-key", Some(&older)).await.0, 401);
        }
    }
    assert_eq!(call(&http, &base, "x-api-key", None).await.0, 401);
    assert_eq!(call(&http, &base, "x-api-key", Some("a b")).await.0, 401);

    // After the grace period (it started when the server swapped, before `changed` returned),
    // the previous key is refused, and counted apart from unknown keys.
    tokio::time::sleep(GRACE + Duration::from_millis(50)).await;
    assert_eq!(call(&http, &base, "x-api-key", Some("key-4")).await.0, 401);
    assert_eq!(
        call(&http, &base, "x-api-key", Some("key-5")).await,
        (200, "current".into())
    );
    let stats: RejectionStats = layer.stats();
    assert_eq!(
        (
            stats.missing,
            stats.malformed,
            stats.unknown,
            stats.previous_expired
        ),
        (1, 1, 4, 1),
        "{stats:?}"
    );
    assert_eq!(
        (stats.accepted_current, stats.accepted_previous),
        (7, 5),
        "{stats:?}"
    );
}

#[tokio::test]
async fn hashed_keys_are_accepted_the_same_way_and_a_bad_digest_keeps_the_last_keys() {
    let (_moto, store) = moto().await;
    create(&store, "orders/api-key-digest", &sha256_hex("key-0")).await;
    let cache = server_cache(&store, GRACE);
    let keys = ApiKeys::sha256(&cache, "orders/api-key-digest")
        .await
        .unwrap();
    let base = start_service(ApiKeyLayer::bearer(keys.clone())).await;
    let http = reqwest::Client::new();
    let bearer = |key: &str| format!("Bearer {key}");

    assert_eq!(
        call(&http, &base, "authorization", Some(&bearer("key-0")))
            .await
            .0,
        200
    );
    for round in 1..=5 {
        let digest = format!("sha256:{}", sha256_hex(&format!("key-{round}")));
        rotate_and_wait(&store, &keys, "orders/api-key-digest", &digest).await;
        let new = bearer(&format!("key-{round}"));
        let old = bearer(&format!("key-{}", round - 1));
        assert_eq!(
            call(&http, &base, "authorization", Some(&new)).await,
            (200, "current".into())
        );
        assert_eq!(
            call(&http, &base, "authorization", Some(&old)).await,
            (200, "previous".into())
        );
    }
    // The digest itself is not a key.
    let digest = bearer(&sha256_hex("key-5"));
    assert_eq!(
        call(&http, &base, "authorization", Some(&digest)).await.0,
        401
    );
    let refused = http.get(format!("{base}/orders")).send().await.unwrap();
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");

    // A version that is not a digest: the server keeps accepting the last good keys.
    let _ = put(&store, "orders/api-key-digest", "not-a-digest").await;
    tokio::time::timeout(Duration::from_secs(20), async {
        while !matches!(keys.status(), HandleStatus::DecodeFailed { .. }) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the bad version is seen within a refresh");
    assert_eq!(
        call(&http, &base, "authorization", Some(&bearer("key-5"))).await,
        (200, "current".into())
    );
    assert_eq!(
        call(&http, &base, "authorization", Some(&bearer("key-4"))).await,
        (200, "previous".into())
    );
    assert!(!format!("{:?} {keys:?}", keys.status()).contains("not-a-digest"));
    // Past the grace period of the last good rotation, only the current key is accepted.
    tokio::time::sleep(GRACE + Duration::from_millis(50)).await;
    assert_eq!(
        call(&http, &base, "authorization", Some(&bearer("key-4")))
            .await
            .0,
        401
    );
    assert_eq!(
        call(&http, &base, "authorization", Some(&bearer("key-5"))).await,
        (200, "current".into())
    );
}

#[tokio::test]
async fn a_named_header_scheme_reads_one_field_of_a_json_secret() {
    let (_moto, store) = moto().await;
    create(
        &store,
        "crm/creds",
        r#"{"account": "acme", "api_key": "field-key-0"}"#,
    )
    .await;
    let server_keys_cache = server_cache(&store, GRACE);
    // The server side holds the key as its own secret; the client reads it from a JSON field.
    create(&store, "crm/accepted", "field-key-0").await;
    let keys = ApiKeys::plain(&server_keys_cache, "crm/accepted")
        .await
        .unwrap();
    let base = start_service(ApiKeyLayer::header(
        keys,
        HeaderName::from_static("x-api-key"),
    ))
    .await;
    let cache = client_cache(&store);
    let handle = cache.handle_raw("crm/creds").await.unwrap();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::new(
            handle,
            NamedHeader::new(HeaderName::from_static("x-api-key")).field("api_key"),
        ))
        .build();
    let response = client.get(format!("{base}/orders")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "current");
}
