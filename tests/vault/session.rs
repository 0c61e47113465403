//! The Vault session under stress, against a real OpenBao: expired tokens, denied paths, replaced
//! tokens, TLS with a private CA, namespaces. What reaches the server is counted in its audit log.

use crate::{common, vault_common};

use std::sync::Arc;
use std::time::Duration;

use credswap::provider::{
    SessionEvent, VaultAuth, VaultConfig, VaultDatabaseProvider, VaultKvProvider, VaultSession,
};
use credswap::{ErrorKind, HandleStatus, SecretCache, SecretProvider, Selector};
use serde::Deserialize;
use vault_common::{approle, can_log_in, openbao, policy};

#[derive(Deserialize)]
struct AppSecret {
    api_key: String,
}

const KV_READ: &str = r#"path "secret/data/*" { capabilities = ["read"] }
                         path "secret/metadata/*" { capabilities = ["read"] }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_costs_vault_a_handful_of_requests_not_a_loop() {
    let bao = openbao().await;
    bao.cli(&["kv", "put", "-mount=secret", "myapp/api", "api_key=k-1"])
        .unwrap();
    policy(&bao, "kvread", KV_READ);
    // Two tokens that cannot outlive 4 s: one renewable up to a max TTL, one not renewable.
    let capped = bao
        .cli(&[
            "token",
            "create",
            "-policy=kvread",
            "-ttl=4s",
            "-explicit-max-ttl=4s",
            "-field=token",
        ])
        .unwrap();
    let fixed = bao
        .cli(&[
            "token",
            "create",
            "-policy=kvread",
            "-ttl=4s",
            "-renewable=false",
            "-field=token",
        ])
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut caches = Vec::new();
    let mut sessions = Vec::new();
    for token in [capped, fixed] {
        let session = VaultSession::connect(bao.addr(), VaultAuth::Token(token.into()))
            .await
            .unwrap();
        let cache = SecretCache::builder(Arc::new(VaultKvProvider::new(session.clone(), "secret")))
            .ttl(Duration::from_millis(500))
            .backoff(Duration::from_millis(100), Duration::from_secs(2))
            .build()
            .unwrap();
        let handle = cache.handle::<AppSecret>("myapp/api").await.unwrap();
        caches.push((cache, handle));
        sessions.push((session.subscribe(), session));
    }

    tokio::time::sleep_until(started + Duration::from_millis(4500)).await;
    let before = bao.request_total();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = bao.request_total() - before;
    println!("requests in the 10 s after the tokens expired: {during}");
    assert!(during <= 6, "{during} requests to Vault after expiry");

    for ((cache, handle), (mut events, session)) in caches.into_iter().zip(sessions) {
        // Reads fail at once with a typed error that says what to do.
        let provider = VaultKvProvider::new(session.clone(), "secret");
        let err = provider
            .fetch("myapp/api", &Selector::Current)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
        assert!(err.to_string().contains("expired"), "{err}");
        // The session said so, and the handle says what it serves is no longer confirmed.
        let mut expired = false;
        while let Ok(event) = events.try_recv() {
            expired |= event == SessionEvent::TokenExpired;
        }
        assert!(expired, "a TokenExpired event");
        assert!(
            matches!(handle.status(), HandleStatus::Failing { .. }),
            "{:?}",
            handle.status()
        );
        assert_eq!(handle.load().current().api_key, "k-1");
        drop(cache);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_the_policy_denies_costs_no_login_and_a_denied_probe_is_no_outage() {
    let bao = openbao().await;
    bao.cli(&["kv", "put", "-mount=secret", "allowed/app", "api_key=k-1"])
        .unwrap();
    bao.cli(&["kv", "put", "-mount=secret", "forbidden", "api_key=x"])
        .unwrap();
    // The data of allowed/* may be read; no metadata, nothing else.
    policy(
        &bao,
        "dataonly",
        r#"path "secret/data/allowed/*" { capabilities = ["read"] }"#,
    );
    let auth = approle(
        &bao,
        "app",
        &[
            "token_policies=dataonly",
            "token_ttl=60s",
            "secret_id_num_uses=5",
        ],
    );
    let session = VaultSession::connect(bao.addr(), auth).await.unwrap();
    let provider = Arc::new(VaultKvProvider::new(session.clone(), "secret"));

    for _ in 0..20 {
        let err = provider
            .fetch("forbidden", &Selector::Current)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AccessDenied);
    }
    assert_eq!(session.logins(), 1, "{session:?}");
    assert_eq!(bao.request_count("auth/approle/login"), 1);
    // The token's validity was checked (at most once a second), not assumed gone.
    let checks = bao.request_count("auth/token/lookup-self");
    assert!((1..=3).contains(&checks), "{checks} lookups");

    // A cache over the allowed secret: its version probe (metadata) is denied, so it fetches,
    // and keeps working through TTLs and a new version.
    let cache = SecretCache::builder(provider.clone())
        .ttl(Duration::from_millis(300))
        .build()
        .unwrap();
    let handle = cache.handle::<AppSecret>("allowed/app").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    bao.cli(&["kv", "put", "-mount=secret", "allowed/app", "api_key=k-2"])
        .unwrap();
    let snapshot = tokio::time::timeout(Duration::from_secs(5), handle.changed())
        .await
        .expect("the handle follows the new version");
    assert_eq!(snapshot.current().api_key, "k-2");
    assert!(handle.status().is_fresh(), "{:?}", handle.status());
    // Metadata was asked for twice at most: the handle's look for a previous version when it
    // opened, and one probe; both denied, neither asked again.
    assert!(bao.request_count("secret/metadata/allowed/app") <= 2);
    assert_eq!(session.logins(), 1, "still the first login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_replaced_near_its_max_ttl_is_revoked() {
    let bao = openbao().await;
    policy(&bao, "kvread", KV_READ);
    let auth = approle(
        &bao,
        "short",
        &["token_policies=kvread", "token_ttl=3s", "token_max_ttl=6s"],
    );
    let session = VaultSession::connect(bao.addr(), auth).await.unwrap();
    let mut events = session.subscribe();
    // Renewed at about 2 s; at about 3.3 s the renewal comes back capped (2.7 s left of 6 s).
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(session.logins() >= 2, "{session:?}");
    let mut max_ttl_logins = 0;
    while let Ok(event) = events.try_recv() {
        if event == (SessionEvent::LoggedIn { reason: "max_ttl" }) {
            max_ttl_logins += 1;
        }
    }
    assert!(max_ttl_logins >= 1);
    // Each token it replaced while still valid was revoked, not left to live out its TTL.
    assert!(
        common::eventually(Duration::from_secs(5), || {
            bao.request_count("auth/token/revoke-self") >= max_ttl_logins
        })
        .await,
        "{} revocations for {max_ttl_logins} replaced tokens",
        bao.request_count("auth/token/revoke-self")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_and_namespaces_apply_to_every_call() {
    let (bao, pg) = tokio::join!(
        async {
            tokio::task::spawn_blocking(credswap::testkit::OpenBaoServer::start_tls)
                .await
                .unwrap()
                .expect("start OpenBao with TLS")
        },
        async {
            tokio::task::spawn_blocking(credswap::testkit::PostgresServer::start)
                .await
                .unwrap()
                .expect("start PostgreSQL")
        }
    );
    assert!(bao.addr().starts_with("https://"));
    let root = || VaultAuth::Token(bao.root_token().to_owned().into());

    // Without the CA, Vault's certificate is not trusted: a typed error that says what to set.
    let err = VaultSession::connect(bao.addr(), root()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.to_string().contains("VAULT_CACERT"), "{err}");
    // A CA file that is not a certificate is a configuration error.
    let junk = bao.work_dir().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let err = VaultSession::connect_with(VaultConfig::new(bao.addr()).ca_cert(&junk), root())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");

    let config = VaultConfig::new(bao.addr()).ca_cert(bao.ca_cert().unwrap());
    let session = VaultSession::connect_with(config.clone(), root())
        .await
        .unwrap();
    bao.cli(&["kv", "put", "-mount=secret", "app", "api_key=k-tls"])
        .unwrap();
    let kv = VaultKvProvider::new(session.clone(), "secret");
    let value = kv.fetch("app", &Selector::Current).await.unwrap();
    assert!(value.value.expose_str().unwrap().contains("k-tls"));

    // Database credentials and their lease, over the same client: fetch, renew, revoke.
    vault_common::mount_database_engine(&bao, &pg, "60s", "600s");
    let db = VaultDatabaseProvider::new(session.clone(), "database");
    let creds = db.fetch("creds/dyn", &Selector::Current).await.unwrap();
    let lease = creds.version.lease.clone().expect("a lease");
    let parsed: credswap::pg::PgCredentials =
        serde_json::from_slice(creds.value.expose_secret()).unwrap();
    can_log_in(&pg, &parsed)
        .await
        .expect("the dynamic user logs in");
    let renewed = db.renew_lease(&lease).await.unwrap().expect("renewed");
    assert_eq!(renewed.id, lease.id);
    db.revoke_lease(&lease).await.unwrap();

    // A namespace applies to every call of a session configured with it.
    bao.cli(&["namespace", "create", "team-a"]).unwrap();
    bao.cli(&["secrets", "enable", "-ns=team-a", "-path=secret", "kv-v2"])
        .unwrap();
    bao.cli(&[
        "kv",
        "put",
        "-ns=team-a",
        "-mount=secret",
        "app",
        "api_key=k-team",
    ])
    .unwrap();
    let team = VaultSession::connect_with(config.namespace("team-a"), root())
        .await
        .unwrap();
    let value = VaultKvProvider::new(team, "secret")
        .fetch("app", &Selector::Current)
        .await
        .unwrap();
    assert!(value.value.expose_str().unwrap().contains("k-team"));
    // The root namespace's secret is a different one.
    assert!(
        !kv.fetch("app", &Selector::Current)
            .await
            .unwrap()
            .value
            .expose_str()
            .unwrap()
            .contains("k-team")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_revokes_the_token_it_logged_in_for_and_keeps_a_supplied_one() {
    let bao = openbao().await;
    policy(&bao, "kvread", KV_READ);
    let accessors = || {
        bao.cli(&["list", "-format=json", "auth/token/accessors"])
            .map(|listed| serde_json::from_str::<Vec<String>>(&listed).unwrap().len())
            .unwrap()
    };
    let auth = approle(&bao, "restarts", &["token_policies=kvread", "token_ttl=1h"]);
    let before = accessors();
    let session = VaultSession::connect(bao.addr(), auth).await.unwrap();
    assert_eq!(accessors(), before + 1, "the login made a token");
    let revokes = || bao.request_count("auth/token/revoke-self");
    let revoked_before = revokes();
    session.shutdown().await;
    assert_eq!(accessors(), before, "shutdown revoked it");
    assert_eq!(revokes(), revoked_before + 1);
    session.shutdown().await;
    assert_eq!(revokes(), revoked_before + 1, "once");

    // A token the caller supplied is the caller's: kept.
    let supplied = bao
        .cli(&["token", "create", "-policy=kvread", "-field=token"])
        .unwrap();
    let session = VaultSession::connect(
        bao.addr(),
        credswap::provider::VaultAuth::Token(supplied.trim().to_owned().into()),
    )
    .await
    .unwrap();
    let with_it = accessors();
    session.shutdown().await;
    assert_eq!(accessors(), with_it);
    assert_eq!(revokes(), revoked_before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vaultrs_client_the_application_configured_is_used_for_every_call() {
    let bao = tokio::task::spawn_blocking(credswap::testkit::OpenBaoServer::start_tls)
        .await
        .unwrap()
        .expect("start OpenBao with TLS");
    let root = || VaultAuth::Token(bao.root_token().to_owned().into());
    bao.cli(&["namespace", "create", "team-b"]).unwrap();
    bao.cli(&["secrets", "enable", "-ns=team-b", "-path=secret", "kv-v2"])
        .unwrap();
    bao.cli(&[
        "kv",
        "put",
        "-ns=team-b",
        "-mount=secret",
        "app",
        "api_key=k-vaultrs",
    ])
    .unwrap();

    // The application's own client: its CA and namespace, and a token the session does not use
    // (the session logs in with `auth`).
    let settings = vaultrs::client::VaultClientSettingsBuilder::default()
        .address(bao.addr())
        .ca_certs(vec![bao.ca_cert().unwrap().display().to_string()])
        .namespace(Some("team-b".to_owned()))
        .token("not-a-token")
        .build()
        .unwrap();
    let client = vaultrs::client::VaultClient::new(settings).unwrap();
    let session = VaultSession::from_client(client, root()).await.unwrap();
    let kv = VaultKvProvider::new(session.clone(), "secret");
    let value = kv.fetch("app", &Selector::Current).await.unwrap();
    assert!(value.value.expose_str().unwrap().contains("k-vaultrs"));
    assert_eq!(
        kv.probe("app", &Selector::Current).await.unwrap(),
        Some(value.version.id.clone())
    );

    // A client without the CA gets the same typed error as a configuration without it.
    let untrusting = vaultrs::client::VaultClient::new(
        vaultrs::client::VaultClientSettingsBuilder::default()
            .address(bao.addr())
            .ca_certs(Vec::new())
            .build()
            .unwrap(),
    )
    .unwrap();
    let err = VaultSession::from_client(untrusting, root())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.to_string().contains("VAULT_CACERT"), "{err}");

    // A token an HTTP header cannot carry is refused before any request, without echoing it.
    let before = bao.request_total();
    let err = VaultSession::connect_with(
        VaultConfig::new(bao.addr()).ca_cert(bao.ca_cert().unwrap()),
        VaultAuth::Token("hvs.bad-token\n".to_owned().into()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!format!("{err} {err:?}").contains("bad-token"));
    assert_eq!(bao.request_total(), before);
    session.shutdown().await;
}
