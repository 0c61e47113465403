//! No key or certificate material reaches an error, a log line, an event or `Debug` output of the
//! TLS feature: certificates issued by OpenBao's PKI engine, served over a real handshake, then
//! replaced by versions that are refused in every way a decoder can refuse one (the content of
//! each carries the keys), with a TRACE-level subscriber capturing everything. The captured text
//! is scanned for every base64 line of the keys and certificates used.

mod common;
mod tls_common;

use std::sync::Arc;
use std::time::Duration;

use common::capture::{Capture, assert_none_of, printed};
use credswap::provider::{PkiRequest, VaultPkiProvider};
use credswap::tls::{Certificate, RotatingCertificate};
use credswap::{Error, MemoryProvider, SecretCache, SecretProvider, SecretValue, Selector};
use tls_common::{ROLE, Reply, handshake, pki, plain_client, roots, serve};

struct Issued {
    value: SecretValue,
    certificate: String,
    private_key: String,
}

async fn issue(provider: &VaultPkiProvider) -> Issued {
    let issued = provider.fetch("web", &Selector::Current).await.unwrap();
    let json: serde_json::Value = serde_json::from_str(issued.value.expose_str().unwrap()).unwrap();
    Issued {
        certificate: json["certificate"].as_str().unwrap().to_owned(),
        private_key: json["private_key"].as_str().unwrap().to_owned(),
        value: issued.value.clone(),
    }
}

/// The base64 lines of PEM text (the BEGIN and END lines are not material).
fn material(pem: &str) -> Vec<String> {
    pem.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("-----") && line.len() >= 16)
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_or_certificate_material_in_errors_logs_events_or_debug_output() {
    let capture = Capture::install();
    let mut printed_text: Vec<String> = Vec::new();
    let record = |printed_text: &mut Vec<String>, error: &Error| {
        printed_text.push(printed(error));
    };

    let pki = pki(Duration::from_secs(3600)).await;
    let provider = VaultPkiProvider::new(pki.session.clone(), "pki")
        .certificate(
            "web",
            PkiRequest::new(ROLE)
                .common_name("localhost")
                .ttl(Duration::from_secs(600)),
        )
        .certificate(
            "elsewhere",
            PkiRequest::new(ROLE).common_name("example.com"),
        );
    let a = issue(&provider).await;
    let b = issue(&provider).await;
    let mut secrets: Vec<String> = Vec::new();
    for issued in [&a, &b] {
        secrets.extend(material(&issued.private_key));
        secrets.extend(material(&issued.certificate));
    }
    assert!(secrets.len() > 8, "the scan has material to look for");

    // Issued through a cache, served over a real handshake, revoked at shutdown.
    let pki_cache = SecretCache::builder(Arc::new(provider.clone()))
        .build()
        .unwrap();
    let mut pki_events = pki_cache.subscribe();
    let served = RotatingCertificate::open(&pki_cache, "web").await.unwrap();
    let server = serve(Arc::new(served.server_config().unwrap()), Reply::Line).await;
    let seen = handshake(server.addr, &plain_client(roots(&[&pki.ca_pem])))
        .await
        .unwrap();
    assert_eq!(seen.server.serial, served.serial());
    printed_text.push(format!(
        "{served:?} {served:#?} {:?} {:?} {:?}",
        served.load(),
        served.load().current(),
        served.handle()
    ));
    record(
        &mut printed_text,
        &provider
            .fetch("elsewhere", &Selector::Current)
            .await
            .unwrap_err(),
    );
    record(
        &mut printed_text,
        &provider
            .fetch("nowhere", &Selector::Current)
            .await
            .unwrap_err(),
    );
    if let Err(error) = provider.revoke("00:11:22").await {
        record(&mut printed_text, &error);
    }
    printed_text.push(format!("{provider:?} {pki_cache:?}"));

    // Versions refused in every way, each carrying key material.
    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("web", a.value.clone());
    let cache = SecretCache::builder(store.clone())
        .min_refresh_interval(Duration::ZERO)
        .build()
        .unwrap();
    let mut events = cache.subscribe();
    let certificate = RotatingCertificate::open(&cache, "web").await.unwrap();
    let json = |certificate: &str, private_key: &str| {
        serde_json::json!({"certificate": certificate, "private_key": private_key}).to_string()
    };
    let bad_versions = [
        json(&a.certificate, &b.private_key),
        format!("{}{}", a.certificate, b.private_key),
        format!("{}{}", b.private_key, a.private_key),
        b.private_key.replace("-----END PRIVATE KEY-----", ""),
        b.private_key
            .replace("PRIVATE KEY-----\n", "PRIVATE KEY-----\n!"),
        json(&b.private_key, &b.private_key),
        json(&a.certificate, &a.certificate),
        format!(
            r#"{{"certificate": "{}", "private_key": {}}}"#,
            a.certificate.replace('\n', "\\n"),
            b.private_key
        ),
        format!(
            r#"{{"certificate": 1, "private_key": "{}"}}"#,
            b.private_key.replace('\n', "\\n")
        ),
        serde_json::json!({
            "certificate": a.certificate,
            "private_key": a.private_key,
            "ca_chain": {"nested": b.private_key},
        })
        .to_string(),
        serde_json::json!({
            "certificate": a.certificate,
            "private_key": a.private_key,
            "ca_chain": [b.private_key.replace("PRIVATE KEY", "CERTIFICATE")],
        })
        .to_string(),
    ];
    for bad in &bad_versions {
        let _ = store.set("web", bad.as_str());
        record(&mut printed_text, &certificate.refresh().await.unwrap_err());
        record(
            &mut printed_text,
            &Certificate::decode("web", &SecretValue::from(bad.as_str())).unwrap_err(),
        );
        let last_error = certificate.handle().last_error().unwrap();
        printed_text.push(format!(
            "{:?} {last_error} {last_error:?}",
            certificate.status()
        ));
    }
    let error = RotatingCertificate::open(&cache, "web").await.unwrap_err();
    record(&mut printed_text, &error);
    printed_text.push(format!(
        "{certificate:?} {:?} {cache:?}",
        certificate.load()
    ));

    assert_eq!(pki_cache.shutdown_revoking_leases().await.unwrap(), 1);
    let mut event_count = 0;
    for receiver in [&mut events, &mut pki_events] {
        while let Ok(event) = receiver.try_recv() {
            printed_text.push(format!("{event:?}"));
            event_count += 1;
        }
    }
    assert!(event_count >= bad_versions.len(), "events: {event_count}");

    let logs = capture.text();
    // The capture saw the refusals, the loads, the Vault requests and the handshake.
    for expected in [
        "decode_failed",
        "credswap.load",
        "pki/issue/loopback",
        "rustls",
    ] {
        assert!(logs.contains(expected), "log lacks {expected}");
    }
    let everything = format!("{logs}\n{}", printed_text.join("\n"));
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_none_of(&secrets, &everything);
}
