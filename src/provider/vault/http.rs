//! The one HTTP path to Vault: JSON in and out, the token and namespace headers, and the mapping of
//! every failure to a typed error that never carries a secret.

use secrecy::{ExposeSecret, SecretString};

use super::config::VaultConfig;
use crate::error::{Error, Result};

pub(crate) struct Http {
    client: reqwest::Client,
    address: String,
    namespace: Option<String>,
}

impl Http {
    pub(crate) fn new(config: &VaultConfig) -> Result<Self> {
        Ok(Http {
            client: config.http_client()?,
            address: config.address().to_owned(),
            namespace: config.get_namespace().map(str::to_owned),
        })
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// `method` on `/v1/{path}` (which may carry a query), with `token` if given. Returns the
    /// response's JSON (`Null` for an empty body).
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&SecretString>,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let url = format!("{}/v1/{path}", self.address);
        // The path for errors: without a query (a version number is harmless, but keep it short).
        let what = path.split('?').next().unwrap_or(path);
        let mut request = self.client.request(method, url);
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token.expose_secret());
        }
        if let Some(namespace) = &self.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(what, &e))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|_| Error::transient(what, "Vault's response was cut short"))?;
        if !(200..300).contains(&status) {
            // Vault's error bodies are {"errors": [...]}, with reasons, never secret data.
            let errors = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("errors").cloned())
                .map(|e| e.to_string())
                .unwrap_or_default();
            return Err(map_status(what, status, &errors));
        }
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|_| Error::invalid_request(what, "Vault's response is not JSON"))
    }
}

/// A request that got no HTTP answer. A certificate Vault's server presents that we do not trust
/// is said plainly (it is almost always a missing `VAULT_CACERT`), but stays retryable: a server's
/// certificate mishap must not make caches drop their last-known-good values.
fn transport_error(path: &str, error: &reqwest::Error) -> Error {
    if error.is_timeout() {
        return Error::transient(path, "timed out reaching Vault");
    }
    let mut chain = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        chain.push_str(&e.to_string());
        chain.push(' ');
        source = e.source();
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
}
