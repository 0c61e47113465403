use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

/// Credentials for a PostgreSQL login, as secret stores hold them.
///
/// Deserializes from the JSON of an AWS RDS / Secrets Manager database secret
/// (`engine`, `host`, `port`, `dbname`, `username`, `password`, optional `ssl_mode`) and from the
/// `{username, password}` of Vault's database engine; fields the secret lacks (host, port, database)
/// come from the pool's own connection settings. `port` may be a number or a string.
///
/// The password is a [`SecretString`]: `Debug` shows `[REDACTED]`.
///
/// ```
/// use credswap::pg::PgCredentials;
///
/// let rds: PgCredentials = serde_json::from_str(
///     r#"{"engine": "postgres", "host": "db.internal", "port": "5432",
///         "dbname": "orders", "username": "app", "password": "s3cr3t"}"#,
/// ).unwrap();
/// assert_eq!(rds.port, Some(5432));
/// assert!(!format!("{rds:?}").contains("s3cr3t"));
///
/// let vault: PgCredentials =
///     serde_json::from_str(r#"{"username": "v-app-x1", "password": "s3cr3t"}"#).unwrap();
/// assert_eq!(vault.host, None);
/// ```
#[derive(Clone, Deserialize)]
pub struct PgCredentials {
    /// The role to log in as.
    pub username: String,
    /// Its password.
    pub password: SecretString,
    /// Host, when the secret names one.
    #[serde(default)]
    pub host: Option<String>,
    /// Port, when the secret names one.
    #[serde(default, deserialize_with = "port_from_number_or_string")]
    pub port: Option<u16>,
    /// Database name, when the secret names one (`dbname`, or `database`).
    #[serde(default, alias = "database")]
    pub dbname: Option<String>,
    /// The engine label of RDS secrets (`postgres`), informational.
    #[serde(default)]
    pub engine: Option<String>,
    /// libpq-style SSL mode (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`).
    #[serde(default, alias = "sslmode")]
    pub ssl_mode: Option<String>,
}

impl PgCredentials {
    /// Credentials from a username and password only.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        PgCredentials {
            username: username.into(),
            password: SecretString::from(password.into()),
            host: None,
            port: None,
            dbname: None,
            engine: None,
            ssl_mode: None,
        }
    }

    /// Whether two credentials log in the same way (same user, password and target).
    pub fn same_login(&self, other: &PgCredentials) -> bool {
        self.username == other.username
            && self.password.expose_secret() == other.password.expose_secret()
            && self.host == other.host
            && self.port == other.port
            && self.dbname == other.dbname
    }
}

impl fmt::Debug for PgCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCredentials")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("ssl_mode", &self.ssl_mode)
            .finish()
    }
}

fn port_from_number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u16),
        Text(String),
    }
    match Option::<Port>::deserialize(d)? {
        None => Ok(None),
        Some(Port::Number(n)) => Ok(Some(n)),
        Some(Port::Text(text)) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("`port` is not a port number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rds_and_vault_shapes() {
        let rds: PgCredentials = serde_json::from_str(
            r#"{"engine":"postgres","host":"h","port":6543,"dbname":"d","username":"u","password":"p","ssl_mode":"require"}"#,
        )
        .unwrap();
        assert_eq!(rds.port, Some(6543));
        assert_eq!(rds.ssl_mode.as_deref(), Some("require"));
        assert_eq!(rds.engine.as_deref(), Some("postgres"));
        let err = serde_json::from_str::<PgCredentials>(
            r#"{"username":"u","password":"p","port":"not-a-port-secret"}"#,
        )
        .unwrap_err();
        assert!(!crate::error::describe_json_error(&err).contains("not-a-port-secret"));
        let a = PgCredentials::new("u", "p");
        assert!(a.same_login(&PgCredentials::new("u", "p")));
        assert!(!a.same_login(&PgCredentials::new("u", "q")));
    }
}
