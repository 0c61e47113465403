use std::io;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use zeroize::Zeroize;

use super::SecretProvider;
use crate::error::{Error, Result};
use crate::value::{SecretValue, Selector, Version, Versioned, content_version};

/// A provider that reads each secret from a file under a directory, such as a Kubernetes secret
/// volume (`/var/run/secrets/app`, one file per key) or a directory an agent writes to.
///
/// The secret id is the file's path relative to the directory (`db.json`, `tls/key.pem`); ids that
/// are absolute or climb out with `..` are refused. The version id is a hash of the content, keyed
/// with a per-process random key (so logged ids reveal nothing about the content), so a
/// changed file is a new version and a rewritten but identical file is not. Content that is valid
/// UTF-8 is text; anything else is bytes. One trailing newline is trimmed from text by default (an
/// editor's, or `echo`'s), see [`trim_trailing_newline`](Self::trim_trailing_newline).
///
/// Files keep no history, so only the current version can be selected.
///
/// ```
/// use credswap::{FileProvider, SecretProvider, Selector};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("api-key"), "k-123\n").unwrap();
/// let files = FileProvider::new(dir.path());
/// let got = files.fetch("api-key", &Selector::Current).await.unwrap();
/// assert_eq!(got.value.expose_str(), Some("k-123"));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct FileProvider {
    root: PathBuf,
    trim_trailing_newline: bool,
}

impl FileProvider {
    /// Reads secrets from files under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FileProvider {
            root: root.into(),
            trim_trailing_newline: true,
        }
    }

    /// Whether to trim one trailing `\n` (or `\r\n`) from text content. Default: `true`.
    pub fn trim_trailing_newline(mut self, trim: bool) -> Self {
        self.trim_trailing_newline = trim;
        self
    }

    /// The file that holds secret `id`.
    pub fn path_of(&self, id: &str) -> Result<PathBuf> {
        let relative = Path::new(id);
        let safe = !id.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(Error::invalid_request(
                id,
                "a file secret id must be a relative path without `..`",
            ));
        }
        Ok(self.root.join(relative))
    }
}

fn map_io_error(id: &str, err: io::Error) -> Error {
    match err.kind() {
        io::ErrorKind::NotFound => Error::not_found(id),
        io::ErrorKind::PermissionDenied => Error::access_denied(id),
        io::ErrorKind::IsADirectory => Error::invalid_request(id, "the path is a directory"),
        _ => Error::transient(id, "could not read the secret file").with_source(err),
    }
}

#[async_trait]
impl SecretProvider for FileProvider {
    fn name(&self) -> &str {
        "file"
    }

    async fn fetch(&self, id: &str, selector: &Selector) -> Result<Versioned<SecretValue>> {
        let path = self.path_of(id)?;
        let mut content = tokio::fs::read(&path)
            .await
            .map_err(|e| map_io_error(id, e))?;
        let modified = tokio::fs::metadata(&path)
            .await
            .ok()
            .and_then(|m| m.modified().ok());
        if self.trim_trailing_newline && std::str::from_utf8(&content).is_ok() {
            if content.ends_with(b"\r\n") {
                content.truncate(content.len() - 2);
            } else if content.ends_with(b"\n") {
                content.truncate(content.len() - 1);
            }
        }
        let version_id = content_version(&content);
        let wanted = match selector {
            Selector::Version(wanted) => wanted == &version_id,
            other => other.is_current(),
        };
        if !wanted {
            content.zeroize();
            return Err(Error::not_found(id).with_message(format!(
                "a file holds only its current version, not {selector}"
            )));
        }
        let mut version = Version::current(version_id);
        version.created_at = modified;
        Ok(Versioned::new(
            SecretValue::from_utf8_or_bytes(content),
            version,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, Stage};

    #[tokio::test]
    async fn reads_text_bytes_and_detects_change() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileProvider::new(dir.path());
        std::fs::write(dir.path().join("a"), "one\r\n").unwrap();
        let first = files.fetch("a", &Selector::Current).await.unwrap();
        assert_eq!(first.value.expose_str(), Some("one"));
        std::fs::write(dir.path().join("a"), "one\n").unwrap();
        let same = files.fetch("a", &Selector::Current).await.unwrap();
        assert_eq!(same.version.id, first.version.id);
        std::fs::write(dir.path().join("a"), "two").unwrap();
        let second = files.fetch("a", &Selector::Current).await.unwrap();
        assert_ne!(second.version.id, first.version.id);
        let by_id = files
            .fetch("a", &Selector::Version(second.version.id.clone()))
            .await
            .unwrap();
        assert_eq!(by_id.value.expose_str(), Some("two"));

        std::fs::write(dir.path().join("bin"), [0xffu8, 0x00, 0x0a]).unwrap();
        let bin = files.fetch("bin", &Selector::Current).await.unwrap();
        assert!(!bin.value.is_text());
        assert_eq!(bin.value.expose_secret(), &[0xff, 0x00, 0x0a]);
    }

    #[tokio::test]
    async fn refuses_escapes_and_maps_errors() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileProvider::new(dir.path());
        for bad in ["../etc/passwd", "/etc/passwd", "", "a/../../b"] {
            let err = files.fetch(bad, &Selector::Current).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{bad}");
        }
        let err = files
            .fetch("missing", &Selector::Current)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        std::fs::write(dir.path().join("a"), "x").unwrap();
        let err = files
            .fetch("a", &Selector::Stage(Stage::Previous))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
}
