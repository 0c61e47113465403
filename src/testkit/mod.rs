//! Throwaway servers for tests: PostgreSQL, OpenBao, moto, Redis and Prometheus, each a child process on a
//! free loopback port in a temp dir, stopped on drop.
//!
//! A missing binary is an error that says how to install it ([`TestkitError::MissingBinary`]),
//! so a test that needs a server fails loudly rather than skipping. The start functions block
//! (for up to a minute while the server comes up): call them from a test's body, or from
//! `tokio::task::spawn_blocking`.

mod moto;
mod openbao;
mod postgres;
mod process;
mod prometheus;
mod redis;

pub use self::{
    moto::{MotoServer, find_moto},
    openbao::{OpenBaoServer, find_bao},
    postgres::{PostgresServer, find_pg_bin},
    prometheus::{PrometheusServer, find_prometheus},
    redis::{RedisServer, find_redis},
};

/// Why a test server could not be started or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// The server's binary is not installed.
    #[error("{what} not found: {hint}")]
    MissingBinary {
        /// Which binary.
        what: &'static str,
        /// How to install it.
        hint: &'static str,
    },
    /// The server did not come up.
    #[error("{what} failed to start: {detail}")]
    Startup {
        /// Which server.
        what: &'static str,
        /// What happened, with the end of its log.
        detail: String,
    },
    /// A command of a server's CLI failed.
    #[error("{0}")]
    Cli(String),
    /// A statement run through `psql` failed.
    #[error("SQL failed: {0}")]
    Sql(String),
    /// An I/O error while preparing or running the server.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl TestkitError {
    pub(crate) fn io(context: &'static str, source: std::io::Error) -> Self {
        TestkitError::Io { context, source }
    }
}
