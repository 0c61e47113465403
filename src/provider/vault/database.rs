use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;

use super::path::vault_path;
use super::session::VaultSession;
use crate::error::{Error, Result};
use crate::provider::SecretProvider;
use crate::value::{Lease, SecretValue, Selector, Stage, Version, VersionId, Versioned};

/// A provider over Vault's (or OpenBao's) database secrets engine.
///
/// Secret ids are the engine's paths below its mount:
///
/// - `creds/<role>`: **dynamic** credentials. Each fetch creates a database user; the value is
///   `{"username", "password"}` (decode it as [`PgCredentials`](crate::pg::PgCredentials)), the
///   version id is the lease id, and the [`Lease`] (duration, renewable) is kept. The cache
///   renews the lease at about two thirds of what remains and fetches new credentials when a
///   renewal comes back shortened by the max TTL, so handles swap — and pools drain the old user —
///   before it ends. [`SecretCache::shutdown_revoking_leases`](crate::SecretCache::shutdown_revoking_leases)
///   revokes them at shutdown.
/// - `static-creds/<role>`: **static** roles, whose password Vault rotates on a schedule. The
///   version id is the last rotation time, and the returned `ttl` tells the cache when the next
///   rotation happens: it asks again right after.
///
/// [`rotate_static_role`](Self::rotate_static_role) triggers a static role's rotation now.
#[derive(Debug, Clone)]
pub struct VaultDatabaseProvider {
    session: VaultSession,
    mount: String,
}

#[derive(Deserialize)]
struct LeaseInfo {
    lease_id: String,
    lease_duration: u64,
    renewable: bool,
}

impl VaultDatabaseProvider {
    /// A provider for the database engine mounted at `mount` (usually `database`).
    pub fn new(session: VaultSession, mount: impl Into<String>) -> Self {
        VaultDatabaseProvider {
            session,
            mount: mount.into(),
        }
    }

    /// Asks Vault to rotate static role `role`'s password now.
    pub async fn rotate_static_role(&self, role: &str) -> Result<()> {
        let path = format!("{}/rotate-role/{}", self.mount, vault_path(role)?);
        self.session
            .request(Method::POST, &path, None)
            .await
            .map(|_| ())
    }
}

fn credentials_value(id: &str, data: &serde_json::Value) -> Result<SecretValue> {
    let username = data.get("username").and_then(|v| v.as_str());
    let password = data.get("password").and_then(|v| v.as_str());
    match (username, password) {
        (Some(username), Some(password)) => Ok(SecretValue::text(
            serde_json::json!({"username": username, "password": password}).to_string(),
        )),
        _ => Err(Error::invalid_request(
            id,
            "Vault's response has no username and password",
        )),
    }
}

#[async_trait]
impl SecretProvider for VaultDatabaseProvider {
    fn name(&self) -> &str {
        "vault-database"
    }

    async fn fetch(&self, id: &str, selector: &Selector) -> Result<Versioned<SecretValue>> {
        if !selector.is_current() {
            return Err(Error::not_found(id).with_message(format!(
                "database credentials have only a current version, not {selector}"
            )));
        }
        let dynamic = id.starts_with("creds/");
        if !dynamic && !id.starts_with("static-creds/") {
            return Err(Error::invalid_request(
                id,
                "a database secret id is `creds/<role>` or `static-creds/<role>`",
            ));
        }
        let path = format!("{}/{}", self.mount, vault_path(id)?);
        let response = self.session.request(Method::GET, &path, None).await?;
        let data = response
            .get("data")
            .ok_or_else(|| Error::invalid_request(id, "Vault's response has no data"))?;
        let value = credentials_value(id, data)?;
        let version = if dynamic {
            let lease: LeaseInfo = serde_json::from_value(response.clone())
                .map_err(|_| Error::invalid_request(id, "Vault's response has no lease"))?;
            Version {
                id: VersionId::new(lease.lease_id.as_str()),
                stages: vec![Stage::Current],
                created_at: Some(SystemTime::now()),
                lease: Some(Lease::new(
                    lease.lease_id,
                    Duration::from_secs(lease.lease_duration),
                    lease.renewable,
                )),
                next_rotation: None,
            }
        } else {
            let rotated = data
                .get("last_vault_rotation")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let ttl = data.get("ttl").and_then(|v| v.as_u64());
            Version {
                id: VersionId::new(if rotated.is_empty() {
                    crate::value::content_version(value.expose_secret()).to_string()
                } else {
                    rotated.to_owned()
                }),
                stages: vec![Stage::Current],
                created_at: humantime::parse_rfc3339_weak(rotated).ok(),
                lease: None,
                next_rotation: ttl.map(|ttl| {
                    crate::time::later_wall(SystemTime::now(), Duration::from_secs(ttl))
                }),
            }
        };
        Ok(Versioned::new(value, version))
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<Option<Lease>> {
        let body = serde_json::json!({
            "lease_id": lease.id,
            "increment": lease.duration.as_secs().max(1),
        });
        let response = self
            .session
            .request(Method::PUT, "sys/leases/renew", Some(body))
            .await?;
        let renewed: LeaseInfo = serde_json::from_value(response).map_err(|_| {
            Error::invalid_request("sys/leases/renew", "Vault's renewal response has no lease")
        })?;
        Ok(Some(Lease::new(
            renewed.lease_id,
            Duration::from_secs(renewed.lease_duration),
            renewed.renewable,
        )))
    }

    async fn revoke_lease(&self, lease: &Lease) -> Result<()> {
        let body = serde_json::json!({ "lease_id": lease.id });
        self.session
            .request(Method::PUT, "sys/leases/revoke", Some(body))
            .await
            .map(|_| ())
    }
}
