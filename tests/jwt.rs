//! Signing keys that rotate in a real moto (AWS Secrets Manager): tokens signed before a rotation
//! verify during the grace period and are refused after; the JWKS lists exactly current and
//! previous.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use credswap::jwt::jsonwebtoken::{self, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use credswap::jwt::{SigningKeys, VerifyError};
use credswap::provider::AwsSecretsManagerProvider;
use credswap::testkit::MotoServer;
use credswap::{ErrorKind, HandleStatus, SecretCache};
use serde::{Deserialize, Serialize};

async fn moto() -> (MotoServer, Client) {
    MotoServer::start_with_client().await.expect("start moto")
}

async fn put(client: &Client, name: &str, value: &str, create: bool) -> String {
    if create {
        let out = client
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .unwrap();
        return out.version_id().unwrap().to_owned();
    }
    let out = client
        .put_secret_value()
        .secret_id(name)
        .secret_string(value)
        .send()
        .await
        .unwrap();
    out.version_id().unwrap().to_owned()
}

struct Key {
    json: String,
    pem: String,
}

fn key(alg: &str, algorithm: &'static rcgen::SignatureAlgorithm, kid: Option<&str>) -> Key {
    let pem = rcgen::KeyPair::generate_for(algorithm)
        .unwrap()
        .serialize_pem();
    let mut json = serde_json::json!({"alg": alg, "private_key": pem});
    if let Some(kid) = kid {
        json["kid"] = kid.into();
    }
    Key {
        json: json.to_string(),
        pem,
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Claims {
    sub: String,
    exp: u64,
}

fn claims(sub: &str) -> Claims {
    Claims {
        sub: sub.into(),
        exp: jsonwebtoken::get_current_timestamp() + 600,
    }
}

fn kids(keys: &SigningKeys) -> BTreeSet<String> {
    keys.jwks()
        .keys
        .iter()
        .map(|jwk| jwk.common.key_id.clone().unwrap())
        .collect()
}

/// Waits until `keys` hold `version` (polling: a swap can land before a `changed()` would start
/// listening).
async fn until_version(keys: &SigningKeys, version: &str) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while keys.version().as_str() != version {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the keys follow the store within a refresh");
}

const GRACE: Duration = Duration::from_secs(4);

fn cache(client: &Client) -> SecretCache {
    SecretCache::builder(Arc::new(AwsSecretsManagerProvider::new(client.clone())))
        .ttl(Duration::from_millis(200))
        .grace_period(GRACE)
        .build()
        .unwrap()
}

#[tokio::test]
async fn tokens_signed_before_a_rotation_verify_within_grace_and_are_refused_after() {
    let (_moto, store) = moto().await;
    let first = key("ES256", &rcgen::PKCS_ECDSA_P256_SHA256, Some("k-2026-11"));
    let _ = put(&store, "auth/signing-key", &first.json, true).await;
    let cache = cache(&store);
    let keys = SigningKeys::open(&cache, "auth/signing-key").await.unwrap();
    assert_eq!(keys.current_kid(), "k-2026-11");
    assert_eq!(kids(&keys), BTreeSet::from(["k-2026-11".to_owned()]));
    let before = keys.sign(&claims("before")).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&before).unwrap().alg,
        Algorithm::ES256
    );
    let validation = Validation::default();
    assert_eq!(
        keys.verify::<Claims>(&before, &validation)
            .unwrap()
            .claims
            .sub,
        "before"
    );

    // A rotation to another algorithm, kid from the RFC 7638 thumbprint.
    let second = key("EdDSA", &rcgen::PKCS_ED25519, None);
    let version = put(&store, "auth/signing-key", &second.json, false).await;
    until_version(&keys, &version).await;
    let new_kid = keys.current_kid();
    assert_ne!(new_kid, "k-2026-11");
    assert_eq!(new_kid.len(), 43, "a base64url SHA-256 thumbprint");
    let after = keys.sign(&claims("after")).unwrap();
    let header = jsonwebtoken::decode_header(&after).unwrap();
    assert_eq!(
        (header.alg, header.kid.as_deref()),
        (Algorithm::EdDSA, Some(new_kid.as_str()))
    );

    // During the grace period: both verify; the JWKS lists exactly current and previous.
    assert_eq!(
        keys.verify::<Claims>(&before, &validation)
            .unwrap()
            .claims
            .sub,
        "before"
    );
    assert_eq!(
        keys.verify::<Claims>(&after, &validation)
            .unwrap()
            .claims
            .sub,
        "after"
    );
    assert_eq!(
        kids(&keys),
        BTreeSet::from(["k-2026-11".to_owned(), new_kid.clone()])
    );
    // A verifier elsewhere, from the published JWKS alone.
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&serde_json::to_string(&keys.jwks()).unwrap()).unwrap();
    for token in [&before, &after] {
        let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
        let jwk = jwks.find(&kid).unwrap();
        let alg = jwk
            .common
            .key_algorithm
            .unwrap()
            .to_string()
            .parse::<Algorithm>()
            .unwrap();
        let decoded = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_jwk(jwk).unwrap(),
            &Validation::new(alg),
        );
        assert!(decoded.is_ok(), "{decoded:?}");
    }
    // The JWKS holds no private part.
    let published = serde_json::to_string(&keys.jwks()).unwrap();
    assert!(!published.contains("\"d\""), "{published}");

    // After it (it began when the handle swapped, before `changed` returned): refused, as
    // retired rather than unknown; the JWKS lists the current key only.
    tokio::time::sleep(GRACE + Duration::from_millis(50)).await;
    match keys.verify::<Claims>(&before, &validation) {
        Err(VerifyError::RetiredKey { kid }) => assert_eq!(kid, "k-2026-11"),
        other => panic!("expected a retired key, got {other:?}"),
    }
    assert_eq!(
        keys.verify::<Claims>(&after, &validation)
            .unwrap()
            .claims
            .sub,
        "after"
    );
    assert_eq!(kids(&keys), BTreeSet::from([new_kid]));
}

#[tokio::test]
async fn bad_tokens_get_typed_errors() {
    let (_moto, store) = moto().await;
    let first = key("ES256", &rcgen::PKCS_ECDSA_P256_SHA256, Some("k-1"));
    let _ = put(&store, "auth/signing-key", &first.json, true).await;
    let cache = cache(&store);
    let keys = SigningKeys::open(&cache, "auth/signing-key").await.unwrap();
    let validation = Validation::default();

    // Signed by a key the service never had.
    let stranger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let foreign = |kid: Option<&str>| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        let key = EncodingKey::from_ec_pem(stranger.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims("x"), &key).unwrap()
    };
    assert!(matches!(
        keys.verify::<Claims>(&foreign(Some("k-9")), &validation),
        Err(VerifyError::UnknownKey { kid }) if kid == "k-9"
    ));
    assert!(matches!(
        keys.verify::<Claims>(&foreign(None), &validation),
        Err(VerifyError::MissingKid)
    ));
    // Our kid, someone else's signature.
    assert!(matches!(
        keys.verify::<Claims>(&foreign(Some("k-1")), &validation),
        Err(VerifyError::Invalid(_))
    ));
    // Expired.
    let expired = keys
        .sign(&Claims {
            sub: "old".into(),
            exp: 1_000_000,
        })
        .unwrap();
    match keys.verify::<Claims>(&expired, &validation) {
        Err(VerifyError::Invalid(error)) => {
            assert_eq!(
                error.kind(),
                &jsonwebtoken::errors::ErrorKind::ExpiredSignature
            );
        }
        other => panic!("expected an expired token, got {other:?}"),
    }
    // An `alg` the key does not have is refused, whatever the token claims.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k-1".into());
    let forged =
        jsonwebtoken::encode(&hs, &claims("x"), &EncodingKey::from_secret(b"guess")).unwrap();
    assert!(matches!(
        keys.verify::<Claims>(&forged, &validation),
        Err(VerifyError::Invalid(_))
    ));
    assert!(matches!(
        keys.verify::<Claims>("not.a.token", &validation),
        Err(VerifyError::Invalid(_))
    ));
}

#[tokio::test]
async fn an_unusable_key_is_a_typed_error_and_the_last_good_key_keeps_signing() {
    let (_moto, store) = moto().await;
    let good = key("ES256", &rcgen::PKCS_ECDSA_P256_SHA256, Some("k-good"));
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
        .unwrap()
        .serialize_pem();
    let body_of = |pem: &str| pem.lines().nth(1).unwrap().to_owned();
    let bad = [
        ("not json", "{".to_owned()),
        ("no key", r#"{"alg": "ES256"}"#.to_owned()),
        (
            "hmac",
            serde_json::json!({"alg": "HS256", "private_key": "c2VjcmV0"}).to_string(),
        ),
        (
            "unknown alg",
            serde_json::json!({"alg": "XX1", "private_key": good.pem}).to_string(),
        ),
        (
            "not pem",
            serde_json::json!({"alg": "ES256", "private_key": "MIIBsecret-bytes"}).to_string(),
        ),
        (
            "wrong curve",
            serde_json::json!({"alg": "ES256", "private_key": p384}).to_string(),
        ),
        (
            "ec as ed",
            serde_json::json!({"alg": "EdDSA", "private_key": good.pem}).to_string(),
        ),
        (
            "empty kid",
            serde_json::json!({"alg": "ES256", "private_key": good.pem, "kid": ""}).to_string(),
        ),
    ];
    let cache = cache(&store);
    for (i, (what, json)) in bad.iter().enumerate() {
        let id = format!("auth/bad-{i}");
        let _ = put(&store, &id, json, true).await;
        let error = SigningKeys::open(&cache, &id).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Decode, "{what}: {error}");
        let printed = format!("{error} {error:?}");
        for secret in [
            body_of(&good.pem),
            body_of(&p384),
            "c2VjcmV0".into(),
            "secret-bytes".into(),
        ] {
            assert!(!printed.contains(&secret), "{what}: {printed}");
        }
    }

    let _ = put(&store, "auth/signing-key", &good.json, true).await;
    let keys = SigningKeys::open(&cache, "auth/signing-key").await.unwrap();
    let _ = put(&store, "auth/signing-key", &bad[4].1, false).await;
    tokio::time::timeout(Duration::from_secs(20), async {
        while !matches!(keys.status(), HandleStatus::DecodeFailed { .. }) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the bad version is seen within a refresh");
    let token = keys.sign(&claims("still")).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
        Some("k-good")
    );
    assert!(
        keys.verify::<Claims>(&token, &Validation::default())
            .is_ok()
    );
    assert_eq!(kids(&keys), BTreeSet::from(["k-good".to_owned()]));
    assert!(!format!("{keys:?} {:?}", keys.status()).contains(&body_of(&good.pem)));
}

#[tokio::test]
async fn a_new_key_under_the_old_kid_still_verifies_the_old_tokens_within_grace() {
    let (_moto, store) = moto().await;
    let first = key("ES256", &rcgen::PKCS_ECDSA_P256_SHA256, Some("k-same"));
    let _ = put(&store, "auth/signing-key", &first.json, true).await;
    let cache = cache(&store);
    let keys = SigningKeys::open(&cache, "auth/signing-key").await.unwrap();
    let before = keys.sign(&claims("before")).unwrap();
    let second = key("ES256", &rcgen::PKCS_ECDSA_P256_SHA256, Some("k-same"));
    let version = put(&store, "auth/signing-key", &second.json, false).await;
    until_version(&keys, &version).await;
    let after = keys.sign(&claims("after")).unwrap();
    let validation = Validation::default();
    assert_eq!(
        keys.verify::<Claims>(&after, &validation)
            .unwrap()
            .claims
            .sub,
        "after"
    );
    assert_eq!(
        keys.verify::<Claims>(&before, &validation)
            .unwrap()
            .claims
            .sub,
        "before"
    );
    // Both published, under the one kid.
    assert_eq!(keys.jwks().keys.len(), 2);
    assert!(
        keys.jwks()
            .keys
            .iter()
            .all(|jwk| jwk.common.key_id.as_deref() == Some("k-same"))
    );
}
