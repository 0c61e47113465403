//! The rotation engine against real servers: with AWS Secrets Manager (moto), Vault KV v2
//! (OpenBao) and the in-memory store, each rotating a real PostgreSQL.
//!
//! One binary for these runs: they share servers' fixtures, and each test binary links the
//! whole crate.

#[path = "../common/mod.rs"]
mod common;
#[path = "../pg_common/mod.rs"]
mod pg_common;
#[path = "../rotation_common/mod.rs"]
mod rotation_common;
#[path = "../../examples/rotation_function.rs"]
mod rotation_function;

mod aws;
mod postgres;
mod vault;
