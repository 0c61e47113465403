//! Certificates that roll while clients handshake without pause, for 30 s of real time (the one
//! place these tests wait for the clock: certificates from the PKI engine last 6 s, and the cache
//! issues the next one at 60-70 % of what is left, so a new one every 4 s or so, eight or nine
//! in a run).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use credswap::SecretCache;
use credswap::provider::{PkiRequest, VaultPkiProvider};
use credswap::tls::RotatingCertificate;
use credswap::tls::rustls;
use rustls::client::Resumption;
use rustls::server::WebPkiClientVerifier;
use tokio::time::Instant;

use crate::tls_common::{
    Leaf, Pki, ROLE, Reply, client_leaf, handshake, pki, plain_client, provider, roots, serve,
};

const RUN: Duration = Duration::from_secs(30);
const CERTIFICATE_TTL: Duration = Duration::from_secs(6);
/// Distinct certificates a run must see: at most 6 s x 0.7 = 4.2 s each (the refresh point the
/// cache picks), so at least 30 / 4.2 = 7 swaps plus the first; five leaves room for the issues'
/// latency on a loaded machine.
const MIN_SERIALS: usize = 5;

fn issuing(pki: &Pki, requests: &[(&str, &str)]) -> SecretCache {
    let mut provider = VaultPkiProvider::new(pki.session.clone(), "pki");
    for (id, common_name) in requests {
        provider = provider.certificate(
            *id,
            PkiRequest::new(ROLE)
                .common_name(*common_name)
                .ip_sans([Ipv4Addr::LOCALHOST])
                .ttl(CERTIFICATE_TTL),
        );
    }
    SecretCache::builder(Arc::new(provider)).build().unwrap()
}

/// What one client loop saw over a run.
#[derive(Default, Debug)]
struct Tally {
    handshakes: u64,
    failures: Vec<String>,
    /// Certificates seen outside their validity at handshake time.
    invalid: Vec<Leaf>,
    serials: BTreeSet<String>,
}

impl Tally {
    fn see(&mut self, leaf: &Leaf) {
        if !leaf.valid {
            self.invalid.push(leaf.clone());
        }
        let _ = self.serials.insert(leaf.serial.clone());
    }

    fn fail(&mut self, failure: String) {
        if self.failures.len() < 20 {
            self.failures.push(failure);
        } else {
            self.failures[19] = format!("... and more; last: {failure}");
        }
    }

    fn assert_rolled(&self, what: &str) {
        assert!(
            self.failures.is_empty(),
            "{what}: {} failed handshakes of {}: {:?}",
            self.failures.len(),
            self.handshakes,
            self.failures
        );
        assert!(
            self.invalid.is_empty(),
            "{what}: certificates outside their validity: {:?}",
            self.invalid
        );
        assert!(
            self.serials.len() >= MIN_SERIALS,
            "{what}: only {} certificates in {RUN:?} ({} handshakes): {:?}",
            self.serials.len(),
            self.handshakes,
            self.serials
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificates_roll_while_clients_handshake_for_30_seconds() {
    let pki = pki(Duration::from_secs(10)).await;
    let cache = issuing(&pki, &[("web", "localhost")]);
    let certificate = RotatingCertificate::open(&cache, "web").await.unwrap();
    let first = certificate.serial();
    let server = serve(Arc::new(certificate.server_config().unwrap()), Reply::Line).await;
    let client = plain_client(roots(&[&pki.ca_pem]));

    let deadline = Instant::now() + RUN;
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let client = Arc::clone(&client);
            let addr = server.addr;
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    tally.handshakes += 1;
                    match handshake(addr, &client).await {
                        Ok(seen) => tally.see(&seen.server),
                        Err(failure) => tally.fail(failure),
                    }
                }
                tally
            })
        })
        .collect();
    let mut all = Tally::default();
    for tally in loops {
        let tally = tally.await.unwrap();
        tally.assert_rolled("a server-certificate client");
        all.handshakes += tally.handshakes;
        all.serials.extend(tally.serials);
    }
    assert!(all.serials.contains(&first));
    assert!(
        certificate.status().is_fresh(),
        "{:?}",
        certificate.status()
    );
    let stats = cache.stats();
    assert!(
        stats.lease_replacements >= MIN_SERIALS as u64 - 1,
        "{stats:?}"
    );
    println!(
        "{} handshakes, {} certificates: {:?}",
        all.handshakes,
        all.serials.len(),
        all.serials
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_roll_under_mutual_tls_for_30_seconds() {
    let pki = pki(Duration::from_secs(10)).await;
    let cache = issuing(
        &pki,
        &[("server", "localhost"), ("client", "app.localhost")],
    );
    let server_certificate = RotatingCertificate::open(&cache, "server").await.unwrap();
    let client_certificate = RotatingCertificate::open(&cache, "client").await.unwrap();

    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&[&pki.ca_pem])), provider())
            .build()
            .unwrap();
    let server_config = Arc::new(
        server_certificate
            .server_config_with_client_verifier(verifier)
            .unwrap(),
    );
    let raw = serve(Arc::clone(&server_config), Reply::Line).await;
    let http = serve(server_config, Reply::Http).await;

    let mut client_config = client_certificate
        .client_config(roots(&[&pki.ca_pem]))
        .unwrap();
    client_config.resumption = Resumption::disabled();
    let client_config = Arc::new(client_config);

    // The server does require a certificate: a client without one is refused.
    let anonymous = handshake(raw.addr, &plain_client(roots(&[&pki.ca_pem]))).await;
    assert!(anonymous.is_err(), "{anonymous:?}");

    let reqwest_client = reqwest::Client::builder()
        .tls_backend_preconfigured(rustls::ClientConfig::clone(&client_config))
        .resolve("localhost", http.addr)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/", http.addr.port());

    let deadline = Instant::now() + RUN;
    let raw_addr = raw.addr;
    let rustls_loop = tokio::spawn(async move {
        let mut tally = Tally::default();
        while Instant::now() < deadline {
            tally.handshakes += 1;
            match handshake(raw_addr, &client_config).await {
                Ok(seen) => match seen.client {
                    Some(client) => tally.see(&client),
                    None => tally.fail("the server saw no client certificate".to_owned()),
                },
                Err(failure) => tally.fail(failure),
            }
        }
        tally
    });
    let reqwest_loop = tokio::spawn(async move {
        let mut tally = Tally::default();
        while Instant::now() < deadline {
            tally.handshakes += 1;
            let response = match reqwest_client.get(&url).send().await {
                Ok(response) => response,
                Err(error) => {
                    tally.fail(format!("request: {error:?}"));
                    continue;
                }
            };
            match response.text().await.as_deref().map(client_leaf) {
                Ok(Some(client)) => tally.see(&client),
                Ok(None) => tally.fail("the server saw no client certificate".to_owned()),
                Err(error) => tally.fail(format!("body: {error:?}")),
            }
        }
        tally
    });
    let rustls_tally = rustls_loop.await.unwrap();
    let reqwest_tally = reqwest_loop.await.unwrap();
    rustls_tally.assert_rolled("a tokio-rustls client presenting its certificate");
    reqwest_tally.assert_rolled("a reqwest client presenting its certificate");
    assert!(client_certificate.status().is_fresh());
    assert!(server_certificate.status().is_fresh());
    println!(
        "tokio-rustls: {} handshakes, {} client certificates; reqwest: {} requests, {} client certificates",
        rustls_tally.handshakes,
        rustls_tally.serials.len(),
        reqwest_tally.handshakes,
        reqwest_tally.serials.len()
    );
}
