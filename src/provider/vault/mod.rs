//! Vault and OpenBao: a session that keeps its token alive, KV v2 and database credentials, all
//! over one HTTP client configured once ([`VaultConfig`]).

mod auth;
mod config;
mod database;
mod http;
mod keep_alive;
mod kv;
mod path;
mod session;

pub(crate) use self::path::vault_path;
pub use self::{
    auth::VaultAuth,
    config::VaultConfig,
    database::VaultDatabaseProvider,
    kv::VaultKvProvider,
    session::{SessionEvent, VaultSession},
};
