//! Vault / OpenBao KV v2 as a rotation store.
//!
//! KV v2 has versions but no stages, and every reader of a path reads its latest version. So the
//! pending credential must not be written to the path itself: a reader would pick up a password
//! the database does not accept yet. The scheme:
//!
//! - **The pending slot** is a separate KV entry, `<mount>/data/<prefix><path>` (prefix
//!   `credswap-pending/` by default), holding `{"token", "base_version", "value"}`. Readers' policies
//!   grant `<path>` and never the prefix, so no reader can see an untested credential.
//! - **`create`** writes the slot with `cas=0` ("only if it does not exist"): of two writers, one
//!   wins and the other gets [`ErrorKind::Conflict`]; the same token writing again is a re-run and
//!   succeeds. The slot records the version of `<path>` it was made from (`base_version`).
//! - **A rotation is under way** while the slot exists and names a token that is not finished.
//! - **`finish`** writes the value to `<path>` with `cas=<base_version>`: if anyone wrote the path
//!   since `create` read it (another finisher, an operator), the write is refused with
//!   [`ErrorKind::Conflict`] instead of overwriting (and the rotator puts the database back on the
//!   credential now current), and records the token in the path's custom metadata
//!   (`credswap-rotation-token`, `credswap-rotation-version`). The slot stays as the promotion's
//!   mark until the rotation's hooks ran; then it is deleted, or, when that fails (a 503, a policy
//!   without `delete`), marked completed, and the next `create` takes it over with check-and-set.
//!   Each step is checked on a re-run: a finish that crashed after the write recognises its own
//!   version (`base_version + 1` with the slot's value) and completes the rest, hooks included.
//! - **Rollback and abort** delete the slot (all its versions, through the metadata endpoint).
//! - **The rotation lock and the audit trail** name the secret `<mount>/<path>`, the path without
//!   leading, trailing or doubled slashes, so two spellings of one path take one lock.
//!
//! The previous version is the newest live KV version before the current one, as
//! [`VaultKvProvider`](crate::provider::VaultKvProvider) reads it.
//!
//! Policy for the rotator (mount `secret`, secrets under `myapp/`):
//!
//! ```hcl
//! path "secret/data/myapp/*"                      { capabilities = ["create", "read", "update"] }
//! path "secret/metadata/myapp/*"                  { capabilities = ["read", "update"] }
//! path "secret/data/credswap-pending/myapp/*"     { capabilities = ["create", "read", "update"] }
//! path "secret/metadata/credswap-pending/myapp/*" { capabilities = ["read", "delete"] }
//! ```
//!
//! Without `delete`, finished slots are marked completed instead of removed (rollbacks then leave
//! theirs for the next rotation to take over).

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::RotationStore;
use crate::error::{Error, ErrorKind, Result};
use crate::provider::vault::{is_live, read_metadata, read_version};
use crate::provider::{VaultSession, vault_path};
use crate::rotation::strategy::parse_json;
use crate::value::{SecretValue, Stage, Version, VersionId, Versioned};

const TOKEN_KEY: &str = "credswap-rotation-token";
const VERSION_KEY: &str = "credswap-rotation-version";

/// A [`RotationStore`] over a Vault/OpenBao KV version 2 mount; see the module documentation
/// above for how it keeps untested credentials from readers and lets one writer win.
///
/// Secret ids are paths inside the mount (`myapp/db`), as for
/// [`VaultKvProvider`](crate::provider::VaultKvProvider), which consumers use to read them.
#[derive(Debug, Clone)]
pub struct VaultKvRotationStore {
    session: VaultSession,
    mount: String,
    pending_prefix: String,
}

/// The pending slot's content.
struct Slot {
    token: String,
    base_version: u64,
    value: Value,
    /// The rotation finished and its hooks ran, but the slot could not be deleted.
    completed: bool,
    /// The slot's own KV version, for check-and-set.
    slot_version: u64,
}

/// What the metadata endpoint says about a path.
struct Metadata {
    current_version: u64,
    live_versions: Vec<u64>,
    custom: HashMap<String, String>,
}

impl Metadata {
    /// Whether `token` is the last rotation recorded as finished, whatever was written since.
    fn recorded_finished(&self, token: &str) -> bool {
        self.custom.get(TOKEN_KEY).map(String::as_str) == Some(token)
    }

    fn finished_token(&self) -> Option<&str> {
        let version = self.custom.get(VERSION_KEY)?;
        (*version == self.current_version.to_string())
            .then(|| self.custom.get(TOKEN_KEY).map(String::as_str))
            .flatten()
    }
}

impl VaultKvRotationStore {
    /// A store for the KV v2 engine mounted at `mount` (such as `secret`).
    pub fn new(session: VaultSession, mount: impl Into<String>) -> Self {
        VaultKvRotationStore {
            session,
            mount: mount.into().trim_matches('/').to_owned(),
            pending_prefix: "credswap-pending/".to_owned(),
        }
    }

    /// Where pending slots live inside the mount (default `credswap-pending/`): a prefix that
    /// readers' policies do not grant.
    pub fn pending_prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.pending_prefix = format!("{}/", prefix.trim_matches('/'));
        self
    }

    /// Where `id`'s pending slot lives in the mount.
    fn slot_path(&self, id: &str) -> Result<String> {
        Ok(format!("{}{}", self.pending_prefix, vault_path(id)?))
    }

    async fn metadata(&self, id: &str) -> Result<Metadata> {
        let metadata = read_metadata(&self.session, &self.mount, vault_path(id)?).await?;
        let live_versions = metadata
            .versions
            .iter()
            .filter(|(_, meta)| is_live(&meta.deletion_time, meta.destroyed))
            .filter_map(|(number, _)| number.parse().ok())
            .collect();
        Ok(Metadata {
            current_version: metadata.current_version,
            live_versions,
            custom: metadata.custom_metadata.unwrap_or_default(),
        })
    }

    /// Version `version` (the latest for `None`) of the entry at `path` in the mount.
    async fn read(&self, path: &str, version: Option<u64>) -> Result<Option<(Value, Version)>> {
        let read = match read_version(&self.session, &self.mount, path, version).await {
            Ok(read) => read,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        if read.data.is_null() {
            return Ok(None); // deleted or destroyed
        }
        let metadata = &read.metadata;
        let version = Version {
            id: VersionId::new(metadata.version.to_string()),
            stages: if version.is_none() {
                vec![Stage::Current]
            } else {
                Vec::new()
            },
            created_at: humantime::parse_rfc3339_weak(&metadata.created_time).ok(),
            lease: None,
            next_rotation: None,
        };
        Ok(Some((read.data, version)))
    }

    async fn slot(&self, id: &str) -> Result<Option<Slot>> {
        let Some((data, version)) = self.read(&self.slot_path(id)?, None).await? else {
            return Ok(None);
        };
        let (Some(token), Some(base_version)) =
            (data["token"].as_str(), data["base_version"].as_u64())
        else {
            return Err(Error::decode(
                id,
                "the pending slot lacks `token` or `base_version`",
            ));
        };
        Ok(Some(Slot {
            token: token.to_owned(),
            base_version,
            value: data["value"].clone(),
            completed: data["completed"].as_bool().unwrap_or(false),
            slot_version: version.id.as_str().parse().unwrap_or(0),
        }))
    }

    /// Removes a finished rotation's slot: deleted, or where the policy does not allow that,
    /// marked completed (a write of the same slot, which the rotator may always do).
    async fn clear_slot(&self, id: &str, slot: &Slot) -> Result<()> {
        let slot_path = self.slot_path(id)?;
        let (mount, slot_path) = (self.mount.as_str(), slot_path.as_str());
        let deleted =
            self.session
                .call(
                    &format!("{mount}/metadata/{slot_path}"),
                    |client| async move {
                        vaultrs::kv2::delete_metadata(&client, mount, slot_path).await
                    },
                )
                .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
            Err(error) if error.kind() == ErrorKind::AccessDenied => {
                let completed = json!({
                    "token": slot.token,
                    "base_version": slot.base_version,
                    "value": slot.value,
                    "completed": true,
                });
                match self
                    .write(id, &self.slot_path(id)?, slot.slot_version, completed)
                    .await
                {
                    Ok(_) => Ok(()),
                    // Replaced meanwhile: the slot is no longer this rotation's.
                    Err(lost) if lost.kind() == ErrorKind::Conflict => Ok(()),
                    Err(_) => Err(error),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Writes `data` at `path` with check-and-set `cas`; the new version number.
    async fn write(&self, id: &str, path: &str, cas: u64, data: Value) -> Result<u64> {
        let mount = self.mount.as_str();
        let cas = u32::try_from(cas)
            .map_err(|_| Error::invalid_request(id, "a KV version beyond check-and-set's range"))?;
        let data = &data;
        let written = self
            .session
            .call(&format!("{mount}/data/{path}"), |client| async move {
                let options = vaultrs::api::kv2::requests::SetSecretRequestOptions { cas };
                vaultrs::kv2::set_with_options(&client, mount, path, data, options).await
            })
            .await;
        match written {
            Ok(written) => Ok(written.version),
            Err(error) if is_cas_mismatch(&error) => Err(Error::new(ErrorKind::Conflict)
                .with_id(id)
                .with_message(format!(
                    "check-and-set lost writing {path}: another writer got there first"
                ))),
            Err(error) => Err(error),
        }
    }

    /// Whether `token`'s value is the path's current version: recorded in the custom metadata, or
    /// (a finish that crashed after its write) the version right after the slot's base, holding
    /// the slot's value.
    /// Whether the rotation `slot` holds has finished (it may have been written over since), so the
    /// slot is cleanup left to do and the next rotation may take it over.
    async fn slot_finished(&self, id: &str, slot: &Slot) -> Result<bool> {
        if slot.completed {
            return Ok(true);
        }
        let metadata = self.metadata(id).await?;
        Ok(metadata.recorded_finished(&slot.token)
            || self.finished(id, &slot.token, &metadata).await?.is_some())
    }

    async fn finished(&self, id: &str, token: &str, metadata: &Metadata) -> Result<Option<u64>> {
        if metadata.finished_token() == Some(token) {
            return Ok(Some(metadata.current_version));
        }
        let Some(slot) = self.slot(id).await?.filter(|slot| slot.token == token) else {
            return Ok(None);
        };
        if metadata.current_version != slot.base_version + 1 {
            return Ok(None);
        }
        let written = self
            .read(vault_path(id)?, Some(metadata.current_version))
            .await?;
        Ok(written
            .filter(|(data, _)| *data == slot.value)
            .map(|_| metadata.current_version))
    }
}

/// Vault answers a lost check-and-set with 400 and "check-and-set parameter did not match".
fn is_cas_mismatch(error: &Error) -> bool {
    error.kind() == ErrorKind::InvalidRequest
        && error.message().is_some_and(|m| m.contains("check-and-set"))
}

fn to_value(id: &str, value: &SecretValue) -> Result<Value> {
    match parse_json(id, value)? {
        object @ Value::Object(_) => Ok(object),
        _ => Err(Error::invalid_request(
            id,
            "a KV value must be a JSON object",
        )),
    }
}

fn from_value(value: &Value) -> SecretValue {
    SecretValue::text(value.to_string())
}

#[async_trait]
impl RotationStore for VaultKvRotationStore {
    fn name(&self) -> &str {
        "vault-kv2"
    }

    async fn canonical_id(&self, id: &str) -> Result<String> {
        Ok(format!("{}/{}", self.mount, vault_path(id)?))
    }

    async fn current(&self, id: &str) -> Result<Versioned<SecretValue>> {
        let path = vault_path(id)?;
        let (data, version) = self.read(path, None).await?.ok_or_else(|| {
            Error::not_found(id).with_message(format!(
                "nothing at {}/data/{path} (never written, deleted or destroyed)",
                self.mount
            ))
        })?;
        Ok(Versioned::new(from_value(&data), version))
    }

    async fn previous(&self, id: &str) -> Result<Option<Versioned<SecretValue>>> {
        let metadata = self.metadata(id).await?;
        let Some(previous) = metadata
            .live_versions
            .iter()
            .copied()
            .filter(|v| *v < metadata.current_version)
            .max()
        else {
            return Ok(None);
        };
        Ok(self
            .read(vault_path(id)?, Some(previous))
            .await?
            .map(|(data, mut version)| {
                version.stages = vec![Stage::Previous];
                Versioned::new(from_value(&data), version)
            }))
    }

    async fn pending_token(&self, id: &str) -> Result<Option<String>> {
        let Some(slot) = self.slot(id).await? else {
            return Ok(None);
        };
        if slot.completed {
            return Ok(None);
        }
        // A slot whose rotation finished is cleanup left to do, not a rotation under way.
        Ok((!self.slot_finished(id, &slot).await?).then_some(slot.token))
    }

    async fn read_pending(&self, id: &str, token: &str) -> Result<Option<SecretValue>> {
        Ok(self
            .slot(id)
            .await?
            .filter(|slot| slot.token == token && !slot.completed)
            .map(|slot| from_value(&slot.value)))
    }

    async fn write_pending(
        &self,
        id: &str,
        token: &str,
        value: &SecretValue,
        base: &VersionId,
    ) -> Result<()> {
        let conflict = |message: String| {
            Error::new(ErrorKind::Conflict)
                .with_id(id)
                .with_message(message)
        };
        // The slot's version to replace: 0 ("only if it does not exist"), or that of a finished
        // rotation's slot left behind (its cleanup failed), which a new rotation takes over.
        let mut cas = 0;
        if let Some(slot) = self.slot(id).await? {
            let finished = self.slot_finished(id, &slot).await?;
            if slot.token == token && !finished {
                return Ok(());
            }
            if !finished {
                return Err(conflict(format!(
                    "rotation {} is under way; not writing pending {token}",
                    slot.token
                )));
            }
            cas = slot.slot_version;
        }
        let base_version: u64 = base
            .as_str()
            .parse()
            .map_err(|_| Error::invalid_request(id, "a KV version id is a version number"))?;
        if self.metadata(id).await?.current_version != base_version {
            return Err(conflict(format!(
                "version {base} is no longer current; not writing pending {token}"
            )));
        }
        let slot = json!({
            "token": token,
            "base_version": base_version,
            "value": to_value(id, value)?,
        });
        match self.write(id, &self.slot_path(id)?, cas, slot).await {
            Ok(_) => Ok(()),
            // Lost the creation race: fine if the winner was an earlier run of this token.
            Err(error) if error.kind() == ErrorKind::Conflict => match self.slot(id).await? {
                Some(slot) if slot.token == token => Ok(()),
                Some(slot) => Err(conflict(format!(
                    "rotation {} is under way; not writing pending {token}",
                    slot.token
                ))),
                None => Err(error),
            },
            Err(error) => Err(error),
        }
    }

    async fn promote(&self, id: &str, token: &str) -> Result<VersionId> {
        let path = vault_path(id)?;
        let metadata = self.metadata(id).await?;
        let version = match self.finished(id, token, &metadata).await? {
            Some(version) => version,
            None => {
                let slot = self
                    .slot(id)
                    .await?
                    .filter(|slot| slot.token == token && !slot.completed)
                    .ok_or_else(|| {
                        Error::not_found(id)
                            .with_message(format!("no pending version for token {token}"))
                    })?;
                if metadata.current_version != slot.base_version {
                    return Err(Error::new(ErrorKind::Conflict)
                        .with_id(id)
                        .with_message(format!(
                            "the secret was written during the rotation: version {} is current, \
                             pending {token} was made from version {}",
                            metadata.current_version, slot.base_version
                        )));
                }
                // Refused if anyone writes the path between that read and this write.
                self.write(id, path, slot.base_version, slot.value).await?
            }
        };
        if metadata.finished_token() != Some(token) || metadata.current_version != version {
            let mut custom = metadata.custom;
            let _ = custom.insert(TOKEN_KEY.to_owned(), token.to_owned());
            let _ = custom.insert(VERSION_KEY.to_owned(), version.to_string());
            let mount = self.mount.as_str();
            let custom = &custom;
            self.session
                .call(&format!("{mount}/metadata/{path}"), |client| async move {
                    let mut request =
                        vaultrs::api::kv2::requests::SetSecretMetadataRequest::builder();
                    let _ = request.custom_metadata(custom.clone());
                    vaultrs::kv2::set_metadata(&client, mount, path, Some(&mut request)).await
                })
                .await?;
        }
        // The slot stays until `complete`: it marks a rotation whose hooks may not have run.
        Ok(VersionId::new(version.to_string()))
    }

    async fn incomplete_token(&self, id: &str) -> Result<Option<String>> {
        let Some(slot) = self.slot(id).await?.filter(|slot| !slot.completed) else {
            return Ok(None);
        };
        let metadata = self.metadata(id).await?;
        // Finished, and still the path's current version: a later write would have moved on.
        Ok(match self.finished(id, &slot.token, &metadata).await? {
            Some(version) if version == metadata.current_version => Some(slot.token),
            _ => None,
        })
    }

    async fn complete(&self, id: &str, token: &str) -> Result<()> {
        match self.slot(id).await? {
            Some(slot) if slot.token == token && !slot.completed => {
                let metadata = self.metadata(id).await?;
                if self.finished(id, token, &metadata).await?.is_some() {
                    self.clear_slot(id, &slot).await?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn remove_pending(&self, id: &str, token: &str) -> Result<()> {
        match self.slot(id).await? {
            Some(slot) if slot.token == token && !slot.completed => {
                self.clear_slot(id, &slot).await
            }
            _ => Ok(()),
        }
    }

    async fn is_current(&self, id: &str, token: &str) -> Result<bool> {
        let metadata = self.metadata(id).await?;
        Ok(self.finished(id, token, &metadata).await?.is_some())
    }
}
