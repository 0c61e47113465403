//! Vault and OpenBao: a session that keeps its token alive, KV v2, database credentials and PKI
//! certificates, all through one `vaultrs` client, configured once ([`VaultConfig`]) or handed in
//! ([`VaultSession::from_client`]).

mod auth;
mod client;
mod config;
mod database;
mod keep_alive;
mod kv;
mod path;
mod pki;
mod session;

pub use self::{
    auth::VaultAuth,
    config::VaultConfig,
    database::VaultDatabaseProvider,
    kv::VaultKvProvider,
    pki::{PkiRequest, VaultPkiProvider},
    session::{SessionEvent, VaultSession},
};
// For the rotation engine's Vault store.
#[cfg(feature = "rotation")]
pub(crate) use self::{
    kv::{is_live, read_metadata, read_version},
    path::vault_path,
};
