use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rustify::endpoint::Endpoint;
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::path::vault_path;
use super::session::VaultSession;
use crate::error::{Error, Result};
use crate::provider::SecretProvider;
use crate::value::{Lease, SecretValue, Selector, Stage, Version, VersionId, Versioned};

/// A provider over Vault's (or OpenBao's) PKI secrets engine: each fetch issues a new certificate
/// and key (`<mount>/issue/<role>`), for `tls::RotatingCertificate` (feature `tls`) to serve.
///
/// Secret ids are names you declare with [`certificate`](Self::certificate), each with the
/// [`PkiRequest`] to issue (role, names, TTL). A fetch returns the engine's answer as JSON
/// (`certificate`, `private_key`, `ca_chain`, `issuing_ca`, `serial_number`, `expiration`); the
/// version id is the certificate's serial number, and the version carries a **non-renewable
/// [`Lease`]** that ends when the certificate expires. The cache treats it as it treats expiring
/// database credentials: it issues the next certificate at about two thirds of the time left, so
/// the handle swaps before the certificate expires. (If no new certificate can be had by then —
/// the engine unreachable, the new one refused — the last one keeps being served past its
/// expiry, and `RotatingCertificate::status` says `LeaseExpired`.)
/// [`SecretCache::shutdown_revoking_leases`](crate::SecretCache::shutdown_revoking_leases)
/// revokes the certificates it holds (`<mount>/revoke`, by serial).
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run() -> credswap::Result<()> {
/// use std::net::Ipv4Addr;
/// use std::sync::Arc;
/// use std::time::Duration;
/// use credswap::provider::{PkiRequest, VaultPkiProvider, VaultSession};
/// use credswap::SecretCache;
///
/// let session = VaultSession::from_env().await?;
/// let pki = VaultPkiProvider::new(session, "pki").certificate(
///     "web",
///     PkiRequest::new("web-server")
///         .common_name("web.internal")
///         .ip_sans([Ipv4Addr::LOCALHOST])
///         .ttl(Duration::from_secs(24 * 3600)),
/// );
/// let cache = SecretCache::builder(Arc::new(pki)).build()?;
/// # drop(cache); Ok(()) }
/// ```
///
/// The token's policy needs `update` on `<mount>/issue/<role>`, and `update` on `<mount>/revoke`
/// to revoke at shutdown.
#[derive(Clone)]
pub struct VaultPkiProvider {
    session: VaultSession,
    mount: String,
    requests: BTreeMap<String, PkiRequest>,
}

/// What to ask the PKI engine for: a role, and the certificate's names and lifetime. Names the
/// role does not allow make the issue fail with the engine's reason
/// ([`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiRequest {
    role: String,
    common_name: Option<String>,
    alt_names: Vec<String>,
    ip_sans: Vec<IpAddr>,
    uri_sans: Vec<String>,
    ttl: Option<Duration>,
}

impl PkiRequest {
    /// A certificate of role `role` (`<mount>/roles/<role>`), with the role's default TTL.
    pub fn new(role: impl Into<String>) -> Self {
        PkiRequest {
            role: role.into(),
            common_name: None,
            alt_names: Vec::new(),
            ip_sans: Vec::new(),
            uri_sans: Vec::new(),
            ttl: None,
        }
    }

    /// The subject's common name (most roles require one); also a DNS name of the certificate
    /// unless the role excludes it.
    pub fn common_name(mut self, common_name: impl Into<String>) -> Self {
        self.common_name = Some(common_name.into());
        self
    }

    /// More DNS names (or email addresses) for the certificate.
    pub fn alt_names(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.alt_names.extend(names.into_iter().map(Into::into));
        self
    }

    /// IP addresses for the certificate (the role must allow IP SANs).
    pub fn ip_sans(mut self, addresses: impl IntoIterator<Item = impl Into<IpAddr>>) -> Self {
        self.ip_sans.extend(addresses.into_iter().map(Into::into));
        self
    }

    /// URIs for the certificate (the role must allow them), such as SPIFFE ids.
    pub fn uri_sans(mut self, uris: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.uri_sans.extend(uris.into_iter().map(Into::into));
        self
    }

    /// How long certificates last (whole seconds, at least one), within the role's and the
    /// mount's max TTL. The cache issues the next one at about two thirds of it.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The role.
    pub fn role(&self) -> &str {
        &self.role
    }

    fn body(&self) -> IssueBody<'_> {
        let join = |items: &[String]| items.join(",");
        IssueBody {
            common_name: self.common_name.as_deref(),
            alt_names: join(&self.alt_names),
            ip_sans: self
                .ip_sans
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(","),
            uri_sans: join(&self.uri_sans),
            ttl: self
                .ttl
                .map(|ttl| format!("{}s", ttl.as_secs_f64().ceil().max(1.0) as u64)),
            format: "pem",
            private_key_format: "pkcs8",
        }
    }
}

impl VaultPkiProvider {
    /// A provider for the PKI engine mounted at `mount` (usually `pki`), issuing nothing until
    /// [`certificate`](Self::certificate) declares what.
    pub fn new(session: VaultSession, mount: impl Into<String>) -> Self {
        VaultPkiProvider {
            session,
            mount: mount.into(),
            requests: BTreeMap::new(),
        }
    }

    /// Declares secret id `id`: fetching it issues a certificate as `request` says.
    pub fn certificate(mut self, id: impl Into<String>, request: PkiRequest) -> Self {
        let _ = self.requests.insert(id.into(), request);
        self
    }

    /// Revokes the certificate with serial number `serial` (as Vault writes it, `39:dd:…`).
    ///
    /// # Errors
    ///
    /// Vault's error (mapped like every Vault call).
    pub async fn revoke(&self, serial: &str) -> Result<()> {
        let path = format!("{}/revoke", self.mount);
        let mount = self.mount.as_str();
        self.session
            .call(&path, |client| async move {
                let endpoint = vaultrs::api::pki::requests::RevokeCertificateRequest {
                    mount: mount.to_owned(),
                    serial_number: serial.to_owned(),
                };
                vaultrs::api::exec_with_empty(&client, endpoint).await
            })
            .await
    }
}

impl fmt::Debug for VaultPkiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultPkiProvider")
            .field("session", &self.session)
            .field("mount", &self.mount)
            .field("requests", &self.requests)
            .finish()
    }
}

#[derive(Serialize)]
struct IssueBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    common_name: Option<&'a str>,
    #[serde(skip_serializing_if = "String::is_empty")]
    alt_names: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    ip_sans: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    uri_sans: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
    format: &'static str,
    private_key_format: &'static str,
}

/// `<mount>/issue/<role>` (vaultrs's response type would keep the key in a printable `String`).
struct Issue<'a> {
    mount: &'a str,
    role: &'a str,
    body: IssueBody<'a>,
}

/// The engine's answer. No `Debug`: it holds the key.
#[derive(Deserialize)]
struct Issued {
    certificate: String,
    private_key: SecretString,
    #[serde(default)]
    ca_chain: Option<Vec<String>>,
    #[serde(default)]
    issuing_ca: Option<String>,
    serial_number: String,
    /// Unix seconds.
    expiration: u64,
    #[serde(default)]
    private_key_type: Option<String>,
}

/// The value a fetch returns: the engine's answer, which `tls::Certificate` decodes (the TLS
/// tests issue through this provider and serve what it returns, so the two shapes cannot drift
/// apart unnoticed).
#[derive(Serialize)]
struct Stored<'a> {
    certificate: &'a str,
    private_key: &'a str,
    ca_chain: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    issuing_ca: Option<&'a str>,
    serial_number: &'a str,
    expiration: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key_type: Option<&'a str>,
}

impl Endpoint for Issue<'_> {
    type Response = Issued;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        format!("{}/issue/{}", self.mount, self.role)
    }

    fn method(&self) -> RequestMethod {
        RequestMethod::POST
    }

    fn body(&self) -> std::result::Result<Option<Vec<u8>>, rustify::errors::ClientError> {
        serde_json::to_vec(&self.body)
            .map(Some)
            .map_err(|e| rustify::errors::ClientError::DataParseError { source: e.into() })
    }
}

/// Shorter than this left on a fresh certificate means clocks or TTLs are wrong: refused rather
/// than re-issued in a loop.
const MIN_LIFETIME: Duration = Duration::from_secs(1);

#[async_trait]
impl SecretProvider for VaultPkiProvider {
    fn name(&self) -> &str {
        "vault-pki"
    }

    async fn fetch(&self, id: &str, selector: &Selector) -> Result<Versioned<SecretValue>> {
        if !selector.is_current() {
            return Err(Error::not_found(id).with_message(format!(
                "issued certificates have only a current version, not {selector}"
            )));
        }
        let Some(request) = self.requests.get(id) else {
            return Err(Error::invalid_request(
                id,
                "no certificate is declared under this id (VaultPkiProvider::certificate)",
            ));
        };
        let role = vault_path(&request.role)?;
        let path = format!("{}/issue/{role}", self.mount);
        let mount = self.mount.as_str();
        let issued: Issued = self
            .session
            .call(&path, |client| async move {
                let endpoint = Issue {
                    mount,
                    role,
                    body: request.body(),
                };
                vaultrs::api::exec_with_result(&client, endpoint).await
            })
            .await?;
        let expires_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(issued.expiration))
            .unwrap_or(UNIX_EPOCH);
        let now = SystemTime::now();
        let remaining = expires_at.duration_since(now).unwrap_or(Duration::ZERO);
        if remaining < MIN_LIFETIME {
            return Err(Error::invalid_request(
                id,
                "Vault issued a certificate that expires within a second: check the TTL and \
                 the clocks",
            ));
        }
        let stored = Stored {
            certificate: &issued.certificate,
            private_key: issued.private_key.expose_secret(),
            ca_chain: issued.ca_chain.as_deref().unwrap_or_default(),
            issuing_ca: issued.issuing_ca.as_deref(),
            serial_number: &issued.serial_number,
            expiration: issued.expiration,
            private_key_type: issued.private_key_type.as_deref(),
        };
        let value = serde_json::to_string(&stored)
            .map(SecretValue::text)
            .map_err(|_| Error::invalid_request(id, "the issued certificate could not be kept"))?;
        let version = Version {
            id: VersionId::new(issued.serial_number.as_str()),
            stages: vec![Stage::Current],
            created_at: Some(now),
            lease: Some(Lease {
                id: issued.serial_number.clone(),
                duration: remaining,
                renewable: false,
                expires_at,
            }),
            next_rotation: None,
        };
        Ok(Versioned::new(value, version))
    }

    /// Revokes the certificate the lease stands for (its id is the serial number).
    async fn revoke_lease(&self, lease: &Lease) -> Result<()> {
        self.revoke(&lease.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn requests_become_the_engine_s_parameters() {
        let request = PkiRequest::new("web")
            .common_name("localhost")
            .alt_names(["a.localhost", "b.localhost"])
            .ip_sans([
                IpAddr::from(Ipv4Addr::LOCALHOST),
                Ipv6Addr::LOCALHOST.into(),
            ])
            .ttl(Duration::from_millis(5_500));
        let body = serde_json::to_value(request.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "common_name": "localhost",
                "alt_names": "a.localhost,b.localhost",
                "ip_sans": "127.0.0.1,::1",
                "ttl": "6s",
                "format": "pem",
                "private_key_format": "pkcs8",
            })
        );
        let bare = serde_json::to_value(PkiRequest::new("web").body()).unwrap();
        assert_eq!(
            bare,
            serde_json::json!({"format": "pem", "private_key_format": "pkcs8"})
        );
        assert_eq!(
            PkiRequest::new("web")
                .ttl(Duration::ZERO)
                .body()
                .ttl
                .as_deref(),
            Some("1s")
        );
    }
}
