//! How a credential goes on a request: bearer, basic, a named header, or your own.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::value::SecretValue;

/// Puts a credential of type `T` (what the handle holds) on a request's headers.
///
/// The built-in schemes are [`Bearer`], [`Basic`] and [`NamedHeader`]; any
/// `Fn(&T, &mut HeaderMap) -> Result<()>` is a scheme too, for an API that wants something else
/// (a signature, two headers). A scheme must mark what it adds as sensitive
/// ([`HeaderValue::set_sensitive`]) and must not put the credential into its error.
///
/// # Example
///
/// ```
/// use credswap::http::AuthScheme;
/// use credswap::http::header::{HeaderMap, HeaderValue};
/// use credswap::secrecy::ExposeSecret;
///
/// #[derive(serde::Deserialize)]
/// struct Gateway {
///     merchant: String,
///     key: credswap::secrecy::SecretString,
/// }
///
/// let scheme = |secret: &Gateway, headers: &mut HeaderMap| -> credswap::Result<()> {
///     let mut key = HeaderValue::from_str(secret.key.expose_secret())
///         .map_err(|_| credswap::Error::decode("gateway", "the key is not a header value"))?;
///     key.set_sensitive(true);
///     headers.insert("x-gateway-key", key);
///     headers.insert(
///         "x-merchant",
///         HeaderValue::from_str(&secret.merchant)
///             .map_err(|_| credswap::Error::decode("gateway", "bad merchant id"))?,
///     );
///     Ok(())
/// };
/// let secret = Gateway { merchant: "m-1".into(), key: "k-1".into() };
/// let mut headers = HeaderMap::new();
/// scheme.apply("gateway", &secret, &mut headers).unwrap();
/// assert!(headers["x-gateway-key"].is_sensitive());
/// ```
pub trait AuthScheme<T>: Send + Sync + 'static {
    /// Sets the credential's headers on `headers`. `id` is the secret id, for errors.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`](crate::ErrorKind::Decode) when the secret cannot be a credential of
    /// this scheme (not text, a missing field, a character a header cannot carry).
    fn apply(&self, id: &str, secret: &T, headers: &mut HeaderMap) -> Result<()>;
}

impl<T, F> AuthScheme<T> for F
where
    F: Fn(&T, &mut HeaderMap) -> Result<()> + Send + Sync + 'static,
{
    fn apply(&self, _id: &str, secret: &T, headers: &mut HeaderMap) -> Result<()> {
        self(secret, headers)
    }
}

/// A header value that is never logged (`http` prints sensitive values as `Sensitive`).
fn sensitive(id: &str, text: &str) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(text)
        .map_err(|_| Error::decode(id, "the credential has a character a header cannot carry"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The token in a raw secret: its whole text, or one string field of its JSON.
fn token<'a>(id: &str, secret: &'a SecretValue, field: Option<&str>) -> Result<Token<'a>> {
    let Some(text) = secret.expose_str() else {
        return Err(Error::decode(id, "the secret is not text"));
    };
    let Some(field) = field else {
        return Ok(Token::Borrowed(text.trim_ascii()));
    };
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|_| Error::decode(id, "the secret is not a JSON object"))?;
    match object.get(field) {
        Some(serde_json::Value::String(value)) => {
            Ok(Token::Owned(SecretString::from(value.as_str())))
        }
        Some(_) => Err(Error::decode(
            id,
            format!("field `{field}` is not a string"),
        )),
        None => Err(Error::decode(
            id,
            format!("the secret has no field `{field}`"),
        )),
    }
}

enum Token<'a> {
    Borrowed(&'a str),
    Owned(SecretString),
}

impl Token<'_> {
    fn as_str(&self) -> &str {
        match self {
            Token::Borrowed(text) => text,
            Token::Owned(secret) => secret.expose_secret(),
        }
    }
}

/// `Authorization: Bearer <token>`.
///
/// Over a raw handle ([`SecretCache::handle_raw`](crate::SecretCache::handle_raw)) the token is
/// the secret's whole text (surrounding whitespace trimmed), or with [`field`](Self::field) one
/// string field of its JSON; over a handle of [`SecretString`], the string.
#[derive(Debug, Clone, Default)]
pub struct Bearer {
    field: Option<Arc<str>>,
}

impl Bearer {
    /// The whole secret is the token.
    pub fn new() -> Self {
        Bearer::default()
    }

    /// The token is the string field `field` of the secret's JSON (`{"api_key": "…"}`).
    pub fn field(field: impl Into<Arc<str>>) -> Self {
        Bearer {
            field: Some(field.into()),
        }
    }
}

impl AuthScheme<SecretValue> for Bearer {
    fn apply(&self, id: &str, secret: &SecretValue, headers: &mut HeaderMap) -> Result<()> {
        let token = token(id, secret, self.field.as_deref())?;
        bearer(id, token.as_str(), headers)
    }
}

impl AuthScheme<SecretString> for Bearer {
    fn apply(&self, id: &str, secret: &SecretString, headers: &mut HeaderMap) -> Result<()> {
        bearer(id, secret.expose_secret(), headers)
    }
}

/// `Authorization: Bearer <token>`, whichever handle the token came from.
fn bearer(id: &str, token: &str, headers: &mut HeaderMap) -> Result<()> {
    let value = sensitive(id, &Zeroizing::new(format!("Bearer {token}")))?;
    let _ = headers.insert(AUTHORIZATION, value);
    Ok(())
}

/// A user name and password, as JSON: `{"username": "…", "password": "…"}`.
#[derive(Deserialize)]
pub struct BasicCredentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: SecretString,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// `Authorization: Basic base64(username:password)`, over a handle of [`BasicCredentials`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Basic;

impl AuthScheme<BasicCredentials> for Basic {
    fn apply(&self, id: &str, secret: &BasicCredentials, headers: &mut HeaderMap) -> Result<()> {
        if secret.username.contains(':') {
            return Err(Error::decode(id, "a Basic user name cannot contain `:`"));
        }
        let pair = Zeroizing::new(format!(
            "{}:{}",
            secret.username,
            secret.password.expose_secret()
        ));
        let encoded = Zeroizing::new(BASE64.encode(pair.as_bytes()));
        let value = sensitive(id, &Zeroizing::new(format!("Basic {}", encoded.as_str())))?;
        let _ = headers.insert(AUTHORIZATION, value);
        Ok(())
    }
}

/// A header of your naming (`x-api-key: <key>`), over a raw handle (the whole text, or one JSON
/// field with [`field`](Self::field)) or a handle of [`SecretString`].
#[derive(Debug, Clone)]
pub struct NamedHeader {
    name: HeaderName,
    field: Option<Arc<str>>,
}

impl NamedHeader {
    /// The whole secret goes in header `name`.
    pub fn new(name: HeaderName) -> Self {
        NamedHeader { name, field: None }
    }

    /// The string field `field` of the secret's JSON goes in the header.
    pub fn field(mut self, field: impl Into<Arc<str>>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl AuthScheme<SecretValue> for NamedHeader {
    fn apply(&self, id: &str, secret: &SecretValue, headers: &mut HeaderMap) -> Result<()> {
        let token = token(id, secret, self.field.as_deref())?;
        let _ = headers.insert(self.name.clone(), sensitive(id, token.as_str())?);
        Ok(())
    }
}

impl AuthScheme<SecretString> for NamedHeader {
    fn apply(&self, id: &str, secret: &SecretString, headers: &mut HeaderMap) -> Result<()> {
        let _ = headers.insert(self.name.clone(), sensitive(id, secret.expose_secret())?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_reads_the_whole_secret_or_one_field() {
        let mut headers = HeaderMap::new();
        Bearer::new()
            .apply("k", &SecretValue::text("tok-1\n"), &mut headers)
            .unwrap();
        assert_eq!(headers[AUTHORIZATION], "Bearer tok-1");
        assert!(headers[AUTHORIZATION].is_sensitive());
        Bearer::field("api_key")
            .apply(
                "k",
                &SecretValue::text(r#"{"api_key":"tok-2"}"#),
                &mut headers,
            )
            .unwrap();
        assert_eq!(headers[AUTHORIZATION], "Bearer tok-2");
    }

    #[test]
    fn bad_credentials_are_typed_errors_without_the_value() {
        let mut headers = HeaderMap::new();
        let missing = Bearer::field("api_key")
            .apply(
                "k",
                &SecretValue::text(r#"{"other":"hidden-1"}"#),
                &mut headers,
            )
            .unwrap_err();
        assert_eq!(missing.kind(), crate::ErrorKind::Decode);
        assert!(missing.to_string().contains("api_key"));
        let newline = NamedHeader::new(HeaderName::from_static("x-api-key"))
            .apply("k", &SecretValue::text("hidden\u{7}2"), &mut headers)
            .unwrap_err();
        assert_eq!(newline.kind(), crate::ErrorKind::Decode);
        for error in [missing, newline] {
            let printed = format!("{error} {error:?}");
            assert!(!printed.contains("hidden"), "{printed}");
        }
    }

    #[test]
    fn basic_encodes_user_and_password() {
        let mut headers = HeaderMap::new();
        let secret = BasicCredentials {
            username: "Aladdin".into(),
            password: "open sesame".into(),
        };
        Basic.apply("k", &secret, &mut headers).unwrap();
        assert_eq!(headers[AUTHORIZATION], "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(!format!("{secret:?}").contains("sesame"));
    }
}
