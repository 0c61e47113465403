//! The TTL-cached, version-aware secret cache.
//!
//! Split by concern: [`SecretCache`]'s public face (`secret_cache`), the read path and its
//! staleness rules (`read`), loading and coalescing (`load`), how a load asks the store (`fetch`),
//! leases (`lease`), remembered failures (`negative`), the background watchers that keep handles
//! current (`watch`), and the timing policy (`policy`, `entry`).

mod builder;
mod entry;
pub(crate) mod events;
mod fetch;
mod index;
mod inflight;
pub(crate) mod key;
mod lease;
mod load;
mod negative;
mod policy;
mod read;
mod secret_cache;
pub(crate) mod watch;

pub(crate) use self::entry::Loaded;
pub use self::{
    builder::SecretCacheBuilder,
    secret_cache::{Refreshed, SecretCache},
};
