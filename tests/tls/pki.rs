//! `VaultPkiProvider` against OpenBao's PKI engine: what a fetch returns (the engine's answer,
//! versioned by serial, leased until the certificate expires), revocation at shutdown, and the
//! ids and requests it refuses.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use credswap::provider::{PkiRequest, VaultPkiProvider};
use credswap::tls::{Certificate, RotatingCertificate};
use credswap::{ErrorKind, SecretCache, SecretProvider, Selector, Stage};

use crate::tls_common::{ROLE, Reply, handshake, pki, plain_client, roots, serve};

const TTL: Duration = Duration::from_secs(60);

fn web(pki: &crate::tls_common::Pki) -> VaultPkiProvider {
    VaultPkiProvider::new(pki.session.clone(), "pki").certificate(
        "web",
        PkiRequest::new(ROLE)
            .common_name("localhost")
            .ip_sans([Ipv4Addr::LOCALHOST])
            .ttl(TTL),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issued_certificate_is_versioned_by_serial_and_leased_until_it_expires() {
    let pki = pki(Duration::from_secs(3600)).await;
    let provider = web(&pki);
    let before = SystemTime::now();
    let issued = provider.fetch("web", &Selector::Current).await.unwrap();
    let json: serde_json::Value = serde_json::from_str(issued.value.expose_str().unwrap()).unwrap();
    let serial = json["serial_number"].as_str().unwrap();
    let expiration = UNIX_EPOCH + Duration::from_secs(json["expiration"].as_u64().unwrap());

    let version = &issued.version;
    assert_eq!(version.id.as_str(), serial);
    assert!(version.has_stage(&Stage::Current));
    assert!(version.created_at.unwrap() >= before);
    let lease = version.lease.as_ref().expect("a lease");
    assert!(!lease.renewable);
    assert_eq!(lease.id, serial);
    assert_eq!(lease.expires_at, expiration);
    // Vault starts the TTL when it issues, before we compute what is left.
    assert!(lease.duration <= TTL, "{lease:?}");
    assert!(lease.duration > Duration::ZERO, "{lease:?}");

    let decoded = Certificate::decode("web", &issued.value).unwrap();
    assert_eq!(decoded.serial(), serial);
    assert_eq!(decoded.not_after(), expiration);
    assert_eq!(decoded.subject(), "CN=localhost");
    // Vault backdates by 30 s.
    assert!(decoded.not_before() < before);
    // The root CA that `ca_chain` holds is not sent.
    assert_eq!(decoded.chain().len(), 1);

    // Each fetch is a new certificate.
    let again = provider.fetch("web", &Selector::Current).await.unwrap();
    assert_ne!(again.version.id, issued.version.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_revoking_leases_revokes_the_certificates_the_cache_holds() {
    let pki = pki(Duration::from_secs(3600)).await;
    let cache = SecretCache::builder(Arc::new(web(&pki))).build().unwrap();
    let certificate = RotatingCertificate::open(&cache, "web").await.unwrap();
    let serial = certificate.serial();
    let server = serve(Arc::new(certificate.server_config().unwrap()), Reply::Line).await;
    let seen = handshake(server.addr, &plain_client(roots(&[&pki.ca_pem])))
        .await
        .unwrap();
    assert_eq!(seen.server.serial, serial);

    let revocation_time = |serial: &str| -> u64 {
        let read = pki
            .bao
            .cli(&["read", "-format=json", &format!("pki/cert/{serial}")])
            .unwrap();
        let read: serde_json::Value = serde_json::from_str(&read).unwrap();
        read["data"]["revocation_time"].as_u64().unwrap_or(0)
    };
    assert_eq!(revocation_time(&serial), 0);
    assert_eq!(cache.shutdown_revoking_leases().await.unwrap(), 1);
    assert!(revocation_time(&serial) > 0, "not revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_selectors_and_requests_the_engine_cannot_issue_are_refused() {
    let pki = pki(Duration::from_secs(3600)).await;
    let provider = web(&pki)
        .certificate(
            "other-domain",
            PkiRequest::new(ROLE).common_name("example.com"),
        )
        .certificate(
            "no-role",
            PkiRequest::new("absent").common_name("localhost"),
        )
        .certificate(
            "bad-role",
            PkiRequest::new("../sys").common_name("localhost"),
        )
        .certificate(
            "too-long",
            PkiRequest::new(ROLE)
                .common_name("localhost")
                .ttl(Duration::from_secs(48 * 3600)),
        );

    let undeclared = provider.fetch("api", &Selector::Current).await.unwrap_err();
    assert_eq!(undeclared.kind(), ErrorKind::InvalidRequest, "{undeclared}");
    assert!(
        undeclared
            .to_string()
            .contains("VaultPkiProvider::certificate")
    );

    let previous = provider
        .fetch("web", &Selector::Stage(Stage::Previous))
        .await
        .unwrap_err();
    assert_eq!(previous.kind(), ErrorKind::NotFound, "{previous}");

    let refused = provider
        .fetch("other-domain", &Selector::Current)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::InvalidRequest, "{refused}");
    assert!(refused.to_string().contains("example.com"), "{refused}");
    assert_eq!(refused.id(), Some("pki/issue/loopback"));

    let no_role = provider
        .fetch("no-role", &Selector::Current)
        .await
        .unwrap_err();
    assert_eq!(no_role.kind(), ErrorKind::InvalidRequest, "{no_role}");
    assert!(no_role.to_string().contains("absent"), "{no_role}");

    let bad_role = provider
        .fetch("bad-role", &Selector::Current)
        .await
        .unwrap_err();
    assert_eq!(bad_role.kind(), ErrorKind::InvalidRequest, "{bad_role}");
    assert!(bad_role.to_string().contains("`.` or `..`"), "{bad_role}");

    // Beyond the role's max TTL the engine shortens the certificate to it (as Vault does): the
    // lease says what was granted.
    let capped = provider
        .fetch("too-long", &Selector::Current)
        .await
        .unwrap();
    let lease = capped.version.lease.unwrap();
    assert!(lease.duration <= Duration::from_secs(3600), "{lease:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rsa_certificate_from_the_engine_is_served_like_an_ecdsa_one() {
    let pki = pki(Duration::from_secs(3600)).await;
    let _ = pki
        .bao
        .cli(&[
            "write",
            "pki/roles/loopback-rsa",
            "allowed_domains=localhost",
            "allow_bare_domains=true",
            "allow_ip_sans=true",
            "key_type=rsa",
            "key_bits=2048",
            "max_ttl=1h",
        ])
        .unwrap();
    let provider = VaultPkiProvider::new(pki.session.clone(), "pki").certificate(
        "web-rsa",
        PkiRequest::new("loopback-rsa")
            .common_name("localhost")
            .ttl(TTL),
    );
    let issued = provider.fetch("web-rsa", &Selector::Current).await.unwrap();
    let json: serde_json::Value = serde_json::from_str(issued.value.expose_str().unwrap()).unwrap();
    assert_eq!(json["private_key_type"], "rsa");

    let cache = SecretCache::builder(Arc::new(provider)).build().unwrap();
    let certificate = RotatingCertificate::open(&cache, "web-rsa").await.unwrap();
    let server = serve(Arc::new(certificate.server_config().unwrap()), Reply::Line).await;
    let seen = handshake(server.addr, &plain_client(roots(&[&pki.ca_pem])))
        .await
        .unwrap();
    assert_eq!(seen.server.serial, certificate.serial());
}
