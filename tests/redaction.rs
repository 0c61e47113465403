//! No secret value reaches a log line, an error, an event or `Debug` output.
//!
//! Runs every path that logs or fails (fetch, rotation, decode failures of values that contain
//! secrets, stale serving, missing and denied secrets, files and environment variables) with a
//! TRACE-level subscriber capturing everything, then scans all captured text for the values used.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::capture::{Capture, assert_none_of, printed as printed_error};
use credswap::secrecy::SecretString;
use credswap::{
    EnvProvider, Error, FileProvider, MemoryProvider, SecretCache, SecretProvider, SecretValue,
    Selector,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct DbSecret {
    username: String,
    password: SecretString,
    port: u16,
}

const SECRETS: &[&str] = &[
    "Sentinel-Pass-0001",
    "Sentinel-Pass-0002",
    "Sentinel-InJson-0003",
    "Sentinel-Quoted-0004",
    "Sentinel-File-0005",
    "Sentinel-Env-0006",
    "Sentinel-Bytes-0007",
    "Sentinel-Variant-0008",
];

fn db_json(password: &str) -> String {
    format!(r#"{{"username": "app", "password": "{password}", "port": 5432}}"#)
}

#[tokio::test]
async fn no_secret_value_in_logs_errors_events_or_debug_output() {
    let capture = Capture::install();

    let mut printed: Vec<String> = Vec::new();
    let record_err = |printed: &mut Vec<String>, err: &Error| printed.push(printed_error(err));

    let store = Arc::new(MemoryProvider::new());
    let _ = store.set("db", db_json(SECRETS[0]));
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_millis(100))
        .max_stale(Duration::from_millis(200))
        .min_refresh_interval(Duration::ZERO)
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .build()
        .unwrap();
    let mut events = cache.subscribe();
    let handle = cache.handle::<DbSecret>("db").await.unwrap();
    let raw = cache.handle_raw("db").await.unwrap();

    // Rotation.
    let _ = store.set("db", db_json(SECRETS[1]));
    let _ = handle.refresh().await.unwrap();
    // Malformed versions that carry secrets in the places serde likes to quote.
    for bad in [
        format!(
            r#"{{"username": "app", "password": "{}", "port": "{}"}}"#,
            SECRETS[2], SECRETS[3]
        ),
        format!(
            r#"{{"username": "app", "password": ["{}"], "port": 1}}"#,
            SECRETS[2]
        ),
        format!(
            r#"{{"username": "app", "password": "x", "port": 1, "extra": "{}"#,
            SECRETS[2]
        ),
        SECRETS[3].to_string(),
        format!(r#""{}""#, SECRETS[7]),
    ] {
        let _ = store.set("db", bad);
        record_err(&mut printed, &handle.refresh().await.unwrap_err());
    }
    // Stale serving through an outage, then the outage showing.
    store.fail_with(Some(Error::transient("db", "connection reset")));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let _ = cache.get("db").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    record_err(&mut printed, &cache.get("db").await.unwrap_err());
    store.fail_with(Some(Error::access_denied("db")));
    record_err(&mut printed, &cache.refresh("db").await.unwrap_err());
    store.fail_with(None);
    record_err(&mut printed, &cache.get("missing").await.unwrap_err());

    // Files and environment variables.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), SECRETS[4]).unwrap();
    std::fs::write(
        dir.path().join("bin"),
        [SECRETS[6].as_bytes(), &[0xff]].concat(),
    )
    .unwrap();
    let files = SecretCache::builder(Arc::new(FileProvider::new(dir.path())))
        .build()
        .unwrap();
    let file_value = files.get("key").await.unwrap();
    let bin_value = files.get("bin").await.unwrap();
    record_err(
        &mut printed,
        &files.handle::<DbSecret>("key").await.unwrap_err(),
    );
    record_err(
        &mut printed,
        &FileProvider::new(dir.path())
            .fetch("key", &Selector::Version("nope".into()))
            .await
            .unwrap_err(),
    );
    // SAFETY: this test binary runs one test; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("REDACTION_TEST_TOKEN", SECRETS[5]) };
    let env = SecretCache::builder(Arc::new(EnvProvider::new()))
        .build()
        .unwrap();
    let env_value = env.get("REDACTION_TEST_TOKEN").await.unwrap();
    record_err(
        &mut printed,
        &env.handle::<DbSecret>("REDACTION_TEST_TOKEN")
            .await
            .unwrap_err(),
    );

    // Debug output of everything a user might print.
    printed.push(format!("{:?} {:#?}", handle, handle.load()));
    printed.push(format!("{raw:?} {:?}", raw.load().current()));
    printed.push(format!("{:?} {:?} {:?}", file_value, bin_value, env_value));
    printed.push(format!("{cache:?} {files:?} {env:?} {:?}", cache.stats()));
    printed.push(format!("{:?}", SecretValue::from(SECRETS[0])));
    printed.push(format!("{store:?}"));
    let mut event_count = 0;
    while let Ok(event) = events.try_recv() {
        printed.push(format!("{event:?}"));
        event_count += 1;
    }
    assert!(event_count >= 8, "events were captured ({event_count})");

    let logs = capture.text();
    // The capture works: it saw the rotation, the decode failures and the stale serves.
    for expected in [
        "rotated",
        "decode_failed",
        "served_stale",
        "refresh_failed",
        "credswap.load",
    ] {
        assert!(logs.contains(expected), "log lacks {expected}:\n{logs}");
    }
    let everything = format!("{logs}\n{}", printed.join("\n"));
    assert_none_of(SECRETS, &everything);
}
