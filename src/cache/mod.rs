//! The TTL-cached, version-aware secret cache.

mod builder;
pub(crate) mod core;
mod index;
mod policy;
pub(crate) mod watch;

pub use self::{builder::SecretCacheBuilder, core::SecretCache};
