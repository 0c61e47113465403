//! Rotation-aware PostgreSQL: credentials from a secret, pools that follow them.
//!
//! [`PgCredentials`] reads the database secrets of AWS Secrets Manager (the RDS JSON shape) and
//! Vault (`{username, password}`). [`RotatingPgPool`] (feature `sqlx`) and
//! [`RotatingDeadpoolBuilder`] (feature `deadpool`) open new connections with the newest
//! credentials, turn an authentication failure into one coalesced refresh and a retry, and drain
//! connections opened with credentials that have been rotated away — each version at its own
//! deadline, logins in flight at a rotation included. Both share one mechanism and one
//! [`RetryAndDrain`], and report through a [`PoolMonitor`]. Pools know handles, not providers.

mod auth_failure;
#[cfg(any(feature = "deadpool", feature = "rotation"))]
mod connection;
mod credentials;
// The pools' shared mechanism (the rotation engine uses the credentials types alone).
#[cfg(any(feature = "sqlx", feature = "deadpool"))]
mod config;
#[cfg(any(feature = "sqlx", feature = "deadpool"))]
mod drain;
#[cfg(any(feature = "sqlx", feature = "deadpool"))]
mod events;
#[cfg(any(feature = "sqlx", feature = "deadpool"))]
pub(crate) mod monitor;
#[cfg(any(feature = "sqlx", feature = "deadpool"))]
mod rotation;

#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
mod deadpool;
#[cfg(feature = "sqlx")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
mod sqlx;

#[cfg(feature = "rotation")]
pub(crate) use self::connection::with_credentials;
pub use self::{
    auth_failure::{
        AuthFailurePolicy, INVALID_AUTHORIZATION_SPECIFICATION, INVALID_PASSWORD, SqlStatePolicy,
        sqlstate,
    },
    credentials::PgCredentials,
};
#[cfg(any(feature = "sqlx", feature = "deadpool"))]
pub use self::{
    config::{Endpoint, RetryAndDrain},
    events::{ConnectionTiming, Connections, PoolEvent, PoolStats, RotationRecord},
    monitor::PoolMonitor,
};

#[cfg(feature = "deadpool")]
pub use self::deadpool::{RotatingConnect, RotatingDeadpoolBuilder};
#[cfg(feature = "sqlx")]
pub use self::sqlx::{RotatingPgPool, RotatingPgPoolBuilder};
