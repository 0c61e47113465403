//! `VaultSession::from_env` reads the `VAULT_*` variables (with OpenBao's `BAO_*` as fallbacks),
//! TLS ones included, and every call the session makes honours them. (Its own test binary: it
//! changes the environment.)

use credswap::provider::{VaultDatabaseProvider, VaultKvProvider, VaultSession};
use credswap::testkit::OpenBaoServer;
use credswap::{ErrorKind, SecretProvider, Selector};

fn clear_environment() {
    for name in [
        "VAULT_ADDR",
        "VAULT_TOKEN",
        "VAULT_CACERT",
        "VAULT_NAMESPACE",
        "BAO_ADDR",
        "BAO_TOKEN",
        "BAO_CACERT",
        "BAO_NAMESPACE",
    ] {
        // SAFETY: this binary has a single test; nothing else reads the environment meanwhile.
        unsafe { std::env::remove_var(name) };
    }
}

#[tokio::test]
async fn from_env_reads_bao_and_vault_variables_tls_included() {
    let bao = tokio::task::spawn_blocking(OpenBaoServer::start_tls)
        .await
        .unwrap()
        .expect("start OpenBao with TLS");
    bao.cli(&["kv", "put", "-mount=secret", "envtest", "k=v"])
        .unwrap();
    clear_environment();
    let err = VaultSession::from_env().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);

    // SAFETY: as above.
    unsafe {
        std::env::set_var("BAO_ADDR", bao.addr());
        std::env::set_var("BAO_TOKEN", bao.root_token());
    }
    // Without the CA, the server's certificate is not trusted.
    let err = VaultSession::from_env().await.unwrap_err();
    assert!(err.to_string().contains("VAULT_CACERT"), "{err}");

    // SAFETY: as above.
    unsafe { std::env::set_var("BAO_CACERT", bao.ca_cert().unwrap()) };
    let session = VaultSession::from_env().await.expect("BAO_* variables");
    let kv = VaultKvProvider::new(session.clone(), "secret");
    let value = kv.fetch("envtest", &Selector::Current).await.unwrap();
    assert!(value.value.expose_str().unwrap().contains("\"k\""));
    // The database provider's calls go through the same client and trust the same CA: Vault
    // answers (no engine is mounted there), rather than the call failing on TLS.
    let db = VaultDatabaseProvider::new(session, "database");
    let err = db
        .fetch("creds/none", &Selector::Current)
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::NotFound | ErrorKind::InvalidRequest),
        "{err}"
    );

    // VAULT_* wins over BAO_*: a wrong VAULT_TOKEN is what gets used.
    // SAFETY: as above.
    unsafe { std::env::set_var("VAULT_TOKEN", "not-a-token") };
    let err = VaultSession::from_env().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
    assert!(!err.to_string().contains("not-a-token"));
    clear_environment();
}
