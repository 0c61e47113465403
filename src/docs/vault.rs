//! # Vault and OpenBao: setup and behaviour
//!
//! ## One session, several providers
//!
//! A [`VaultSession`](crate::provider::VaultSession) logs in once and keeps its token alive; the
//! providers share it:
//!
//! ```no_run
//! # #![allow(dead_code)]
//! # async fn run() -> credswap::Result<()> {
//! use std::sync::Arc;
//! use credswap::pg::PgCredentials;
//! use credswap::provider::{VaultDatabaseProvider, VaultKvProvider, VaultSession};
//! use credswap::SecretCache;
//!
//! let session = VaultSession::from_env().await?; // VAULT_ADDR/VAULT_TOKEN or BAO_ADDR/BAO_TOKEN
//! let kv = SecretCache::builder(Arc::new(VaultKvProvider::new(session.clone(), "secret"))).build()?;
//! let db = SecretCache::builder(Arc::new(VaultDatabaseProvider::new(session, "database"))).build()?;
//! let api = kv.handle::<serde_json::Value>("myapp/partner-api").await?;
//! let creds = db.handle::<PgCredentials>("creds/orders-rw").await?;
//! # drop((api, creds));
//! // At shutdown, after closing the pools: end the dynamic database users now.
//! db.revoke_leases().await?;
//! # Ok(()) }
//! ```
//!
//! ## Tokens
//!
//! The session renews its token at about two thirds of its TTL. When a renewal comes back shortened
//! (the token's max TTL is near) or is refused, an AppRole or Kubernetes session logs in again; a
//! request answered 403 also triggers one (coalesced) login and is retried once. A plain token
//! (`VaultAuth::Token`) is renewed while it is renewable, but cannot be replaced: give long-running
//! workers AppRole or Kubernetes credentials.
//!
//! ## Leases of dynamic database credentials
//!
//! `creds/<role>` creates a database user with a lease (say 1 h, max 24 h). The cache renews the
//! lease at about two thirds of what remains; when a renewal is granted for less than the original
//! duration, the max TTL is near, and the cache fetches new credentials at once. The handle swaps,
//! and a [`RotatingPgPool`](crate::pg) drains connections of the old user before its lease ends
//! (`RotationConfig::lease_margin`): Vault revoking a user does not end its open sessions, so the
//! pool must. A value is never served past its lease's end, even from last-known-good.
//!
//! ## Static roles
//!
//! `static-creds/<role>` returns the role's password and the seconds until Vault rotates it; the
//! cache asks again right after. Vault's rotation queue runs every few seconds, so the new password
//! may appear a little after that moment: the cache keeps asking (about every half second) until it
//! does, and a pool that meets the new password's rejection of the old one refreshes at once.
//!
//! ## Permissions
//!
//! The token's policy needs `read` on `<kv-mount>/data/<path>` and `<kv-mount>/metadata/<path>`
//! (the metadata read is the cheap change probe), `read` on `<db-mount>/creds/<role>` or
//! `<db-mount>/static-creds/<role>`, `update` on `sys/leases/renew` and `sys/leases/revoke` for
//! leases, and `update` on `<db-mount>/rotate-role/<role>` to trigger a static rotation.
