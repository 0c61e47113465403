use std::time::SystemTime;

use async_trait::async_trait;

use super::path::vault_path;
use super::session::VaultSession;
use crate::error::{Error, Result};
use crate::provider::SecretProvider;
use crate::value::{SecretValue, Selector, Stage, Version, VersionId, Versioned};

/// A provider over a Vault/OpenBao KV version 2 mount.
///
/// The secret id is the path inside the mount (`myapp/db` for `secret/data/myapp/db`). The value
/// is the secret's data as a JSON object (decode it with [`SecretCache::handle`](crate::SecretCache::handle)
/// into your type). Versions are KV version numbers, with their creation time.
///
/// - [`probe`](SecretProvider::probe) reads only the metadata endpoint (`current_version`): an
///   unchanged secret costs no data read. A policy that allows reading the data but not the
///   metadata still works: the cache then fetches.
/// - [`Stage::Previous`] selects the newest earlier version that is neither deleted nor destroyed,
///   so a handle's dual-read and a pool's fallback have the real previous value.
/// - 404 → not found; 403 → access denied; sealed, 5xx, unreachable → transient; 429 → throttled.
#[derive(Debug, Clone)]
pub struct VaultKvProvider {
    session: VaultSession,
    mount: String,
}

use vaultrs::api::kv2::responses::{ReadSecretMetadataResponse as Metadata, ReadSecretResponse};

fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

/// Whether a KV version is neither deleted nor destroyed.
pub(crate) fn is_live(deletion_time: &str, destroyed: bool) -> bool {
    deletion_time.is_empty() && !destroyed
}

/// The newest version before the current one that is neither deleted nor destroyed.
fn previous_version(metadata: &Metadata) -> Option<u64> {
    metadata
        .versions
        .iter()
        .filter_map(|(number, meta)| {
            let number: u64 = number.parse().ok()?;
            (number < metadata.current_version && is_live(&meta.deletion_time, meta.destroyed))
                .then_some(number)
        })
        .max()
}

/// Version `version` (the latest for `None`) of the entry at `path` in KV v2 mount `mount`, with
/// its version metadata (which vaultrs's `kv2::read` drops).
pub(crate) async fn read_version(
    session: &VaultSession,
    mount: &str,
    path: &str,
    version: Option<u64>,
) -> Result<ReadSecretResponse> {
    let what = format!("{mount}/data/{path}");
    session
        .call(&what, |client| async move {
            let endpoint = vaultrs::api::kv2::requests::ReadSecretRequest {
                mount: mount.to_owned(),
                path: path.to_owned(),
                version,
            };
            vaultrs::api::exec_with_result(&client, endpoint).await
        })
        .await
}

/// The metadata of the entry at `path` in KV v2 mount `mount`.
pub(crate) async fn read_metadata(
    session: &VaultSession,
    mount: &str,
    path: &str,
) -> Result<Metadata> {
    let what = format!("{mount}/metadata/{path}");
    session
        .call(&what, |client| async move {
            vaultrs::kv2::read_metadata(&client, mount, path).await
        })
        .await
}

impl VaultKvProvider {
    /// A provider for the KV v2 engine mounted at `mount` (such as `secret`).
    pub fn new(session: VaultSession, mount: impl Into<String>) -> Self {
        VaultKvProvider {
            session,
            mount: mount.into(),
        }
    }

    async fn metadata(&self, id: &str) -> Result<Metadata> {
        read_metadata(&self.session, &self.mount, vault_path(id)?).await
    }

    /// Which version number `selector` means, `None` for the latest.
    async fn resolve(&self, id: &str, selector: &Selector) -> Result<Option<u64>> {
        match selector {
            Selector::Current | Selector::Stage(Stage::Current) => Ok(None),
            Selector::Version(version) => version
                .as_str()
                .parse()
                .map(Some)
                .map_err(|_| Error::invalid_request(id, "a KV version id is a version number")),
            Selector::Stage(Stage::Previous) => {
                let metadata = self.metadata(id).await?;
                previous_version(&metadata)
                    .map(Some)
                    .ok_or_else(|| Error::not_found(id).with_message("no earlier live version"))
            }
            Selector::Stage(other) => {
                Err(Error::not_found(id).with_message(format!("KV v2 has no stage `{other}`")))
            }
        }
    }
}

#[async_trait]
impl SecretProvider for VaultKvProvider {
    fn name(&self) -> &str {
        "vault-kv2"
    }

    async fn fetch(&self, id: &str, selector: &Selector) -> Result<Versioned<SecretValue>> {
        let version = self.resolve(id, selector).await?;
        let read = read_version(&self.session, &self.mount, vault_path(id)?, version).await?;
        let metadata = &read.metadata;
        if !is_live(&metadata.deletion_time, metadata.destroyed) || read.data.is_null() {
            return Err(Error::not_found(id).with_message(format!(
                "version {} is deleted or destroyed",
                metadata.version
            )));
        }
        let value = SecretValue::text(read.data.to_string());
        let mut stages = Vec::new();
        if version.is_none() {
            stages.push(Stage::Current);
        }
        let version = Version {
            id: VersionId::new(metadata.version.to_string()),
            stages,
            created_at: parse_time(&metadata.created_time),
            lease: None,
            next_rotation: None,
        };
        Ok(Versioned::new(value, version))
    }

    async fn probe(&self, id: &str, selector: &Selector) -> Result<Option<VersionId>> {
        let number = match selector {
            Selector::Current | Selector::Stage(Stage::Current) => {
                self.metadata(id).await?.current_version
            }
            Selector::Stage(Stage::Previous) => {
                let metadata = self.metadata(id).await?;
                previous_version(&metadata)
                    .ok_or_else(|| Error::not_found(id).with_message("no earlier live version"))?
            }
            _ => return Ok(None),
        };
        Ok(Some(VersionId::new(number.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_skips_deleted_and_destroyed_versions() {
        let json = serde_json::json!({
            "cas_required": false, "created_time": "2026-01-01T00:00:00Z", "current_version": 5,
            "delete_version_after": "0s", "max_versions": 0, "oldest_version": 1,
            "updated_time": "2026-01-02T00:00:00Z", "custom_metadata": null,
            "versions": {
                "1": {"created_time": "2026-01-01T00:00:00Z", "deletion_time": "", "destroyed": false},
                "2": {"created_time": "2026-01-01T00:00:00Z", "deletion_time": "", "destroyed": false},
                "3": {"created_time": "2026-01-01T00:00:00Z", "deletion_time": "", "destroyed": true},
                "4": {"created_time": "2026-01-01T00:00:00Z", "deletion_time": "2026-01-02T00:00:00Z", "destroyed": false},
                "5": {"created_time": "2026-01-01T00:00:00Z", "deletion_time": "", "destroyed": false}
            }
        });
        let metadata: Metadata = serde_json::from_value(json).unwrap();
        assert_eq!(previous_version(&metadata), Some(2));
        assert!(parse_time("2026-11-23T07:05:20.123456789Z").is_some());
    }
}
