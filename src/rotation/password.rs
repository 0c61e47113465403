//! Strong passwords from the operating system's random source.

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";
/// Punctuation that is safe unescaped in a URL's user-info, in a shell word and in a `.pgpass` line.
const DEFAULT_SYMBOLS: &str = "-_.~!*^+=";

/// How generated passwords look: length and alphabet.
///
/// The default is 32 characters from letters, digits and `-_.~!*^+=` (about 196 bits), with at least
/// one character of each class (some databases and compliance checks insist). Characters are drawn
/// from the operating system's random source by rejection sampling, so every character of the
/// alphabet is equally likely (no modulo bias); a password missing a required class is thrown away
/// whole and drawn again, which keeps the draw uniform over the passwords that qualify.
///
/// ```
/// use credswap::rotation::PasswordPolicy;
/// use credswap::secrecy::ExposeSecret;
///
/// let policy = PasswordPolicy::default().length(40).exclude("~^");
/// let password = policy.generate()?;
/// assert_eq!(password.expose_secret().len(), 40);
/// assert!(!password.expose_secret().contains(['~', '^', ':', '/', '@']));
/// // Never printable by accident:
/// assert!(!format!("{password:?}").contains(password.expose_secret()));
/// # Ok::<(), credswap::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    length: usize,
    symbols: String,
    excluded: String,
    require_each_class: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            length: 32,
            symbols: DEFAULT_SYMBOLS.to_owned(),
            excluded: String::new(),
            require_each_class: true,
        }
    }
}

impl PasswordPolicy {
    /// The shortest password a policy may ask for.
    pub const MIN_LENGTH: usize = 16;
    /// The longest (PostgreSQL accepts more, but connection strings and tools get awkward).
    pub const MAX_LENGTH: usize = 128;
    /// Characters no generated password ever contains, whatever the policy says: they break
    /// connection URLs (`:` `/` `@`), or quoting in SQL, JSON and shells (`"` `'` `\`).
    /// Whitespace and non-ASCII characters are never used either. AWS's RDS rotation functions
    /// exclude the same set.
    pub const FORBIDDEN: &'static str = ":/@\"'\\";

    /// Sets the length (16 to 128). Checked by [`generate`](Self::generate).
    pub fn length(mut self, length: usize) -> Self {
        self.length = length;
        self
    }

    /// Sets the punctuation used besides letters and digits (`""` for letters and digits only).
    /// Characters of [`FORBIDDEN`](Self::FORBIDDEN), whitespace and non-ASCII characters are dropped.
    pub fn symbols(mut self, symbols: impl Into<String>) -> Self {
        self.symbols = symbols.into();
        self
    }

    /// Characters never to use, on top of [`FORBIDDEN`](Self::FORBIDDEN) (say, ones a legacy client mangles).
    pub fn exclude(mut self, characters: impl Into<String>) -> Self {
        self.excluded.push_str(&characters.into());
        self
    }

    /// Whether every password has at least one lower-case letter, upper-case letter, digit and
    /// (when the alphabet has any) symbol. Default: true.
    pub fn require_each_class(mut self, require: bool) -> Self {
        self.require_each_class = require;
        self
    }

    /// The characters a password is drawn from, grouped by class (classes left empty by exclusion
    /// are dropped).
    fn classes(&self) -> Vec<Vec<u8>> {
        let allowed = |c: &char| {
            c.is_ascii_graphic() && !Self::FORBIDDEN.contains(*c) && !self.excluded.contains(*c)
        };
        let mut symbols: Vec<u8> = self
            .symbols
            .chars()
            .filter(|c| allowed(c) && !c.is_ascii_alphanumeric())
            .map(|c| c as u8)
            .collect();
        symbols.sort_unstable();
        symbols.dedup();
        [LOWER, UPPER, DIGITS]
            .iter()
            .map(|class| class.chars().filter(allowed).map(|c| c as u8).collect())
            .chain(std::iter::once(symbols))
            .filter(|class: &Vec<u8>| !class.is_empty())
            .collect()
    }

    /// Checks the policy can produce strong passwords.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) when the length is out of range or fewer
    /// than 32 characters remain in the alphabet.
    pub fn validate(&self) -> Result<()> {
        if !(Self::MIN_LENGTH..=Self::MAX_LENGTH).contains(&self.length) {
            return Err(Error::config(format!(
                "password length {} is outside {}..={}",
                self.length,
                Self::MIN_LENGTH,
                Self::MAX_LENGTH
            )));
        }
        let size: usize = self.classes().iter().map(Vec::len).sum();
        if size < 32 {
            return Err(Error::config(format!(
                "the password alphabet has {size} characters left after exclusions; at least 32 \
                 are needed"
            )));
        }
        Ok(())
    }

    /// A new password.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) for a policy that fails
    /// [`validate`](Self::validate); [`ErrorKind::Transient`](crate::ErrorKind::Transient) when the
    /// operating system's random source fails.
    pub fn generate(&self) -> Result<SecretString> {
        self.validate()?;
        let classes = self.classes();
        let alphabet: Vec<u8> = classes.concat();
        loop {
            let candidate = draw(&alphabet, self.length)?;
            let complete = !self.require_each_class
                || classes
                    .iter()
                    .all(|class| candidate.bytes().any(|b| class.contains(&b)));
            if complete {
                return Ok(SecretString::from(candidate.as_str()));
            }
        }
    }
}

/// `length` characters of `alphabet`, each uniformly distributed.
fn draw(alphabet: &[u8], length: usize) -> Result<Zeroizing<String>> {
    let size = alphabet.len();
    debug_assert!((1..=256).contains(&size));
    // Accept a byte only below the largest multiple of `size`, so `byte % size` is uniform.
    let limit = 256 - (256 % size);
    let mut out = Zeroizing::new(String::with_capacity(length));
    let mut buffer = Zeroizing::new([0u8; 64]);
    while out.len() < length {
        getrandom::fill(&mut buffer[..]).map_err(|e| {
            Error::new(crate::ErrorKind::Transient)
                .with_message(format!("the operating system's random source failed: {e}"))
        })?;
        for &byte in buffer.iter() {
            if usize::from(byte) < limit && out.len() < length {
                out.push(char::from(alphabet[usize::from(byte) % size]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn default_passwords_are_long_varied_and_safe() {
        let policy = PasswordPolicy::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let password = policy.generate().unwrap();
            let text = password.expose_secret();
            assert_eq!(text.len(), 32);
            assert!(text.chars().all(|c| c.is_ascii_graphic()));
            assert!(!text.contains(|c| PasswordPolicy::FORBIDDEN.contains(c)));
            assert!(text.contains(|c: char| c.is_ascii_lowercase()));
            assert!(text.contains(|c: char| c.is_ascii_uppercase()));
            assert!(text.contains(|c: char| c.is_ascii_digit()));
            assert!(text.contains(|c| DEFAULT_SYMBOLS.contains(c)));
            assert!(seen.insert(text.to_owned()), "a password repeated");
        }
    }

    #[test]
    fn forbidden_characters_cannot_be_asked_for() {
        let policy = PasswordPolicy::default().symbols(" :/@\"'\\\t-é");
        let classes = policy.classes();
        assert_eq!(classes.last().unwrap(), &b"-".to_vec());
        for _ in 0..50 {
            let password = policy.generate().unwrap();
            assert!(
                password
                    .expose_secret()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
            );
        }
    }

    #[test]
    fn bad_policies_are_configuration_errors() {
        for policy in [
            PasswordPolicy::default().length(8),
            PasswordPolicy::default().length(500),
            PasswordPolicy::default()
                .symbols("")
                .exclude("abcdefghijklmnopqrstuvwxyz0123456789"),
        ] {
            let err = policy.generate().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{err}");
        }
        let letters_only = PasswordPolicy::default().symbols("");
        let password = letters_only.generate().unwrap();
        assert!(
            password
                .expose_secret()
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        );
    }

    #[test]
    fn every_character_is_about_equally_likely() {
        // 10 symbols: 256 % 10 = 6 byte values are rejected. Taking `byte % 10` without that would
        // favour '0'..'5' (26/256 against 25/256): counts 1.6 % above and 2.3 % below the mean,
        // where the noise of 1,000,000 draws is 0.3 % (one standard deviation).
        let alphabet = b"0123456789";
        let drawn = draw(alphabet, 1_000_000).unwrap();
        let mut counts = [0usize; 10];
        for byte in drawn.bytes() {
            counts[usize::from(byte - b'0')] += 1;
        }
        let expected = 100_000.0;
        for count in counts {
            let deviation = (count as f64 - expected).abs() / expected;
            assert!(deviation < 0.012, "{counts:?}");
        }
    }
}
