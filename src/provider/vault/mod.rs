//! Vault and OpenBao: a session that keeps its token alive, KV v2 and database credentials, all
//! through one `vaultrs` client, configured once ([`VaultConfig`]) or handed in
//! ([`VaultSession::from_client`]).

mod auth;
mod client;
mod config;
mod database;
mod keep_alive;
mod kv;
mod path;
mod session;

pub use self::{
    auth::VaultAuth,
    config::VaultConfig,
    database::VaultDatabaseProvider,
    kv::VaultKvProvider,
    session::{SessionEvent, VaultSession},
};
pub(crate) use self::{
    kv::{is_live, read_metadata, read_version},
    path::vault_path,
};
