//! The TTL-cached, version-aware secret cache.
//!
//! Split by concern: [`SecretCache`]'s public face and its `Inner` (`secret_cache`), the read path
//! and its staleness rules (`read`), how a load runs (`load`) and the table of loads under way
//! (`inflight`), how a load asks the store (`fetch`), leases (`lease`), remembered failures
//! (`negative`), the followers of each key (`watch`), the cache's vocabulary (`events`), and the
//! timing policy (`policy`, `entry`).

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
#[cfg(feature = "metrics")]
pub(crate) use self::secret_cache::WeakCache;
pub use self::{
    builder::SecretCacheBuilder,
    events::{StoreCall, StoreOperation},
    secret_cache::{Refreshed, SecretCache},
};
