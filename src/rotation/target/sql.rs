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

/// The fewest PBKDF2 rounds a verifier gets: PostgreSQL's default, and what psql's `\password`
/// uses against servers that do not say otherwise.
pub(crate) const MIN_SCRAM_ITERATIONS: u32 = 4096;
/// The most rounds the engine will spend on one verifier (PostgreSQL allows up to `i32::MAX`; a
/// server asking for more than this gets this).
const MAX_SCRAM_ITERATIONS: u32 = 10_000_000;

/// The rounds a verifier for this server gets: its `scram_iterations` (PostgreSQL 16 and later)
/// when that is higher than 4,096, else 4,096. `setting` is `current_setting('scram_iterations',
/// true)`: `None` on servers that have no such setting.
pub(crate) fn scram_iterations(setting: Option<&str>) -> u32 {
    setting
        .and_then(|value| value.trim().parse::<u32>().ok())
        .map_or(MIN_SCRAM_ITERATIONS, |rounds| {
            rounds.clamp(MIN_SCRAM_ITERATIONS, MAX_SCRAM_ITERATIONS)
        })
}

/// The SCRAM-SHA-256 verifier of `password` with `iterations` rounds
/// (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`), computed here with a random
/// salt and SASLprep, as psql's `\password` does. The server stores it as is; the password itself
/// never leaves this process. (A verifier is not a password, but it allows an offline guessing
/// attack, and with one observed login it lets a listener log in: RFC 5802 section 9. Our
/// generated passwords make guessing hopeless; TLS keeps the verifier off the wire.)
pub(crate) async fn scram_verifier(password: &SecretString, iterations: u32) -> Result<String> {
    let password = password.clone();
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| {
        Error::new(ErrorKind::Transient)
            .with_message(format!("the operating system's random source failed: {e}"))
    })?;
    // Thousands of rounds of HMAC-SHA-256: milliseconds, kept off the async workers.
    tokio::task::spawn_blocking(move || {
        scram_verifier_with(password.expose_secret().as_bytes(), &salt, iterations)
    })
    .await
    .map_err(|_| {
        Error::new(ErrorKind::Transient).with_message("computing the SCRAM verifier failed")
    })
}

/// The verifier of `password` with `salt` and `iterations` rounds (RFC 5802, RFC 7677).
pub(crate) fn scram_verifier_with(password: &[u8], salt: &[u8], iterations: u32) -> String {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    let mac = |key: &[u8], data: &[u8]| {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(data);
        mac.finalize().into_bytes()
    };
    // SASLprep as libpq and the server do: skipped for passwords it refuses or that are not
    // UTF-8 (PostgreSQL then uses the bytes as they are).
    let prepared: zeroize::Zeroizing<Vec<u8>> =
        zeroize::Zeroizing::new(
            match std::str::from_utf8(password).ok().map(stringprep::saslprep) {
                Some(Ok(prepared)) => prepared.as_bytes().to_vec(),
                _ => password.to_vec(),
            },
        );
    // Hi(password, salt, i): PBKDF2 with HMAC-SHA-256, one block.
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = mac(&prepared, &block);
    let mut salted = u;
    for _ in 1..iterations {
        u = mac(&prepared, &u);
        for (acc, byte) in salted.iter_mut().zip(u.iter()) {
            *acc ^= byte;
        }
    }
    let client_key = mac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = mac(&salted, b"Server Key");
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key),
        b64.encode(server_key)
    )
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
        let verifier = scram_verifier(&password, 4096).await.unwrap();
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
        assert!(!verifier.contains("Verifier-Test"));
        assert!(!verifier.contains('\''));
        // A fresh salt every time.
        assert_ne!(verifier, scram_verifier(&password, 4096).await.unwrap());
        let slower = scram_verifier(&password, 10_000).await.unwrap();
        assert!(slower.starts_with("SCRAM-SHA-256$10000:"), "{slower}");
    }

    #[test]
    fn verifiers_match_postgres_protocol_for_its_salt() {
        use base64::Engine as _;
        // The same password and salt give the verifier postgres-protocol (psql's algorithm)
        // gives, SASLprep included ("\u{00AD}" is mapped to nothing).
        for password in [
            "Verifier-Test-Password-1",
            "pässwörd",
            "soft\u{00AD}hyphen",
            "a b",
        ] {
            let theirs = postgres_protocol::password::scram_sha_256(password.as_bytes());
            let salt = theirs
                .split(['$', ':'])
                .nth(2)
                .map(|salt| {
                    base64::engine::general_purpose::STANDARD
                        .decode(salt)
                        .unwrap()
                })
                .unwrap();
            assert_eq!(
                scram_verifier_with(password.as_bytes(), &salt, 4096),
                theirs,
                "{password}"
            );
        }
    }

    #[test]
    fn the_servers_iterations_count_when_higher() {
        assert_eq!(scram_iterations(None), 4096);
        assert_eq!(scram_iterations(Some("4096")), 4096);
        assert_eq!(
            scram_iterations(Some("1000")),
            4096,
            "never fewer than the default"
        );
        assert_eq!(scram_iterations(Some("10000")), 10_000);
        assert_eq!(scram_iterations(Some("2147483647")), 10_000_000);
        assert_eq!(scram_iterations(Some("lots")), 4096);
    }
}
