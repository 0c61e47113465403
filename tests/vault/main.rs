//! The Vault providers and session against a real OpenBao (and, for database credentials, a
//! real PostgreSQL), both started by the test kit.
//!
//! One binary for these runs: they share servers' fixtures, and each test binary links the
//! whole crate.

#[path = "../common/mod.rs"]
mod common;
#[path = "../pg_common/mod.rs"]
mod pg_common;
#[path = "../vault_common/mod.rs"]
mod vault_common;

mod providers;
mod session;
