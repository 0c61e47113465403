//! # Patterns
//!
//! ## Validate incoming keys during a rotation (dual-read)
//!
//! A service that checks API keys or webhook signatures must accept the old key until every client
//! has the new one. [`SecretHandle::accepts`](crate::SecretHandle::accepts) checks the current value,
//! then the previous one while its grace period lasts:
//!
//! ```
//! # #![allow(dead_code)]
//! use credswap::SecretHandle;
//! use credswap::secrecy::{ExposeSecret, SecretString};
//!
//! #[derive(serde::Deserialize)]
//! struct WebhookKey {
//!     key: SecretString,
//! }
//!
//! fn authorized(keys: &SecretHandle<WebhookKey>, presented: &str) -> bool {
//!     // A real check would compare in constant time.
//!     keys.accepts(|k| k.key.expose_secret() == presented)
//! }
//! ```
//!
//! ## Refresh when a consumer is told the secret is wrong
//!
//! When a downstream service answers 401 with the key from a handle, call
//! [`SecretHandle::refresh`](crate::SecretHandle::refresh) and retry once. Refreshes are coalesced
//! and rate-limited, so a burst of 401s costs the store one call. The PostgreSQL pools in
//! [`pg`](crate::pg) do exactly this for rejected logins.
//!
//! ## Push instead of waiting for the TTL
//!
//! The TTL is the backstop. When something knows a secret changed (the rotation job, an operator,
//! a message on a bus), call [`SecretCache::invalidate`](crate::SecretCache::invalidate): the next
//! read goes to the store and handles reload at once.
//! To do that across a fleet, announce the rotation on PostgreSQL `NOTIFY` or Redis pub/sub and run
//! a [`push::Subscriber`](crate::push::Subscriber) in every process: see [`docs::push`](super::push).
//!
//! ## Watch what happens
//!
//! [`SecretCache::subscribe`](crate::SecretCache::subscribe) and
//! [`SecretCache::on_event`](crate::SecretCache::on_event) deliver every fetch, rotation, refresh
//! failure, stale serve, invalidation, decode failure, lease renewal and handle swap, with ids and
//! versions only: safe to log and to turn into metrics (rotation success, consumer update latency,
//! stale-serve and throttling rates). [`SecretCache::stats`](crate::SecretCache::stats) and the
//! pools' `stats()` give the counters.
