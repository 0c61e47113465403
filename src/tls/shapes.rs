//! The two shapes a certificate secret comes in, JSON (Vault's PKI answer, or what a user stores)
//! and PEM text, read into the certificates in order and the one private key. Errors name what is
//! wrong, never the content: pki-types' and serde's own messages quote it, so they are not kept.

use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::{Error, Result, describe_json_error};

/// The JSON shape: Vault's PKI response, or what a user stores.
#[derive(Deserialize)]
struct Stored {
    certificate: String,
    private_key: SecretString,
    #[serde(default)]
    ca_chain: Option<CaChain>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CaChain {
    Many(Vec<String>),
    One(String),
}

/// What PEM text held.
#[derive(Default)]
struct Sections {
    certificates: Vec<CertificateDer<'static>>,
    keys: Vec<PrivateKeyDer<'static>>,
}

/// The certificates of `bytes` (the leaf first) and its one private key: JSON when it starts with
/// `{`, else PEM text.
pub(super) fn chain_and_key(
    id: &str,
    bytes: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    if bytes.trim_ascii_start().starts_with(b"{") {
        return from_json(id, bytes);
    }
    let sections = sections(id, "the secret", bytes)?;
    if sections.certificates.is_empty() {
        return Err(Error::decode(
            id,
            "the secret holds no certificate (a PEM `CERTIFICATE` section)",
        ));
    }
    let key = one_key(id, "the secret", sections.keys)?;
    Ok((sections.certificates, key))
}

fn from_json(
    id: &str,
    bytes: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let stored: Stored = serde_json::from_slice(bytes)
        .map_err(|err| Error::decode(id, describe_json_error(&err)))?;
    let mut chain = sections(id, "`certificate`", stored.certificate.as_bytes())?.certificates;
    if chain.is_empty() {
        return Err(Error::decode(
            id,
            "`certificate` holds no certificate (a PEM `CERTIFICATE` section)",
        ));
    }
    let key_sections = sections(
        id,
        "`private_key`",
        stored.private_key.expose_secret().as_bytes(),
    )?;
    let key = one_key(id, "`private_key`", key_sections.keys)?;
    let extra: Vec<String> = match stored.ca_chain {
        None => Vec::new(),
        Some(CaChain::One(pem)) => vec![pem],
        Some(CaChain::Many(pems)) => pems,
    };
    for pem in &extra {
        chain.extend(sections(id, "`ca_chain`", pem.as_bytes())?.certificates);
    }
    Ok((chain, key))
}

/// The certificates and keys in PEM text; other sections (public keys, CRLs) are skipped.
fn sections(id: &str, what: &str, bytes: &[u8]) -> Result<Sections> {
    let mut found = Sections::default();
    for item in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(bytes) {
        let (kind, der) = item.map_err(|err| {
            Error::decode(
                id,
                format!("{what} is malformed PEM: {}", pem_problem(&err)),
            )
        })?;
        if kind == SectionKind::Certificate {
            found.certificates.push(CertificateDer::from(der));
        } else if let Some(key) = PrivateKeyDer::from_pem(kind, der) {
            found.keys.push(key);
        }
    }
    Ok(found)
}

fn one_key(
    id: &str,
    what: &str,
    mut keys: Vec<PrivateKeyDer<'static>>,
) -> Result<PrivateKeyDer<'static>> {
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 => Err(Error::decode(
            id,
            format!(
                "{what} holds no private key (a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or \
                 `EC PRIVATE KEY` section)"
            ),
        )),
        n => Err(Error::decode(
            id,
            format!("{what} holds {n} private keys; one is expected"),
        )),
    }
}

/// What is wrong with PEM text, without any of it (pki-types' messages quote the lines).
fn pem_problem(err: &pem::Error) -> &'static str {
    match err {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section's base64 is invalid",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "it could not be read",
    }
}
