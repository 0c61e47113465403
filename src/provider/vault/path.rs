//! Secret ids as parts of Vault URLs: checked before they are spliced into one.

use crate::error::{Error, Result};

/// `id` as the path Vault names it: without leading or trailing slashes. Refused, with an error
/// naming the id, when a part of it would change which path the URL reaches: an empty id, an
/// empty segment (`a//b`), `.` or `..` as a segment, or any of `?`, `#`, `%` (a query, a fragment,
/// an escape that could spell the others) or a control character.
///
/// ```text
/// "myapp/db"      -> "myapp/db"
/// "/myapp/db/"    -> "myapp/db"
/// "credswap-pending/../myapp/db", "a/./b", "a//b", "db?version=1" -> refused
/// ```
pub(crate) fn vault_path(id: &str) -> Result<&str> {
    let path = id.strip_prefix('/').unwrap_or(id);
    let path = path.strip_suffix('/').unwrap_or(path);
    let problem = if path.is_empty() {
        Some("is empty")
    } else if path.split('/').any(str::is_empty) {
        Some("has an empty segment (`//`)")
    } else if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        Some("has a `.` or `..` segment")
    } else if path.contains(['?', '#', '%']) {
        Some("contains `?`, `#` or `%`")
    } else if path.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match problem {
        None => Ok(path),
        Some(problem) => Err(Error::invalid_request(
            id.escape_debug().to_string(),
            format!("a Vault secret id that {problem} would change the path it reaches"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn ids_that_change_the_path_are_refused_and_named() {
        assert_eq!(vault_path("myapp/db").unwrap(), "myapp/db");
        assert_eq!(vault_path("/myapp/db/").unwrap(), "myapp/db");
        assert_eq!(vault_path("creds/app role").unwrap(), "creds/app role");
        for bad in [
            "",
            "/",
            "credswap-pending/../myapp/db",
            "..",
            "a/./b",
            "./a",
            "a//b",
            "db?version=1",
            "db#x",
            "a/%2e%2e/b",
            "a\nb",
        ] {
            let err = vault_path(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{bad:?}");
            assert_eq!(err.id(), Some(bad.escape_debug().to_string().as_str()));
        }
    }
}
