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
//!       rollback when test fails; on_finished hook
//!       -> push: Announcement (id + version id, never a value) on PostgreSQL NOTIFY or Redis
//!          pub/sub -> each Subscriber refreshes caches that hold the secret, through the normal
//!          rate-limited path; reconnects with backoff and re-checks everything it watches
//! ```
//!
//! ## Module map
//!
//! | path | holds |
//! |---|---|
//! | `lib.rs` | crate docs (the README), lints, flat re-exports |
//! | `error.rs` | [`Error`](crate::Error), [`ErrorKind`](crate::ErrorKind), `is_retryable` |
//! | `value.rs` | [`SecretValue`](crate::SecretValue), versions, stages, leases; keyed content version ids |
//! | `events.rs` | [`SecretEvent`](crate::SecretEvent), [`CacheStats`](crate::CacheStats), the emitter (hooks that panic are contained) |
//! | `time.rs` | Tokio's clock, saturating instant arithmetic |
//! | `provider/` | the [`SecretProvider`](crate::SecretProvider) trait; `memory`, `file`, `env`, `aws`; `vault/` (`config`: address, namespace, TLS; `http`: the one HTTP path; `auth`: logins; `session` and `keep_alive`: the token; `kv`, `database`) |
//! | `cache/` | `secret_cache` (public face), `read` (read path and staleness rules), `load` (coalescing, write-back, discarding), `fetch` (probe, fetch, lease renewal), `lease` (revocation), `negative` (remembered failures), `watch` (background loads for handles), `entry`, `key`, `index`, `policy`, `builder` |
//! | `handle/` | [`SecretHandle`](crate::SecretHandle), `snapshot`, `status`, `follow` (how a handle takes values and failures) |
//! | `pg/` | `credentials` (the RDS and Vault shapes; what a login takes from them), `classify` (auth failures), `config`, `ledger` (which credentials each connection used, per-version deadlines), `rotation` (the mechanism both pools share), `monitor`, `sqlx`, `deadpool` |
//! | `rotation/` | the rotation engine: `protocol`, `engine`, `strategy`, `password`, `store` with `aws`, `vault`, `memory`, `target` and `postgres` (with `sql`), `schedule`, `events` |
//! | `push/` | the announcement seam: `announcement`, `channel`, `subscriber`, `apply`, `builder`, `events`; `postgres` and `redis` transports |
//! | `testkit/` | throwaway PostgreSQL, OpenBao, moto and Redis servers for tests |
//! | `docs/` | guides like this one |
