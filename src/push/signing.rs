//! Authenticated announcements: an HMAC-SHA-256 over each announcement, with a key kept in the
//! secret store and read through a handle, so that it rotates like any other secret.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::announcement::Announcement;
use super::channel::{Published, Publisher};
use crate::error::{Error, Result};
use crate::handle::SecretHandle;
use crate::value::SecretValue;

/// The shortest key accepted: 128 bits.
const MIN_KEY_BYTES: usize = 16;

/// The key announcements are signed and checked with.
///
/// Without one, anybody who may `NOTIFY` or `PUBLISH` on the channel can make subscribers refresh
/// (never inject a value: announcements carry none, and every refresh is rate-limited). With one,
/// a [`SignedPublisher`] signs every announcement, and a subscriber built with
/// [`SubscriberBuilder::verify_with`](crate::push::SubscriberBuilder::verify_with) acts only on
/// announcements signed with the key: unsigned and forged ones are counted
/// ([`PushStats::rejected`](crate::push::PushStats::rejected)) and ignored.
///
/// # Rotating the key
///
/// Keep the key as a secret (at least 16 random bytes) and give both sides a handle on it: the
/// publisher signs with the current version; a subscriber accepts the current version and, during
/// the cache's grace period, the previous one. When a signature checks with neither, the
/// subscriber refreshes its handle once (rate-limited like any refresh: a flood of forgeries costs
/// at most one store call per `min_refresh_interval`) and checks again, so an announcement signed
/// with a key the subscriber has not seen yet is normally not lost. Not guaranteed: one that
/// arrives within a `min_refresh_interval` after such a refresh, or beyond the 16 held while it
/// runs (a forger can provoke both), is rejected; the caches' TTL is then the backstop.
///
/// A signature proves who sent an announcement, not when: a recorded one can be replayed, which
/// costs what any announcement of a current version costs (a rate-limited refresh).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use credswap::push::{Announcement, AnnouncementKey};
/// use credswap::{MemoryProvider, SecretCache, VersionId};
///
/// let store = Arc::new(MemoryProvider::new());
/// store.set("push-key", "0f9a7c1e5b2d48e6a3c7f1b9d2e4a6c8");
/// let cache = SecretCache::builder(store).build()?;
/// let key = AnnouncementKey::from_handle(cache.handle_raw("push-key").await?);
///
/// let signed = Announcement::new("prod/db", &VersionId::new("v7"))?.signed(&key)?;
/// assert!(signed.encode().contains(r#""sig":""#));
/// assert!(key.verifies(&Announcement::decode(signed.encode().as_bytes())?));
/// # Ok::<(), credswap::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct AnnouncementKey {
    source: Source,
}

#[derive(Clone)]
enum Source {
    Handle(SecretHandle<SecretValue>),
    Fixed(Arc<SecretValue>),
}

impl fmt::Debug for AnnouncementKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Handle(handle) => format!("handle on {}", handle.id()),
            Source::Fixed(_) => "fixed".to_owned(),
        };
        f.debug_struct("AnnouncementKey")
            .field("source", &source)
            .finish_non_exhaustive()
    }
}

impl AnnouncementKey {
    /// The key in the secret `handle` follows: its current version signs; its current and (within
    /// the grace period) previous versions verify.
    pub fn from_handle(handle: SecretHandle<SecretValue>) -> Self {
        AnnouncementKey {
            source: Source::Handle(handle),
        }
    }

    /// A key that never changes (from configuration, or for tests).
    pub fn fixed(key: SecretValue) -> Self {
        AnnouncementKey {
            source: Source::Fixed(Arc::new(key)),
        }
    }

    /// The signature of `message` with the current key.
    pub(super) fn sign(&self, message: &[u8]) -> Result<[u8; 32]> {
        let tag = match &self.source {
            Source::Handle(handle) => tag(handle.load().current(), message),
            Source::Fixed(key) => tag(key, message),
        };
        tag.ok_or_else(|| {
            Error::config(format!(
                "the announcement key is shorter than {MIN_KEY_BYTES} bytes"
            ))
        })
    }

    /// Whether `announcement` carries a signature by the current key or, within its grace
    /// period, the previous one. Constant-time in the signature.
    pub fn verifies(&self, announcement: &Announcement) -> bool {
        let Some(signature) = announcement.signature() else {
            return false;
        };
        let message = announcement.signed_bytes();
        let checks = |key: &SecretValue| verify(key, message.as_bytes(), signature);
        match &self.source {
            Source::Fixed(key) => checks(key),
            Source::Handle(handle) => {
                let snapshot = handle.load();
                checks(snapshot.current()) || snapshot.previous().is_some_and(checks)
            }
        }
    }

    /// Asks the store for the key now (rate-limited by its cache); whether that worked.
    pub(super) async fn refresh(&self) -> bool {
        match &self.source {
            Source::Handle(handle) => handle.refresh().await.is_ok(),
            Source::Fixed(_) => false,
        }
    }
}

fn mac(key: &SecretValue) -> Option<Hmac<Sha256>> {
    let bytes = key.expose_secret();
    if bytes.len() < MIN_KEY_BYTES {
        return None;
    }
    Hmac::<Sha256>::new_from_slice(bytes).ok()
}

fn tag(key: &SecretValue, message: &[u8]) -> Option<[u8; 32]> {
    let mut mac = mac(key)?;
    mac.update(message);
    Some(mac.finalize().into_bytes().into())
}

fn verify(key: &SecretValue, message: &[u8], signature: &[u8; 32]) -> bool {
    let Some(mut mac) = mac(key) else {
        return false;
    };
    mac.update(message);
    mac.verify_slice(signature).is_ok()
}

/// A [`Publisher`] that signs every announcement with an [`AnnouncementKey`] before `inner`
/// publishes it.
///
/// ```no_run
/// # #![allow(dead_code)]
/// # async fn run(cache: credswap::SecretCache) -> credswap::Result<()> {
/// # let _ = &cache;
/// # #[cfg(feature = "push-redis")] {
/// use credswap::push::{AnnouncementKey, DEFAULT_CHANNEL, RedisPublisher, SignedPublisher};
///
/// let key = AnnouncementKey::from_handle(cache.handle_raw("push/announcement-key").await?);
/// let publisher = SignedPublisher::new(
///     RedisPublisher::open("redis://broker:6379", DEFAULT_CHANNEL)?,
///     key,
/// );
/// # drop(publisher); }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SignedPublisher<P> {
    inner: P,
    key: AnnouncementKey,
}

impl<P: Publisher> SignedPublisher<P> {
    /// `inner`, signing with `key`.
    pub fn new(inner: P, key: AnnouncementKey) -> Self {
        SignedPublisher { inner, key }
    }
}

#[async_trait]
impl<P: Publisher> Publisher for SignedPublisher<P> {
    fn describe(&self) -> String {
        format!("{} (signed)", self.inner.describe())
    }

    async fn publish(&self, announcement: &Announcement) -> Result<Published> {
        let signed = announcement.clone().signed(&self.key)?;
        self.inner.publish(&signed).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::VersionId;

    fn key(text: &str) -> AnnouncementKey {
        AnnouncementKey::fixed(SecretValue::from(text))
    }

    #[test]
    fn a_signature_covers_every_field_and_only_its_key_makes_it() {
        let right = key("the-right-key-0123456789");
        let signed = Announcement::new("prod/db", &VersionId::new("v7"))
            .unwrap()
            .signed(&right)
            .unwrap();
        let received = Announcement::decode(signed.encode().as_bytes()).unwrap();
        assert!(received.is_signed());
        assert!(right.verifies(&received));
        assert!(!key("another-key-0123456789").verifies(&received));
        // Another field under the same signature: refused.
        let sig = &signed.encode()[signed.encode().find(r#""sig":"#).unwrap()..];
        for tampered in [
            format!(r#"{{"id":"prod/other","version":"v7",{sig}"#),
            format!(r#"{{"id":"prod/db","version":"v8",{sig}"#),
            format!(r#"{{"id":"prod/db",{sig}"#),
        ] {
            let decoded = Announcement::decode(tampered.as_bytes()).unwrap();
            assert!(!right.verifies(&decoded), "{tampered}");
        }
        // Unsigned: refused.
        let unsigned = Announcement::new("prod/db", &VersionId::new("v7")).unwrap();
        assert!(!right.verifies(&unsigned));
    }

    #[test]
    fn short_keys_and_bad_signature_fields_are_typed_errors() {
        let err = Announcement::new("a", &VersionId::new("1"))
            .unwrap()
            .signed(&key("tiny-key"))
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert!(!err.to_string().contains("tiny-key"), "{err}");
        for bad in [r#"{"id":"a","sig":"00"}"#, r#"{"id":"a","sig":"zz"}"#] {
            let err = Announcement::decode(bad.as_bytes()).unwrap_err();
            assert_eq!(err.as_str(), "signature");
        }
        let printed = format!("{:?}", key("the-right-key-0123456789"));
        assert!(!printed.contains("the-right-key"), "{printed}");
    }
}
