//! The message on the wire: which secret changed, to which version, sent when. Never a value.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, describe_json_error};
use crate::value::VersionId;

/// The largest encoded announcement, in bytes: PostgreSQL refuses `NOTIFY` payloads of 8,000 bytes
/// or more, and one limit for both brokers keeps a publisher's choice of broker from changing what
/// it may announce. Subscribers refuse larger payloads before parsing them.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 7_999;

// PostgreSQL refuses payloads of 8,000 bytes or more.
const _: () = assert!(MAX_ANNOUNCEMENT_BYTES < 8_000);

/// The last send time we accept: the end of the year 9999, in microseconds since 1970. Later
/// times are nonsense, and far enough ones would overflow a `SystemTime`.
const LAST_MICROS: u64 = 253_402_300_799_999_999;

/// News that secret `id` changed, optionally naming the version that is now current.
///
/// It carries the secret id, the version id and when it was sent, never a value: a subscriber
/// that receives one asks its own store for the secret through its cache's normal, rate-limited
/// refresh, so it can never put a value in a cache. A forged or late announcement costs each cache
/// that holds the secret at most two refreshes (its own and, when the store reports another
/// version, one follow-up in case a replica lagged), and a flood of them at most one refresh per
/// `min_refresh_interval`; a refresh is a probe, plus a fetch when the version changed.
///
/// On the wire it is compact JSON, for example
/// `{"id":"prod/db","version":"v7","sent_at_us":1732370000123456}`; unknown fields are ignored
/// so later versions can add some.
///
/// ```
/// use credswap::VersionId;
/// use credswap::push::Announcement;
///
/// let announcement = Announcement::new("prod/db", &VersionId::new("v7")).unwrap();
/// let payload = announcement.encode();
/// assert!(payload.starts_with(r#"{"id":"prod/db","version":"v7","sent_at_us":"#));
///
/// let received = Announcement::decode(payload.as_bytes()).unwrap();
/// assert_eq!(received.id(), "prod/db");
/// assert_eq!(received.version().map(VersionId::as_str), Some("v7"));
///
/// // Decoding errors say what is wrong without repeating the payload.
/// let err = Announcement::decode(br#"{"id": 42, "password": "hunter2"}"#).unwrap_err();
/// assert!(!err.to_string().contains("hunter2"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Announcement {
    id: Arc<str>,
    version: Option<VersionId>,
    sent_at: Option<SystemTime>,
    /// HMAC-SHA-256 over [`signed_bytes`](Self::signed_bytes), when the publisher signed it.
    signature: Option<[u8; 32]>,
}

impl fmt::Debug for Announcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Announcement")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("sent_at", &self.sent_at)
            .field("signed", &self.signature.is_some())
            .finish()
    }
}

/// Why a payload is not an announcement, or an announcement cannot be built. Names the problem and
/// where it is, never the payload's content (a payload may be anything, even a secret somebody sent
/// to the wrong channel).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnnouncementError {
    /// The encoded announcement is larger than [`MAX_ANNOUNCEMENT_BYTES`].
    #[error("announcement of {bytes} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The payload is not JSON of the expected shape.
    #[error("announcement is not valid: {reason}")]
    Json {
        /// What is wrong and where (line and column), without the text.
        reason: Arc<str>,
    },
    /// A required field is missing.
    #[error("announcement has no `{field}`")]
    MissingField {
        /// Which field.
        field: &'static str,
    },
    /// A field is empty.
    #[error("announcement field `{field}` is empty")]
    EmptyField {
        /// Which field.
        field: &'static str,
    },
    /// A field contains a control character (NUL, a line break, …), which no secret or version id
    /// has and which could forge log lines.
    #[error("announcement field `{field}` contains a control character")]
    ControlCharacter {
        /// Which field.
        field: &'static str,
    },
    /// The send time is past the year 9999.
    #[error("announcement field `sent_at_us` is out of range")]
    TimeOutOfRange,
    /// The `sig` field is not 64 hexadecimal digits (an HMAC-SHA-256).
    #[error("announcement field `sig` is not 64 hexadecimal digits")]
    Signature,
}

impl AnnouncementError {
    /// A short, stable, lower-case name (`"too_large"`, `"json"`, …), for metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            AnnouncementError::TooLarge { .. } => "too_large",
            AnnouncementError::Json { .. } => "json",
            AnnouncementError::MissingField { .. } => "missing_field",
            AnnouncementError::EmptyField { .. } => "empty_field",
            AnnouncementError::ControlCharacter { .. } => "control_character",
            AnnouncementError::TimeOutOfRange => "time_out_of_range",
            AnnouncementError::Signature => "signature",
        }
    }
}

impl From<AnnouncementError> for Error {
    fn from(error: AnnouncementError) -> Self {
        Error::new(ErrorKind::InvalidRequest).with_message(error.to_string())
    }
}

/// The JSON shape, borrowed for encoding.
#[derive(Serialize)]
struct WireOut<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent_at_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
}

/// The JSON shape, owned for decoding. Every field is optional here so that a missing one is
/// reported by name rather than through serde's message.
#[derive(Deserialize)]
struct WireIn {
    id: Option<String>,
    version: Option<String>,
    sent_at_us: Option<u64>,
    sig: Option<String>,
}

impl Announcement {
    /// News that `id` changed and `version` is now its current version, sent now.
    ///
    /// # Errors
    ///
    /// When `id` or `version` is empty or holds a control character, or the encoded announcement
    /// would exceed [`MAX_ANNOUNCEMENT_BYTES`].
    pub fn new(id: &str, version: &VersionId) -> Result<Self, AnnouncementError> {
        Self::build(id, Some(version.clone()), Some(SystemTime::now()))
    }

    /// News that `id` changed, without saying to which version (an operator's "go and look"),
    /// sent now. Subscribers refresh once; when their cache's rate limit answered instead of the
    /// store (it was asked moments before), they ask again once the limit has passed.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn unversioned(id: &str) -> Result<Self, AnnouncementError> {
        Self::build(id, None, Some(SystemTime::now()))
    }

    fn build(
        id: &str,
        version: Option<VersionId>,
        sent_at: Option<SystemTime>,
    ) -> Result<Self, AnnouncementError> {
        check_field("id", id)?;
        if let Some(version) = &version {
            check_field("version", version.as_str())?;
        }
        let announcement = Announcement {
            id: Arc::from(id),
            version,
            sent_at,
            signature: None,
        };
        // Room for a signature is kept, so that signing never makes an announcement too large.
        let bytes = announcement.encode().len() + SIGNATURE_FIELD_BYTES;
        if bytes > MAX_ANNOUNCEMENT_BYTES {
            return Err(AnnouncementError::TooLarge {
                bytes,
                max: MAX_ANNOUNCEMENT_BYTES,
            });
        }
        Ok(announcement)
    }

    /// The same announcement with another send time (`None`: unknown), for replaying a recorded
    /// one or for tests.
    pub fn with_sent_at(mut self, sent_at: Option<SystemTime>) -> Self {
        self.sent_at = sent_at;
        self
    }

    /// The secret id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The version the publisher says is now current, when it said.
    pub fn version(&self) -> Option<&VersionId> {
        self.version.as_ref()
    }

    /// When the publisher sent it, by the publisher's clock, when it said.
    pub fn sent_at(&self) -> Option<SystemTime> {
        self.sent_at
    }

    /// How long ago it was sent, by this machine's clock (`None` when the send time is unknown or
    /// in the future of this clock: clocks of two machines disagree).
    pub fn age(&self) -> Option<Duration> {
        SystemTime::now().duration_since(self.sent_at?).ok()
    }

    /// Whether the publisher signed it (see [`AnnouncementKey`](crate::push::AnnouncementKey)).
    pub fn is_signed(&self) -> bool {
        self.signature.is_some()
    }

    /// The same announcement signed with `key`'s current version.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when the key is shorter than 16 bytes, or its handle holds nothing
    /// usable.
    pub fn signed(mut self, key: &super::AnnouncementKey) -> crate::error::Result<Self> {
        self.signature = None;
        self.signature = Some(key.sign(self.signed_bytes().as_bytes())?);
        Ok(self)
    }

    pub(super) fn signature(&self) -> Option<&[u8; 32]> {
        self.signature.as_ref()
    }

    /// What a signature covers: a fixed prefix (so that no other use of the key can produce one)
    /// and the announcement's encoding without its signature.
    pub(super) fn signed_bytes(&self) -> String {
        format!("{SIGNATURE_CONTEXT}{}", self.encode_with(None))
    }

    /// The compact JSON payload. Its length is at most [`MAX_ANNOUNCEMENT_BYTES`].
    pub fn encode(&self) -> String {
        let sig = self.signature.map(|tag| hex(&tag));
        self.encode_with(sig.as_deref())
    }

    fn encode_with(&self, sig: Option<&str>) -> String {
        let sent_at_us = self.sent_at.and_then(|at| {
            at.duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        });
        let wire = WireOut {
            id: &self.id,
            version: self.version.as_ref().map(VersionId::as_str),
            sent_at_us,
            sig: sig.map(str::to_owned),
        };
        // Serializing strings and integers into a String cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Reads a payload as received from a broker.
    ///
    /// Cost: a length check first (a payload over [`MAX_ANNOUNCEMENT_BYTES`] is refused without
    /// being parsed), then one JSON parse.
    ///
    /// # Errors
    ///
    /// An [`AnnouncementError`] naming what is wrong; it never contains the payload's text.
    pub fn decode(payload: &[u8]) -> Result<Self, AnnouncementError> {
        if payload.len() > MAX_ANNOUNCEMENT_BYTES {
            return Err(AnnouncementError::TooLarge {
                bytes: payload.len(),
                max: MAX_ANNOUNCEMENT_BYTES,
            });
        }
        let wire: WireIn =
            serde_json::from_slice(payload).map_err(|err| AnnouncementError::Json {
                reason: Arc::from(describe_json_error(&err)),
            })?;
        let id = wire
            .id
            .ok_or(AnnouncementError::MissingField { field: "id" })?;
        let sent_at = match wire.sent_at_us {
            Some(micros) if micros <= LAST_MICROS => {
                Some(UNIX_EPOCH + Duration::from_micros(micros))
            }
            Some(_) => return Err(AnnouncementError::TimeOutOfRange),
            None => None,
        };
        let signature = match wire.sig.as_deref() {
            Some(sig) => Some(unhex(sig).ok_or(AnnouncementError::Signature)?),
            None => None,
        };
        let mut announcement = Self::build(&id, wire.version.map(VersionId::from), sent_at)?;
        announcement.signature = signature;
        Ok(announcement)
    }
}

/// The prefix of every signed message.
const SIGNATURE_CONTEXT: &str = "credswap announcement v1\n";

/// What a signature adds to an encoded announcement: `,"sig":"` + 64 digits + `"`.
const SIGNATURE_FIELD_BYTES: usize = 8 + 64 + 1;

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn check_field(field: &'static str, value: &str) -> Result<(), AnnouncementError> {
    if value.is_empty() {
        return Err(AnnouncementError::EmptyField { field });
    }
    if value.chars().any(char::is_control) {
        return Err(AnnouncementError::ControlCharacter { field });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_a_version() {
        let versioned = Announcement::new("prod/db", &VersionId::new("v2")).unwrap();
        let decoded = Announcement::decode(versioned.encode().as_bytes()).unwrap();
        assert_eq!(decoded.id(), "prod/db");
        assert_eq!(decoded.version(), Some(&VersionId::new("v2")));
        // Microsecond precision on the wire.
        let sent = versioned.sent_at().unwrap();
        let back = decoded.sent_at().unwrap();
        let skew = sent.duration_since(back).unwrap_or_default();
        assert!(skew < Duration::from_micros(1), "{skew:?}");

        let bare = Announcement::unversioned("k").unwrap().with_sent_at(None);
        assert_eq!(bare.encode(), r#"{"id":"k"}"#);
        let decoded = Announcement::decode(br#"{"id":"k"}"#).unwrap();
        assert_eq!(decoded, bare);
        assert_eq!(decoded.age(), None);
    }

    #[test]
    fn unknown_fields_are_ignored_for_later_versions() {
        let decoded =
            Announcement::decode(br#"{"id":"a","version":"3","by":"rotator","v":2}"#).unwrap();
        assert_eq!(decoded.id(), "a");
    }

    #[test]
    fn bad_payloads_get_typed_errors_that_never_quote_them() {
        let secret = "Sentinel-Value-77";
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (secret.as_bytes().to_vec(), "json"),
            (
                format!(r#"{{"id": {{"x": "{secret}"}}}}"#).into_bytes(),
                "json",
            ),
            (
                format!(r#"{{"id": "a", "version": 1, "p": "{secret}"}}"#).into_bytes(),
                "json",
            ),
            (
                format!(r#"{{"id": "a", "sent_at_us": "{secret}"}}"#).into_bytes(),
                "json",
            ),
            (
                format!(r#"{{"password": "{secret}"}}"#).into_bytes(),
                "missing_field",
            ),
            (br#"{"id": ""}"#.to_vec(), "empty_field"),
            (br#"{"id": "a", "version": ""}"#.to_vec(), "empty_field"),
            (
                format!(r#"{{"id": "{secret}\n"}}"#).into_bytes(),
                "control_character",
            ),
            (
                format!(r#"{{"id": "a\u0000{secret}"}}"#).into_bytes(),
                "control_character",
            ),
            (
                br#"{"id": "a", "sent_at_us": 18446744073709551615}"#.to_vec(),
                "time_out_of_range",
            ),
            (vec![0xff, 0xfe, b'{'], "json"),
            (Vec::new(), "json"),
            (
                format!(r#"{{"id": "{}"}}"#, "x".repeat(MAX_ANNOUNCEMENT_BYTES)).into_bytes(),
                "too_large",
            ),
        ];
        for (payload, expected) in cases {
            let err = Announcement::decode(&payload).unwrap_err();
            assert_eq!(err.as_str(), expected, "{err}");
            let printed = format!("{err} {err:?} {}", Error::from(err.clone()));
            assert!(!printed.contains(secret), "{printed}");
        }
    }

    #[test]
    fn the_size_limit_fits_a_postgres_notify_payload() {
        // The encoded form of the largest accepted id, signed, is exactly at the limit.
        let overhead = r#"{"id":""}"#.len() + SIGNATURE_FIELD_BYTES;
        let largest = "i".repeat(MAX_ANNOUNCEMENT_BYTES - overhead);
        let fits = Announcement::build(&largest, None, None).unwrap();
        let key = super::super::AnnouncementKey::fixed(crate::value::SecretValue::from(
            "a key of at least sixteen bytes",
        ));
        assert_eq!(
            fits.signed(&key).unwrap().encode().len(),
            MAX_ANNOUNCEMENT_BYTES
        );
        assert!(Announcement::build(&format!("{largest}i"), None, None).is_err());
        let err = Announcement::new(&largest, &VersionId::new("v1")).unwrap_err();
        assert_eq!(err.as_str(), "too_large");
        assert_eq!(Error::from(err).kind(), ErrorKind::InvalidRequest);
    }

    #[test]
    fn ids_are_escaped_in_json() {
        let tricky = r#"a"b\c/ü"#;
        let announcement = Announcement::new(tricky, &VersionId::new("v\"1")).unwrap();
        let decoded = Announcement::decode(announcement.encode().as_bytes()).unwrap();
        assert_eq!(decoded.id(), tricky);
        assert_eq!(decoded.version().unwrap().as_str(), "v\"1");
    }
}
