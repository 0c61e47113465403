//! Versions that are not a usable certificate: each is a typed decode error when a handle opens
//! on it, and after a good version the good certificate keeps serving (real handshakes say which)
//! while the status says the newer version was refused.

use std::sync::Arc;
use std::time::Duration;

use credswap::provider::{PkiRequest, VaultKvProvider, VaultPkiProvider};
use credswap::tls::RotatingCertificate;
use credswap::{
    ErrorKind, HandleStatus, MemoryProvider, SecretCache, SecretEvent, SecretProvider, SecretValue,
    Selector,
};
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::tls_common::{ROLE, Reply, handshake, pki, plain_client, roots, serve};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "tls-test-ca");
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

struct Pem {
    cert: String,
    key: String,
}

/// A `localhost` certificate from `ca`, valid between the two dates.
fn leaf(ca: &Ca, from: (i32, u8, u8), until: (i32, u8, u8)) -> Pem {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap().pem();
    Pem {
        cert,
        key: key.serialize_pem(),
    }
}

fn valid(ca: &Ca) -> Pem {
    leaf(ca, (2000, 1, 1), (2090, 1, 1))
}

fn json(cert: &str, key: &str) -> SecretValue {
    SecretValue::text(serde_json::json!({"certificate": cert, "private_key": key}).to_string())
}

/// Each kind of bad version, with what its error must say.
fn bad_versions(ca: &Ca) -> Vec<(&'static str, SecretValue, &'static str)> {
    let a = valid(ca);
    let b = valid(ca);
    let expired = leaf(ca, (2020, 1, 1), (2021, 1, 1));
    let early = leaf(ca, (2090, 1, 1), (2091, 1, 1));
    vec![
        (
            "mismatched",
            json(&a.cert, &b.key),
            "the private key does not match the certificate's public key",
        ),
        (
            "expired",
            json(&expired.cert, &expired.key),
            "the certificate expired at 2021-01-01T00:00:00Z",
        ),
        (
            "not-yet-valid",
            SecretValue::text(format!("{}{}", early.cert, early.key)),
            "the certificate is not valid yet (valid from 2090-01-01T00:00:00Z)",
        ),
        (
            "bad-pem",
            SecretValue::text(format!(
                "{}{}",
                a.cert,
                a.key.replace("-----END PRIVATE KEY-----", "")
            )),
            "malformed PEM: a section has no END line",
        ),
        (
            "no-key",
            SecretValue::text(a.cert.clone()),
            "no private key",
        ),
        ("garbage", SecretValue::from("hello"), "no certificate"),
    ]
}

fn memory_cache(store: &Arc<MemoryProvider>) -> SecretCache {
    SecretCache::builder(store.clone())
        .min_refresh_interval(Duration::ZERO)
        .negative_ttl(Duration::ZERO)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_bad_certificate_is_a_typed_decode_error_at_open() {
    let ca = ca();
    let store = Arc::new(MemoryProvider::new());
    let cache = memory_cache(&store);
    for (id, value, reason) in bad_versions(&ca) {
        let _ = store.set(id, value);
        let error = RotatingCertificate::open(&cache, id).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Decode, "{id}: {error}");
        assert_eq!(error.id(), Some(id));
        assert!(
            error.message().unwrap_or_default().contains(reason),
            "{id}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_good_version_a_bad_one_leaves_the_good_certificate_serving() {
    let ca = ca();
    let good = valid(&ca);
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("web", json(&good.cert, &good.key));
    let cache = memory_cache(&store);
    let mut events = cache.subscribe();
    let certificate = RotatingCertificate::open(&cache, "web").await.unwrap();
    let serving = certificate.serial();
    let server = serve(Arc::new(certificate.server_config().unwrap()), Reply::Line).await;
    let client = plain_client(roots(&[&ca.pem]));
    assert_eq!(
        handshake(server.addr, &client).await.unwrap().server.serial,
        serving
    );

    for (what, value, reason) in bad_versions(&ca) {
        let version = store.set("web", value);
        let error = certificate.refresh().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Decode, "{what}: {error}");
        assert!(
            error.message().unwrap_or_default().contains(reason),
            "{what}: {error}"
        );
        match certificate.status() {
            HandleStatus::DecodeFailed {
                version: refused,
                error,
            } => {
                assert_eq!(refused, version, "{what}");
                assert!(error.to_string().contains(reason), "{what}: {error}");
            }
            other => panic!("{what}: status {other:?}"),
        }
        assert_eq!(certificate.serial(), serving, "{what}");
        let seen = handshake(server.addr, &client).await.unwrap();
        assert_eq!(seen.server.serial, serving, "{what}");
        assert!(seen.server.valid);
    }
    let mut refusals = 0;
    while let Ok(event) = events.try_recv() {
        if let SecretEvent::DecodeFailed { id, .. } = event {
            assert_eq!(&*id, "web");
            refusals += 1;
        }
    }
    assert_eq!(refusals, bad_versions(&ca).len());

    // A good version again: it swaps in, and handshakes get it.
    let next = valid(&ca);
    let _ = store.set(
        "web",
        SecretValue::text(format!("{}{}", next.cert, next.key)),
    );
    let swapped = certificate.refresh().await.unwrap();
    assert_ne!(swapped.current().serial(), serving);
    assert!(certificate.status().is_fresh());
    let seen = handshake(server.addr, &client).await.unwrap();
    assert_eq!(seen.server.serial, swapped.current().serial());
}

/// A certificate stored in Vault KV whose next version pairs it with the key of another
/// certificate the PKI engine issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_from_another_issue_in_vault_kv_is_refused_and_the_old_pair_serves() {
    let pki = pki(Duration::from_secs(3600)).await;
    let issuer = VaultPkiProvider::new(pki.session.clone(), "pki").certificate(
        "web",
        PkiRequest::new(ROLE)
            .common_name("localhost")
            .ttl(Duration::from_secs(3600)),
    );
    let issue = || async {
        let issued = issuer.fetch("web", &Selector::Current).await.unwrap();
        let json: serde_json::Value =
            serde_json::from_str(issued.value.expose_str().unwrap()).unwrap();
        (
            json["certificate"].as_str().unwrap().to_owned(),
            json["private_key"].as_str().unwrap().to_owned(),
        )
    };
    let (cert_a, key_a) = issue().await;
    let (_, key_b) = issue().await;
    let put = |cert: &str, key: &str| {
        pki.bao
            .cli(&[
                "kv",
                "put",
                "secret/web",
                &format!("certificate={cert}"),
                &format!("private_key={key}"),
            ])
            .unwrap();
    };

    put(&cert_a, &key_b);
    let kv = SecretCache::builder(Arc::new(VaultKvProvider::new(
        pki.session.clone(),
        "secret",
    )))
    .min_refresh_interval(Duration::ZERO)
    .build()
    .unwrap();
    let error = RotatingCertificate::open(&kv, "web").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Decode, "{error}");
    assert!(error.to_string().contains("does not match"), "{error}");

    put(&cert_a, &key_a);
    // The cache holds the refused version (only the handle refused it): ask the store again.
    let _ = kv.refresh("web").await.unwrap();
    let certificate = RotatingCertificate::open(&kv, "web").await.unwrap();
    let serving = certificate.serial();
    let server = serve(Arc::new(certificate.server_config().unwrap()), Reply::Line).await;
    let client = plain_client(roots(&[&pki.ca_pem]));
    assert_eq!(
        handshake(server.addr, &client).await.unwrap().server.serial,
        serving
    );

    put(&cert_a, &key_b);
    let error = certificate.refresh().await.unwrap_err();
    assert!(error.to_string().contains("does not match"), "{error}");
    assert!(
        matches!(certificate.status(), HandleStatus::DecodeFailed { ref version, .. } if version.as_str() == "3"),
        "{:?}",
        certificate.status()
    );
    assert_eq!(
        handshake(server.addr, &client).await.unwrap().server.serial,
        serving
    );
}
