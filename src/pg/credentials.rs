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
    /// libpq-style SSL mode (`disable`, `allow`, `prefer`, `require`, `verify-ca`,
    /// `verify-full`). A secret with any other value does not decode (a typed
    /// [`Decode`](crate::ErrorKind::Decode) error: handles keep their last good value), so the
    /// pools and the rotation engine read it by one rule. Set by hand to another value, the
    /// pools take it as the strictest, `verify-full`.
    #[serde(default, alias = "sslmode", deserialize_with = "known_ssl_mode")]
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

/// How much TLS a login needs, as libpq's `sslmode` says it, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TlsLevel {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsLevel {
    /// The level `mode` names (`verify_full` spelled either way, any case), if it names one.
    pub(crate) fn parse(mode: &str) -> Option<TlsLevel> {
        Some(match mode.trim().to_ascii_lowercase().as_str() {
            "disable" => TlsLevel::Disable,
            "allow" => TlsLevel::Allow,
            "prefer" => TlsLevel::Prefer,
            "require" => TlsLevel::Require,
            "verify-ca" | "verify_ca" => TlsLevel::VerifyCa,
            "verify-full" | "verify_full" => TlsLevel::VerifyFull,
            _ => return None,
        })
    }
}

/// What one login takes from the credentials, the same for both pools: who logs in, where to
/// (unless the pool's own target is kept), and the least TLS the secret asks for. A pool applies
/// it over its own settings, keeping every setting the secret does not speak of, and never
/// lowering the TLS the pool was given.
#[cfg(any(feature = "sqlx", feature = "deadpool", feature = "rotation"))]
pub(crate) struct Login<'a> {
    pub(crate) username: &'a str,
    pub(crate) password: &'a str,
    /// The host to connect to instead of the configured ones.
    pub(crate) host: Option<&'a str>,
    /// The port to connect to instead of the configured one.
    pub(crate) port: Option<u16>,
    pub(crate) dbname: Option<&'a str>,
    /// The secret's `sslmode`: the pool's is raised to it, never lowered.
    pub(crate) tls_at_least: Option<TlsLevel>,
}

#[cfg(any(feature = "sqlx", feature = "deadpool", feature = "rotation"))]
impl PgCredentials {
    /// What a login with these credentials takes from them: the host and port the secret names
    /// when `from_secret` (otherwise the configured endpoint stays), and the rest always.
    pub(crate) fn login_at(&self, from_secret: bool) -> Login<'_> {
        let tls_at_least = self.ssl_mode.as_deref().map(|mode| {
            TlsLevel::parse(mode).unwrap_or_else(|| {
                // Only a value set by hand gets here (decoding refuses it): fail closed.
                tracing::warn!(
                    ssl_mode = %mode.escape_debug(),
                    "credswap: unknown ssl_mode in the database credentials; requiring verify-full"
                );
                TlsLevel::VerifyFull
            })
        });
        Login {
            username: &self.username,
            password: self.password.expose_secret(),
            host: self.host.as_deref().filter(|_| from_secret),
            port: self.port.filter(|_| from_secret),
            dbname: self.dbname.as_deref(),
            tls_at_least,
        }
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

/// An `ssl_mode` that [`TlsLevel::parse`] knows, or none.
fn known_ssl_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let mode = Option::<String>::deserialize(d)?;
    match mode.as_deref().map(TlsLevel::parse) {
        Some(None) => Err(serde::de::Error::custom(
            "`ssl_mode` is not one of disable, allow, prefer, require, verify-ca, verify-full",
        )),
        _ => Ok(mode),
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

    #[cfg(any(feature = "sqlx", feature = "deadpool"))]
    #[test]
    fn a_login_takes_the_target_from_the_secret_unless_told_to_keep_the_pools() {
        let rds: PgCredentials = serde_json::from_str(
            r#"{"host":"db.internal","port":5432,"dbname":"d","username":"u","password":"p","ssl_mode":"verify-full"}"#,
        )
        .unwrap();
        let login = rds.login_at(true);
        assert_eq!((login.host, login.port), (Some("db.internal"), Some(5432)));
        assert_eq!(login.tls_at_least, Some(TlsLevel::VerifyFull));
        let login = rds.login_at(false);
        assert_eq!((login.host, login.port), (None, None));
        assert_eq!(login.dbname, Some("d"));
        assert_eq!(login.password, "p");
        assert!(TlsLevel::Require > TlsLevel::Prefer);
        assert_eq!(TlsLevel::parse("nonsense"), None);
    }

    #[test]
    fn an_unknown_ssl_mode_does_not_decode_and_a_hand_set_one_fails_closed() {
        for key in ["ssl_mode", "sslmode"] {
            let json = format!(r#"{{"username":"u","password":"p","{key}":"requrie"}}"#);
            let err = serde_json::from_str::<PgCredentials>(&json).unwrap_err();
            assert!(err.to_string().contains("ssl_mode"), "{err}");
        }
        let ok: PgCredentials =
            serde_json::from_str(r#"{"username":"u","password":"p","sslmode":"Verify_Full"}"#)
                .unwrap();
        assert_eq!(ok.ssl_mode.as_deref(), Some("Verify_Full"));
        let mut by_hand = PgCredentials::new("u", "p");
        by_hand.ssl_mode = Some("requrie".into());
        assert_eq!(
            by_hand.login_at(true).tls_at_least,
            Some(TlsLevel::VerifyFull)
        );
    }
}
