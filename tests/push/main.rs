//! Push invalidation against real brokers from the test kit: PostgreSQL `LISTEN`/`NOTIFY` and
//! Redis pub/sub. Latencies are printed (`--nocapture`), never asserted; counts are.
//!
//! One binary for these runs: they share servers' fixtures, and each test binary links the
//! whole crate.

#[path = "../common/mod.rs"]
mod common;
#[path = "../push_common/mod.rs"]
mod push_common;

mod postgres;
mod redis;
