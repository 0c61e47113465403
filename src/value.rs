//! Secret values and the versions they come in.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use zeroize::Zeroize;

/// A secret's content: text or bytes, wiped from memory when dropped, and unprintable.
///
/// `Debug` prints `[REDACTED]`; there is no `Display`; the only way to the contents is an explicit
/// [`expose_secret`](Self::expose_secret) (or [`expose_str`](Self::expose_str)).
///
/// ```
/// use credswap::SecretValue;
///
/// let value = SecretValue::from("hunter2");
/// assert_eq!(format!("{value:?}"), "SecretValue([REDACTED])");
/// assert_eq!(value.expose_str(), Some("hunter2"));
/// assert_eq!(value.expose_secret(), b"hunter2");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue {
    inner: Inner,
}

#[derive(Clone, PartialEq, Eq)]
enum Inner {
    Text(String),
    Bytes(Vec<u8>),
}

impl SecretValue {
    /// A text secret.
    pub fn text(value: impl Into<String>) -> Self {
        SecretValue {
            inner: Inner::Text(value.into()),
        }
    }

    /// A binary secret.
    pub fn bytes(value: impl Into<Vec<u8>>) -> Self {
        SecretValue {
            inner: Inner::Bytes(value.into()),
        }
    }

    /// A secret from bytes that are text when they are valid UTF-8 (as read from a file).
    pub fn from_utf8_or_bytes(value: Vec<u8>) -> Self {
        match String::from_utf8(value) {
            Ok(text) => SecretValue::text(text),
            Err(err) => SecretValue::bytes(err.into_bytes()),
        }
    }

    /// The contents as bytes (text as its UTF-8 encoding).
    pub fn expose_secret(&self) -> &[u8] {
        match &self.inner {
            Inner::Text(text) => text.as_bytes(),
            Inner::Bytes(bytes) => bytes,
        }
    }

    /// The contents as text: `Some` for a text secret or bytes that are valid UTF-8.
    pub fn expose_str(&self) -> Option<&str> {
        match &self.inner {
            Inner::Text(text) => Some(text),
            Inner::Bytes(bytes) => std::str::from_utf8(bytes).ok(),
        }
    }

    /// Whether the store delivered this secret as text (`SecretString`) rather than bytes.
    pub fn is_text(&self) -> bool {
        matches!(self.inner, Inner::Text(_))
    }

    /// Length of the contents in bytes.
    pub fn len(&self) -> usize {
        self.expose_secret().len()
    }

    /// Whether the contents are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        match &mut self.inner {
            Inner::Text(text) => text.zeroize(),
            Inner::Bytes(bytes) => bytes.zeroize(),
        }
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue([REDACTED])")
    }
}

impl From<&str> for SecretValue {
    fn from(value: &str) -> Self {
        SecretValue::text(value)
    }
}

impl From<String> for SecretValue {
    fn from(value: String) -> Self {
        SecretValue::text(value)
    }
}

impl From<Vec<u8>> for SecretValue {
    fn from(value: Vec<u8>) -> Self {
        SecretValue::bytes(value)
    }
}

/// A provider's identifier of one version of a secret (AWS `VersionId`, a Vault KV version number, a
/// keyed content hash for files). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionId(Arc<str>);

impl VersionId {
    /// A version id.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        VersionId(id.into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for VersionId {
    fn from(value: &str) -> Self {
        VersionId::new(value)
    }
}

impl From<String> for VersionId {
    fn from(value: String) -> Self {
        VersionId::new(value)
    }
}

/// A label a store puts on a version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// The version applications should use (`AWSCURRENT`, the latest KV version).
    Current,
    /// The version before the current one (`AWSPREVIOUS`).
    Previous,
    /// A version being rotated in, not yet current (`AWSPENDING`).
    Pending,
    /// Any other label.
    Custom(String),
}

impl Stage {
    /// The stage's name as AWS Secrets Manager spells it (custom labels as they are).
    pub fn as_aws_label(&self) -> &str {
        match self {
            Stage::Current => "AWSCURRENT",
            Stage::Previous => "AWSPREVIOUS",
            Stage::Pending => "AWSPENDING",
            Stage::Custom(label) => label,
        }
    }

    /// The stage for an AWS label (`AWSCURRENT` → [`Stage::Current`], unknown → custom).
    pub fn from_aws_label(label: &str) -> Stage {
        match label {
            "AWSCURRENT" => Stage::Current,
            "AWSPREVIOUS" => Stage::Previous,
            "AWSPENDING" => Stage::Pending,
            other => Stage::Custom(other.to_owned()),
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Current => f.write_str("current"),
            Stage::Previous => f.write_str("previous"),
            Stage::Pending => f.write_str("pending"),
            Stage::Custom(label) => f.write_str(label),
        }
    }
}

/// Which version of a secret to fetch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Selector {
    /// The version with the given stage.
    Stage(Stage),
    /// The version with this id.
    Version(VersionId),
    /// The current version (the default).
    #[default]
    Current,
}

impl Selector {
    /// The stage this selector asks for, when it asks for one (`Current` is `Stage::Current`).
    pub fn stage(&self) -> Option<Stage> {
        match self {
            Selector::Current => Some(Stage::Current),
            Selector::Stage(stage) => Some(stage.clone()),
            Selector::Version(_) => None,
        }
    }

    /// Whether this selects the current version.
    pub fn is_current(&self) -> bool {
        matches!(self, Selector::Current | Selector::Stage(Stage::Current))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Current => f.write_str("current"),
            Selector::Stage(stage) => write!(f, "stage:{stage}"),
            Selector::Version(id) => write!(f, "version:{id}"),
        }
    }
}

/// A lease on a secret (Vault dynamic credentials): it ends unless renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The store's lease id (used to renew and revoke; not a credential by itself).
    pub id: String,
    /// How long the lease was granted for.
    pub duration: Duration,
    /// Whether the lease can be renewed.
    pub renewable: bool,
    /// When the lease ends unless renewed.
    pub expires_at: SystemTime,
}

impl Lease {
    /// A lease granted now for `duration`.
    pub fn new(id: impl Into<String>, duration: Duration, renewable: bool) -> Self {
        Lease {
            id: id.into(),
            duration,
            renewable,
            expires_at: crate::time::later_wall(SystemTime::now(), duration),
        }
    }

    /// Time left before the lease ends (zero when it has ended).
    pub fn remaining(&self) -> Duration {
        self.expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }
}

/// What a store says about one version of a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The provider's version id.
    pub id: VersionId,
    /// The labels on this version.
    pub stages: Vec<Stage>,
    /// When the version was created, when the store says.
    pub created_at: Option<SystemTime>,
    /// The lease, for leased secrets.
    pub lease: Option<Lease>,
    /// When the store will replace this version by itself (Vault static roles): the cache asks
    /// again right after.
    pub next_rotation: Option<SystemTime>,
}

impl Version {
    /// How long ago the store created this version, by the wall clock; `None` when the store
    /// does not say (or says it was created in the future).
    pub fn since_created(&self) -> Option<Duration> {
        self.created_at
            .and_then(|created| SystemTime::now().duration_since(created).ok())
    }

    /// A version with this id, labelled current.
    pub fn current(id: impl Into<VersionId>) -> Self {
        Version {
            id: id.into(),
            stages: vec![Stage::Current],
            created_at: None,
            lease: None,
            next_rotation: None,
        }
    }

    /// Whether the version carries `stage`.
    pub fn has_stage(&self, stage: &Stage) -> bool {
        self.stages.contains(stage)
    }
}

/// A value together with the version it came from.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its version.
    pub version: Version,
}

impl<T> Versioned<T> {
    /// Pairs a value with its version.
    pub fn new(value: T, version: Version) -> Self {
        Versioned { value, version }
    }

    /// Applies `f` to the value, keeping the version.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Versioned<U> {
        Versioned {
            value: f(self.value),
            version: self.version,
        }
    }
}

/// A version id for stores that have none of their own (files, environment variables, Vault
/// static roles that do not say when they rotated): a keyed hash of the content, so a changed
/// content is a new version.
///
/// The key is random per process, so the id identifies content within the process without
/// revealing anything about it: an unkeyed hash in a log line would let anyone holding the logs
/// confirm a guessed password offline. Ids of the same content differ between processes.
pub(crate) fn content_version(bytes: &[u8]) -> VersionId {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(version_key())
        .expect("HMAC takes keys of any length");
    mac.update(bytes);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(29);
    out.push_str("content:");
    for byte in &digest[..12] {
        out.push_str(&format!("{byte:02x}"));
    }
    VersionId::new(out)
}

/// The process's key for [`content_version`], from the operating system's random source.
fn version_key() -> &'static [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        if getrandom::fill(&mut key).is_err() {
            // No OS random source: fall back on the standard library's per-process random hasher
            // seeds, still unknown outside this process.
            use std::hash::{BuildHasher, Hasher};
            for chunk in key.chunks_mut(8) {
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u128(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_nanos(),
                );
                chunk.copy_from_slice(&hasher.finish().to_le_bytes());
            }
        }
        key
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_for_text_and_bytes() {
        let text = SecretValue::text("topsecret");
        let bytes = SecretValue::bytes(b"topsecret".to_vec());
        for value in [&text, &bytes] {
            let printed = format!("{value:?} {value:#?}");
            assert!(!printed.contains("topsecret"));
            assert!(printed.contains("[REDACTED]"));
        }
        assert!(text.is_text());
        assert!(!bytes.is_text());
        assert_eq!(bytes.expose_str(), Some("topsecret"));
        assert_eq!(SecretValue::bytes(vec![0xff, 0x00]).expose_str(), None);
    }

    #[test]
    fn content_version_is_stable_keyed_and_opaque() {
        let a = content_version(b"password-one");
        assert_eq!(a, content_version(b"password-one"));
        assert_ne!(a, content_version(b"password-two"));
        assert!(a.as_str().starts_with("content:"));
        assert_eq!(a.as_str().len(), "content:".len() + 24);
        // Not an unkeyed hash of the content: someone who has the id and guesses the password
        // cannot confirm the guess by hashing it.
        use sha2::{Digest, Sha256};
        let unkeyed: String = Sha256::digest(b"password-one")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!unkeyed.starts_with(&a.as_str()["content:".len().."content:".len() + 12]));
    }

    #[test]
    fn aws_labels_round_trip() {
        for label in ["AWSCURRENT", "AWSPREVIOUS", "AWSPENDING", "blue"] {
            assert_eq!(Stage::from_aws_label(label).as_aws_label(), label);
        }
    }
}
