//! SQL text the PostgreSQL target sends: quoted names and literals, SCRAM verifiers, error mapping.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::error::SqlState;

use crate::error::{Error, ErrorKind, Result};

/// PostgreSQL's identifier limit (`NAMEDATALEN - 1` bytes): longer names are silently truncated
/// by the server, which for a role name means rotating the wrong role.
pub(crate) const MAX_IDENTIFIER_BYTES: usize = 63;

/// Checks a role name before anything changes.
pub(crate) fn check_role_name(secret_id: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_request(secret_id, "the role name is empty"));
    }
    if name.contains('\0') {
        return Err(Error::invalid_request(
            secret_id,
            format!("role name `{}` contains a NUL byte", name.escape_debug()),
        ));
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(Error::invalid_request(
            secret_id,
            format!(
                "role name `{name}` is {} bytes long; PostgreSQL names are at most {MAX_IDENTIFIER_BYTES} \
                 bytes (longer ones are truncated, which would rotate another role)",
                name.len()
            ),
        ));
    }
    Ok(())
}

/// `name` as a quoted identifier: `"` around it, inner `"` doubled. Any name works, including ones
/// with quotes, spaces or upper case.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a string literal: `'` around it, inner `'` doubled, and with backslashes an escape
/// string (`E'…'`) so the result means the same whatever `standard_conforming_strings` says.
pub(crate) fn quote_literal(text: &str) -> String {
    let doubled = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", doubled.replace('\\', "\\\\"))
    } else {
        format!("'{doubled}'")
    }
}

/// The SCRAM-SHA-256 verifier of `password` (`SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>`),
/// computed here, with a random salt and SASLprep, as psql's `\password` does. The server stores it
/// as is; the password itself never leaves this process. (A verifier is not a password, but it
/// allows an offline guessing attack: our generated passwords make that hopeless.)
pub(crate) async fn scram_verifier(password: &SecretString) -> Result<String> {
    let password = password.clone();
    // 4096 rounds of HMAC-SHA-256: milliseconds, kept off the async workers.
    tokio::task::spawn_blocking(move || {
        postgres_protocol::password::scram_sha_256(password.expose_secret().as_bytes())
    })
    .await
    .map_err(|_| {
        Error::new(ErrorKind::Transient).with_message("computing the SCRAM verifier failed")
    })
}

/// The 64-bit advisory-lock key of a secret: the first 8 bytes of SHA-256 over a fixed prefix and
/// the secret id. Rotators of one secret in any process compute the same key; other users of
/// advisory locks are unlikely to collide with it.
pub(crate) fn lock_key(secret_id: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"credswap-rotation\0")
        .chain_update(secret_id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// Maps a tokio-postgres error of `what` (for secret `secret_id`) to our kinds. The message keeps
/// the SQLSTATE and the server's message (which names roles and objects, never a password), not the
/// `DETAIL`, which can quote row data.
pub(crate) fn map_pg_error(secret_id: &str, what: &str, error: tokio_postgres::Error) -> Error {
    let (kind, detail) = match error.as_db_error() {
        Some(db) => {
            let code = db.code();
            let kind = if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                ErrorKind::AuthRejected
            } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
                ErrorKind::AccessDenied
            } else if code.code().starts_with("08")
                || code.code().starts_with("53")
                || code.code().starts_with("57")
            {
                // Connection exceptions, insufficient resources, operator intervention.
                ErrorKind::Transient
            } else {
                ErrorKind::InvalidRequest
            };
            (kind, format!("SQLSTATE {}: {}", code.code(), db.message()))
        }
        None => {
            let mut detail = error.to_string();
            if let Some(source) = std::error::Error::source(&error) {
                detail.push_str(": ");
                detail.push_str(&source.to_string());
            }
            (ErrorKind::Transient, detail)
        }
    };
    Error::new(kind)
        .with_id(Arc::<str>::from(secret_id))
        .with_message(format!("{what}: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_identifier("app"), "\"app\"");
        assert_eq!(quote_identifier("o'brien \"x\""), "\"o'brien \"\"x\"\"\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'"), "E'a\\\\b'''");
    }

    #[test]
    fn role_names_are_checked_before_anything_changes() {
        let ok = "a".repeat(63);
        check_role_name("db", &ok).unwrap();
        let long = "a".repeat(64);
        let err = check_role_name("db", &long).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
        assert!(err.to_string().contains("64 bytes"), "{err}");
        assert!(err.to_string().contains("at most 63"), "{err}");
        // Bytes, not characters: 32 two-byte characters are 64 bytes.
        assert!(check_role_name("db", &"é".repeat(32)).is_err());
        assert!(check_role_name("db", "").is_err());
        assert!(check_role_name("db", "a\0b").is_err());
    }

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("prod/db"), lock_key("prod/db"));
        assert_ne!(lock_key("prod/db"), lock_key("prod/db2"));
    }

    #[tokio::test]
    async fn verifiers_hide_the_password() {
        let password = SecretString::from("Verifier-Test-Password-1");
        let verifier = scram_verifier(&password).await.unwrap();
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
        assert!(!verifier.contains("Verifier-Test"));
        assert!(!verifier.contains('\''));
        // A fresh salt every time.
        assert_ne!(verifier, scram_verifier(&password).await.unwrap());
    }
}
