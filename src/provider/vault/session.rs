//! A logged-in connection to Vault or OpenBao whose token never lapses unnoticed.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use secrecy::SecretString;
use tokio::sync::{broadcast, watch};

use super::auth::{Token, VaultAuth, login, look_up, token_from};
use super::client::{AsToken, Client, map_error};
use super::config::VaultConfig;
use super::keep_alive::{Next, backoff, next};
use crate::error::{Error, ErrorKind, Result};
use crate::events::Emitter;
use crate::time::Instant;

/// How often, at most, a session asks Vault whether its token is still valid after a request was
/// denied (a denial with a valid token is the policy's answer, not a reason to log in again).
const TOKEN_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Something that happened to a [`VaultSession`]'s token. Carries no token or secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The token was renewed and now lasts `ttl`.
    TokenRenewed {
        /// The renewed TTL.
        ttl: Duration,
    },
    /// The session logged in again and uses a new token (the one it replaced, if still valid, was
    /// revoked).
    LoggedIn {
        /// Why: `"max_ttl"` (renewal came back capped), `"renewal_refused"`, or `"token_invalid"`
        /// (Vault no longer knows the token).
        reason: &'static str,
    },
    /// Keeping the token alive failed; the session tries again after `retry_in` (growing, with
    /// jitter).
    KeepAliveFailed {
        /// What failed.
        kind: ErrorKind,
        /// Failures in a row, this one included.
        consecutive_failures: u32,
        /// The wait before the next try.
        retry_in: Duration,
    },
    /// The token expired and the session cannot get another (token auth): every request now fails
    /// with [`ErrorKind::AccessDenied`] without reaching Vault.
    TokenExpired,
}

impl crate::events::Event for SessionEvent {
    fn log(&self) {
        match self {
            SessionEvent::TokenRenewed { ttl } => {
                tracing::debug!(?ttl, "credswap: renewed the Vault token");
            }
            SessionEvent::LoggedIn { reason } => {
                tracing::info!(reason, "credswap: logged in to Vault again");
            }
            SessionEvent::KeepAliveFailed {
                kind,
                consecutive_failures,
                retry_in,
            } => tracing::warn!(
                %kind,
                failures = consecutive_failures,
                ?retry_in,
                "credswap: keeping the Vault token alive failed"
            ),
            SessionEvent::TokenExpired => tracing::warn!(
                "credswap: the Vault token expired and cannot be renewed or replaced"
            ),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            SessionEvent::TokenRenewed { .. } => "token_renewed",
            SessionEvent::LoggedIn { .. } => "logged_in",
            SessionEvent::KeepAliveFailed { .. } => "keep_alive_failed",
            SessionEvent::TokenExpired => "token_expired",
        }
    }
}

pub(super) struct Inner {
    pub(super) client: Client,
    pub(super) auth: VaultAuth,
    pub(super) token: ArcSwap<Token>,
    /// Bumped on every new token, so concurrent denials cause one check and one login.
    generation: AtomicU64,
    /// Serializes logins and token checks; remembers the last check that found the token valid.
    login: tokio::sync::Mutex<Option<(u64, Instant)>>,
    pub(super) renewals: AtomicU64,
    logins: AtomicU64,
    pub(super) keep_alive_failures: AtomicU64,
    pub(super) closed: AtomicBool,
    pub(super) events: Emitter<SessionEvent>,
    pub(super) shutdown: watch::Sender<bool>,
}

/// A logged-in connection to Vault or OpenBao, shared by the Vault providers.
///
/// It keeps its token alive like Vault's `LifetimeWatcher`: a background task renews the token at
/// about two thirds of its TTL, and when renewal is refused or comes back capped by the token's
/// max TTL, it logs in again (AppRole, Kubernetes) and revokes the token it replaces. When that
/// fails it backs off (about 1 s, doubling to 5 minutes, with jitter) instead of retrying in a
/// loop, and says so in a [`SessionEvent`]. A token that expired and cannot be replaced (token
/// auth) makes requests fail at once with a typed error, without reaching Vault.
///
/// A request answered 403 makes the session ask Vault whether its token is still valid (at most
/// once a second): only an invalid token leads to a new login, so a path the policy denies costs
/// no login.
///
/// Every call goes through one `vaultrs` client, configured by a [`VaultConfig`] (TLS with
/// `VAULT_CACERT`, `VAULT_CAPATH`, client certificates; the namespace) or handed in by the
/// application ([`from_client`](Self::from_client)).
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run() -> credswap::Result<()> {
/// use credswap::provider::{VaultAuth, VaultConfig, VaultSession};
///
/// // VAULT_ADDR / BAO_ADDR, VAULT_TOKEN / BAO_TOKEN, VAULT_CACERT, VAULT_NAMESPACE, ...:
/// let session = VaultSession::from_env().await?;
/// # drop(session);
/// // Or AppRole:
/// let session = VaultSession::connect_with(
///     VaultConfig::new("https://vault.internal:8200").ca_cert("/etc/ssl/vault-ca.pem"),
///     VaultAuth::AppRole {
///         mount: "approle".into(),
///         role_id: "d4f1…".into(),
///         secret_id: std::env::var("APPROLE_SECRET_ID").unwrap().into(),
///     },
/// )
/// .await?;
/// // At the end, after the caches that use it (revokes the AppRole login's token):
/// session.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct VaultSession {
    pub(super) inner: Arc<Inner>,
}

impl fmt::Debug for VaultSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSession")
            .field("address", &self.inner.client.address())
            .field("auth", &self.inner.auth)
            .field("logins", &self.logins())
            .field("renewals", &self.renewals())
            .field("keep_alive_failures", &self.keep_alive_failures())
            .finish()
    }
}

enum TokenCheck {
    /// The token is valid: a denial is the policy's answer.
    Valid,
    /// Another token is in place now: try again.
    Replaced,
}

impl VaultSession {
    /// Logs in to the server at `address` (such as `https://vault.internal:8200`) with default
    /// settings (system trust roots, no namespace) and starts keeping the token alive.
    ///
    /// # Errors
    ///
    /// The login's error: access denied for bad credentials, transient when unreachable.
    pub async fn connect(address: impl Into<String>, auth: VaultAuth) -> Result<Self> {
        Self::connect_with(VaultConfig::new(address), auth).await
    }

    /// Logs in with `config` (address, namespace, TLS) and starts keeping the token alive.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for unreadable certificate files; the login's error otherwise
    /// (access denied for bad credentials, transient when unreachable or when Vault's certificate
    /// is not trusted).
    pub async fn connect_with(config: VaultConfig, auth: VaultAuth) -> Result<Self> {
        Self::start(Client::new(&config)?, auth).await
    }

    /// Logs in through a `vaultrs` client the application already configured (its address, TLS,
    /// namespace and timeout are used; the token it holds is not: `auth` decides, so pass
    /// `VaultAuth::Token` to use that token) and starts keeping the token alive.
    ///
    /// ```no_run
    /// # #![allow(dead_code)]
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use credswap::provider::{VaultAuth, VaultSession};
    /// use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
    ///
    /// let settings = VaultClientSettingsBuilder::default()
    ///     .address("https://vault.internal:8200")
    ///     .build()?;
    /// let token = settings.token.clone();
    /// let session = VaultSession::from_client(VaultClient::new(settings)?, VaultAuth::Token(token.into())).await?;
    /// # drop(session); Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for a namespace an HTTP header cannot carry; the login's error
    /// otherwise.
    pub async fn from_client(
        client: vaultrs::client::VaultClient,
        auth: VaultAuth,
    ) -> Result<Self> {
        Self::start(Client::from_vaultrs(client)?, auth).await
    }

    async fn start(client: Client, auth: VaultAuth) -> Result<Self> {
        let token = login(&client, &auth).await?;
        let session = VaultSession {
            inner: Arc::new(Inner {
                client,
                auth,
                token: ArcSwap::from_pointee(token),
                generation: AtomicU64::new(0),
                login: tokio::sync::Mutex::new(None),
                renewals: AtomicU64::new(0),
                logins: AtomicU64::new(1),
                keep_alive_failures: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                events: Emitter::new(64, Vec::new()),
                shutdown: watch::Sender::new(false),
            }),
        };
        spawn_keep_alive(&session);
        Ok(session)
    }

    /// Connects with the configuration in the environment ([`VaultConfig::from_env`]) and
    /// `VAULT_TOKEN` (or `BAO_TOKEN`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when the address or token is not set; otherwise as
    /// [`connect_with`](Self::connect_with).
    pub async fn from_env() -> Result<Self> {
        let config = VaultConfig::from_env()?;
        let token = std::env::var("VAULT_TOKEN")
            .or_else(|_| std::env::var("BAO_TOKEN"))
            .map_err(|_| Error::config("neither VAULT_TOKEN nor BAO_TOKEN is set"))?;
        Self::connect_with(config, VaultAuth::Token(token.into())).await
    }

    /// The server's address.
    pub fn address(&self) -> &str {
        self.inner.client.address()
    }

    /// Logins so far (the first included).
    pub fn logins(&self) -> u64 {
        self.inner.logins.load(Ordering::Relaxed)
    }

    /// Token renewals so far.
    pub fn renewals(&self) -> u64 {
        self.inner.renewals.load(Ordering::Relaxed)
    }

    /// Failed attempts to keep the token alive so far.
    pub fn keep_alive_failures(&self) -> u64 {
        self.inner.keep_alive_failures.load(Ordering::Relaxed)
    }

    /// A receiver of every [`SessionEvent`] from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.inner.events.subscribe()
    }

    /// Stops keeping the token alive, and revokes the token the session logged in for (AppRole,
    /// Kubernetes), so that a restart leaves no live token behind; a token the caller supplied
    /// ([`VaultAuth::Token`]) is the caller's and is kept. Every later request fails with
    /// [`ErrorKind::Closed`] without reaching Vault. Shut down the caches that use the session
    /// first (their shutdown may revoke leases through it).
    ///
    /// Revoking a token also revokes the leases it created: dynamic database users fetched
    /// through the session end with it. That is what a restart wants; a process that hands its
    /// credentials on to another should not shut the session down before that one is done.
    ///
    /// The revocation is bounded by the session's request timeout and best effort: when Vault
    /// cannot be reached the token lapses at its TTL, and the failure is logged. Calls after the
    /// first return at once.
    pub async fn shutdown(&self) {
        // Under the login lock: a login in flight finishes (and its token is the one revoked), and
        // none starts after, since every login checks `closed` under the lock.
        let _login = self.inner.login.lock().await;
        let first = !self.inner.closed.swap(true, Ordering::AcqRel);
        let _ = self.inner.shutdown.send(true);
        if !first || !self.inner.auth.can_login() {
            return;
        }
        let token = self.inner.token.load_full();
        match self.revoke(&token.secret).await {
            Ok(()) => {
                tracing::debug!(address = %self.address(), "credswap: revoked the session's Vault token")
            }
            Err(error) => tracing::warn!(
                address = %self.address(),
                kind = %error.kind(),
                "credswap: revoking the session's Vault token at shutdown failed; it lapses at its TTL"
            ),
        }
    }

    /// A call through vaultrs with the session's token; errors name `path`. On 403 the token's
    /// validity is checked and, only if Vault no longer knows it, the session logs in again (once
    /// for all callers) and the call is made once more.
    pub(crate) async fn call<T, F, Fut>(&self, path: &str, op: F) -> Result<T>
    where
        F: Fn(AsToken) -> Fut,
        Fut: Future<Output = std::result::Result<T, vaultrs::error::ClientError>>,
    {
        self.usable(path)?;
        let generation = self.inner.generation.load(Ordering::Acquire);
        let attempt = || async {
            let token = self.inner.token.load_full();
            op(self.inner.client.as_token(Some(&token.secret)))
                .await
                .map_err(|e| map_error(path, e))
        };
        match attempt().await {
            Err(error)
                if error.kind() == ErrorKind::AccessDenied && self.inner.auth.can_login() =>
            {
                match self.check_token(generation).await? {
                    TokenCheck::Valid => Err(error),
                    TokenCheck::Replaced => attempt().await,
                }
            }
            other => other,
        }
    }

    /// Revokes `token` (`auth/token/revoke-self`, which also revokes the leases it created).
    async fn revoke(&self, token: &SecretString) -> Result<()> {
        vaultrs::token::revoke_self(&self.inner.client.as_token(Some(token)))
            .await
            .map_err(|e| map_error("auth/token/revoke-self", e))
    }

    /// Fails fast when no request can succeed: after shutdown, or with an expired token that
    /// cannot be replaced.
    fn usable(&self, path: &str) -> Result<()> {
        self.open().map_err(|e| e.with_id(path))?;
        if !self.inner.auth.can_login() && self.inner.token.load().expired(Instant::now()) {
            return Err(Error::access_denied(path).with_message(
                "the Vault token expired and this session cannot get another (token auth): \
                 give it a new token, or use AppRole or Kubernetes login",
            ));
        }
        Ok(())
    }

    /// Fails once the session is shut down (checked under the login lock before every login).
    fn open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(
                Error::new(ErrorKind::Closed).with_message("the Vault session was shut down")
            );
        }
        Ok(())
    }

    /// After a denial with the token of `generation`: is that token still valid? Asks Vault at
    /// most once per [`TOKEN_CHECK_INTERVAL`]; logs in again only when Vault no longer knows the
    /// token.
    async fn check_token(&self, generation: u64) -> Result<TokenCheck> {
        let mut checked = self.inner.login.lock().await;
        self.open()?;
        if self.inner.generation.load(Ordering::Acquire) != generation {
            return Ok(TokenCheck::Replaced);
        }
        let now = Instant::now();
        if let Some((at_generation, at)) = *checked {
            if at_generation == generation && now.duration_since(at) < TOKEN_CHECK_INTERVAL {
                return Ok(TokenCheck::Valid);
            }
        }
        let token = self.inner.token.load_full();
        match look_up(&self.inner.client, &token.secret).await {
            Ok(_) => {
                *checked = Some((generation, now));
                Ok(TokenCheck::Valid)
            }
            Err(error) if error.kind() == ErrorKind::AccessDenied => {
                // Vault no longer knows the token: a new one (the old one needs no revoking).
                self.log_in_locked(false, "token_invalid").await?;
                Ok(TokenCheck::Replaced)
            }
            Err(error) => Err(error),
        }
    }

    /// Logs in again unless someone already did since `generation`; revokes the replaced token
    /// when it may still be valid.
    pub(super) async fn relogin(&self, generation: u64, reason: &'static str) -> Result<()> {
        let _checked = self.inner.login.lock().await;
        self.open()?;
        if self.inner.generation.load(Ordering::Acquire) != generation {
            return Ok(());
        }
        self.log_in_locked(true, reason).await
    }

    /// Logs in and installs the new token (the caller holds the login lock).
    async fn log_in_locked(&self, revoke_old: bool, reason: &'static str) -> Result<()> {
        let token = login(&self.inner.client, &self.inner.auth).await?;
        let old = self.inner.token.swap(Arc::new(token));
        let _ = self.inner.generation.fetch_add(1, Ordering::AcqRel);
        let _ = self.inner.logins.fetch_add(1, Ordering::Relaxed);
        self.inner.events.emit(SessionEvent::LoggedIn { reason });
        if revoke_old {
            self.spawn_revoke(old.secret.clone());
        }
        Ok(())
    }

    /// Replaces the current token's lifetime after a renewal (same token, same generation).
    pub(super) fn extend(&self, expires_in: Duration, granted: Duration, renewable: bool) {
        let current = self.inner.token.load_full();
        let mut renewed = Token::new(current.secret.clone(), expires_in, renewable);
        renewed.granted = granted;
        self.inner.token.store(Arc::new(renewed));
    }

    pub(super) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Revokes a token we no longer use (best effort: it may already be gone).
    fn spawn_revoke(&self, token: SecretString) {
        let session = self.clone();
        let _task = tokio::spawn(async move {
            if let Err(error) = session.revoke(&token).await {
                tracing::debug!(kind = %error.kind(), "credswap: revoking a replaced Vault token failed");
            }
        });
    }
}

/// Starts the task that keeps `session`'s token alive (see `keep_alive.rs` for when it acts).
fn spawn_keep_alive(session: &VaultSession) {
    let shutdown = session.inner.shutdown.subscribe();
    let _task = tokio::spawn(run(std::sync::Arc::downgrade(&session.inner), shutdown));
}

async fn run(session: Weak<Inner>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut failures = 0u32;
    loop {
        let next = {
            let Some(inner) = session.upgrade() else {
                return;
            };
            let token = inner.token.load_full();
            next(&token, inner.auth.can_login(), failures, Instant::now())
        };
        let (at, then_stop) = match next {
            Next::Stop => return,
            Next::TryAt(at) => (at, false),
            Next::ExpireAt(at) => (at, true),
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep_until(at) => {}
        }
        let Some(inner) = session.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let session = VaultSession { inner };
        if then_stop {
            session.inner.events.emit(SessionEvent::TokenExpired);
            return;
        }
        match renew_or_relogin(&session).await {
            Ok(()) => failures = 0,
            Err(error) => {
                failures = failures.saturating_add(1);
                let _ = session
                    .inner
                    .keep_alive_failures
                    .fetch_add(1, Ordering::Relaxed);
                let retry_in = backoff(failures);
                session.inner.events.emit(SessionEvent::KeepAliveFailed {
                    kind: error.kind(),
                    consecutive_failures: failures,
                    retry_in,
                });
                let token = session.inner.token.load_full();
                if !session.inner.auth.can_login() && token.expired(Instant::now()) {
                    session.inner.events.emit(SessionEvent::TokenExpired);
                    return;
                }
            }
        }
    }
}

async fn renew_or_relogin(session: &VaultSession) -> Result<()> {
    let inner = &session.inner;
    let generation = session.generation();
    let token = inner.token.load_full();
    let can_login = inner.auth.can_login();
    let mut reason = "renewal_refused";
    if token.renewable {
        let path = "auth/token/renew-self";
        let increment = format!("{}s", token.granted.as_secs().max(1));
        let renewed = vaultrs::token::renew_self(
            &inner.client.as_token(Some(&token.secret)),
            Some(&increment),
        )
        .await
        .map_err(|e| map_error(path, e))
        .and_then(|info| token_from(path, info));
        match renewed {
            Ok(renewed) => {
                let granted = renewed.granted;
                let _ = inner.renewals.fetch_add(1, Ordering::Relaxed);
                // Shortened by the max TTL: a fresh login (below) is better, when we can.
                let capped = granted < token.granted;
                if !(capped && can_login) {
                    // Keep comparing with the full grant, to notice the cap again.
                    let full = if capped { token.granted } else { granted };
                    session.extend(granted, full, renewed.renewable);
                    inner
                        .events
                        .emit(SessionEvent::TokenRenewed { ttl: granted });
                    return Ok(());
                }
                reason = "max_ttl";
            }
            Err(error) => {
                if error.is_retryable() || !can_login {
                    return Err(error);
                }
            }
        }
    }
    if can_login {
        session.relogin(generation, reason).await
    } else {
        Ok(())
    }
}
