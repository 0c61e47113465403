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
//! let db = SecretCache::builder(Arc::new(VaultDatabaseProvider::new(session.clone(), "database"))).build()?;
//! let api = kv.handle::<serde_json::Value>("myapp/partner-api").await?;
//! let creds = db.handle::<PgCredentials>("creds/orders-rw").await?;
//! # drop((api, creds));
//! // At shutdown, after closing the pools: end the dynamic database users now; then stop the
//! // caches' background work and the session's token keep-alive.
//! db.shutdown_revoking_leases().await?;
//! kv.shutdown().await;
//! session.shutdown().await; // revokes the token it logged in for, and the leases it made
//! # Ok(()) }
//! ```
//!
//! ## Tokens
//!
//! The session renews its token at about two thirds of its TTL. When a renewal comes back shortened
//! (the token's max TTL is near) or is refused, an AppRole or Kubernetes session logs in again and
//! revokes the token it replaced. When Vault fails, the session backs off (about 1 s, doubling to
//! 5 minutes, with jitter) and reports each failure as a
//! [`SessionEvent::KeepAliveFailed`](crate::provider::SessionEvent); it never retries in a loop.
//!
//! A request answered 403 is not, by itself, a reason to log in again: the policy may simply deny
//! that path. The session asks Vault whether its token is still valid (`lookup-self`, at most once
//! a second) and logs in again only if it is not, so a denied path costs no login (and no
//! `secret_id_num_uses`).
//!
//! A plain token (`VaultAuth::Token`) is renewed while it is renewable, but cannot be replaced:
//! once it expires, the session stops, emits
//! [`SessionEvent::TokenExpired`](crate::provider::SessionEvent), and every request fails at once
//! with [`ErrorKind::AccessDenied`](crate::ErrorKind::AccessDenied) without reaching Vault. Give
//! long-running workers AppRole or Kubernetes credentials.
//!
//! ## TLS and namespaces
//!
//! Every call (KV, database credentials, leases, logins, renewals) goes through one HTTP client
//! built from a [`VaultConfig`](crate::provider::VaultConfig): `VAULT_CACERT`/`VAULT_CAPATH` (only
//! those CAs are trusted), `VAULT_CLIENT_CERT`/`VAULT_CLIENT_KEY`, `VAULT_SKIP_VERIFY` and
//! `VAULT_NAMESPACE`, or their `BAO_*` spellings, or the same settings in code. A server
//! certificate that is not trusted fails with a transient error that names `VAULT_CACERT`
//! (transient, so that a server-side certificate mishap does not make caches drop last-known-good).
//!
//! ## Leases of dynamic database credentials
//!
//! `creds/<role>` creates a database user with a lease (say 1 h, max 24 h). The cache renews the
//! lease at about two thirds of what remains; when a renewal is granted for less than the original
//! duration, the max TTL is near, and the cache fetches new credentials at once. The handle swaps,
//! and a [`RotatingPgPool`](crate::pg) drains connections of the old user before its lease ends
//! (`RetryAndDrain::lease_margin`): Vault revoking a user does not end its open sessions, so the
//! pool must. The cache never serves a value past its lease's end, even from last-known-good; a
//! handle keeps it (its `load()` never fails) but its [`status`](crate::SecretHandle::status)
//! becomes [`HandleStatus::LeaseExpired`](crate::HandleStatus) at that moment, with an event.
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
