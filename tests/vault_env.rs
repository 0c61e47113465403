//! `VaultSession::from_env` reads `BAO_ADDR`/`BAO_TOKEN` when the `VAULT_*` variables are unset,
//! and prefers `VAULT_*` when both are set. (Its own test binary: it changes the environment.)

use credswap::provider::{VaultKvProvider, VaultSession};
use credswap::testkit::OpenBaoServer;
use credswap::{ErrorKind, SecretProvider, Selector};

#[tokio::test]
async fn from_env_reads_bao_and_vault_variables() {
    let bao = tokio::task::spawn_blocking(OpenBaoServer::start)
        .await
        .unwrap()
        .expect("start OpenBao");
    bao.cli(&["kv", "put", "-mount=secret", "envtest", "k=v"])
        .unwrap();
    // SAFETY: this binary has a single test; nothing else reads the environment meanwhile.
    unsafe {
        std::env::remove_var("VAULT_ADDR");
        std::env::remove_var("VAULT_TOKEN");
        std::env::remove_var("BAO_ADDR");
        std::env::remove_var("BAO_TOKEN");
    }
    let err = VaultSession::from_env().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);

    // SAFETY: as above.
    unsafe {
        std::env::set_var("BAO_ADDR", bao.addr());
        std::env::set_var("BAO_TOKEN", bao.root_token());
    }
    let session = VaultSession::from_env().await.expect("BAO_* variables");
    let kv = VaultKvProvider::new(session, "secret");
    let value = kv.fetch("envtest", &Selector::Current).await.unwrap();
    assert!(value.value.expose_str().unwrap().contains("\"k\""));

    // VAULT_* wins over BAO_*: a wrong VAULT_TOKEN is what gets used.
    // SAFETY: as above.
    unsafe { std::env::set_var("VAULT_TOKEN", "not-a-token") };
    let err = VaultSession::from_env().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
    assert!(!err.to_string().contains("not-a-token"));
}
