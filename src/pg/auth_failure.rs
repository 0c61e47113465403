use std::error::Error as StdError;

/// SQLSTATE `28P01`: the password (or SCRAM/MD5 exchange) was rejected.
pub const INVALID_PASSWORD: &str = "28P01";
/// SQLSTATE `28000`: the login was rejected for another reason (no such role, `pg_hba.conf`).
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";

/// Decides which connection errors mean "these credentials no longer work", so that the pool
/// refreshes them and retries instead of failing the caller.
///
/// The default, [`SqlStatePolicy`], looks for SQLSTATE `28P01` and `28000` anywhere in the error's
/// source chain. Implement this trait when something between you and the database reports an
/// authentication failure differently (a proxy with its own codes or messages).
///
/// # Example
///
/// A proxy that closes the connection with a message instead of a SQLSTATE:
///
/// ```
/// use std::error::Error;
/// use credswap::pg::{AuthFailurePolicy, SqlStatePolicy};
///
/// struct BehindProxy;
///
/// impl AuthFailurePolicy for BehindProxy {
///     fn is_auth_failure(&self, sqlstate: Option<&str>, error: &(dyn Error + 'static)) -> bool {
///         SqlStatePolicy::default().is_auth_failure(sqlstate, error)
///             || error.to_string().contains("proxy: authentication failed")
///     }
/// }
///
/// let err = std::io::Error::other("proxy: authentication failed for app");
/// assert!(BehindProxy.is_auth_failure(None, &err));
/// ```
pub trait AuthFailurePolicy: Send + Sync + 'static {
    /// Whether `error` (whose SQLSTATE, if any was found in its source chain, is `sqlstate`) is an
    /// authentication failure.
    fn is_auth_failure(&self, sqlstate: Option<&str>, error: &(dyn StdError + 'static)) -> bool;
}

// Pools hold an `Arc<dyn AuthFailurePolicy>`.
const _: Option<&dyn AuthFailurePolicy> = None;

/// The default policy: an error is an authentication failure when its SQLSTATE is one of a set of
/// codes, `28P01` and `28000` unless told otherwise.
#[derive(Debug, Clone)]
pub struct SqlStatePolicy {
    codes: Vec<String>,
}

impl Default for SqlStatePolicy {
    fn default() -> Self {
        SqlStatePolicy {
            codes: vec![
                INVALID_PASSWORD.to_owned(),
                INVALID_AUTHORIZATION_SPECIFICATION.to_owned(),
            ],
        }
    }
}

impl SqlStatePolicy {
    /// Also treats `code` as an authentication failure.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.codes.push(code.into());
        self
    }
}

impl AuthFailurePolicy for SqlStatePolicy {
    fn is_auth_failure(&self, sqlstate: Option<&str>, _error: &(dyn StdError + 'static)) -> bool {
        sqlstate.is_some_and(|code| self.codes.iter().any(|c| c == code))
    }
}

/// The SQLSTATE of the first error in `error`'s source chain that carries one (sqlx or
/// tokio-postgres errors).
pub fn sqlstate(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        #[cfg(feature = "sqlx")]
        if let Some(sqlx_error) = e.downcast_ref::<sqlx::Error>() {
            if let Some(code) = sqlx_error.as_database_error().and_then(|d| d.code()) {
                return Some(code.into_owned());
            }
        }
        #[cfg(feature = "sqlx")]
        if let Some(db) = e.downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            return Some(db.code().to_owned());
        }
        #[cfg(feature = "deadpool")]
        if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
            if let Some(code) = pg.code() {
                return Some(code.code().to_owned());
            }
        }
        current = e.source();
    }
    None
}

/// Whether `policy` classifies `error` as an authentication failure.
#[cfg(any(feature = "sqlx", feature = "deadpool"))]
pub(crate) fn is_auth_failure(
    policy: &dyn AuthFailurePolicy,
    error: &(dyn StdError + 'static),
) -> bool {
    policy.is_auth_failure(sqlstate(error).as_deref(), error)
}
