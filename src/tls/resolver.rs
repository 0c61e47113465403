//! [`RotatingCertificate`]: a handle on a certificate secret that rustls asks, at every handshake,
//! which certificate to present, as a server and as a client.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::Guard;
use rustls::client::ResolvesClientCert;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};

use super::certified::{Certificate, crypto_provider, rfc3339};
use crate::cache::SecretCache;
use crate::error::{Error, Result};
use crate::handle::{HandleStatus, SecretHandle, Snapshot};
use crate::time::Instant;

/// A certificate and key that follow a secret's rotations, for rustls to present: it implements
/// [`ResolvesServerCert`] and [`ResolvesClientCert`], and each handshake takes the current
/// certificate, lock-free (one atomic load and one reference count).
///
/// Open it on any secret that holds a certificate chain and its key (the shapes
/// [`Certificate`] decodes): a `provider::VaultPkiProvider` (feature `vault`) issuing
/// certificates, or a certificate stored in AWS Secrets Manager, Vault KV or a file. When the
/// cache sees a new version the certificate swaps atomically: handshakes under way finish with the
/// one they took, later ones get the new one, and connections already open are left alone.
///
/// A new version that does not decode (malformed, a key that does not match, expired, not valid
/// yet) is not served: the previous certificate keeps serving, [`status`](Self::status) says
/// [`HandleStatus::DecodeFailed`], and the cache emits
/// [`SecretEvent::DecodeFailed`](crate::SecretEvent::DecodeFailed) once for that version.
///
/// Clones are cheap and share one snapshot. `Debug` shows the id, serial and expiry, never the key.
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run() -> credswap::Result<()> {
/// use std::sync::Arc;
/// use credswap::tls::RotatingCertificate;
/// use credswap::{FileProvider, SecretCache};
///
/// // `/etc/myapp/tls/web.pem` holds the chain and key; replace it and the server follows.
/// let cache = SecretCache::builder(Arc::new(FileProvider::new("/etc/myapp/tls"))).build()?;
/// let certificate = RotatingCertificate::open(&cache, "web.pem").await?;
/// let config = Arc::new(certificate.server_config()?);
/// let acceptor = tokio_rustls::TlsAcceptor::from(config);
/// # drop(acceptor); Ok(()) }
/// ```
#[derive(Clone)]
pub struct RotatingCertificate {
    handle: SecretHandle<Certificate>,
}

impl RotatingCertificate {
    /// Opens the certificate secret `id` through `cache` (see
    /// [`SecretCache::handle`]: the current version now, then the cache's background refreshes;
    /// a leased certificate, such as one Vault's PKI engine issued, is replaced before it
    /// expires).
    ///
    /// # Errors
    ///
    /// The store's error, or [`ErrorKind::Decode`](crate::ErrorKind::Decode) when the current
    /// version is not a usable certificate and key (see [`Certificate::decode`]).
    pub async fn open(cache: &SecretCache, id: &str) -> Result<Self> {
        let handle = cache.handle_decoded(id, Certificate::decode).await?;
        Ok(RotatingCertificate { handle })
    }

    /// The certificate served now (its chain and key, and the version it came from). Lock-free;
    /// do not hold the guard across an `.await`.
    pub fn load(&self) -> Guard<Arc<Snapshot<Certificate>>> {
        self.handle.load()
    }

    /// The chain and key rustls presents now.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(self.handle.load().current().certified_key())
    }

    /// The serial number of the certificate served now (as Vault writes it, `39:dd:2e:…`).
    pub fn serial(&self) -> String {
        self.handle.load().current().serial().to_owned()
    }

    /// When the certificate served now expires.
    pub fn not_after(&self) -> SystemTime {
        self.handle.load().current().not_after()
    }

    /// How far to trust what is served (see [`HandleStatus`]): as the handle's status, except
    /// that a certificate served past its expiry is
    /// [`HandleStatus::LeaseExpired`] (at its expiry), whatever the store says: like credentials
    /// whose lease ended, it no longer works. A certificate Vault's PKI engine issued carries a
    /// lease that ends when it expires, so the handle's own status says the same.
    pub fn status(&self) -> HandleStatus {
        past_expiry(
            self.handle.status(),
            self.not_after(),
            SystemTime::now(),
            Instant::now(),
        )
    }

    /// Waits for the next swap to a new certificate and returns it.
    ///
    /// # Cancellation
    ///
    /// Safe to drop; a swap that happens while nobody waits is not replayed to the next call.
    pub async fn changed(&self) -> Arc<Snapshot<Certificate>> {
        self.handle.changed().await
    }

    /// Asks the store for the newest version now (see [`SecretHandle::refresh`]). Over a
    /// `provider::VaultPkiProvider` (feature `vault`) every store call issues a new
    /// certificate (rate-limited by the cache's `min_refresh_interval`); the one it replaces is
    /// not revoked and stays valid until it expires.
    ///
    /// # Errors
    ///
    /// The store's error, or [`ErrorKind::Decode`](crate::ErrorKind::Decode) when the newest
    /// version is not a usable certificate: the previous one keeps serving.
    pub async fn refresh(&self) -> Result<Arc<Snapshot<Certificate>>> {
        self.handle.refresh().await
    }

    /// The handle underneath, for what takes any handle
    /// ([`Readiness`](crate::health::Readiness), [`SecretHandle::last_error`]).
    pub fn handle(&self) -> &SecretHandle<Certificate> {
        &self.handle
    }

    /// The secret id.
    pub fn id(&self) -> &str {
        self.handle.id()
    }

    /// A rustls server configuration that presents this certificate, without client
    /// authentication, with rustls's safe default protocol versions. Set ALPN and the like on it
    /// before use.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) when rustls refuses the crypto provider's
    /// protocol versions.
    pub fn server_config(&self) -> Result<ServerConfig> {
        Ok(server_builder()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self.clone())))
    }

    /// A rustls server configuration that presents this certificate and authenticates clients
    /// with `verifier` (mutual TLS), such as a
    /// [`WebPkiClientVerifier`](rustls::server::WebPkiClientVerifier) over your client CA.
    ///
    /// # Errors
    ///
    /// As [`server_config`](Self::server_config).
    pub fn server_config_with_client_verifier(
        &self,
        verifier: Arc<dyn ClientCertVerifier>,
    ) -> Result<ServerConfig> {
        Ok(server_builder()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(self.clone())))
    }

    /// A rustls client configuration that trusts `roots` and presents this certificate when a
    /// server asks for one (mutual TLS), for `tokio-rustls` or reqwest's
    /// `tls_backend_preconfigured`.
    ///
    /// # Errors
    ///
    /// As [`server_config`](Self::server_config).
    pub fn client_config(&self, roots: impl Into<Arc<RootCertStore>>) -> Result<ClientConfig> {
        Ok(ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(self.clone())))
    }
}

fn server_builder() -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>> {
    ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)
}

/// `status`, or `LeaseExpired` at the certificate's expiry once `wall_now` is past `not_after`
/// (`now` is the same moment on Tokio's clock).
fn past_expiry(
    status: HandleStatus,
    not_after: SystemTime,
    wall_now: SystemTime,
    now: Instant,
) -> HandleStatus {
    if matches!(status, HandleStatus::LeaseExpired { .. }) {
        return status;
    }
    match wall_now.duration_since(not_after) {
        Ok(ago) => HandleStatus::LeaseExpired {
            at: now.checked_sub(ago).unwrap_or(now),
        },
        Err(_) => status,
    }
}

fn config_error(error: rustls::Error) -> Error {
    Error::config(format!("rustls refused the TLS configuration: {error}"))
}

impl fmt::Debug for RotatingCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.handle.load();
        f.debug_struct("RotatingCertificate")
            .field("id", &self.handle.id())
            .field("version", &snapshot.version().id)
            .field("serial", &snapshot.current().serial())
            .field(
                "not_after",
                &format_args!("{}", rfc3339(snapshot.current().not_after())),
            )
            .field("status", &self.status().as_str())
            .finish()
    }
}

/// Presents the current certificate, whatever the client asked for (one certificate per secret:
/// SNI does not choose among several).
impl ResolvesServerCert for RotatingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }
}

/// Always has a certificate, and presents the current one whichever issuers the server says it
/// accepts (`root_hint_subjects` is not consulted: a client with one identity has no choice to
/// make, and a server that does not trust its issuer refuses the handshake either way).
impl ResolvesClientCert for RotatingCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_certificate_past_its_expiry_is_an_expired_lease_whatever_the_store_says() {
        let now = Instant::now();
        let wall = SystemTime::now();
        let stale = HandleStatus::Stale {
            error: Error::transient("web", "unreachable"),
            since: now,
        };
        let valid_until = wall + Duration::from_secs(60);
        assert_eq!(
            past_expiry(HandleStatus::Fresh, valid_until, wall, now),
            HandleStatus::Fresh
        );
        assert_eq!(past_expiry(stale.clone(), valid_until, wall, now), stale);
        let ended = wall - Duration::from_secs(5);
        for status in [HandleStatus::Fresh, stale] {
            assert_eq!(
                past_expiry(status, ended, wall, now),
                HandleStatus::LeaseExpired {
                    at: now - Duration::from_secs(5)
                }
            );
        }
        // The lease's own end stands.
        let lease = HandleStatus::LeaseExpired { at: now };
        assert_eq!(past_expiry(lease.clone(), ended, wall, now), lease);
    }
}
