//! Signing keys that rotate: sign JWTs with the current key, verify with the current and, during
//! the grace period, the previous one (by `kid`), and publish both as a JWKS document.
//!
//! The secret holds one asymmetric private key as JSON:
//!
//! ```json
//! {"alg": "ES256", "private_key": "-----BEGIN PRIVATE KEY-----\n…", "kid": "2026-12"}
//! ```
//!
//! `alg` is one of `RS256`, `RS384`, `RS512`, `PS256`, `PS384`, `PS512`, `ES256`, `ES384`,
//! `EdDSA`; `private_key` is PEM (PKCS#8, or PKCS#1 for RSA); `kid` is optional and defaults to
//! the key's RFC 7638 thumbprint. Give every key its own `kid` (the thumbprint always differs):
//! a new key stored under its predecessor's `kid` still works — `verify` tries both, the JWKS
//! lists both — but verifiers elsewhere that pick one key per `kid` will refuse half the tokens. Rotating the key means storing a new version (with the
//! rotation engine, the store's console, or a script): every [`SigningKeys`] in the fleet swaps
//! to it, signs with it, and keeps verifying tokens signed with the previous key for the cache's
//! [grace period](crate::SecretCacheBuilder::grace_period) — set it to at least your tokens'
//! lifetime. Symmetric (HMAC) keys are refused: a JWKS document would publish them.
//!
//! Built on [`jsonwebtoken`] (re-exported) with its `aws_lc_rs` backend.
//!
//! # Example
//!
//! ```no_run
//! # #![allow(dead_code)]
//! # async fn run(cache: credswap::SecretCache) -> Result<(), Box<dyn std::error::Error>> {
//! use credswap::jwt::{SigningKeys, jsonwebtoken::Validation};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Claims {
//!     sub: String,
//!     exp: u64,
//! }
//!
//! let keys = SigningKeys::open(&cache, "auth/signing-key").await?;
//! let exp = credswap::jwt::jsonwebtoken::get_current_timestamp() + 600;
//! let token = keys.sign(&Claims { sub: "user-1".into(), exp })?;
//! let claims = keys.verify::<Claims>(&token, &Validation::default())?.claims;
//! assert_eq!(claims.sub, "user-1");
//! let jwks = serde_json::to_string(&keys.jwks())?; // serve it on /.well-known/jwks.json
//! # drop(jwks);
//! # Ok(())
//! # }
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, TokenData, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Digest as _;

use crate::SecretCache;
use crate::error::{Error, Result, describe_json_error};
use crate::handle::{HandleStatus, Matched, SecretHandle};
use crate::value::{SecretValue, VersionId};

pub use jsonwebtoken;

/// One signing key, decoded from a version of the secret: what signs, what verifies, and the
/// public half as a JWK. Its `Debug` shows the `kid` and algorithm only.
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
}

impl SigningKey {
    /// The key id tokens carry in their header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The public key as a JWK (with `kid`, `alg` and `use: sig`).
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct StoredKey {
    alg: String,
    private_key: SecretString,
    #[serde(default)]
    kid: Option<String>,
}

fn decode_signing_key(id: &str, value: &SecretValue) -> Result<SigningKey> {
    let stored: StoredKey = serde_json::from_slice(value.expose_secret())
        .map_err(|err| Error::decode(id, describe_json_error(&err)))?;
    let alg: Algorithm = stored.alg.parse().map_err(|_| {
        Error::decode(
            id,
            "`alg` is not a JWT algorithm (RS256, PS256, ES256, ES384, EdDSA, …)",
        )
    })?;
    let pem = stored.private_key.expose_secret().as_bytes();
    let encoding = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            return Err(Error::decode(
                id,
                "HMAC keys are not supported: a JWKS document would publish them; use an \
                 asymmetric algorithm (ES256, EdDSA, RS256, …)",
            ));
        }
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
    .map_err(|_| {
        Error::decode(
            id,
            format!("`private_key` is not a PEM private key for {alg:?}"),
        )
    })?;
    let mut jwk = public_jwk(id, alg, &encoding, pem)?;
    let decoding = DecodingKey::from_jwk(&jwk)
        .map_err(|_| Error::decode(id, "the public key could not be derived"))?;
    // A key that cannot verify its own signature is not a key pair (a truncated or corrupt PEM
    // that still parsed).
    let probe = jsonwebtoken::encode(&Header::new(alg), &serde_json::json!({}), &encoding)
        .map_err(|_| Error::decode(id, format!("`private_key` cannot sign with {alg:?}")))?;
    let mut check = Validation::new(alg);
    check.required_spec_claims.clear();
    check.validate_exp = false;
    if jsonwebtoken::decode::<serde_json::Value>(&probe, &decoding, &check).is_err() {
        return Err(Error::decode(
            id,
            "the key does not verify its own signature",
        ));
    }
    let kid = match stored.kid {
        Some(kid) if !kid.is_empty() => kid,
        Some(_) => return Err(Error::decode(id, "`kid` is empty")),
        None => thumbprint(&jwk),
    };
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(SigningKey {
        kid,
        alg,
        encoding,
        decoding,
        jwk,
    })
}

/// The public half of the key as a JWK (`kid` and `use` still to set).
fn public_jwk(id: &str, alg: Algorithm, encoding: &EncodingKey, pem: &[u8]) -> Result<Jwk> {
    let unsuitable = || Error::decode(id, format!("`private_key` does not suit {alg:?}"));
    if alg != Algorithm::EdDSA {
        return Jwk::from_encoding_key(encoding, alg).map_err(|_| unsuitable());
    }
    // jsonwebtoken does not derive Ed25519 JWKs: take the public key from the PKCS#8 document.
    let der = pem_body(pem).ok_or_else(unsuitable)?;
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|_| unsuitable())?;
    let public = aws_lc_rs::signature::KeyPair::public_key(&pair);
    Ok(Jwk {
        common: CommonParameters {
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: URL_SAFE_NO_PAD.encode(public.as_ref()),
        }),
    })
}

/// The DER inside a one-block PEM document.
fn pem_body(pem: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let text = std::str::from_utf8(pem).ok()?;
    let body: zeroize::Zeroizing<String> = zeroize::Zeroizing::new(
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with("-----"))
            .collect(),
    );
    STANDARD
        .decode(body.as_bytes())
        .ok()
        .map(zeroize::Zeroizing::new)
}

/// The key's RFC 7638 thumbprint (SHA-256, base64url): the required members in lexicographic
/// order, no whitespace.
fn thumbprint(jwk: &Jwk) -> String {
    let canonical = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => serde_json::json!({
            "crv": ec.curve, "kty": ec.key_type, "x": ec.x, "y": ec.y,
        }),
        AlgorithmParameters::RSA(rsa) => serde_json::json!({
            "e": rsa.e, "kty": rsa.key_type, "n": rsa.n,
        }),
        AlgorithmParameters::OctetKeyPair(okp) => serde_json::json!({
            "crv": okp.curve, "kty": okp.key_type, "x": okp.x,
        }),
        // Not produced here: HMAC keys are refused before.
        AlgorithmParameters::OctetKey(_) => serde_json::json!({}),
    };
    // serde_json's maps are sorted by key (no `preserve_order` feature).
    let digest = sha2::Sha256::digest(canonical.to_string().as_bytes());
    URL_SAFE_NO_PAD.encode(digest)
}

/// Why a token was not verified.
#[derive(Debug)]
#[non_exhaustive]
pub enum VerifyError {
    /// The token's header has no `kid`, so no key can be chosen.
    MissingKid,
    /// The `kid` names neither the current key nor the previous one.
    UnknownKey {
        /// The token's `kid`.
        kid: String,
    },
    /// The `kid` names the previous key, whose grace period has ended.
    RetiredKey {
        /// The token's `kid`.
        kid: String,
    },
    /// The token is malformed, its signature is wrong, or a claim failed validation (expired,
    /// wrong audience, …).
    Invalid(jsonwebtoken::errors::Error),
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::MissingKid => f.write_str("the token has no `kid` in its header"),
            VerifyError::UnknownKey { kid } => {
                write!(f, "no key `{kid}` (neither current nor previous)")
            }
            VerifyError::RetiredKey { kid } => {
                write!(f, "key `{kid}` was retired: its grace period has ended")
            }
            VerifyError::Invalid(error) => write!(f, "the token is not valid: {error}"),
        }
    }
}

impl std::error::Error for VerifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VerifyError::Invalid(error) => Some(error),
            _ => None,
        }
    }
}

/// The signing keys in one secret: sign with the current version's key; verify with the current
/// key and, during the grace period, the previous one; publish both as JWKS. See the
/// [module documentation](self) for the secret's format and an example.
///
/// Reads are lock-free (the handle's snapshot); clones share the handle.
#[derive(Clone)]
pub struct SigningKeys {
    handle: SecretHandle<SigningKey>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("secret", &self.handle.id())
            .field("kid", &self.current_kid())
            .finish()
    }
}

impl SigningKeys {
    /// The keys in secret `id`.
    ///
    /// # Errors
    ///
    /// The store's error, or [`ErrorKind::Decode`](crate::ErrorKind::Decode) when the current
    /// version is not a usable key (the message says what is wrong, never the key).
    pub async fn open(cache: &SecretCache, id: &str) -> Result<Self> {
        let handle = cache.handle_decoded(id, decode_signing_key).await?;
        Ok(SigningKeys { handle })
    }

    /// Signs `claims` with the current key (its `kid` and algorithm in the header).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest) when the claims cannot be
    /// serialized.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String> {
        self.sign_with(Header::default(), claims)
    }

    /// Signs `claims` with the current key, with your `header` (its `kid` and `alg` are set to
    /// the key's).
    ///
    /// # Errors
    ///
    /// As for [`sign`](Self::sign).
    pub fn sign_with<C: Serialize>(&self, mut header: Header, claims: &C) -> Result<String> {
        let snapshot = self.handle.load();
        let key = snapshot.current();
        header.kid = Some(key.kid.clone());
        header.alg = key.alg;
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|error| {
            Error::invalid_request(self.handle.id(), format!("signing failed: {error}"))
        })
    }

    /// Verifies `token` with the key its `kid` names: the current key, or the previous one
    /// while its grace period lasts. `validation`'s claim checks apply (expiry, audience,
    /// issuer, …); its algorithms are replaced by the chosen key's, so a token cannot pick a
    /// weaker one.
    ///
    /// # Errors
    ///
    /// A [`VerifyError`]: no `kid`, an unknown or retired key, or an invalid token.
    pub fn verify<C: DeserializeOwned>(
        &self,
        token: &str,
        validation: &Validation,
    ) -> std::result::Result<TokenData<C>, VerifyError> {
        let header = jsonwebtoken::decode_header(token).map_err(VerifyError::Invalid)?;
        let kid = header.kid.ok_or(VerifyError::MissingKid)?;
        let snapshot = self.handle.load();
        // Keys are chosen by `kid`; a new key stored under its predecessor's `kid` (a mistake
        // the default thumbprint never makes) is tried first, then the predecessor in grace.
        let candidates: Vec<&SigningKey> = match snapshot.matching(|key| key.kid == kid) {
            Matched::Current(current) => std::iter::once(current)
                .chain(snapshot.previous().filter(|previous| previous.kid == kid))
                .collect(),
            Matched::Previous(previous, _) => vec![previous],
            Matched::PreviousExpired => return Err(VerifyError::RetiredKey { kid }),
            Matched::Neither => return Err(VerifyError::UnknownKey { kid }),
        };
        let mut last = None;
        for key in candidates {
            let mut validation = validation.clone();
            validation.algorithms = vec![key.alg];
            match jsonwebtoken::decode(token, &key.decoding, &validation) {
                Ok(data) => return Ok(data),
                Err(error) => last = Some(error),
            }
        }
        // `candidates` is never empty: `Matched::Current` holds at least the current key.
        Err(VerifyError::Invalid(last.unwrap_or_else(|| {
            jsonwebtoken::errors::ErrorKind::InvalidSignature.into()
        })))
    }

    /// The JWKS document: the current key and, while its grace period lasts, the previous one.
    /// Serve it (`serde_json::to_string(&keys.jwks())`) where verifiers fetch keys.
    pub fn jwks(&self) -> JwkSet {
        let snapshot = self.handle.load();
        let mut keys = vec![snapshot.current().jwk.clone()];
        // Also under the same `kid` (see `verify`), unless it is the same key.
        if let Some(previous) = snapshot.previous() {
            if previous.jwk != snapshot.current().jwk {
                keys.push(previous.jwk.clone());
            }
        }
        JwkSet { keys }
    }

    /// The current key's `kid`.
    pub fn current_kid(&self) -> String {
        self.handle.load().current().kid.clone()
    }

    /// The current key's version in the store.
    pub fn version(&self) -> VersionId {
        self.handle.load().version().id.clone()
    }

    /// How far to trust the keys (see [`HandleStatus`]; a new version that is not a usable key is
    /// [`HandleStatus::DecodeFailed`], and the last good key keeps signing).
    pub fn status(&self) -> HandleStatus {
        self.handle.status()
    }

    /// Waits for the next key rotation and returns the new `kid`. A rotation that happens before
    /// the returned future is first polled is not waited for: to wait for a version, compare
    /// [`version`](Self::version).
    pub async fn changed(&self) -> String {
        self.handle.changed().await.current().kid.clone()
    }

    /// The handle under the keys.
    pub fn handle(&self) -> &SecretHandle<SigningKey> {
        &self.handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thumbprint_is_rfc_7638s() {
        // RFC 7638, section 3.1.
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }))
        .unwrap();
        assert_eq!(
            thumbprint(&jwk),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn an_ed25519_key_gets_a_public_jwk() {
        // RFC 8037, appendix A.1 (the private key as PKCS#8) and A.3 (its thumbprint).
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
        let key = EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
        let jwk = public_jwk("k", Algorithm::EdDSA, &key, pem.as_bytes()).unwrap();
        match &jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(okp) => {
                assert_eq!(okp.x, "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            thumbprint(&jwk),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
