//! TLS certificates that rotate: `RotatingCertificate` as rustls's server and client resolver,
//! fed by Vault's PKI engine (a real OpenBao from the test kit) or by stored certificates, with
//! real handshakes over loopback.
//!
//! One binary for these runs: they share the fixtures (servers, clients, a PKI), and each test
//! binary links the whole crate.

#[path = "../common/mod.rs"]
mod common;
#[path = "../tls_common/mod.rs"]
mod tls_common;

mod bad_versions;
mod pki;
mod rolling;
