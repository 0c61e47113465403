//! How to log in to Vault, and the token a login gives.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::client::{Client, header_safe, map_error};
use crate::error::{Error, Result};
use crate::time::{Instant, later};

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
    /// Whether a new token can be had when the current one is gone.
    pub(crate) fn can_login(&self) -> bool {
        !matches!(self, VaultAuth::Token(_))
    }
}

/// A token and its lifetime.
pub(crate) struct Token {
    pub(crate) secret: SecretString,
    /// When it lapses unless renewed (None: never, as for a root token).
    pub(crate) expires_at: Option<Instant>,
    /// The TTL it was granted (or renewed) for.
    pub(crate) granted: Duration,
    pub(crate) renewable: bool,
}

impl Token {
    pub(crate) fn new(secret: SecretString, ttl: Duration, renewable: bool) -> Token {
        Token {
            secret,
            expires_at: (!ttl.is_zero()).then(|| later(Instant::now(), ttl)),
            granted: ttl,
            renewable,
        }
    }

    /// Whether the token's TTL has run out.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// A token Vault gave (a login or a renewal), checked before it is ever put on a request.
pub(crate) fn token_from(path: &str, info: vaultrs::api::AuthInfo) -> Result<Token> {
    if !header_safe(&info.client_token) {
        return Err(Error::invalid_request(
            path,
            "Vault's token holds characters an HTTP header cannot carry",
        ));
    }
    Ok(Token::new(
        SecretString::from(info.client_token),
        Duration::from_secs(info.lease_duration),
        info.renewable,
    ))
}

/// Asks Vault about `token`: its remaining TTL and whether it can be renewed. Fails with access
/// denied when the token is no longer valid.
pub(crate) async fn look_up(client: &Client, token: &SecretString) -> Result<Token> {
    if !header_safe(token.expose_secret()) {
        return Err(Error::config(
            "the Vault token holds characters an HTTP header cannot carry (a trailing newline?)",
        ));
    }
    let looked_up = vaultrs::token::lookup_self(&client.as_token(Some(token)))
        .await
        .map_err(|e| map_error("auth/token/lookup-self", e))?;
    Ok(Token::new(
        token.clone(),
        Duration::from_secs(looked_up.ttl),
        looked_up.renewable.unwrap_or(false),
    ))
}

/// Logs in (or, for a given token, looks it up) and returns the token with its lifetime.
pub(crate) async fn login(client: &Client, auth: &VaultAuth) -> Result<Token> {
    let anonymous = client.as_token(None);
    let (path, info) = match auth {
        VaultAuth::Token(token) => return look_up(client, token).await,
        VaultAuth::AppRole {
            mount,
            role_id,
            secret_id,
        } => (
            format!("auth/{mount}/login"),
            vaultrs::auth::approle::login(&anonymous, mount, role_id, secret_id.expose_secret())
                .await,
        ),
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
            (
                format!("auth/{mount}/login"),
                vaultrs::auth::kubernetes::login(&anonymous, mount, role, jwt.trim()).await,
            )
        }
    };
    token_from(&path, info.map_err(|e| map_error(&path, e))?)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_token_a_header_cannot_carry_is_refused_without_echoing_it() {
        let info: vaultrs::api::AuthInfo = serde_json::from_value(serde_json::json!({
            "client_token": "s.leaked-token\n", "accessor": "a", "policies": [],
            "token_policies": [], "metadata": null, "lease_duration": 30, "renewable": true,
            "entity_id": "", "token_type": "service", "orphan": true
        }))
        .unwrap();
        let Err(err) = token_from("auth/approle/login", info) else {
            panic!("a token with a newline must be refused");
        };
        assert!(!format!("{err} {err:?}").contains("leaked-token"));
    }
}
