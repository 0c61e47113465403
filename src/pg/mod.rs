//! Rotation-aware PostgreSQL: credentials from a secret, pools that follow them.
//!
//! [`PgCredentials`] reads the database secrets of AWS Secrets Manager (the RDS JSON shape) and
//! Vault (`{username, password}`). [`RotatingPgPool`] (feature `sqlx`) and
//! [`RotatingConnect`] (feature `deadpool`) open new connections with the newest credentials, turn
//! an authentication failure into one coalesced refresh and a retry, and drain connections opened
//! with credentials that have been rotated away. Pools know handles, not providers.

mod classify;
mod credentials;
mod rotation;

#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
mod deadpool;
#[cfg(feature = "sqlx")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
mod sqlx;

pub use self::{
    classify::{
        AuthFailurePolicy, INVALID_AUTHORIZATION_SPECIFICATION, INVALID_PASSWORD, SqlStatePolicy,
        sqlstate,
    },
    credentials::PgCredentials,
    rotation::{PoolStats, RotationConfig},
};

#[cfg(feature = "deadpool")]
pub use self::deadpool::{PoolMonitor, RotatingConnect, RotatingDeadpoolBuilder};
#[cfg(feature = "sqlx")]
pub use self::sqlx::{RotatingPgPool, RotatingPgPoolBuilder, apply_credentials};
