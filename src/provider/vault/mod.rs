//! Vault and OpenBao: a session that keeps its token alive, KV v2 and database credentials.

mod database;
mod kv;
mod session;

pub use self::{
    database::VaultDatabaseProvider,
    kv::VaultKvProvider,
    session::{VaultAuth, VaultSession},
};
