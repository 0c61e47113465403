//! # Architecture: how the parts fit, and where each lives
//!
//! ```text
//!  provider (AWS SM | Vault/OpenBao KV | Vault DB creds | file | env | memory)
//!       │  fetch(id, selector) -> Versioned<SecretValue>      probe(id) -> current version id (cheap)
//!       ▼
//!  SecretCache  (read index over arc-swap; moka bounds capacity and expiry; Tokio's clock)
//!       │  fresh hit: no call · past refresh point: serve + ONE background load (jittered)
//!       │  expired: ONE coalesced load for all waiters · transient error: last-known-good up to
//!       │  max_stale, reported once per backoff step · not found / denied: remembered (negative_ttl)
//!       │  loads numbered in the order they are stored; a load an invalidation overtook is discarded
//!       │  (its waiters get a fresh load, leased credentials it fetched are revoked)
//!       │  invalidate(id) · refresh(id) (coalesced, rate-limited) · shutdown() · events (broadcast)
//!       ▼
//!  SecretHandle<T>  (arc-swap over Snapshot { current, previous, previous_valid_until, version })
//!       │  load(): lock-free, allocation-free, never older than what it held · status(): fresh,
//!       │  stale, failing, lease expired, decode failed · accepts(): dual-read (also right after a
//!       │  restart, from the store's previous version) · changed().await · refresh()
//!       ▼
//!  consumers: RotatingPgPool (sqlx) · deadpool Pool via RotatingConnect · your own code
//!       on SQLSTATE 28P01/28000: handle.refresh() (coalesced) -> retry with fresh credentials
//!       a ledger of which credentials each login used; each version drained at its own deadline
//!       (drain delay, or its lease's end minus a margin), logins in flight at a rotation included
//!
//!  rotation engine: create -> set -> test -> finish (idempotent per token), single-user |
//!       alternating-users; stores: AWS SM stages | Vault KV v2 pending slot with check-and-set |
//!       memory; target: PostgreSQL role (client-side SCRAM verifier, advisory lock per secret);
//!       rollback when test fails; async on_finished hooks, run exactly once per rotation
//!       -> push: Announcement (id + version id, never a value) on PostgreSQL NOTIFY or Redis
//!          pub/sub -> each Subscriber refreshes caches that hold the secret, through the normal
//!          rate-limited path; sheds floods without a reconnect; optional HMAC signatures;
//!          reconnects with backoff and re-checks everything it watches, once
//! ```
//!
//! Which file holds what, and where a secret id, a rotation token and a drain deadline go
//! through the code, is the contributors' business: `ARCHITECTURE.md` at the root of the
//! repository.
