//! What the consumers of a handle add to each request, next to doing the same by hand with a
//! fixed secret: checking an API key (SHA-256 and two constant-time compares), putting a bearer
//! token on a request, the certificate a TLS handshake takes, and signing and verifying a JWT.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use credswap::http::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use credswap::http::{ApiKeys, AuthScheme, Bearer};
use credswap::jwt::SigningKeys;
use credswap::jwt::jsonwebtoken::{self, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use credswap::tls::RotatingCertificate;
use credswap::{MemoryProvider, SecretCache, SecretValue};
use criterion::{Criterion, criterion_group, criterion_main};

const KEY: &str = "k-7f3a9c2e51b84d06a1e9f0c3b7d2e8a4";

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

struct Fixture {
    _runtime: tokio::runtime::Runtime,
    keys: ApiKeys,
    certificate: RotatingCertificate,
    signing: SigningKeys,
    signing_pem: String,
}

fn fixture() -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("api-key", KEY);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let _ = store.set(
        "web",
        serde_json::json!({"certificate": cert.pem(), "private_key": key.serialize_pem()})
            .to_string(),
    );
    let signing_pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem();
    let _ = store.set(
        "signing",
        serde_json::json!({"alg": "ES256", "private_key": signing_pem, "kid": "k1"}).to_string(),
    );
    let (keys, certificate, signing) = runtime.block_on(async {
        let cache = SecretCache::builder(store)
            .ttl(Duration::from_secs(3600))
            .build()
            .unwrap();
        (
            ApiKeys::plain(&cache, "api-key").await.unwrap(),
            RotatingCertificate::open(&cache, "web").await.unwrap(),
            SigningKeys::open(&cache, "signing").await.unwrap(),
        )
    });
    Fixture {
        _runtime: runtime,
        keys,
        certificate,
        signing,
        signing_pem,
    }
}

fn consumers(c: &mut Criterion) {
    let f = fixture();

    let mut group = c.benchmark_group("api_key_check");
    group.bench_function("credswap_api_keys", |b| {
        b.iter(|| black_box(f.keys.check(black_box(KEY.as_bytes())).is_ok()))
    });
    group.bench_function("fixed_key_plain_eq", |b| {
        let expected = KEY.to_owned();
        b.iter(|| black_box(black_box(KEY.as_bytes()) == expected.as_bytes()))
    });
    group.finish();

    let mut group = c.benchmark_group("bearer_header");
    let value = SecretValue::text(KEY);
    group.bench_function("credswap_bearer", |b| {
        let mut headers = HeaderMap::new();
        b.iter(|| {
            Bearer::new()
                .apply("api-key", &value, &mut headers)
                .unwrap()
        })
    });
    group.bench_function("fixed_key_by_hand", |b| {
        let mut headers = HeaderMap::new();
        b.iter(|| {
            let mut value = HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap();
            value.set_sensitive(true);
            let _ = headers.insert(AUTHORIZATION, value);
        })
    });
    group.finish();

    let mut group = c.benchmark_group("tls_certificate");
    group.bench_function("credswap_rotating_certificate", |b| {
        b.iter(|| black_box(f.certificate.certified_key()))
    });
    let fixed = f.certificate.certified_key();
    group.bench_function("fixed_arc_clone", |b| {
        b.iter(|| black_box(Arc::clone(&fixed)))
    });
    group.finish();

    let mut group = c.benchmark_group("jwt_es256");
    let claims = Claims {
        sub: "user-1".into(),
        exp: jsonwebtoken::get_current_timestamp() + 3600,
    };
    let encoding = EncodingKey::from_ec_pem(f.signing_pem.as_bytes()).unwrap();
    let token = f.signing.sign(&claims).unwrap();
    let jwks = f.signing.jwks();
    let decoding = DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
    let validation = Validation::new(Algorithm::ES256);
    group.bench_function("credswap_sign", |b| {
        b.iter(|| black_box(f.signing.sign(&claims).unwrap()))
    });
    group.bench_function("fixed_key_sign", |b| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        b.iter(|| black_box(jsonwebtoken::encode(&header, &claims, &encoding).unwrap()))
    });
    group.bench_function("credswap_verify", |b| {
        b.iter(|| black_box(f.signing.verify::<Claims>(&token, &validation).unwrap()))
    });
    group.bench_function("fixed_key_verify", |b| {
        b.iter(|| {
            black_box(jsonwebtoken::decode::<Claims>(&token, &decoding, &validation).unwrap())
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = consumers
}
criterion_main!(benches);
