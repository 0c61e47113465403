//! What a cached value is keyed by.

use std::borrow::Cow;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::value::Selector;

/// A secret id and the version a reader selects. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) id: Arc<str>,
    pub(crate) selector: Selector,
    /// `id` for the current version (so a hit needs no allocation), `id` NUL selector otherwise.
    pub(crate) cache_key: Arc<str>,
}

impl Key {
    pub(crate) fn new(id: &str, selector: &Selector) -> Result<Key> {
        if id.contains('\0') {
            return Err(Error::invalid_request(
                id.replace('\0', "\\0"),
                "a secret id must not contain NUL",
            ));
        }
        let cache_key = cache_key(id, selector);
        Ok(Key {
            id: Arc::from(id),
            selector: selector.clone(),
            cache_key: Arc::from(cache_key.as_ref()),
        })
    }

    /// The secret id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Whether this key is one of the versions of secret `id`.
    pub(crate) fn is_of(cache_key: &str, id: &str) -> bool {
        cache_key
            .strip_prefix(id)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('\0'))
    }
}

pub(crate) fn cache_key<'a>(id: &'a str, selector: &Selector) -> Cow<'a, str> {
    if matches!(selector, Selector::Current) {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(format!("{id}\0{selector}"))
    }
}

/// How a read should treat the store.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Serve from the cache when it can.
    Read,
    /// Ask the store now (rate-limited by `min_refresh_interval`).
    Force,
    /// Ask the store now, also within `min_refresh_interval` (still coalesced, and still not
    /// while backing off after failures): for a caller that knows the last store call was not
    /// its own and must not cost it a change made since (a push announcement right after the
    /// re-check of a reconnect). Bounded by its caller.
    PastLimit,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Stage;

    #[test]
    fn keys_of_one_secret() {
        let current = Key::new("db", &Selector::Current).unwrap();
        let previous = Key::new("db", &Selector::Stage(Stage::Previous)).unwrap();
        assert!(Key::is_of(&current.cache_key, "db"));
        assert!(Key::is_of(&previous.cache_key, "db"));
        assert!(!Key::is_of(&current.cache_key, "d"));
        assert!(!Key::is_of("dbx", "db"));
        assert!(Key::new("a\0b", &Selector::Current).is_err());
    }
}
