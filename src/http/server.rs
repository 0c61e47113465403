//! The server side: a `tower` layer that checks a presented API key or bearer token against a
//! handle, the current version and, during the grace period, the previous one.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::SecretCache;
use crate::error::{Error, Result};
use crate::handle::{HandleStatus, Matched, SecretHandle};
use crate::value::{SecretValue, VersionId};

/// The SHA-256 of an accepted key: all a server keeps of it.
struct KeyDigest([u8; 32]);

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest([redacted])")
    }
}

fn decode_plain(id: &str, value: &SecretValue) -> Result<KeyDigest> {
    let key = value.expose_secret().trim_ascii();
    if key.is_empty() {
        return Err(Error::decode(id, "the API key is empty"));
    }
    // What no request could present (see `presented`) must not pass for a good key.
    if !key.iter().all(u8::is_ascii_graphic) {
        return Err(Error::decode(
            id,
            "the API key has a space, a control or a non-ASCII character: no request could present it",
        ));
    }
    Ok(KeyDigest(Sha256::digest(key).into()))
}

fn decode_sha256(id: &str, value: &SecretValue) -> Result<KeyDigest> {
    let text = value
        .expose_str()
        .ok_or_else(|| Error::decode(id, "the key digest is not text"))?
        .trim();
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    let mut digest = [0u8; 32];
    if hex.len() != 64 {
        return Err(Error::decode(
            id,
            "a hashed API key is 64 hexadecimal digits (SHA-256), optionally after `sha256:`",
        ));
    }
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let nibble = |c: u8| char::from(c).to_digit(16);
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(high), Some(low)) => *byte = (high * 16 + low) as u8,
            _ => return Err(Error::decode(id, "the key digest is not hexadecimal")),
        }
    }
    Ok(KeyDigest(digest))
}

/// The API keys a server accepts, from one secret: its current version and, during the cache's
/// grace period after a rotation, the previous one.
///
/// - [`plain`](Self::plain): the secret's text is the key (surrounding whitespace trimmed).
/// - [`sha256`](Self::sha256): the secret's text is the key's SHA-256 in hexadecimal
///   (`sha256:` prefix optional), so neither the store nor the server holds the key itself.
///
/// Either way the server keeps only digests, and compares the presented key's digest with them
/// in constant time. A new version that is not a valid key (empty, a malformed digest) is a
/// decode failure: the previous keys stay accepted and [`status`](Self::status) says
/// [`HandleStatus::DecodeFailed`].
#[derive(Clone)]
pub struct ApiKeys {
    handle: SecretHandle<KeyDigest>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("secret", &self.handle.id())
            .field("version", &self.handle.load().version().id)
            .finish()
    }
}

/// A key the server accepted, put in the request's extensions for the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcceptedKey {
    /// The version of the secret the key matched.
    pub version: VersionId,
    /// Whether it matched the previous version (a client not yet moved to the new key).
    pub previous: bool,
}

/// Why a request's key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// No key on the request.
    Missing,
    /// Something that is not a key of the expected form (another scheme, bytes a header cannot
    /// hold as text, several keys).
    Malformed,
    /// A key that matches neither the current nor the previous version.
    Unknown,
    /// The previous version's key, after its grace period ended: a client that did not move on.
    PreviousExpired,
}

impl Rejection {
    /// A short name: `missing`, `malformed`, `unknown`, `previous_expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::Malformed => "malformed",
            Rejection::Unknown => "unknown",
            Rejection::PreviousExpired => "previous_expired",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ApiKeys {
    /// The keys in secret `id`, whose text is the key.
    ///
    /// # Errors
    ///
    /// The store's error, or [`ErrorKind::Decode`](crate::ErrorKind::Decode) for an empty key.
    pub async fn plain(cache: &SecretCache, id: &str) -> Result<Self> {
        let handle = cache.handle_decoded(id, decode_plain).await?;
        Ok(ApiKeys { handle })
    }

    /// The keys in secret `id`, whose text is the key's SHA-256 in hexadecimal.
    ///
    /// # Errors
    ///
    /// The store's error, or [`ErrorKind::Decode`](crate::ErrorKind::Decode) when the text is not
    /// 64 hexadecimal digits.
    pub async fn sha256(cache: &SecretCache, id: &str) -> Result<Self> {
        let handle = cache.handle_decoded(id, decode_sha256).await?;
        Ok(ApiKeys { handle })
    }

    /// Checks a presented key: the current version, then the previous one within its grace
    /// period. Both comparisons always run, in constant time.
    ///
    /// # Errors
    ///
    /// [`Rejection::Unknown`], or [`Rejection::PreviousExpired`] for the previous version's key
    /// after its grace period.
    pub fn check(&self, presented: &[u8]) -> std::result::Result<AcceptedKey, Rejection> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let snapshot = self.handle.load();
        match snapshot.matching(|key| key.0.ct_eq(&digest).into()) {
            Matched::Current(_) => Ok(AcceptedKey {
                version: snapshot.version().id.clone(),
                previous: false,
            }),
            Matched::Previous(_, version) => Ok(AcceptedKey {
                version: version.id.clone(),
                previous: true,
            }),
            Matched::PreviousExpired => Err(Rejection::PreviousExpired),
            Matched::Neither => Err(Rejection::Unknown),
        }
    }

    /// How far to trust the keys served (see [`HandleStatus`]).
    pub fn status(&self) -> HandleStatus {
        self.handle.status()
    }

    /// The secret id.
    pub fn id(&self) -> &str {
        self.handle.id()
    }

    /// The version of the current key.
    pub fn version(&self) -> VersionId {
        self.handle.load().version().id.clone()
    }

    /// Waits for the next rotation of the keys. A rotation that happens before the returned
    /// future is first polled is not waited for: to wait for a version, compare
    /// [`version`](Self::version).
    pub async fn changed(&self) -> VersionId {
        self.handle.changed().await.version().id.clone()
    }
}

/// Where clients present their key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// A header of its own, such as `x-api-key`.
    Header(HeaderName),
}

/// A `tower` layer that lets through only requests carrying a key [`ApiKeys`] accepts.
///
/// A refused request gets `401 Unauthorized` (with `WWW-Authenticate: Bearer` for bearer
/// tokens) and an empty body, and is counted by [`Rejection`] reason ([`stats`](Self::stats));
/// an accepted one carries an [`AcceptedKey`] in its extensions. Nothing logs a presented key.
/// Clones share the keys and the counters.
///
/// # Example
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run(cache: credswap::SecretCache) -> Result<(), Box<dyn std::error::Error>> {
/// use credswap::http::{ApiKeyLayer, ApiKeys};
///
/// let keys = ApiKeys::sha256(&cache, "orders/api-key-digest").await?;
/// let app = axum::Router::new()
///     .route("/orders", axum::routing::get(|| async { "[]" }))
///     .layer(ApiKeyLayer::bearer(keys));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// axum::serve(listener, app).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ApiKeyLayer {
    shared: Arc<Shared>,
}

struct Shared {
    keys: ApiKeys,
    location: KeyLocation,
    counters: Arc<Counters>,
}

/// Accepted and refused requests: one slot per [`Rejection`], then current and previous.
#[derive(Default)]
pub(crate) struct Counters([AtomicU64; 6]);

impl Counters {
    pub(crate) fn snapshot(&self) -> RejectionStats {
        let count = |i: usize| self.0[i].load(Ordering::Relaxed);
        RejectionStats {
            missing: count(slot(Rejection::Missing)),
            malformed: count(slot(Rejection::Malformed)),
            unknown: count(slot(Rejection::Unknown)),
            previous_expired: count(slot(Rejection::PreviousExpired)),
            accepted_current: count(ACCEPTED_CURRENT),
            accepted_previous: count(ACCEPTED_PREVIOUS),
        }
    }
}

const ACCEPTED_CURRENT: usize = 4;
const ACCEPTED_PREVIOUS: usize = 5;

fn slot(rejection: Rejection) -> usize {
    match rejection {
        Rejection::Missing => 0,
        Rejection::Malformed => 1,
        Rejection::Unknown => 2,
        Rejection::PreviousExpired => 3,
    }
}

/// What an [`ApiKeyLayer`] let through and refused, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectionStats {
    /// Requests without a key.
    pub missing: u64,
    /// Requests whose key was not of the expected form.
    pub malformed: u64,
    /// Requests with a key matching no version.
    pub unknown: u64,
    /// Requests with the previous version's key after its grace period.
    pub previous_expired: u64,
    /// Requests accepted with the current key.
    pub accepted_current: u64,
    /// Requests accepted with the previous key, within its grace period.
    pub accepted_previous: u64,
}

impl fmt::Debug for ApiKeyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyLayer")
            .field("keys", &self.shared.keys)
            .field("location", &self.shared.location)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ApiKeyLayer {
    /// Keys presented as `Authorization: Bearer <key>`.
    pub fn bearer(keys: ApiKeys) -> Self {
        ApiKeyLayer::new(keys, KeyLocation::Bearer)
    }

    /// Keys presented in header `name` (`x-api-key`).
    pub fn header(keys: ApiKeys, name: HeaderName) -> Self {
        ApiKeyLayer::new(keys, KeyLocation::Header(name))
    }

    /// Keys presented at `location`.
    pub fn new(keys: ApiKeys, location: KeyLocation) -> Self {
        ApiKeyLayer {
            shared: Arc::new(Shared {
                keys,
                location,
                counters: Arc::default(),
            }),
        }
    }

    /// What the layer let through and refused so far.
    pub fn stats(&self) -> RejectionStats {
        self.shared.counters.snapshot()
    }

    /// The counters, for a metrics source that must not keep the layer alive.
    #[cfg(feature = "metrics")]
    pub(crate) fn counters(&self) -> std::sync::Weak<Counters> {
        Arc::downgrade(&self.shared.counters)
    }

    /// The keys the layer checks against.
    pub fn keys(&self) -> &ApiKeys {
        &self.shared.keys
    }
}

/// The key a request presents at `location`.
fn presented<'h>(
    location: &KeyLocation,
    headers: &'h HeaderMap,
) -> std::result::Result<&'h [u8], Rejection> {
    let name = match location {
        KeyLocation::Bearer => &AUTHORIZATION,
        KeyLocation::Header(name) => name,
    };
    let mut values = headers.get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(if headers.contains_key(name) {
            Rejection::Malformed
        } else {
            Rejection::Missing
        });
    };
    let bytes = value.as_bytes();
    let key = match location {
        KeyLocation::Bearer => {
            let scheme = bytes.get(..7).ok_or(Rejection::Malformed)?;
            if !scheme.eq_ignore_ascii_case(b"bearer ") {
                return Err(Rejection::Malformed);
            }
            bytes[7..].trim_ascii()
        }
        KeyLocation::Header(_) => bytes.trim_ascii(),
    };
    if key.is_empty() || !key.iter().all(|b| b.is_ascii_graphic()) {
        return Err(Rejection::Malformed);
    }
    Ok(key)
}

impl Shared {
    fn check(&self, headers: &HeaderMap) -> std::result::Result<AcceptedKey, Rejection> {
        let outcome = presented(&self.location, headers).and_then(|key| self.keys.check(key));
        let counter = match &outcome {
            Ok(accepted) if accepted.previous => ACCEPTED_PREVIOUS,
            Ok(_) => ACCEPTED_CURRENT,
            Err(rejection) => slot(*rejection),
        };
        let _ = self.counters.0[counter].fetch_add(1, Ordering::Relaxed);
        if let Err(rejection) = &outcome {
            tracing::debug!(secret = self.keys.id(), reason = %rejection, "credswap: API key refused");
        }
        outcome
    }

    fn refuse<B: Default>(&self) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        if self.location == KeyLocation::Bearer {
            let _ = response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl<S> tower_layer::Layer<S> for ApiKeyLayer {
    type Service = ApiKeyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`ApiKeyLayer`] wraps around yours.
#[derive(Clone)]
pub struct ApiKeyService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for ApiKeyService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyService")
            .field("keys", &self.shared.keys)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResBody> tower_service::Service<Request<B>> for ApiKeyService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<Ready<std::result::Result<Response<ResBody>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self.shared.check(request.headers()) {
            Ok(accepted) => {
                let _ = request.extensions_mut().insert(accepted);
                Either::Right(self.inner.call(request))
            }
            Err(_) => Either::Left(ready(Ok(self.shared.refuse()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_decode_from_hex_with_or_without_prefix() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let plain = decode_plain("k", &SecretValue::text("test\n")).unwrap();
        for text in [hex.to_owned(), format!("sha256:{hex}"), hex.to_uppercase()] {
            let hashed = decode_sha256("k", &SecretValue::text(text)).unwrap();
            assert_eq!(hashed.0, plain.0);
        }
        for bad in ["", "abc", &hex[1..], &format!("{}zz", &hex[2..])] {
            let error = decode_sha256("k", &SecretValue::text(bad)).unwrap_err();
            assert_eq!(error.kind(), crate::ErrorKind::Decode);
        }
        assert!(decode_plain("k", &SecretValue::text(" \n")).is_err());
        for unpresentable in ["a b", "k\u{e9}y", "k\u{7}"] {
            let error = decode_plain("k", &SecretValue::text(unpresentable)).unwrap_err();
            assert_eq!(error.kind(), crate::ErrorKind::Decode);
        }
        assert_eq!(format!("{plain:?}"), "KeyDigest([redacted])");
    }

    fn parse(
        location: &KeyLocation,
        pairs: &[(&str, &[u8])],
    ) -> std::result::Result<Vec<u8>, Rejection> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            let _ = headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        presented(location, &headers).map(<[u8]>::to_vec)
    }

    #[test]
    fn presented_keys_are_parsed_strictly() {
        let bearer = |pairs: &[(&str, &[u8])]| parse(&KeyLocation::Bearer, pairs);
        assert_eq!(
            bearer(&[("authorization", b"Bearer abc")]),
            Ok(b"abc".to_vec())
        );
        assert_eq!(
            bearer(&[("authorization", b"bearer  abc ")]),
            Ok(b"abc".to_vec())
        );
        assert_eq!(bearer(&[]), Err(Rejection::Missing));
        assert_eq!(
            bearer(&[("authorization", b"Basic abc")]),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            bearer(&[("authorization", b"Bearer")]),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            bearer(&[("authorization", b"Bearer a b")]),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            bearer(&[("authorization", b"Bearer \xffk")]),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            bearer(&[
                ("authorization", b"Bearer a"),
                ("authorization", b"Bearer b")
            ]),
            Err(Rejection::Malformed)
        );
        let location = KeyLocation::Header(HeaderName::from_static("x-api-key"));
        let header = |pairs: &[(&str, &[u8])]| parse(&location, pairs);
        assert_eq!(header(&[("x-api-key", b"k-1")]), Ok(b"k-1".to_vec()));
        assert_eq!(
            header(&[("authorization", b"Bearer k-1")]),
            Err(Rejection::Missing)
        );
    }
}
