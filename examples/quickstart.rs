//! A file-backed API key rotates while the program reads it.
//!
//! Shows the handle swapping to the new version by itself, a validator accepting both keys during
//! the grace period (dual-read), an event hook, and an invalidation that makes the swap immediate.
//! Needs no server: the secret is a JSON file in a temp dir, written the way a secret agent or a
//! Kubernetes volume update writes it (a new file renamed over the old one).
//!
//! Run with `cargo run --example quickstart`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use credswap::secrecy::{ExposeSecret, SecretString};
use credswap::{FileProvider, SecretCache, SecretEvent};
use serde::Deserialize;

/// What the secret file holds. The key is a `SecretString`: it cannot be printed by accident.
#[derive(Deserialize)]
struct ApiCredentials {
    client_id: String,
    api_key: SecretString,
}

/// Writes the secret atomically, as secret agents do.
fn write_secret(dir: &Path, client_id: &str, api_key: &str) -> std::io::Result<()> {
    let staging = dir.join(".api.json.tmp");
    std::fs::write(
        &staging,
        format!(r#"{{"client_id": "{client_id}", "api_key": "{api_key}"}}"#),
    )?;
    std::fs::rename(staging, dir.join("api.json"))
}

/// What a server does with an incoming request's key: accept the current key, and during the
/// grace period after a rotation also the previous one.
fn validate(creds: &credswap::SecretHandle<ApiCredentials>, presented: &str) -> &'static str {
    if creds.accepts(|c| c.api_key.expose_secret() == presented) {
        "accepted"
    } else {
        "refused"
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    write_secret(dir.path(), "billing-service", "key-one")?;

    let started = Instant::now();
    let cache = SecretCache::builder(Arc::new(FileProvider::new(dir.path())))
        .ttl(Duration::from_secs(1)) // re-read the file every ~0.75-0.9 s
        .grace_period(Duration::from_millis(1500)) // the old key works 1.5 s past a swap
        .on_event(move |event| match event {
            SecretEvent::HandleSwapped { id, old, new, .. } => {
                println!(
                    "[{:>5.2}s] hook: {id} swapped {old} -> {new}",
                    secs(started)
                );
            }
            SecretEvent::Invalidated { id } => {
                println!("[{:>5.2}s] hook: {id} invalidated", secs(started));
            }
            _ => {}
        })
        .build()?;

    let creds = cache.handle::<ApiCredentials>("api.json").await?;
    let snapshot = creds.load();
    println!(
        "[{:>5.2}s] reading {} at version {}",
        secs(started),
        snapshot.current().client_id,
        snapshot.version().id
    );
    drop(snapshot);

    // 1. The file changes; the handle notices at its refresh point, with no code of ours.
    write_secret(dir.path(), "billing-service", "key-two")?;
    println!("[{:>5.2}s] file rewritten with a new key", secs(started));
    let snapshot = creds.changed().await;
    println!(
        "[{:>5.2}s] handle swapped to {} (previous {})",
        secs(started),
        snapshot.version().id,
        snapshot
            .previous_version()
            .map_or("none".into(), |v| v.id.to_string())
    );
    println!(
        "          request with key-two: {}; with key-one: {} (grace period)",
        validate(&creds, "key-two"),
        validate(&creds, "key-one")
    );

    // 2. After the grace period the old key is refused.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    println!(
        "[{:>5.2}s] after the grace period, key-one: {}",
        secs(started),
        validate(&creds, "key-one")
    );

    // 3. A push (a rotation job's notification, an operator) makes the swap immediate.
    write_secret(dir.path(), "billing-service", "key-three")?;
    let pushed = Instant::now();
    cache.invalidate("api.json");
    let snapshot = creds.changed().await;
    println!(
        "[{:>5.2}s] after invalidate: version {} within {:?}; key-three: {}",
        secs(started),
        snapshot.version().id,
        pushed.elapsed(),
        validate(&creds, "key-three")
    );

    let stats = cache.stats();
    println!(
        "cache: {} store calls ({} failed) for 3 versions",
        stats.provider_calls, stats.refresh_failures
    );
    Ok(())
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}
