//! Where Vault is and how to reach it: address, namespace, TLS. One configuration for every call.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// How to reach a Vault or OpenBao server: its address, a namespace, and TLS settings. Every call
/// the crate makes to Vault (KV reads, database credentials, leases, logins, token renewal) uses
/// this one configuration.
///
/// [`from_env`](Self::from_env) reads the variables Vault's own CLI and SDKs read, with OpenBao's
/// `BAO_*` spellings as fallbacks: `VAULT_ADDR`, `VAULT_NAMESPACE`, `VAULT_CACERT` (a PEM file of
/// CA certificates: only those are trusted), `VAULT_CAPATH` (a directory of PEM files, likewise),
/// `VAULT_CLIENT_CERT` and `VAULT_CLIENT_KEY` (mutual TLS), `VAULT_SKIP_VERIFY` (testing only).
///
/// ```
/// use std::time::Duration;
/// use credswap::provider::VaultConfig;
///
/// let config = VaultConfig::new("https://vault.internal:8200")
///     .namespace("team-a")
///     .ca_cert("/etc/ssl/vault-ca.pem")
///     .timeout(Duration::from_secs(5));
/// assert_eq!(config.address(), "https://vault.internal:8200");
/// ```
#[derive(Debug, Clone)]
pub struct VaultConfig {
    address: String,
    namespace: Option<String>,
    ca_cert: Option<PathBuf>,
    ca_path: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
    skip_verify: bool,
    timeout: Duration,
}

fn var(vault: &str, bao: &str) -> Option<String> {
    std::env::var(vault)
        .or_else(|_| std::env::var(bao))
        .ok()
        .filter(|value| !value.is_empty())
}

impl VaultConfig {
    /// A server at `address` (such as `https://vault.internal:8200`), verified against the system's
    /// trusted roots, with a 10 s timeout per request.
    pub fn new(address: impl Into<String>) -> Self {
        VaultConfig {
            address: address.into().trim_end_matches('/').to_owned(),
            namespace: None,
            ca_cert: None,
            ca_path: None,
            client_cert: None,
            skip_verify: false,
            timeout: Duration::from_secs(10),
        }
    }

    /// The configuration in the environment (see the type's documentation).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) when neither `VAULT_ADDR` nor `BAO_ADDR` is
    /// set, or a client certificate is given without its key.
    pub fn from_env() -> Result<Self> {
        let address = var("VAULT_ADDR", "BAO_ADDR")
            .ok_or_else(|| Error::config("neither VAULT_ADDR nor BAO_ADDR is set"))?;
        let mut config = VaultConfig::new(address);
        config.namespace = var("VAULT_NAMESPACE", "BAO_NAMESPACE");
        config.ca_cert = var("VAULT_CACERT", "BAO_CACERT").map(PathBuf::from);
        config.ca_path = var("VAULT_CAPATH", "BAO_CAPATH").map(PathBuf::from);
        config.client_cert = match (
            var("VAULT_CLIENT_CERT", "BAO_CLIENT_CERT"),
            var("VAULT_CLIENT_KEY", "BAO_CLIENT_KEY"),
        ) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (None, None) => None,
            _ => {
                return Err(Error::config(
                    "VAULT_CLIENT_CERT and VAULT_CLIENT_KEY must be set together",
                ));
            }
        };
        config.skip_verify = var("VAULT_SKIP_VERIFY", "BAO_SKIP_VERIFY")
            .is_some_and(|value| matches!(value.as_str(), "1" | "true" | "TRUE" | "True"));
        Ok(config)
    }

    /// Sends every request to namespace `namespace` (the `X-Vault-Namespace` header).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Trusts only the CA certificates in this PEM file (as `VAULT_CACERT` does).
    pub fn ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }

    /// Trusts only the CA certificates in the PEM files of this directory (as `VAULT_CAPATH`
    /// does); together with [`ca_cert`](Self::ca_cert), both.
    pub fn ca_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_path = Some(path.into());
        self
    }

    /// Presents this client certificate and key (PEM files) for mutual TLS.
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Accepts any server certificate. For tests against a throwaway server only: anyone on the
    /// path can then read your tokens and secrets.
    pub fn danger_skip_verify(mut self, skip: bool) -> Self {
        self.skip_verify = skip;
        self
    }

    /// The longest a single request may take. Default: 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The namespace, if any.
    pub fn get_namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub(crate) fn get_timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn skips_verify(&self) -> bool {
        self.skip_verify
    }

    /// The HTTP client every call goes through.
    pub(crate) fn http_client(&self) -> Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(5)));
        let mut roots = Vec::new();
        if let Some(file) = &self.ca_cert {
            roots.extend(read_certificates(file)?);
        }
        if let Some(dir) = &self.ca_path {
            let entries = std::fs::read_dir(dir).map_err(|e| {
                Error::config(format!("cannot read VAULT_CAPATH {}: {e}", dir.display()))
            })?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_file() {
                    roots.extend(read_certificates(&path)?);
                }
            }
        }
        if !roots.is_empty() {
            builder = builder.tls_certs_only(roots);
        }
        if let Some((cert, key)) = &self.client_cert {
            let mut pem = read_file(cert, "client certificate")?;
            pem.push(b'\n');
            pem.extend(read_file(key, "client key")?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|_| {
                Error::config("the Vault client certificate or key is not valid PEM")
            })?;
            builder = builder.identity(identity);
        }
        if self.skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        builder
            .build()
            .map_err(|e| Error::config(format!("cannot build the HTTP client for Vault: {e}")))
    }
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::config(format!(
            "cannot read the Vault {what} {}: {e}",
            path.display()
        ))
    })
}

fn read_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>> {
    let pem = read_file(path, "CA certificate")?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|_| Error::config(format!("{} holds no valid PEM certificate", path.display())))?;
    if certificates.is_empty() {
        return Err(Error::config(format!(
            "{} holds no certificate",
            path.display()
        )));
    }
    Ok(certificates)
}
