//! A logged-in connection to Vault or OpenBao whose token never lapses.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret, SecretString};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use crate::error::{Error, ErrorKind, Result};

/// How to log in to Vault or OpenBao.
#[derive(Clone)]
#[non_exhaustive]
pub enum VaultAuth {
    /// A token given to the process (`VAULT_TOKEN`/`BAO_TOKEN`). Renewed while renewable; it cannot
    /// be re-acquired once revoked or expired.
    Token(SecretString),
    /// AppRole: `role_id` and `secret_id`, at `mount` (usually `approle`).
    AppRole {
        /// Where the AppRole auth method is mounted.
        mount: String,
        /// The role id.
        role_id: String,
        /// The secret id.
        secret_id: SecretString,
    },
    /// Kubernetes: the pod's service-account JWT, read from `jwt_path` at every login (it is
    /// rotated by the kubelet), for `role`, at `mount` (usually `kubernetes`).
    Kubernetes {
        /// Where the Kubernetes auth method is mounted.
        mount: String,
        /// The Vault role.
        role: String,
        /// The JWT file, usually `/var/run/secrets/kubernetes.io/serviceaccount/token`.
        jwt_path: PathBuf,
    },
}

impl fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultAuth::Token(_) => f.write_str("Token([REDACTED])"),
            VaultAuth::AppRole { mount, role_id, .. } => f
                .debug_struct("AppRole")
                .field("mount", mount)
                .field("role_id", role_id)
                .finish_non_exhaustive(),
            VaultAuth::Kubernetes {
                mount,
                role,
                jwt_path,
            } => f
                .debug_struct("Kubernetes")
                .field("mount", mount)
                .field("role", role)
                .field("jwt_path", jwt_path)
                .finish(),
        }
    }
}

impl VaultAuth {
    fn can_login(&self) -> bool {
        !matches!(self, VaultAuth::Token(_))
    }
}

struct Token {
    client: Arc<VaultClient>,
    secret: SecretString,
    /// When it lapses unless renewed (None: never, as for a root token).
    expires_at: Option<Instant>,
    /// The TTL it was granted (or renewed) for.
    granted: Duration,
    renewable: bool,
}

struct Inner {
    address: String,
    auth: VaultAuth,
    http: reqwest::Client,
    token: ArcSwap<Token>,
    /// Bumped on every new token, so concurrent 403s cause one re-login.
    generation: AtomicU64,
    login: tokio::sync::Mutex<()>,
    renewals: AtomicU64,
    logins: AtomicU64,
    _shutdown: tokio::sync::watch::Sender<()>,
}

/// A logged-in connection to Vault or OpenBao, shared by the Vault providers.
///
/// It keeps its token alive like Vault's `LifetimeWatcher`: a background task renews the token at
/// about two thirds of its TTL, and when renewal is refused or the token nears its max TTL, it
/// logs in again (AppRole, Kubernetes). A request answered 403 with a token that may have lapsed
/// triggers one coalesced re-login and is retried once. A long-running worker never drifts into
/// 403s.
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run() -> credswap::Result<()> {
/// use credswap::provider::{VaultAuth, VaultSession};
///
/// // VAULT_ADDR / BAO_ADDR and VAULT_TOKEN / BAO_TOKEN:
/// let session = VaultSession::from_env().await?;
/// # drop(session);
/// // Or AppRole:
/// let session = VaultSession::connect(
///     "https://vault.internal:8200",
///     VaultAuth::AppRole {
///         mount: "approle".into(),
///         role_id: "d4f1…".into(),
///         secret_id: std::env::var("APPROLE_SECRET_ID").unwrap().into(),
///     },
/// )
/// .await?;
/// # drop(session);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct VaultSession {
    inner: Arc<Inner>,
}

impl fmt::Debug for VaultSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSession")
            .field("address", &self.inner.address)
            .field("auth", &self.inner.auth)
            .field("logins", &self.logins())
            .field("renewals", &self.renewals())
            .finish()
    }
}

/// Maps a vaultrs error for `path` to our kinds. Vault's error texts name paths and reasons, never
/// secret data.
pub(crate) fn map_client_error(path: &str, error: ClientError) -> Error {
    match error {
        ClientError::APIError { code, errors } => map_status(path, code, &errors.join("; ")),
        // A non-2xx answer whose body vaultrs could not read as Vault errors (a 404 for a deleted
        // KV version carries metadata instead): its status still says what happened.
        ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code, .. },
        } => map_status(path, code, "no error details"),
        ClientError::RestClientError { .. } => {
            Error::transient(path, "could not reach Vault").with_source(error)
        }
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => {
            Error::not_found(path).with_message("Vault returned no data")
        }
        ClientError::JsonParseError { .. } => {
            Error::invalid_request(path, "Vault's response has an unexpected shape")
        }
        other => Error::transient(path, format!("Vault client error: {other}")),
    }
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

fn client_for(address: &str, token: &str) -> Result<VaultClient> {
    let settings = VaultClientSettingsBuilder::default()
        .address(address)
        .token(token)
        .timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| Error::config(format!("invalid Vault settings: {e}")))?;
    VaultClient::new(settings)
        .map_err(|e| Error::config(format!("cannot build the Vault client: {e}")))
}

impl VaultSession {
    /// Logs in to the server at `address` (such as `https://vault.internal:8200`) and starts
    /// keeping the token alive.
    ///
    /// # Errors
    ///
    /// The login's error: access denied for bad credentials, transient when unreachable.
    pub async fn connect(address: impl Into<String>, auth: VaultAuth) -> Result<Self> {
        let address = address.into().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))?;
        let token = login(&address, &auth).await?;
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(());
        let session = VaultSession {
            inner: Arc::new(Inner {
                address,
                auth,
                http,
                token: ArcSwap::from_pointee(token),
                generation: AtomicU64::new(0),
                login: tokio::sync::Mutex::new(()),
                renewals: AtomicU64::new(0),
                logins: AtomicU64::new(1),
                _shutdown: shutdown,
            }),
        };
        let _task = tokio::spawn(keep_alive(Arc::downgrade(&session.inner), shutdown_rx));
        Ok(session)
    }

    /// Connects with `VAULT_ADDR` (or `BAO_ADDR`) and `VAULT_TOKEN` (or `BAO_TOKEN`).
    pub async fn from_env() -> Result<Self> {
        let var = |a: &str, b: &str| std::env::var(a).or_else(|_| std::env::var(b)).ok();
        let address = var("VAULT_ADDR", "BAO_ADDR")
            .ok_or_else(|| Error::config("neither VAULT_ADDR nor BAO_ADDR is set"))?;
        let token = var("VAULT_TOKEN", "BAO_TOKEN")
            .ok_or_else(|| Error::config("neither VAULT_TOKEN nor BAO_TOKEN is set"))?;
        Self::connect(address, VaultAuth::Token(token.into())).await
    }

    /// The server's address.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// Logins so far (the first included).
    pub fn logins(&self) -> u64 {
        self.inner.logins.load(Ordering::Relaxed)
    }

    /// Token renewals so far.
    pub fn renewals(&self) -> u64 {
        self.inner.renewals.load(Ordering::Relaxed)
    }

    /// Runs `op` with the current vaultrs client; on 403, logs in again (once, coalesced) and
    /// retries once.
    pub(crate) async fn call<T, F, Fut>(&self, path: &str, op: F) -> Result<T>
    where
        F: Fn(Arc<VaultClient>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, ClientError>>,
    {
        self.with_relogin(|| {
            let request = op(Arc::clone(&self.inner.token.load().client));
            async move { request.await.map_err(|e| map_client_error(path, e)) }
        })
        .await
    }

    /// An HTTP request to `/v1/{path}` with the current token; JSON in and out; 403 handled as in
    /// [`call`](Self::call).
    pub(crate) async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        self.with_relogin(|| self.request_once(method.clone(), path, body.as_ref()))
            .await
    }

    /// Runs `attempt` with the current token; if Vault answers 403 and the session can log in,
    /// logs in again (once for all callers, coalesced) and runs it once more.
    async fn with_relogin<T, F, Fut>(&self, attempt: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let generation = self.inner.generation.load(Ordering::Acquire);
        match attempt().await {
            Err(error)
                if error.kind() == ErrorKind::AccessDenied && self.inner.auth.can_login() =>
            {
                self.relogin(generation).await?;
                attempt().await
            }
            other => other,
        }
    }

    async fn request_once(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let url = format!("{}/v1/{path}", self.inner.address);
        let token = Arc::clone(&self.inner.token.load());
        let mut request = self
            .inner
            .http
            .request(method, url)
            .header("X-Vault-Token", token.secret.expose_secret());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out reaching Vault"
            } else {
                "could not reach Vault"
            };
            Error::transient(path, what)
        })?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|_| Error::transient(path, "Vault's response was cut short"))?;
        if !(200..300).contains(&status) {
            // Vault's error bodies are {"errors": [...]}, with reasons, never secret data.
            let errors = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("errors").cloned())
                .map(|e| e.to_string())
                .unwrap_or_default();
            return Err(map_status(path, status, &errors));
        }
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|_| Error::invalid_request(path, "Vault's response is not JSON"))
    }

    /// Logs in again unless someone already did since `generation`.
    async fn relogin(&self, generation: u64) -> Result<()> {
        let _guard = self.inner.login.lock().await;
        if self.inner.generation.load(Ordering::Acquire) != generation {
            return Ok(());
        }
        let token = login(&self.inner.address, &self.inner.auth).await?;
        self.install(token);
        let _ = self.inner.logins.fetch_add(1, Ordering::Relaxed);
        tracing::info!(address = %self.inner.address, "credswap: logged in to Vault again");
        Ok(())
    }

    fn install(&self, token: Token) {
        self.inner.token.store(Arc::new(token));
        let _ = self.inner.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Logs in (or, for a given token, looks it up) and returns the token with its lifetime.
async fn login(address: &str, auth: &VaultAuth) -> Result<Token> {
    let anonymous = client_for(address, "")?;
    let info = match auth {
        VaultAuth::Token(token) => {
            let client = client_for(address, token.expose_secret())?;
            let looked_up = vaultrs::token::lookup_self(&client)
                .await
                .map_err(|e| map_client_error("auth/token/lookup-self", e))?;
            let granted = Duration::from_secs(looked_up.ttl);
            return Ok(Token {
                client: Arc::new(client),
                secret: token.clone(),
                expires_at: (looked_up.ttl > 0)
                    .then(|| crate::time::later(Instant::now(), granted)),
                granted,
                renewable: looked_up.renewable.unwrap_or(false),
            });
        }
        VaultAuth::AppRole {
            mount,
            role_id,
            secret_id,
        } => vaultrs::auth::approle::login(&anonymous, mount, role_id, secret_id.expose_secret())
            .await
            .map_err(|e| map_client_error(&format!("auth/{mount}/login"), e))?,
        VaultAuth::Kubernetes {
            mount,
            role,
            jwt_path,
        } => {
            let jwt = tokio::fs::read_to_string(jwt_path).await.map_err(|e| {
                Error::config(format!(
                    "cannot read the service-account token at {}: {e}",
                    jwt_path.display()
                ))
            })?;
            vaultrs::auth::kubernetes::login(&anonymous, mount, role, jwt.trim())
                .await
                .map_err(|e| map_client_error(&format!("auth/{mount}/login"), e))?
        }
    };
    let granted = Duration::from_secs(info.lease_duration);
    let secret = SecretString::from(info.client_token);
    Ok(Token {
        client: Arc::new(client_for(address, secret.expose_secret())?),
        secret,
        expires_at: (info.lease_duration > 0).then(|| crate::time::later(Instant::now(), granted)),
        granted,
        renewable: info.renewable,
    })
}

/// Renews the token at about two thirds of its TTL; logs in again when renewal fails or comes back
/// shortened by the max TTL. Ends with the session.
async fn keep_alive(
    session: std::sync::Weak<Inner>,
    mut shutdown: tokio::sync::watch::Receiver<()>,
) {
    let mut failures = 0u32;
    loop {
        let wait = {
            let Some(inner) = session.upgrade() else {
                return;
            };
            let token = inner.token.load();
            match token.expires_at {
                None => return, // A token that never expires needs no care.
                Some(expires_at) => {
                    let remaining = expires_at.saturating_duration_since(Instant::now());
                    if failures > 0 {
                        Duration::from_millis(200 * u64::from(failures.min(10))).min(remaining / 2)
                    } else {
                        remaining.mul_f64(0.6 + 0.1 * fastrand::f64())
                    }
                }
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let Some(inner) = session.upgrade() else {
            return;
        };
        let session = VaultSession { inner };
        match renew_or_relogin(&session).await {
            Ok(()) => failures = 0,
            Err(error) => {
                failures += 1;
                tracing::warn!(kind = %error.kind(), failures, "credswap: keeping the Vault token alive failed");
            }
        }
    }
}

async fn renew_or_relogin(session: &VaultSession) -> Result<()> {
    let inner = &session.inner;
    let generation = inner.generation.load(Ordering::Acquire);
    let token = inner.token.load_full();
    if token.renewable {
        let increment = format!("{}s", token.granted.as_secs().max(1));
        match vaultrs::token::renew_self(&*token.client, Some(&increment)).await {
            Ok(auth) => {
                let granted = Duration::from_secs(auth.lease_duration);
                let _ = inner.renewals.fetch_add(1, Ordering::Relaxed);
                // Shortened by the max TTL: a fresh login (below) is better, when we can.
                let capped = granted < token.granted;
                if !(capped && inner.auth.can_login()) {
                    session.install(Token {
                        client: Arc::clone(&token.client),
                        secret: token.secret.clone(),
                        expires_at: Some(crate::time::later(Instant::now(), granted)),
                        // Keep comparing with the full grant, to notice the cap again.
                        granted: if capped { token.granted } else { granted },
                        renewable: auth.renewable,
                    });
                    return Ok(());
                }
            }
            Err(error) => {
                let error = map_client_error("auth/token/renew-self", error);
                if error.is_retryable() || !inner.auth.can_login() {
                    return Err(error);
                }
            }
        }
    }
    if inner.auth.can_login() {
        session.relogin(generation).await
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let sealed = map_client_error(
            "secret/data/app",
            ClientError::APIError {
                code: 503,
                errors: vec!["Vault is sealed".into()],
            },
        );
        assert!(sealed.is_retryable());
        assert!(sealed.to_string().contains("sealed"));
    }

    #[test]
    fn auth_debug_hides_credentials() {
        let auth = VaultAuth::AppRole {
            mount: "approle".into(),
            role_id: "role-1".into(),
            secret_id: "very-secret-id".to_owned().into(),
        };
        let token = VaultAuth::Token("hvs.secret-token".to_owned().into());
        let printed = format!("{auth:?} {token:?}");
        assert!(!printed.contains("very-secret-id"));
        assert!(!printed.contains("secret-token"));
        assert!(printed.contains("role-1"));
    }
}
