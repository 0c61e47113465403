use std::collections::HashMap;
use std::time::SystemTime;

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;

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

/// `data` of a KV v2 metadata response.
#[derive(Debug, Deserialize)]
struct Metadata {
    current_version: u64,
    #[serde(default)]
    versions: HashMap<String, VersionMetadata>,
}

#[derive(Debug, Deserialize)]
struct VersionMetadata {
    #[serde(default)]
    deletion_time: String,
    #[serde(default)]
    destroyed: bool,
}

/// `data` of a KV v2 read response.
#[derive(Deserialize)]
struct Read {
    #[serde(default)]
    data: serde_json::Value,
    metadata: ReadMetadata,
}

#[derive(Deserialize)]
struct ReadMetadata {
    version: u64,
    #[serde(default)]
    created_time: String,
    #[serde(default)]
    deletion_time: String,
    #[serde(default)]
    destroyed: bool,
}

fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

fn is_live(deletion_time: &str, destroyed: bool) -> bool {
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

/// The `data` field of a Vault response, parsed as `T`, never echoing it in an error.
fn data_of<T: serde::de::DeserializeOwned>(path: &str, response: serde_json::Value) -> Result<T> {
    let data = match response {
        serde_json::Value::Object(mut object) => object.remove("data"),
        _ => None,
    };
    data.and_then(|data| serde_json::from_value(data).ok())
        .ok_or_else(|| Error::invalid_request(path, "Vault's response has an unexpected shape"))
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
        let path = format!("{}/metadata/{}", self.mount, vault_path(id)?);
        let response = self.session.request(Method::GET, &path, None).await?;
        data_of(&path, response)
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
        let path = format!("{}/data/{}", self.mount, vault_path(id)?);
        let query = match version {
            Some(number) => format!("{path}?version={number}"),
            None => path.clone(),
        };
        let response = self.session.request(Method::GET, &query, None).await?;
        let read: Read = data_of(&path, response)?;
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
        let json = serde_json::json!({"data": {
            "cas_required": false, "created_time": "2026-01-01T00:00:00Z", "current_version": 5,
            "versions": {
                "1": {"created_time": "2026-01-01T00:00:00Z", "deletion_time": "", "destroyed": false},
                "2": {"created_time": "2026-01-01T00:00:00Z", "deletion_time": "", "destroyed": false},
                "3": {"created_time": "2026-01-01T00:00:00Z", "deletion_time": "", "destroyed": true},
                "4": {"created_time": "2026-01-01T00:00:00Z", "deletion_time": "2026-01-02T00:00:00Z", "destroyed": false},
                "5": {"created_time": "2026-01-01T00:00:00Z", "deletion_time": "", "destroyed": false}
            }
        }});
        let metadata: Metadata = data_of("secret/metadata/app", json).unwrap();
        assert_eq!(previous_version(&metadata), Some(2));
        assert!(parse_time("2026-11-23T07:05:20.123456789Z").is_some());
        let err = data_of::<Metadata>("secret/metadata/app", serde_json::json!({"data": "s3cr3t"}))
            .unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
    }
}
