//! The one path to Vault: a `vaultrs` [`VaultClient`] (built from a [`VaultConfig`] or handed
//! in), the session's token put on each call, our own endpoints where vaultrs's helpers drop the
//! lease envelope, and the mapping of every failure to a typed error that never carries a secret.
//!
//! vaultrs's typed calls run through [`Client::as_token`], a view of the one client that carries
//! a given token: the session's token changes (renewal keeps it, a login replaces it), the client
//! and its connections stay.

use std::sync::Arc;

use rustify::endpoint::Endpoint;
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use vaultrs::api::EndpointMiddleware;
use vaultrs::client::{VaultClient, VaultClientSettings};
use vaultrs::error::ClientError;

use super::config::VaultConfig;
use crate::error::{Error, Result};

/// The vaultrs client every call goes through, and what errors name.
pub(crate) struct Client {
    vault: Arc<VaultClient>,
    address: String,
}

impl Client {
    /// A vaultrs client with `config`'s address, namespace, TLS and timeout, and no token (each
    /// call brings its own). The environment is not read here: [`VaultConfig::from_env`] does that.
    pub(crate) fn new(config: &VaultConfig) -> Result<Self> {
        let address = reqwest::Url::parse(config.address())
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| {
                Error::config(format!(
                    "the Vault address `{}` is not an http:// or https:// URL",
                    config.address()
                ))
            })?;
        let namespace = config.get_namespace().map(str::to_owned);
        let settings = VaultClientSettings {
            address,
            ca_certs: Vec::new(),
            identity: None,
            timeout: Some(config.get_timeout()),
            token: String::new(),
            verify: !config.skips_verify(),
            version: 1,
            wrapping: false,
            namespace: namespace.clone(),
            proxy: None,
        };
        let middle = EndpointMiddleware {
            token: String::new(),
            version: "v1".to_owned(),
            wrap: None,
            namespace,
        };
        // Our own reqwest client, so that a CA file or directory replaces the system's roots
        // (vaultrs would add to them) and the connect timeout is bounded.
        let http = rustify::clients::reqwest::Client::new(config.address(), config.http_client()?);
        Self::from_vaultrs(VaultClient {
            http,
            middle,
            settings,
        })
    }

    /// The user's own client: its address, TLS, namespace and timeout; its token is not used
    /// (the session's [`VaultAuth`](super::VaultAuth) decides).
    pub(crate) fn from_vaultrs(vault: VaultClient) -> Result<Self> {
        if let Some(namespace) = &vault.middle.namespace {
            if !header_safe(namespace) {
                return Err(Error::config(
                    "the Vault namespace holds characters an HTTP header cannot carry",
                ));
            }
        }
        let address = vault
            .settings
            .address
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        Ok(Client {
            vault: Arc::new(vault),
            address,
        })
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// The client, carrying `token` (none for a login).
    pub(crate) fn as_token(&self, token: Option<&SecretString>) -> AsToken {
        let mut middle = self.vault.middle.clone();
        middle.token = token
            .map(|t| t.expose_secret().to_owned())
            .unwrap_or_default();
        AsToken {
            vault: Arc::clone(&self.vault),
            middle,
        }
    }
}

/// The shared client with one token on its requests. Has no `Debug`: it holds the token.
pub(crate) struct AsToken {
    vault: Arc<VaultClient>,
    middle: EndpointMiddleware,
}

impl vaultrs::client::Client for AsToken {
    fn http(&self) -> &rustify::clients::reqwest::Client {
        &self.vault.http
    }

    fn middle(&self) -> &EndpointMiddleware {
        &self.middle
    }

    fn settings(&self) -> &VaultClientSettings {
        &self.vault.settings
    }

    fn set_token(&mut self, token: &str) {
        token.clone_into(&mut self.middle.token);
    }
}

/// Whether `value` can be sent as an HTTP header value (vaultrs panics on one that cannot): a
/// token or namespace with a newline, say, is refused before any request.
pub(crate) fn header_safe(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// The lease part of a response's envelope, which vaultrs's helpers strip.
#[derive(Deserialize)]
pub(crate) struct Leased<T> {
    pub(crate) lease_id: String,
    pub(crate) lease_duration: u64,
    pub(crate) renewable: bool,
    pub(crate) data: T,
}

/// Dynamic credentials of a database role (`{mount}/creds/{role}`), with their lease.
pub(crate) struct DynamicCredentials<'a> {
    /// The path below the mount: `creds/<role>`.
    pub(crate) path: &'a str,
    pub(crate) mount: &'a str,
}

/// `{"username", "password"}`, the part of a credentials response we use.
#[derive(Deserialize)]
pub(crate) struct Credentials {
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

impl Endpoint for DynamicCredentials<'_> {
    type Response = Leased<Credentials>;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        format!("{}/{}", self.mount, self.path)
    }

    fn method(&self) -> RequestMethod {
        RequestMethod::GET
    }
}

/// Renews a lease (`sys/leases/renew`); the answer is the lease's new envelope.
pub(crate) struct RenewLease<'a> {
    pub(crate) lease_id: &'a str,
    /// Seconds asked for.
    pub(crate) increment: u64,
}

/// Revokes a lease (`sys/leases/revoke`).
pub(crate) struct RevokeLease<'a> {
    pub(crate) lease_id: &'a str,
}

#[derive(Serialize)]
struct LeaseBody<'a> {
    lease_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    increment: Option<u64>,
}

fn json_body(
    body: &impl Serialize,
) -> std::result::Result<Option<Vec<u8>>, rustify::errors::ClientError> {
    serde_json::to_vec(body)
        .map(Some)
        .map_err(|e| rustify::errors::ClientError::DataParseError { source: e.into() })
}

impl Endpoint for RenewLease<'_> {
    type Response = Leased<serde_json::Value>;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        "sys/leases/renew".to_owned()
    }

    fn method(&self) -> RequestMethod {
        RequestMethod::PUT
    }

    fn body(&self) -> std::result::Result<Option<Vec<u8>>, rustify::errors::ClientError> {
        json_body(&LeaseBody {
            lease_id: self.lease_id,
            increment: Some(self.increment),
        })
    }
}

impl Endpoint for RevokeLease<'_> {
    type Response = ();
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        "sys/leases/revoke".to_owned()
    }

    fn method(&self) -> RequestMethod {
        RequestMethod::PUT
    }

    fn body(&self) -> std::result::Result<Option<Vec<u8>>, rustify::errors::ClientError> {
        json_body(&LeaseBody {
            lease_id: self.lease_id,
            increment: None,
        })
    }
}

/// Maps a failed vaultrs call on `path` to our kinds. Nothing of a response body but Vault's
/// `errors` list (reasons, never secret data) reaches the error.
pub(crate) fn map_error(path: &str, error: ClientError) -> Error {
    match error {
        ClientError::APIError { code, errors } => map_status(path, code, &errors_text(&errors)),
        ClientError::RestClientError { source } => map_rest(path, source),
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => {
            Error::invalid_request(path, "Vault's response has no data")
        }
        ClientError::JsonParseError { .. } => {
            Error::invalid_request(path, "Vault's response has an unexpected shape")
        }
        _ => Error::invalid_request(path, "the Vault request could not be made"),
    }
}

fn errors_text(errors: &[String]) -> String {
    serde_json::to_string(errors).unwrap_or_default()
}

fn map_rest(path: &str, error: rustify::errors::ClientError) -> Error {
    use rustify::errors::ClientError as Rest;
    match error {
        Rest::ServerResponseError { code, content } => {
            // Vault's error bodies are {"errors": [...]}; a 404 of a deleted KV version is not.
            #[derive(Deserialize)]
            struct Errors {
                errors: Vec<String>,
            }
            let errors = content
                .and_then(|c| serde_json::from_str::<Errors>(&c).ok())
                .map(|e| errors_text(&e.errors))
                .unwrap_or_default();
            map_status(path, code, &errors)
        }
        Rest::RequestError { source, .. } => {
            let source: &(dyn std::error::Error + 'static) = source.as_ref();
            transport_error(path, source)
        }
        Rest::ResponseError { .. } => Error::transient(path, "Vault's response was cut short"),
        Rest::ResponseParseError { .. } | Rest::ResponseConversionError { .. } => {
            Error::invalid_request(path, "Vault's response has an unexpected shape")
        }
        _ => Error::invalid_request(path, "the Vault request could not be built"),
    }
}

/// A request that got no HTTP answer. A certificate Vault's server presents that we do not trust
/// is said plainly (it is almost always a missing `VAULT_CACERT`), but stays retryable: a server's
/// certificate mishap must not make caches drop their last-known-good values.
fn transport_error(path: &str, error: &(dyn std::error::Error + 'static)) -> Error {
    let mut chain = String::new();
    let mut source = Some(error);
    let mut timed_out = false;
    while let Some(e) = source {
        if e.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
        {
            timed_out = true;
        }
        chain.push_str(&e.to_string());
        chain.push(' ');
        source = e.source();
    }
    if timed_out {
        return Error::transient(path, "timed out reaching Vault");
    }
    let chain = chain.to_ascii_lowercase();
    if chain.contains("certificate") || chain.contains("unknownissuer") {
        return Error::transient(
            path,
            "TLS: Vault's certificate is not trusted (set VAULT_CACERT or VAULT_CAPATH to its CA)",
        );
    }
    if chain.contains("tls") || chain.contains("handshake") {
        return Error::transient(path, "TLS handshake with Vault failed");
    }
    Error::transient(path, "could not reach Vault")
}

/// Maps an HTTP status from Vault to our kinds.
pub(crate) fn map_status(path: &str, status: u16, detail: &str) -> Error {
    let detail = format!("HTTP {status}: {}", detail.trim());
    match status {
        404 => Error::not_found(path).with_message(detail),
        401 | 403 => Error::access_denied(path).with_message(detail),
        429 => Error::throttled(path).with_message(detail),
        // 503: sealed or standby; 5xx: server trouble; 412: a performance standby not caught up.
        412 | 500..=599 => Error::transient(path, detail),
        _ => Error::invalid_request(path, detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn statuses_map_to_kinds() {
        let cases = [
            (404, ErrorKind::NotFound),
            (403, ErrorKind::AccessDenied),
            (401, ErrorKind::AccessDenied),
            (429, ErrorKind::Throttled),
            (503, ErrorKind::Transient),
            (500, ErrorKind::Transient),
            (412, ErrorKind::Transient),
            (400, ErrorKind::InvalidRequest),
        ];
        for (status, kind) in cases {
            let error = map_status("secret/data/app", status, "[\"reason\"]");
            assert_eq!(error.kind(), kind, "{status}");
            assert_eq!(error.id(), Some("secret/data/app"));
            assert!(error.to_string().contains(&format!("HTTP {status}")));
        }
        let sealed = map_status("secret/data/app", 503, "[\"Vault is sealed\"]");
        assert!(sealed.is_retryable());
        assert!(sealed.to_string().contains("sealed"));
    }

    #[test]
    fn a_response_body_never_reaches_the_error() {
        let parse = rustify::errors::ClientError::ResponseParseError {
            source: serde_json::from_str::<u64>("\"s3cr3t\"")
                .unwrap_err()
                .into(),
            content: Some("{\"data\":{\"password\":\"s3cr3t\"}}".to_owned()),
        };
        let error = map_error(
            "secret/data/app",
            ClientError::RestClientError { source: parse },
        );
        assert_eq!(error.kind(), ErrorKind::InvalidRequest);
        assert!(!format!("{error} {error:?}").contains("s3cr3t"));
        let denied = map_error(
            "secret/data/app",
            ClientError::RestClientError {
                source: rustify::errors::ClientError::ServerResponseError {
                    code: 403,
                    content: Some("{\"errors\":[\"permission denied\"]}".to_owned()),
                },
            },
        );
        assert_eq!(denied.kind(), ErrorKind::AccessDenied);
        assert!(denied.to_string().contains("permission denied"));
    }

    #[test]
    fn header_values_are_checked() {
        assert!(header_safe("hvs.CAESIJ-abc_123"));
        assert!(!header_safe("hvs.abc\n"));
        assert!(!header_safe("ns\u{e9}"));
    }
}
