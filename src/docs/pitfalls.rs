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
//!   reported at once, so that nobody keeps using credentials that were meant to stop working.
//! - **TTL is a backstop, not the rotation signal.** Pair the TTL with
//!   [`SecretCache::invalidate`](crate::SecretCache::invalidate) from a push channel, or with
//!   [`SecretHandle::refresh`](crate::SecretHandle::refresh) when a consumer sees an authentication
//!   failure.
