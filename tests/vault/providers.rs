//! The Vault providers against a real OpenBao dev server (and, for database credentials, a real
//! PostgreSQL), both started by the test kit.

use crate::{common, pg_common, vault_common};

use std::sync::Arc;
use std::time::Duration;

use credswap::pg::PgCredentials;
use credswap::provider::{VaultAuth, VaultDatabaseProvider, VaultKvProvider, VaultSession};
use credswap::secrecy::ExposeSecret;
use credswap::testkit::OpenBaoServer;
use credswap::{ErrorKind, SecretCache, SecretProvider, Selector, Stage};
use serde::Deserialize;
use vault_common::{DatabaseEngine, can_log_in, database_engine, openbao, root_session};

#[derive(Deserialize)]
struct AppSecret {
    api_key: String,
}

fn audited(bao: &OpenBaoServer, path: &str) -> usize {
    bao.request_count(path)
}

#[tokio::test]
async fn kv_versions_swap_the_handle_and_previous_skips_deleted_versions() {
    let bao = openbao().await;
    bao.cli(&["kv", "put", "-mount=secret", "myapp/api", "api_key=k-1"])
        .unwrap();
    let provider = Arc::new(VaultKvProvider::new(root_session(&bao).await, "secret"));
    let cache = SecretCache::builder(provider.clone())
        .ttl(Duration::from_millis(300))
        .grace_period(Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = cache.handle::<AppSecret>("myapp/api").await.unwrap();
    assert_eq!(handle.load().current().api_key, "k-1");
    assert_eq!(handle.load().version().id.as_str(), "1");
    assert!(handle.load().version().created_at.is_some());

    // A new version written from outside: the handle swaps, previous is version 1.
    bao.cli(&["kv", "put", "-mount=secret", "myapp/api", "api_key=k-2"])
        .unwrap();
    let snapshot = tokio::time::timeout(Duration::from_secs(5), handle.changed())
        .await
        .expect("the handle swaps");
    assert_eq!(snapshot.version().id.as_str(), "2");
    assert_eq!(snapshot.current().api_key, "k-2");
    assert_eq!(snapshot.previous().unwrap().api_key, "k-1");
    assert!(handle.accepts(|s| s.api_key == "k-1"));

    // An unchanged secret costs metadata reads only.
    let data_reads = audited(&bao, "secret/data/myapp/api");
    let metadata_reads = audited(&bao, "secret/metadata/myapp/api");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        audited(&bao, "secret/data/myapp/api"),
        data_reads,
        "no data read"
    );
    assert!(
        audited(&bao, "secret/metadata/myapp/api") >= metadata_reads + 3,
        "metadata probes keep checking"
    );

    // Previous skips deleted and destroyed versions.
    bao.cli(&["kv", "put", "-mount=secret", "myapp/api", "api_key=k-3"])
        .unwrap();
    bao.cli(&["kv", "put", "-mount=secret", "myapp/api", "api_key=k-4"])
        .unwrap();
    bao.cli(&["kv", "delete", "-mount=secret", "-versions=3", "myapp/api"])
        .unwrap();
    bao.cli(&["kv", "destroy", "-mount=secret", "-versions=2", "myapp/api"])
        .unwrap();
    let previous = provider
        .fetch("myapp/api", &Selector::Stage(Stage::Previous))
        .await
        .unwrap();
    assert_eq!(previous.version.id.as_str(), "1");
    assert!(previous.value.expose_str().unwrap().contains("k-1"));
    let err = provider
        .fetch("myapp/api", &Selector::Version("3".into()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // A replica started now (its cache never saw version 3) accepts the newest live earlier
    // version, 1, during the grace period, as its peers do.
    let replica = SecretCache::builder(provider.clone())
        .grace_period(Duration::from_secs(60))
        .build()
        .unwrap()
        .handle::<AppSecret>("myapp/api")
        .await
        .unwrap();
    assert_eq!(replica.load().version().id.as_str(), "4");
    assert_eq!(replica.load().previous_version().unwrap().id.as_str(), "1");
    assert!(replica.accepts(|s| s.api_key == "k-1"));
    let err = cache.get("myapp/nothing-here").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string().contains("secret/data/myapp/nothing-here"),
        "{err}"
    );
}

/// A cache over the engine's database credentials; only leases drive its refreshes.
async fn dynamic_credentials_cache(engine: &DatabaseEngine) -> SecretCache {
    let provider = VaultDatabaseProvider::new(root_session(&engine.bao).await, "database");
    SecretCache::builder(Arc::new(provider))
        .ttl(Duration::from_secs(300))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_credentials_are_renewed_replaced_before_max_ttl_and_revoked() {
    let engine = database_engine().await;
    let cache = dynamic_credentials_cache(&engine).await;
    let mut events = cache.subscribe();
    let handle = cache.handle::<PgCredentials>("creds/dyn").await.unwrap();
    let first = handle.load_full();
    let lease = first.version().lease.clone().expect("a lease");
    assert!(lease.renewable);
    assert_eq!(lease.duration, Duration::from_secs(4));
    assert_eq!(first.version().id.as_str(), lease.id);
    can_log_in(&engine.pg, first.current())
        .await
        .expect("dynamic user logs in");

    // Renewals keep the same user for a while...
    let swapped = tokio::time::timeout(Duration::from_secs(14), handle.changed())
        .await
        .expect("new credentials before the max TTL (12 s) ends");
    assert!(cache.stats().lease_renewals >= 1, "{:?}", cache.stats());
    let mut renewed = false;
    while let Ok(event) = events.try_recv() {
        renewed |= matches!(event, credswap::SecretEvent::LeaseRenewed { .. });
    }
    assert!(renewed, "a lease-renewed event");
    // ...then a new user is issued before the old one's max TTL.
    assert_ne!(swapped.current().username, first.current().username);
    assert_eq!(swapped.previous_version().unwrap().id, first.version().id);
    can_log_in(&engine.pg, swapped.current())
        .await
        .expect("new user logs in");
    can_log_in(&engine.pg, swapped.previous().unwrap())
        .await
        .expect("the old user still works until its lease ends");

    // Shutdown with revoke: the current user's lease is gone and it can no longer log in.
    let current_lease = swapped.version().lease.clone().unwrap();
    assert_eq!(cache.revoke_leases().await.unwrap(), 1);
    let lookup = engine.bao.cli(&[
        "write",
        "sys/leases/lookup",
        &format!("lease_id={}", current_lease.id),
    ]);
    assert!(lookup.is_err(), "the lease is revoked");
    let err = can_log_in(&engine.pg, swapped.current()).await.unwrap_err();
    assert!(err == "28P01" || err == "28000", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_role_is_followed_through_its_rotations() {
    let engine = database_engine().await;
    engine
        .bao
        .cli(&[
            "write",
            "database/static-roles/stat",
            "db_name=pg",
            "username=static_user",
            "rotation_period=5s",
        ])
        .unwrap();
    let session = root_session(&engine.bao).await;
    let provider = Arc::new(VaultDatabaseProvider::new(session, "database"));
    let cache = SecretCache::builder(provider.clone())
        .ttl(Duration::from_secs(300))
        .build()
        .unwrap();
    let handle = cache
        .handle::<PgCredentials>("static-creds/stat")
        .await
        .unwrap();
    assert_eq!(handle.load().current().username, "static_user");
    assert!(handle.load().version().next_rotation.is_some());
    can_log_in(&engine.pg, handle.load().current())
        .await
        .unwrap();
    // OpenBao rotates static roles on a 5 s queue tick: a rotation may come seconds after the TTL
    // reaches zero, and the cache keeps asking until it does.
    for _ in 0..2 {
        let snapshot = tokio::time::timeout(Duration::from_secs(15), handle.changed())
            .await
            .expect("the handle follows Vault's rotation");
        can_log_in(&engine.pg, snapshot.current())
            .await
            .expect("the rotated password works");
        assert!(
            can_log_in(&engine.pg, snapshot.previous().unwrap())
                .await
                .is_err()
        );
    }
    // A rotation on demand is seen at the next refresh.
    provider.rotate_static_role("stat").await.unwrap();
    let before = handle.load().version().id.clone();
    let snapshot = tokio::time::timeout(Duration::from_secs(15), handle.changed())
        .await
        .expect("swap after rotate-role");
    assert_ne!(snapshot.version().id, before);
    can_log_in(&engine.pg, snapshot.current()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_tokens_are_renewed_and_a_revoked_token_leads_to_a_new_login() {
    let bao = openbao().await;
    bao.cli(&["kv", "put", "-mount=secret", "myapp/api", "api_key=k-1"])
        .unwrap();
    let policy_file = bao.work_dir().join("kvread.hcl");
    std::fs::write(
        &policy_file,
        r#"path "secret/data/*" { capabilities = ["read"] }
           path "secret/metadata/*" { capabilities = ["read"] }"#,
    )
    .unwrap();
    bao.cli(&[
        "policy",
        "write",
        "kvread",
        &policy_file.display().to_string(),
    ])
    .unwrap();
    bao.cli(&["auth", "enable", "approle"]).unwrap();
    bao.cli(&[
        "write",
        "auth/approle/role/app",
        "token_policies=kvread",
        "token_ttl=3s",
        "token_max_ttl=7s",
    ])
    .unwrap();
    let role_id = bao
        .cli(&["read", "-field=role_id", "auth/approle/role/app/role-id"])
        .unwrap();
    let secret_id = bao
        .cli(&[
            "write",
            "-f",
            "-field=secret_id",
            "auth/approle/role/app/secret-id",
        ])
        .unwrap();
    let session = VaultSession::connect(
        bao.addr(),
        VaultAuth::AppRole {
            mount: "approle".into(),
            role_id,
            secret_id: secret_id.clone().into(),
        },
    )
    .await
    .unwrap();
    assert!(!format!("{session:?}").contains(&secret_id));
    let kv = VaultKvProvider::new(session.clone(), "secret");

    // Past the token's TTL (3 s) and its max TTL (7 s), reads keep working: renewed, then replaced.
    for _ in 0..18 {
        kv.fetch("myapp/api", &Selector::Current)
            .await
            .expect("the token never lapses");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(session.renewals() >= 1, "renewed ({session:?})");
    assert!(
        session.logins() >= 2,
        "logged in again near the max TTL ({session:?})"
    );

    // Every token AppRole issued is revoked: the next read logs in again and succeeds.
    let logins = session.logins();
    bao.cli(&["lease", "revoke", "-prefix", "auth/approle/login"])
        .unwrap();
    kv.fetch("myapp/api", &Selector::Current)
        .await
        .expect("re-login after revocation");
    assert_eq!(session.logins(), logins + 1);
}

#[tokio::test]
async fn a_killed_server_is_invisible_within_max_stale_then_a_transient_error() {
    let mut bao = openbao().await;
    bao.cli(&[
        "kv",
        "put",
        "-mount=secret",
        "myapp/api",
        "api_key=stale-ok",
    ])
    .unwrap();
    let cache = SecretCache::builder(Arc::new(VaultKvProvider::new(
        root_session(&bao).await,
        "secret",
    )))
    .ttl(Duration::from_millis(300))
    .max_stale(Duration::from_millis(1500))
    .backoff(Duration::from_millis(50), Duration::from_millis(200))
    .build()
    .unwrap();
    let handle = cache.handle::<AppSecret>("myapp/api").await.unwrap();
    let fetched = tokio::time::Instant::now();
    bao.kill();
    let killed = tokio::time::Instant::now();

    // Served stale until TTL + max_stale (1.8 s) after the store last answered, which was between
    // `fetched` and `killed`: reads until 1.4 s after the first are inside, 2.1 s after the second
    // outside, however slow the kill was.
    while fetched.elapsed() < Duration::from_millis(1400) {
        let value = cache.get("myapp/api").await.expect("last-known-good");
        assert!(value.value.expose_str().unwrap().contains("stale-ok"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cache.stats().stale_serves > 0);
    assert_eq!(handle.load().current().api_key, "stale-ok");
    tokio::time::sleep_until(killed + Duration::from_millis(2100)).await;
    let err = cache.get("myapp/api").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(!format!("{err} {err:?}").contains("stale-ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_on_dynamic_credentials_moves_to_the_new_user_with_no_caller_error() {
    use credswap::pg::{RetryAndDrain, RotatingPgPool};
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    let engine = database_engine().await;
    let cache = dynamic_credentials_cache(&engine).await;
    let handle = cache.handle::<PgCredentials>("creds/dyn").await.unwrap();
    let first_user = handle.load().current().username.clone();
    let mut rotation = RetryAndDrain::default();
    rotation.drain_delay = Duration::from_secs(60); // the lease end (minus the margin) comes first
    rotation.lease_margin = Duration::from_secs(1);
    let pool = RotatingPgPool::builder(handle.clone())
        .pool_options(PgPoolOptions::new().max_connections(4))
        .connect_options(
            PgConnectOptions::new()
                .host("127.0.0.1")
                .port(engine.pg.port())
                .database("postgres"),
        )
        .retry_and_drain(rotation)
        .connect()
        .await
        .unwrap();

    // Query continuously across the re-issue (before the 12 s max TTL).
    let started = tokio::time::Instant::now();
    let mut errors = Vec::new();
    let mut queries = 0;
    while started.elapsed() < Duration::from_secs(14) {
        match sqlx::query_scalar::<_, String>("SELECT current_user::text")
            .fetch_one(&pool)
            .await
        {
            Ok(_) => queries += 1,
            Err(e) => errors.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(errors.is_empty(), "{errors:?}");
    assert!(queries > 100);
    let new_user = handle.load().current().username.clone();
    assert_ne!(new_user, first_user, "new credentials were issued");
    // The old user's sessions were drained before its lease ended.
    let admin = pg_common::admin_client(&engine.pg).await;
    assert_eq!(pg_common::sessions_of(&admin, &first_user).await, 0);
    assert!(pool.stats().connections_drained >= 1, "{:?}", pool.stats());
    let printed = format!("{pool:?} {handle:?} {:?}", handle.load().current());
    assert!(!printed.contains(handle.load().current().password.expose_secret()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_on_renewed_dynamic_credentials_drain_the_old_user_at_the_drain_delay_not_at_once() {
    use credswap::pg::RetryAndDrain;
    use pg_common::{Kind, TestPool, sessions_of};

    let engine = database_engine().await;
    let cache = dynamic_credentials_cache(&engine).await;
    let handle = cache.handle::<PgCredentials>("creds/dyn").await.unwrap();
    let first_user = handle.load().current().username.clone();
    // The lease (4 s, renewed every ~2.6 s up to its 12 s max TTL) is renewed several times before
    // new credentials come; the old user's lease then still has over a second to run.
    let config = RetryAndDrain::default()
        .drain_delay(Duration::from_secs(1))
        .lease_margin(Duration::from_millis(300));
    let mut pools = Vec::new();
    for kind in [Kind::Sqlx, Kind::Deadpool] {
        let pool = TestPool::open(kind, &handle, engine.pg.port(), 4, config.clone()).await;
        let held = [pool.hold().await.unwrap(), pool.hold().await.unwrap()];
        drop(held);
        pools.push(pool);
    }
    let admin = pg_common::admin_client(&engine.pg).await;
    assert_eq!(sessions_of(&admin, &first_user).await, 4);

    let _ = tokio::time::timeout(Duration::from_secs(14), handle.changed())
        .await
        .expect("new credentials before the max TTL");
    assert!(cache.stats().lease_renewals >= 2, "{:?}", cache.stats());
    // Both pools take the swap in; the old user's connections then stay until the earlier of
    // each pool's deadlines (the drain delay after the swap: its renewed lease runs on) and go
    // within a sweep or so of the later one (the bound only catches a drain that never comes).
    let mut deadlines = Vec::new();
    for pool in &pools {
        assert!(
            common::eventually(Duration::from_secs(5), || pool.monitor().rotations().len()
                >= 2)
            .await
        );
        let records = pool.monitor().rotations();
        deadlines.push(records[records.len() - 2].drain_deadline.unwrap());
    }
    let (first, last) = (
        *deadlines.iter().min().unwrap(),
        *deadlines.iter().max().unwrap(),
    );
    let drained_at = loop {
        let sessions = sessions_of(&admin, &first_user).await;
        // After the count was read: what it saw was at or before this.
        let checked = tokio::time::Instant::now();
        if checked < first {
            assert_eq!(
                sessions, 4,
                "the old user's connections stay until the drain delay (its renewed lease runs on)"
            );
        }
        if sessions == 0 {
            break checked;
        }
        assert!(
            checked < last + Duration::from_secs(10),
            "the old user's connections were never drained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(drained_at >= first, "drained before the deadline");
    for pool in &pools {
        let records = pool.monitor().rotations();
        assert!(records.len() >= 2, "{records:?}");
        let old = &records[records.len() - 2];
        let deadline = old.drain_deadline.unwrap() - old.replaced_at.unwrap();
        assert!(
            deadline >= Duration::from_millis(500),
            "drained {deadline:?} after the swap"
        );
        assert_eq!(
            pool.query().await.unwrap(),
            handle.load().current().username
        );
    }
}
