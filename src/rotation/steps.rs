//! The four steps of a rotation, the token that ties them together, and what a step and a
//! rotation come to.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::value::VersionId;

/// One of the four steps of a rotation, spelled as AWS Secrets Manager's rotation functions
/// receive them (`createSecret`, `setSecret`, `testSecret`, `finishSecret`).
///
/// ```
/// use credswap::rotation::Step;
///
/// assert_eq!("setSecret".parse::<Step>()?, Step::Set);
/// assert_eq!(Step::Finish.as_aws_str(), "finishSecret");
/// assert!("dropSecret".parse::<Step>().is_err());
/// # Ok::<(), credswap::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// Generate a password and store the new credential as pending (before the database changes).
    Create,
    /// Apply the pending credential to the database.
    Set,
    /// Log in with the pending credential and run a query; roll back when it fails.
    Test,
    /// Promote pending to current; the old current becomes previous.
    Finish,
}

impl Step {
    /// The four steps in order.
    pub const ALL: [Step; 4] = [Step::Create, Step::Set, Step::Test, Step::Finish];

    /// AWS's name for the step.
    pub fn as_aws_str(self) -> &'static str {
        match self {
            Step::Create => "createSecret",
            Step::Set => "setSecret",
            Step::Test => "testSecret",
            Step::Finish => "finishSecret",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_aws_str())
    }
}

impl FromStr for Step {
    type Err = Error;

    /// AWS's spellings, and the short ones (`create`, `set`, `test`, `finish`), in any case.
    fn from_str(text: &str) -> Result<Self> {
        let lower = text.trim().to_ascii_lowercase();
        match lower.strip_suffix("secret").unwrap_or(&lower) {
            "create" => Ok(Step::Create),
            "set" => Ok(Step::Set),
            "test" => Ok(Step::Test),
            "finish" => Ok(Step::Finish),
            _ => Err(Error::new(ErrorKind::InvalidRequest).with_message(format!(
                "unknown rotation step `{}` (expected createSecret, setSecret, testSecret or \
                 finishSecret)",
                text.escape_debug()
            ))),
        }
    }
}

/// What one [`Rotator::step`](super::Rotator::step) call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepOutcome {
    /// The step was performed now.
    Done,
    /// An earlier run had already performed it; nothing changed.
    AlreadyDone,
}

/// What a [`Rotator::rotate`](super::Rotator::rotate) call came to. Only a failure is an error: a rotation found under way
/// or not yet due is an ordinary answer, so replicas that run the same schedule see one rotation
/// and calm answers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationOutcome {
    /// The secret rotated: with a new token, or (when the rotator found the pending version of a
    /// rotator that died, and [resumes those](super::RotatorBuilder::resume_orphaned)) with that
    /// rotation's token.
    Rotated {
        /// The id of this rotation's events.
        rotation_id: Arc<str>,
        /// The rotation's token (the new version's request token).
        token: Arc<str>,
        /// The version that was current before.
        old_version: VersionId,
        /// The version that is current now.
        new_version: VersionId,
    },
    /// Another rotation of this secret is under way: another rotator holds its lock, or its
    /// pending version appeared in the store while this one was about to write its own (a rotator
    /// that does not share the lock, such as an AWS rotation function in another account's
    /// database). Nothing was changed. `token` is its token when the store shows one.
    UnderWay {
        /// The token of the rotation under way, when known.
        token: Option<Arc<str>>,
    },
    /// The current version is younger than the minimum age given to
    /// [`Rotator::rotate_if_due`](super::Rotator::rotate_if_due); nothing was changed.
    NotDue {
        /// The current version.
        current_version: VersionId,
        /// Its age.
        age: Duration,
    },
}

impl RotationOutcome {
    /// Whether the secret rotated.
    pub fn rotated(&self) -> bool {
        matches!(self, RotationOutcome::Rotated { .. })
    }
}

/// A finished rotation, as the [`on_finished`](super::RotatorBuilder::on_finished) hooks get it.
/// Carries ids and versions, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FinishedRotation {
    /// The secret, by the store's one name for it ([`RotationStore::canonical_id`](super::RotationStore::canonical_id): AWS its name,
    /// even when the rotation was given its ARN; Vault mount and path): what consumers read it
    /// by, so what an announcement names.
    pub secret_id: Arc<str>,
    /// Its new current version.
    pub version: VersionId,
    /// The rotation's token.
    pub token: Arc<str>,
    /// The id of the call that ran the hooks (its events carry it too).
    pub rotation_id: Arc<str>,
}

/// A new rotation token: a random UUID (version 4), 36 characters, in the shape AWS Secrets
/// Manager accepts as a `ClientRequestToken` (32 to 64 characters). [`Rotator::rotate`](super::Rotator::rotate) makes
/// one for every rotation; a caller that drives [`Rotator::step`](super::Rotator::step) outside AWS (where
/// `RotateSecret` makes the token) makes one here and passes it to all four steps.
///
/// ```
/// let token = credswap::rotation::new_token()?;
/// assert_eq!(token.len(), 36);
/// assert_eq!(token.as_bytes()[14], b'4'); // version 4
/// # Ok::<(), credswap::Error>(())
/// ```
///
/// # Errors
///
/// [`ErrorKind::Transient`] when the operating system's random source fails.
pub fn new_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| {
        Error::new(ErrorKind::Transient)
            .with_message(format!("the operating system's random source failed: {e}"))
    })?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}
