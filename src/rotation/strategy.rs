//! Which role a rotation re-passwords, and the secret document it writes.

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::value::SecretValue;

/// Which database role a rotation re-passwords.
///
/// - [`SingleUser`](Strategy::SingleUser): the same role gets a new password. Simple and needs no
///   admin credential, but PostgreSQL keeps one password per role, so between `set` and `finish`
///   only the new password works: consumers that open a connection in that window with the old
///   one are rejected (SQLSTATE `28P01`). The rotation-aware pools absorb it: a rejected login
///   triggers one coalesced refresh and a retry, and after `finish` the refresh finds the new
///   password. Window: from `set` to the moment each consumer refreshes (milliseconds to a TTL).
/// - [`AlternatingUsers`](Strategy::AlternatingUsers): two roles, `app` and `app_clone` (created
///   `LOGIN` and a member of `app`, so it has the privileges granted to `app`); each rotation
///   re-passwords the role that is *not* in the current secret and moves the secret to it. The
///   role in the current secret is never touched, so every consumer keeps working through the
///   rotation, and a consumer still on the previous version keeps working until the next rotation
///   (dual-read): zero downtime. Needs an admin credential that may create and alter roles.
///   Membership carries privileges, not settings: the clone does **not** inherit `app`'s per-role
///   settings (`ALTER ROLE app SET search_path …`, `statement_timeout`, …), its connection limit
///   or its attributes (`CREATEDB`, `BYPASSRLS`, …); give the clone those yourself
///   (`ALTER ROLE app_clone SET …`), and mind row-level security policies or code that test
///   `current_user = 'app'`. Objects created by `app_clone` are owned by it; have migrations run
///   as `app` (or `SET ROLE app`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Re-password the role named in the secret.
    #[default]
    SingleUser,
    /// Alternate between a base role and `<base><suffix>`.
    AlternatingUsers {
        /// The clone's suffix (`_clone` by default, as AWS's rotation functions use).
        suffix: String,
    },
}

/// What `set` must do to the role the pending credential names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingRole {
    /// The role that gets the new password.
    pub(crate) username: String,
    /// For a clone: the base role it must be a member of, created if it does not exist.
    pub(crate) clone_of: Option<String>,
}

impl Strategy {
    /// Alternating users with the `_clone` suffix.
    pub fn alternating_users() -> Self {
        Strategy::AlternatingUsers {
            suffix: "_clone".to_owned(),
        }
    }

    /// A short name for events and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::SingleUser => "single_user",
            Strategy::AlternatingUsers { .. } => "alternating_users",
        }
    }

    /// Whether this strategy changes another role than the one logged in.
    pub fn needs_admin(&self) -> bool {
        matches!(self, Strategy::AlternatingUsers { .. })
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            Strategy::AlternatingUsers { suffix } if suffix.is_empty() => Err(Error::config(
                "the alternating-users suffix must not be empty",
            )),
            _ => Ok(()),
        }
    }

    /// The role the next rotation re-passwords, given the role in the current secret.
    pub(crate) fn pending_role(&self, current: &str) -> PendingRole {
        match self {
            Strategy::SingleUser => PendingRole {
                username: current.to_owned(),
                clone_of: None,
            },
            Strategy::AlternatingUsers { suffix } => match current.strip_suffix(suffix.as_str()) {
                Some(base) if !base.is_empty() => PendingRole {
                    username: base.to_owned(),
                    clone_of: None,
                },
                _ => PendingRole {
                    username: format!("{current}{suffix}"),
                    clone_of: Some(current.to_owned()),
                },
            },
        }
    }
}

/// A secret's content read as JSON: [`ErrorKind::Decode`](crate::ErrorKind::Decode) for binary
/// content or malformed JSON, with a message that never quotes the content.
pub(crate) fn parse_json<T: DeserializeOwned>(id: &str, value: &SecretValue) -> Result<T> {
    let text = value
        .expose_str()
        .ok_or_else(|| Error::decode(id, "the secret is binary, not JSON"))?;
    serde_json::from_str(text).map_err(|e| Error::decode(id, crate::error::describe_json_error(&e)))
}

/// A database secret as a JSON object: every field kept, `username` and `password` read and
/// replaced. The RDS shape (`engine`, `host`, `port`, `dbname`, `username`, `password`, …) and
/// Vault's `{username, password}` both fit.
pub(crate) struct SecretDocument {
    fields: Map<String, Value>,
}

impl SecretDocument {
    pub(crate) fn parse(id: &str, value: &SecretValue) -> Result<Self> {
        let Value::Object(fields) = parse_json(id, value)? else {
            return Err(Error::decode(id, "the secret is not a JSON object"));
        };
        let document = SecretDocument { fields };
        let _ = document.username(id)?;
        match document.fields.get("password") {
            Some(Value::String(_)) => Ok(document),
            _ => Err(Error::decode(
                id,
                "the secret has no string field `password`",
            )),
        }
    }

    pub(crate) fn username(&self, id: &str) -> Result<&str> {
        match self.fields.get("username") {
            Some(Value::String(name)) if !name.is_empty() => Ok(name),
            _ => Err(Error::decode(
                id,
                "the secret has no non-empty string field `username`",
            )),
        }
    }

    /// Whether `other` holds the same login (username and password).
    pub(crate) fn same_login(&self, other: &SecretDocument) -> bool {
        ["username", "password"]
            .iter()
            .all(|field| self.fields.get(*field) == other.fields.get(*field))
    }

    /// The same document with `username` and `password` replaced.
    pub(crate) fn with_login(&self, username: &str, password: &SecretString) -> SecretValue {
        let mut fields = self.fields.clone();
        let _ = fields.insert("username".to_owned(), Value::String(username.to_owned()));
        let _ = fields.insert(
            "password".to_owned(),
            Value::String(password.expose_secret().to_owned()),
        );
        let text = Value::Object(fields).to_string();
        SecretValue::text(text)
    }
}

impl Drop for SecretDocument {
    fn drop(&mut self) {
        if let Some(Value::String(password)) = self.fields.get_mut("password") {
            zeroize::Zeroize::zeroize(password);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternating_users_flip_between_base_and_clone() {
        let strategy = Strategy::alternating_users();
        let first = strategy.pending_role("app");
        assert_eq!(first.username, "app_clone");
        assert_eq!(first.clone_of.as_deref(), Some("app"));
        let back = strategy.pending_role("app_clone");
        assert_eq!(back.username, "app");
        assert_eq!(back.clone_of, None);
        // A role that is nothing but the suffix is a base, not a clone of "".
        assert_eq!(strategy.pending_role("_clone").username, "_clone_clone");
        assert_eq!(Strategy::SingleUser.pending_role("app").username, "app");
        assert!(
            Strategy::AlternatingUsers {
                suffix: String::new()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn documents_keep_every_field_and_never_quote_values_in_errors() {
        let value = SecretValue::from(
            r#"{"engine": "postgres", "host": "db", "port": 5432, "dbname": "orders",
                "username": "app", "password": "old-Secret-1", "extra": {"a": 1}}"#,
        );
        let document = SecretDocument::parse("db", &value).unwrap();
        let next = document.with_login("app_clone", &SecretString::from("new-Secret-2"));
        let parsed: Value = serde_json::from_str(next.expose_str().unwrap()).unwrap();
        assert_eq!(parsed["username"], "app_clone");
        assert_eq!(parsed["password"], "new-Secret-2");
        assert_eq!(parsed["port"], 5432);
        assert_eq!(parsed["extra"]["a"], 1);
        assert_eq!(parsed["engine"], "postgres");

        for bad in [
            r#"{"username": "app"}"#,
            r#"{"password": "old-Secret-1"}"#,
            r#"{"username": "", "password": "old-Secret-1"}"#,
            r#"["old-Secret-1"]"#,
            r#"{"username": "app", "password": "old-Secret-1""#,
        ] {
            let err = SecretDocument::parse("db", &SecretValue::from(bad))
                .err()
                .unwrap();
            assert_eq!(err.kind(), crate::ErrorKind::Decode);
            assert!(!err.to_string().contains("old-Secret-1"), "{err}");
        }
    }
}
