use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::client::{Credentials, DynamicCredentials, Leased, RenewLease, RevokeLease};
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
        let name = vault_path(role)?;
        let path = format!("{}/rotate-role/{name}", self.mount);
        let mount = self.mount.as_str();
        self.session
            .call(&path, |client| async move {
                vaultrs::database::static_role::rotate(&client, mount, name).await
            })
            .await
    }
}

fn credentials_value(
    id: &str,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<SecretValue> {
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
        let below = vault_path(id)?;
        let path = format!("{}/{below}", self.mount);
        let mount = self.mount.as_str();
        let version = if dynamic {
            let leased: Leased<Credentials> = self
                .session
                .call(&path, |client| async move {
                    let endpoint = DynamicCredentials { mount, path: below };
                    vaultrs::api::exec_with_no_result(&client, endpoint).await
                })
                .await?;
            let value = credentials_value(
                id,
                leased.data.username.as_deref(),
                leased.data.password.as_deref(),
            )?;
            let version = Version {
                id: VersionId::new(leased.lease_id.as_str()),
                stages: vec![Stage::Current],
                created_at: Some(SystemTime::now()),
                lease: Some(Lease::new(
                    leased.lease_id,
                    Duration::from_secs(leased.lease_duration),
                    leased.renewable,
                )),
                next_rotation: None,
            };
            (value, version)
        } else {
            let name = below.strip_prefix("static-creds/").unwrap_or(below);
            let creds = self
                .session
                .call(&path, |client| async move {
                    vaultrs::database::static_role::creds(&client, mount, name).await
                })
                .await?;
            let value = credentials_value(id, Some(&creds.username), Some(&creds.password))?;
            let rotated = creds.last_vault_rotation.as_str();
            let version = Version {
                id: VersionId::new(if rotated.is_empty() {
                    crate::value::content_version(value.expose_secret()).to_string()
                } else {
                    rotated.to_owned()
                }),
                stages: vec![Stage::Current],
                created_at: humantime::parse_rfc3339_weak(rotated).ok(),
                lease: None,
                next_rotation: Some(crate::time::later_wall(
                    SystemTime::now(),
                    Duration::from_secs(creds.ttl),
                )),
            };
            (value, version)
        };
        let (value, version) = version;
        Ok(Versioned::new(value, version))
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<Option<Lease>> {
        let renewed = self
            .session
            .call("sys/leases/renew", |client| async move {
                let endpoint = RenewLease {
                    lease_id: &lease.id,
                    increment: lease.duration.as_secs().max(1),
                };
                vaultrs::api::exec_with_no_result(&client, endpoint).await
            })
            .await?;
        Ok(Some(Lease::new(
            renewed.lease_id,
            Duration::from_secs(renewed.lease_duration),
            renewed.renewable,
        )))
    }

    async fn revoke_lease(&self, lease: &Lease) -> Result<()> {
        self.session
            .call("sys/leases/revoke", |client| async move {
                vaultrs::api::exec_with_empty(
                    &client,
                    RevokeLease {
                        lease_id: &lease.id,
                    },
                )
                .await
            })
            .await
    }
}
