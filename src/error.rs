//! One error type for every provider, the cache and the handles.
//!
//! An [`Error`] carries an [`ErrorKind`] to match on, the id of the secret it concerns, and a message
//! that never contains a secret value: providers build messages from ids, paths, status codes and
//! error codes only, and decode errors keep the position of a JSON error, never its text.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What went wrong, for a caller to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The secret (or the selected version or stage) does not exist. Never retried.
    NotFound,
    /// The store refused access. Never retried in a loop.
    AccessDenied,
    /// The store asked us to slow down (HTTP 429, `ThrottlingException`). Retried with backoff.
    Throttled,
    /// The store could not be reached or failed for a passing reason (timeout, 5xx, sealed, I/O).
    /// Retried with backoff; last-known-good is served within `max_stale`.
    Transient,
    /// The secret's content could not be turned into the requested type.
    Decode,
    /// The request itself is wrong: an invalid id, a secret scheduled for deletion, a bad parameter.
    InvalidRequest,
    /// The database (or another consumer) rejected the credentials, after the retry budget was spent.
    AuthRejected,
    /// The cache or a component was configured in a way that cannot work.
    Config,
    /// The cache (or session, or schedule) was shut down or dropped.
    Closed,
    /// Someone else got there first: a rotation of this secret is already under way, or a
    /// check-and-set write lost to a concurrent writer. Nothing was changed by this call.
    Conflict,
    /// A rotation could not complete and was undone: its `test` step failed, or its `finish` found
    /// the secret written by someone else meanwhile. The database is back on the current
    /// credential and the pending version is gone from the store. The message says which step
    /// failed and what was restored.
    RolledBack,
}

impl ErrorKind {
    /// A short, stable, lower-case name (`"not_found"`, `"throttled"`, …), for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AccessDenied => "access_denied",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Transient => "transient",
            ErrorKind::Decode => "decode",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::AuthRejected => "auth_rejected",
            ErrorKind::Config => "config",
            ErrorKind::Closed => "closed",
            ErrorKind::Conflict => "conflict",
            ErrorKind::RolledBack => "rolled_back",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "secret not found",
            ErrorKind::AccessDenied => "access to secret denied",
            ErrorKind::Throttled => "secret store throttled the request",
            ErrorKind::Transient => "secret store unavailable",
            ErrorKind::Decode => "secret could not be decoded",
            ErrorKind::InvalidRequest => "invalid secret request",
            ErrorKind::AuthRejected => "credentials rejected",
            ErrorKind::Config => "invalid configuration",
            ErrorKind::Closed => "shut down",
            ErrorKind::Conflict => "conflicting rotation or write",
            ErrorKind::RolledBack => "rotation rolled back",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// The error of every fallible operation in this crate.
///
/// It is cheap to clone (waiters of one coalesced fetch all receive the same error) and its
/// `Display` and `Debug` output name the secret id and what failed, never a secret value.
///
/// ```
/// use credswap::{Error, ErrorKind};
///
/// let err = Error::not_found("prod/app/db");
/// assert_eq!(err.kind(), ErrorKind::NotFound);
/// assert!(!err.is_retryable());
/// assert_eq!(err.to_string(), "secret not found: `prod/app/db`");
/// ```
#[derive(Clone, thiserror::Error)]
#[error("{}", self.render())]
pub struct Error {
    kind: ErrorKind,
    id: Option<Arc<str>>,
    message: Option<Arc<str>>,
    retry_after: Option<Duration>,
    #[source]
    source: Option<Source>,
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        let _ = d.field("kind", &self.kind);
        if let Some(id) = &self.id {
            let _ = d.field("id", id);
        }
        if let Some(message) = &self.message {
            let _ = d.field("message", message);
        }
        if let Some(retry_after) = &self.retry_after {
            let _ = d.field("retry_after", retry_after);
        }
        if let Some(source) = &self.source {
            // Sources are library errors (I/O, HTTP, SDK): render them with Display, which for the
            // libraries we wrap names codes and addresses, not payloads.
            let _ = d.field("source", &format_args!("{source}"));
        }
        d.finish()
    }
}

impl Error {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind) -> Self {
        Error {
            kind,
            id: None,
            message: None,
            retry_after: None,
            source: None,
        }
    }

    /// The secret was not found.
    pub fn not_found(id: impl Into<Arc<str>>) -> Self {
        Error::new(ErrorKind::NotFound).with_id(id)
    }

    /// Access to the secret was denied.
    pub fn access_denied(id: impl Into<Arc<str>>) -> Self {
        Error::new(ErrorKind::AccessDenied).with_id(id)
    }

    /// The store throttled the request.
    pub fn throttled(id: impl Into<Arc<str>>) -> Self {
        Error::new(ErrorKind::Throttled).with_id(id)
    }

    /// The store failed for a passing reason.
    pub fn transient(id: impl Into<Arc<str>>, message: impl Into<Arc<str>>) -> Self {
        Error::new(ErrorKind::Transient)
            .with_id(id)
            .with_message(message)
    }

    /// The content could not be decoded. `reason` must not contain the content.
    pub fn decode(id: impl Into<Arc<str>>, reason: impl Into<Arc<str>>) -> Self {
        Error::new(ErrorKind::Decode)
            .with_id(id)
            .with_message(reason)
    }

    /// The request was invalid.
    pub fn invalid_request(id: impl Into<Arc<str>>, reason: impl Into<Arc<str>>) -> Self {
        Error::new(ErrorKind::InvalidRequest)
            .with_id(id)
            .with_message(reason)
    }

    /// A configuration error.
    pub fn config(message: impl Into<Arc<str>>) -> Self {
        Error::new(ErrorKind::Config).with_message(message)
    }

    /// Sets the secret id this error concerns.
    pub fn with_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets a human-readable detail. It must never contain a secret value.
    pub fn with_message(mut self, message: impl Into<Arc<str>>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Sets how long the store asked us to wait before the next call.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// Attaches the underlying library error. Its `Display` must not contain a secret value.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The id of the secret this error concerns, when there is one.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The detail message, when there is one.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// How long the store asked us to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether trying again later can succeed: true for [`ErrorKind::Throttled`] and
    /// [`ErrorKind::Transient`], false for everything else (a missing or denied secret does not
    /// appear by asking again in a loop).
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Throttled | ErrorKind::Transient)
    }

    /// Whether the cache may serve last-known-good in place of this error (same as
    /// [`is_retryable`](Self::is_retryable)).
    pub fn allows_stale(&self) -> bool {
        self.is_retryable()
    }

    fn render(&self) -> String {
        let mut out = String::from(self.kind.describe());
        if let Some(id) = &self.id {
            out.push_str(": `");
            out.push_str(id);
            out.push('`');
        }
        if let Some(message) = &self.message {
            out.push_str(": ");
            out.push_str(message);
        }
        if let Some(source) = &self.source {
            out.push_str(": ");
            out.push_str(&source.to_string());
        }
        out
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Describes a `serde_json` error without any of the input it was reading.
///
/// serde's messages quote the offending value (`invalid type: string "hunter2"`), so only the
/// category and position are kept, plus the name of a missing field, which comes from the Rust type
/// and not from the data.
pub(crate) fn describe_json_error(err: &serde_json::Error) -> String {
    let text = err.to_string();
    if let Some(rest) = text.strip_prefix("missing field `") {
        if let Some(end) = rest.find('`') {
            return format!("missing field `{}`", &rest[..end]);
        }
    }
    let category = match err.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "malformed JSON",
        serde_json::error::Category::Data => "JSON does not match the expected shape",
        serde_json::error::Category::Eof => "JSON ends early",
    };
    format!("{category} at line {} column {}", err.line(), err.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_never_quote_the_input() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Creds {
            username: String,
            port: u16,
        }
        let samples = [
            r#"{"username": "admin", "port": "s3cr3t-value"}"#,
            r#"{"username": 17, "port": 5432, "extra": "s3cr3t-value"}"#,
            r#"s3cr3t-value"#,
            r#"{"username": "s3cr3t-value""#,
        ];
        for sample in samples {
            let err = serde_json::from_str::<Creds>(sample).unwrap_err();
            let described = describe_json_error(&err);
            assert!(!described.contains("s3cr3t"), "{described}");
            assert!(!described.contains("admin"), "{described}");
        }
        let err = serde_json::from_str::<Creds>(r#"{"username": "x"}"#).unwrap_err();
        assert_eq!(describe_json_error(&err), "missing field `port`");
    }

    #[test]
    fn retryable_kinds() {
        assert!(Error::throttled("a").is_retryable());
        assert!(Error::transient("a", "timeout").is_retryable());
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::AccessDenied,
            ErrorKind::Decode,
            ErrorKind::InvalidRequest,
            ErrorKind::AuthRejected,
            ErrorKind::Config,
            ErrorKind::Closed,
            ErrorKind::Conflict,
            ErrorKind::RolledBack,
        ] {
            assert!(!Error::new(kind).is_retryable(), "{kind}");
        }
    }
}
