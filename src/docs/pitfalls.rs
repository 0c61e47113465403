//! # Pitfalls
//!
//! - **Never hold a handle's guard across `.await`.** [`SecretHandle::load`](crate::SecretHandle::load)
//!   returns an `arc_swap::Guard`; keeping it across an await point pins that snapshot and, in large
//!   numbers, slows down swaps. Call `load()` again after the await, or take `load_full()`.
//! - **Do not copy a secret out of a handle and keep it.** The point of a handle is that every use
//!   sees the newest version: read it where you use it.
//! - **Put secret fields in unprintable types.** A `#[derive(Debug)]` struct with a `password:
//!   String` prints the password. Use [`secrecy::SecretString`].
//! - **Never log connection options.** sqlx's `PgConnectOptions` prints the password in `Debug`.
//! - **A missing or denied secret is not an outage.** The cache serves last-known-good only for
//!   retryable errors (throttled, unreachable, 5xx); a deleted secret or a revoked permission is
//!   reported at once (and remembered for `negative_ttl`), so that nobody keeps using credentials
//!   that were meant to stop working. A handle keeps serving its last value in that case: check
//!   [`SecretHandle::status`](crate::SecretHandle::status) (or watch
//!   `SecretEvent::HandleStatusChanged`) where it matters.
//! - **Shut down in order.** Close pools, then [`SecretCache::shutdown`](crate::SecretCache::shutdown)
//!   (or `shutdown_revoking_leases` for Vault dynamic credentials), then the
//!   [`VaultSession`](crate::provider::VaultSession). Dropping everything also works, but
//!   background refreshes may still run until the cache's last clone is gone.
//! - **Test with paused time.** The cache and handles run on Tokio's clock: under
//!   `#[tokio::test(start_paused = true)]` a one-hour TTL passes in an instant.
//! - **TTL is a backstop, not the rotation signal.** Pair the TTL with
//!   [`SecretCache::invalidate`](crate::SecretCache::invalidate) from a push channel, or with
//!   [`SecretHandle::refresh`](crate::SecretHandle::refresh) when a consumer sees an authentication
//!   failure.
