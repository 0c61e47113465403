//! TLS for the rotation engine's database connections: rustls, trusting the system's roots or
//! the CA certificates given with `--db-ca`, with channel binding (tokio-postgres-rustls).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::exit::Failure;

/// The connector: the certificates in `ca` (PEM) when given, else the system's trusted roots.
pub fn connector(ca: Option<&Path>) -> Result<MakeRustlsConnect, Failure> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let shown = path.display();
            let pem = std::fs::read(path)
                .map_err(|e| Failure::usage(format!("--db-ca {shown}: cannot read it: {e}")))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|_| {
                    Failure::usage(format!("--db-ca {shown}: not a PEM certificate file"))
                })?;
                roots.add(cert).map_err(|e| {
                    Failure::usage(format!("--db-ca {shown}: a certificate was refused: {e}"))
                })?;
            }
            if roots.is_empty() {
                return Err(Failure::usage(format!(
                    "--db-ca {shown}: no certificate in it (expected PEM `BEGIN CERTIFICATE` blocks)"
                )));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(Failure::usage(
                    "no trusted root certificates found on this system for the database's TLS: \
                     pass --db-ca FILE (the CA that signed the server's certificate), or \
                     --db-plaintext on a network you trust",
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::usage(format!("TLS settings: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
