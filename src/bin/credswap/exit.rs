//! Exit codes, and failures that say what to do.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (`run`: the command's own code is passed through) |
//! | 64 | usage or configuration: a bad flag, reference, config file or missing setting |
//! | 65 | data: a field that is not there, a value that is not what was asked for |
//! | 66 | the secret (or the version asked for) does not exist |
//! | 69 | the store is unavailable: unreachable, too slow (`--timeout`), or throttling |
//! | 70 | anything else: a rotation that failed or was rolled back, a broker that refused |
//! | 77 | the store denied access |
//! | 126 / 127 | `run`: the command cannot be executed / was not found |
//! | 128 + N | `run`: the command was killed by signal N |

use credswap::{Error, ErrorKind};

pub const USAGE: i32 = 64;
pub const DATA: i32 = 65;
pub const NOT_FOUND: i32 = 66;
pub const UNAVAILABLE: i32 = 69;
pub const SOFTWARE: i32 = 70;
pub const DENIED: i32 = 77;
pub const CANNOT_EXECUTE: i32 = 126;
pub const COMMAND_NOT_FOUND: i32 = 127;

/// Why a command failed: an exit code and a message for a person (never a secret value).
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(USAGE, message)
    }

    pub fn data(message: impl Into<String>) -> Failure {
        Failure::new(DATA, message)
    }

    /// A store's error about `what` (a reference as the user wrote it), with the next step.
    pub fn store(what: &str, error: &Error) -> Failure {
        let (code, hint) = match error.kind() {
            ErrorKind::NotFound => (
                NOT_FOUND,
                "check the name, and that it exists in this store and region",
            ),
            ErrorKind::AccessDenied => (
                DENIED,
                "the store's credentials may not read it: check the IAM or Vault policy",
            ),
            ErrorKind::Throttled => (
                UNAVAILABLE,
                "the store is throttling: retry later, or cache longer",
            ),
            ErrorKind::Transient | ErrorKind::Closed => (
                UNAVAILABLE,
                "check the store's address and that it is reachable",
            ),
            ErrorKind::Decode => (DATA, "the secret's value is not in the shape asked for"),
            ErrorKind::Config | ErrorKind::InvalidRequest => (
                USAGE,
                "check the options and the environment (--vault-addr, --aws-region, --config; see --help)",
            ),
            ErrorKind::AuthRejected => (DENIED, "the credentials were rejected"),
            _ => (SOFTWARE, "see the message"),
        };
        Failure::new(code, format!("{what}: {error}\n  hint: {hint}"))
    }

    /// A rotation that failed: the store's codes, with hints that name the database too (the
    /// engine talks to both).
    pub fn rotation(what: &str, error: &Error, tls: bool) -> Failure {
        let hint = match error.kind() {
            ErrorKind::Transient | ErrorKind::Closed if tls => {
                "check that the store and the database (--db-host, --db-port) are reachable; a \
                 TLS failure means --db-ca does not name the CA that signed the database's \
                 certificate"
            }
            ErrorKind::Transient | ErrorKind::Closed => {
                "check that the store and the database (--db-host, --db-port) are reachable"
            }
            ErrorKind::AuthRejected => {
                "the database refused a login: the admin credential, the secret's, or a \
                 connection without TLS (--db-plaintext) that the server does not allow"
            }
            _ => return Failure::store(what, error),
        };
        let code = Failure::store(what, error).code;
        Failure::new(code, format!("{what}: {error}\n  hint: {hint}"))
    }

    /// A store that did not answer within `timeout`.
    pub fn timed_out(what: &str, timeout: std::time::Duration) -> Failure {
        Failure::new(
            UNAVAILABLE,
            format!(
                "{what}: the store did not answer within {}\n  hint: check its address and the \
                 network, or allow longer with --timeout",
                humantime::format_duration(timeout)
            ),
        )
    }
}
