//! A certificate chain and its private key, decoded from a secret: the [`CertifiedKey`] rustls
//! serves, what the leaf certificate says about itself, and the checks that keep a bad version
//! out (no certificate, no key, a key of another certificate, outside its validity).
//!
//! Every error names what is wrong and never quotes the content: no PEM, no base64, no key bytes.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::shapes::chain_and_key;
use crate::error::{Error, Result};
use crate::value::SecretValue;

/// A certificate chain with its private key, decoded from one version of a secret, and what the
/// leaf certificate says about itself.
///
/// A secret holds one of two shapes:
///
/// - **JSON** with `certificate` (PEM: the leaf, optionally followed by its chain), `private_key`
///   (PEM) and optionally `ca_chain` (an array of PEM strings, or one string): what Vault's and
///   OpenBao's PKI engine returns (so [`VaultPkiProvider`](crate::provider::VaultPkiProvider)'s
///   values), and the shape to store in AWS Secrets Manager or Vault KV. Other fields are ignored.
/// - **PEM text** holding the certificates (leaf first) and one private key (`PRIVATE KEY`,
///   `RSA PRIVATE KEY` or `EC PRIVATE KEY`), in any order.
///
/// Decoding refuses a version with no certificate, no key or more than one key, a key that does
/// not match the leaf certificate's public key, a key rustls cannot use, and a leaf certificate
/// that has expired or is not valid yet (by this machine's clock). Self-signed certificates after
/// the leaf (roots, which peers must already hold) and duplicates are left out of the chain that
/// is sent.
///
/// The key is loaded with the process's default rustls
/// [`CryptoProvider`] when one is installed, else with aws-lc-rs's.
///
/// `Debug` shows the serial, subject and validity, never the key.
pub struct Certificate {
    certified: Arc<CertifiedKey>,
    serial: String,
    subject: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Certificate {
    /// Decodes one version of secret `id` (JSON or PEM, see above).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`](crate::ErrorKind::Decode) naming what is wrong (malformed PEM or JSON,
    /// no certificate, no key, a key that does not match, expired, not valid for more than five
    /// minutes yet), never quoting the content.
    ///
    /// ```
    /// use credswap::tls::Certificate;
    /// use credswap::{ErrorKind, SecretValue};
    ///
    /// let err = Certificate::decode("web", &SecretValue::from("not a certificate")).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Decode);
    /// assert!(err.to_string().contains("no certificate"));
    /// ```
    pub fn decode(id: &str, value: &SecretValue) -> Result<Certificate> {
        decode_at(id, value, SystemTime::now())
    }

    /// The chain and key, as rustls serves them.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }

    /// The certificates sent to peers: the leaf first, then its intermediates.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// The leaf certificate's serial number, as lower-case hex bytes separated by colons, the way
    /// Vault and OpenBao write it (`39:dd:2e:…`).
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The leaf certificate's subject (`CN=localhost`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// When the leaf certificate becomes valid.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// When the leaf certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Whether the leaf certificate is valid at `at`.
    pub fn is_valid_at(&self, at: SystemTime) -> bool {
        self.not_before <= at && at <= self.not_after
    }

    /// Time left before the leaf certificate expires (zero once it has).
    pub fn remaining(&self) -> Duration {
        self.not_after
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("serial", &self.serial)
            .field("subject", &self.subject)
            .field("not_before", &format_args!("{}", rfc3339(self.not_before)))
            .field("not_after", &format_args!("{}", rfc3339(self.not_after)))
            .field("chain_len", &self.certified.cert.len())
            .finish_non_exhaustive()
    }
}

/// The provider keys are loaded with (and configs built with): the process default when one is
/// installed, else aws-lc-rs's.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    if let Some(installed) = CryptoProvider::get_default() {
        return Arc::clone(installed);
    }
    static FALLBACK: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(FALLBACK.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

/// How far in the future a certificate's start may be and still be served: the issuer's clock
/// and ours disagree a little (Vault backdates by 30 s for that reason), and peers judge validity
/// by their own clocks, not ours. Refusing such a certificate would keep an older one serving
/// until it expires.
const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(300);

pub(crate) fn decode_at(id: &str, value: &SecretValue, now: SystemTime) -> Result<Certificate> {
    let (chain, key) = chain_and_key(id, value.expose_secret())?;
    let Some(leaf_der) = chain.first() else {
        return Err(Error::decode(id, "the secret holds no certificate"));
    };
    let leaf = parse(id, "the certificate", leaf_der)?;
    let validity = leaf.validity();
    let not_before = system_time(validity.not_before.timestamp());
    let not_after = system_time(validity.not_after.timestamp());
    if crate::time::later_wall(now, CLOCK_SKEW) < not_before {
        return Err(Error::decode(
            id,
            format!(
                "the certificate is not valid yet (valid from {})",
                rfc3339(not_before)
            ),
        ));
    }
    if now > not_after {
        return Err(Error::decode(
            id,
            format!("the certificate expired at {}", rfc3339(not_after)),
        ));
    }
    let serial = format_serial(leaf.raw_serial());
    let subject = leaf.subject().to_string();
    let chain = sent_chain(id, chain)?;

    let signing_key = crypto_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|_| {
            Error::decode(
                id,
                "the private key could not be loaded (malformed, or a kind of key rustls cannot use)",
            )
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key cannot tell its public key; rustls accepts that too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(Error::decode(
                id,
                "the private key does not match the certificate's public key",
            ));
        }
        Err(_) => {
            return Err(Error::decode(
                id,
                "the certificate's public key could not be compared with the private key",
            ));
        }
    }
    Ok(Certificate {
        certified: Arc::new(certified),
        serial,
        subject,
        not_before,
        not_after,
    })
}

fn parse<'a>(id: &str, what: &str, der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>> {
    match X509Certificate::from_der(der.as_ref()) {
        Ok((_, certificate)) => Ok(certificate),
        Err(_) => Err(Error::decode(
            id,
            format!("{what} is not a valid X.509 certificate"),
        )),
    }
}

/// The chain to send: the leaf, then the other certificates once each, without self-signed ones
/// (roots: a peer must hold them already, and TLS lets them be left out).
fn sent_chain(
    id: &str,
    chain: Vec<CertificateDer<'static>>,
) -> Result<Vec<CertificateDer<'static>>> {
    let mut sent: Vec<CertificateDer<'static>> = Vec::with_capacity(chain.len());
    for (position, der) in chain.into_iter().enumerate() {
        if position > 0 {
            let certificate = parse(id, "a certificate of the chain", &der)?;
            let self_signed = certificate.subject().as_raw() == certificate.issuer().as_raw();
            if self_signed || sent.contains(&der) {
                continue;
            }
        }
        sent.push(der);
    }
    Ok(sent)
}

/// A serial as Vault writes it: lower-case hex bytes with colons, without DER's leading zero.
fn format_serial(raw: &[u8]) -> String {
    let significant = match raw.iter().position(|&b| b != 0) {
        Some(first) => &raw[first..],
        None => &raw[raw.len().saturating_sub(1)..],
    };
    let mut out = String::with_capacity(significant.len() * 3);
    for (i, byte) in significant.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

fn system_time(unix_seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(unix_seconds.unsigned_abs());
    if unix_seconds >= 0 {
        UNIX_EPOCH.checked_add(magnitude).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
    }
}

/// `at` in UTC as `2026-05-01T12:00:00Z` (times before 1970 as the epoch).
pub(crate) fn rfc3339(at: SystemTime) -> String {
    let seconds = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(seconds / 86_400).unwrap_or(i64::MAX / 2);
    let in_day = seconds % 86_400;
    // Civil date from days since the epoch (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        in_day / 3_600,
        in_day / 60 % 60,
        in_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    struct Issued {
        cert: String,
        key: String,
    }

    /// A CA and a function issuing leaves from it, valid from `from` to `until` (years).
    fn ca() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "unit-test-ca");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (rcgen::Issuer::new(params, key), cert.pem())
    }

    fn leaf(
        issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
        from: (i32, u8, u8),
        until: (i32, u8, u8),
    ) -> Issued {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x9a, 0x01]));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn now() -> SystemTime {
        system_time(1_800_000_000) // 2027-01-15
    }

    fn json(cert: &str, key: &str, chain: serde_json::Value) -> SecretValue {
        SecretValue::text(
            serde_json::json!({"certificate": cert, "private_key": key, "ca_chain": chain})
                .to_string(),
        )
    }

    fn reason(result: Result<Certificate>) -> String {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
        assert_eq!(err.id(), Some("web"));
        err.message().unwrap().to_owned()
    }

    #[test]
    fn json_and_pem_shapes_decode_to_the_same_certificate() {
        let (issuer, ca_pem) = ca();
        let good = leaf(&issuer, (2026, 1, 1), (2028, 1, 1));
        let shapes = [
            json(&good.cert, &good.key, serde_json::json!([ca_pem])),
            json(&good.cert, &good.key, serde_json::json!(ca_pem)),
            json(&good.cert, &good.key, serde_json::Value::Null),
            SecretValue::text(format!("{}{}", good.key, good.cert)),
            SecretValue::bytes(format!("{}\n{}\n{ca_pem}", good.cert, good.key).into_bytes()),
        ];
        for shape in &shapes {
            let decoded = decode_at("web", shape, now()).unwrap();
            assert_eq!(decoded.serial(), "9a:01");
            assert_eq!(decoded.subject(), "CN=localhost");
            assert_eq!(rfc3339(decoded.not_after()), "2028-01-01T00:00:00Z");
            assert!(decoded.is_valid_at(now()));
            // The self-signed CA is not sent.
            assert_eq!(decoded.chain().len(), 1);
        }
    }

    #[test]
    fn intermediates_are_sent_once_and_in_order() {
        let (root, _) = ca();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "intermediate");
        let key = rcgen::KeyPair::generate().unwrap();
        let intermediate_pem = params.signed_by(&key, &root).unwrap().pem();
        let intermediate = rcgen::Issuer::new(params, key);
        let good = leaf(&intermediate, (2026, 1, 1), (2028, 1, 1));
        let value = json(
            &format!("{}{intermediate_pem}", good.cert),
            &good.key,
            serde_json::json!([intermediate_pem]),
        );
        let decoded = decode_at("web", &value, now()).unwrap();
        assert_eq!(decoded.chain().len(), 2);
    }

    #[test]
    fn bad_versions_are_refused_with_a_reason() {
        let (issuer, ca_pem) = ca();
        let good = leaf(&issuer, (2026, 1, 1), (2028, 1, 1));
        let other = leaf(&issuer, (2026, 1, 1), (2028, 1, 1));
        let expired = leaf(&issuer, (2020, 1, 1), (2021, 1, 1));
        let early = leaf(&issuer, (2099, 1, 1), (2100, 1, 1));
        let cases = [
            (
                json(&good.cert, &other.key, serde_json::Value::Null),
                "does not match",
            ),
            (
                SecretValue::text(format!("{}{}", good.cert, other.key)),
                "does not match",
            ),
            (
                json(&expired.cert, &expired.key, serde_json::Value::Null),
                "expired at 2021-01-01T00:00:00Z",
            ),
            (
                json(&early.cert, &early.key, serde_json::Value::Null),
                "not valid yet (valid from 2099-01-01T00:00:00Z)",
            ),
            (SecretValue::text(good.cert.clone()), "no private key"),
            (SecretValue::text(good.key.clone()), "no certificate"),
            (
                SecretValue::text(format!("{}{}{}", good.cert, good.key, other.key)),
                "2 private keys",
            ),
            (
                json(&ca_pem, &good.key, serde_json::Value::Null),
                "does not match",
            ),
            (
                json(&good.key, &good.key, serde_json::Value::Null),
                "`certificate` holds no certificate",
            ),
            (
                SecretValue::text(good.cert.replace("-----END CERTIFICATE-----", "")),
                "malformed PEM: a section has no END line",
            ),
            (
                SecretValue::text(
                    "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_owned(),
                ),
                "malformed PEM: a section's base64 is invalid",
            ),
            (
                SecretValue::text(
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned()
                        + &good.key,
                ),
                "not a valid X.509 certificate",
            ),
            (
                SecretValue::text(format!(
                    "{{\"certificate\": \"{}\"}}",
                    good.cert.replace('\n', "\\n")
                )),
                "missing field `private_key`",
            ),
            (
                SecretValue::text(format!(
                    "{{\"certificate\": \"{}",
                    good.cert.replace('\n', "\\n")
                )),
                "JSON ends early",
            ),
        ];
        for (value, expected) in cases {
            let reason = reason(decode_at("web", &value, now()));
            assert!(reason.contains(expected), "{reason:?} lacks {expected:?}");
            for material in [&good.key, &other.key, &good.cert] {
                for line in material.lines().filter(|l| !l.starts_with("-----")) {
                    assert!(!reason.contains(line), "{reason:?} quotes the content");
                }
            }
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let (issuer, _) = ca();
        let good = leaf(&issuer, (2026, 1, 1), (2028, 1, 1));
        let value = SecretValue::text(format!("{}{}", good.cert, good.key));
        let decoded = decode_at("web", &value, now()).unwrap();
        let printed = format!("{decoded:?} {decoded:#?}");
        assert!(printed.contains("9a:01"), "{printed}");
        for line in good.key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!printed.contains(line), "{printed}");
        }
    }

    #[test]
    fn serials_and_times_are_written_as_vault_does() {
        assert_eq!(format_serial(&[0x00, 0x9a, 0x01]), "9a:01");
        assert_eq!(format_serial(&[0x01, 0x00]), "01:00");
        assert_eq!(format_serial(&[0x00]), "00");
        assert_eq!(format_serial(&[]), "");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(system_time(951_825_600)), "2000-02-29T12:00:00Z");
        assert_eq!(rfc3339(system_time(4_102_444_799)), "2099-12-31T23:59:59Z");
        assert_eq!(system_time(-5), UNIX_EPOCH - Duration::from_secs(5));
    }

    #[test]
    fn a_start_minutes_ahead_of_our_clock_is_the_issuers_clock_and_is_served() {
        let (issuer, _) = ca();
        let issued = leaf(&issuer, (2030, 1, 1), (2031, 1, 1));
        let value = json(&issued.cert, &issued.key, serde_json::Value::Null);
        let start = system_time(1_893_456_000); // 2030-01-01T00:00:00Z
        let early = |by: u64| start - std::time::Duration::from_secs(by);
        assert!(decode_at("k", &value, early(60)).is_ok());
        assert!(decode_at("k", &value, early(299)).is_ok());
        let error = decode_at("k", &value, early(301)).unwrap_err();
        assert!(error.to_string().contains("not valid yet"), "{error}");
    }
}
