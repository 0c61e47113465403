//! The rotation-aware pools (sqlx, deadpool-postgres) against a real PostgreSQL whose
//! passwords are rotated from outside, and how each drains old connections.
//!
//! One binary for these runs: they share servers' fixtures, and each test binary links the
//! whole crate.

#[path = "../common/mod.rs"]
mod common;
#[path = "../pg_common/mod.rs"]
mod pg_common;

mod deadpool;
mod drain;
mod sqlx;
