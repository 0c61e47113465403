use async_trait::async_trait;

use super::SecretProvider;
use crate::error::{Error, Result};
use crate::value::{SecretValue, Selector, Version, Versioned, content_version};

/// A provider that reads secrets from environment variables, for tools launched with credentials in
/// their environment.
///
/// The secret id is the variable's name, after an optional prefix: with prefix `APP_`, id
/// `DB_PASSWORD` reads `APP_DB_PASSWORD`. The version id is a hash of the value, keyed
/// per process (logged ids reveal nothing about the value). Values that are not
/// valid Unicode are returned as bytes. Only the current version exists.
///
/// ```
/// use credswap::{EnvProvider, SecretProvider, Selector};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let env = EnvProvider::new();
/// let path = env.fetch("PATH", &Selector::Current).await.unwrap();
/// assert_eq!(path.value.expose_str(), std::env::var("PATH").ok().as_deref());
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct EnvProvider {
    prefix: String,
}

impl EnvProvider {
    /// Reads variables by their plain names.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads variable `{prefix}{id}` for secret `id`.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        EnvProvider {
            prefix: prefix.into(),
        }
    }
}

#[async_trait]
impl SecretProvider for EnvProvider {
    fn name(&self) -> &str {
        "env"
    }

    async fn fetch(&self, id: &str, selector: &Selector) -> Result<Versioned<SecretValue>> {
        if id.is_empty() || id.contains(['=', '\0']) {
            return Err(Error::invalid_request(
                id,
                "an environment variable name must be non-empty, without `=` or NUL",
            ));
        }
        let name = format!("{}{id}", self.prefix);
        let raw = std::env::var_os(&name).ok_or_else(|| Error::not_found(id))?;
        let value = {
            use std::os::unix::ffi::OsStringExt;
            SecretValue::from_utf8_or_bytes(raw.into_vec())
        };
        let version = Version::current(content_version(value.expose_secret()));
        let wanted = match selector {
            Selector::Version(wanted) => wanted == &version.id,
            other => other.is_current(),
        };
        if !wanted {
            return Err(Error::not_found(id).with_message(format!(
                "an environment variable holds only its current version, not {selector}"
            )));
        }
        Ok(Versioned::new(value, version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[tokio::test]
    async fn reads_with_prefix_and_reports_missing() {
        // PATH is set wherever tests run; reading it as prefix "PA" + id "TH" tests the prefix.
        let expected = std::env::var("PATH").unwrap();
        let env = EnvProvider::with_prefix("PA");
        let got = env.fetch("TH", &Selector::Current).await.unwrap();
        assert_eq!(got.value.expose_str(), Some(expected.as_str()));
        let by_version = env
            .fetch("TH", &Selector::Version(got.version.id.clone()))
            .await
            .unwrap();
        assert_eq!(by_version.version, got.version);
        let err = env.fetch("NOPE", &Selector::Current).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let err = env.fetch("A=B", &Selector::Current).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    }
}
