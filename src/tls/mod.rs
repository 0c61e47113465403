//! TLS certificates that rotate without a restart.
//!
//! [`RotatingCertificate`] opens a certificate secret through a [`SecretCache`](crate::SecretCache)
//! and is what rustls asks, at every handshake, which certificate to present: as a server
//! ([`ResolvesServerCert`](rustls::server::ResolvesServerCert)) and as a client presenting its
//! certificate for mutual TLS ([`ResolvesClientCert`](rustls::client::ResolvesClientCert)). When the
//! secret changes, new handshakes get the new certificate; a version that is not a usable
//! certificate (malformed, a key of another certificate, expired, not valid yet) is refused, and
//! the previous certificate keeps serving.
//!
//! The secret is a certificate chain and its key, as JSON (`certificate`, `private_key`,
//! `ca_chain`: the shape Vault's PKI engine returns) or PEM text; see [`Certificate`]. With the
//! `vault` feature, [`VaultPkiProvider`](crate::provider::VaultPkiProvider) issues short-lived
//! certificates from Vault's or OpenBao's PKI engine and the cache issues the next one before the
//! current one expires.
//!
//! The guide [`docs::tls`](crate::docs::tls) walks through a server, mutual TLS and what happens
//! on a bad certificate.

mod certified;
mod resolver;
mod shapes;

pub use self::{certified::Certificate, resolver::RotatingCertificate};

/// The rustls this crate builds configurations and keys with: use it (or the same version) for
/// your own configurations and verifiers.
pub use rustls;
