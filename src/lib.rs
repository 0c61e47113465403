#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub, unused_results, rust_2018_idioms)]
#![doc(test(attr(deny(warnings))))]

mod backoff;
pub mod cache;
pub mod docs;
pub mod error;
mod events;
pub mod handle;
pub mod health;
#[cfg(any(feature = "http-client", feature = "http-server"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "http-client", feature = "http-server")))
)]
pub mod http;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod jwt;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(feature = "pg")]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlx", feature = "deadpool"))))]
pub mod pg;
pub mod provider;
pub mod push;
#[cfg(feature = "rotation")]
#[cfg_attr(docsrs, doc(cfg(feature = "rotation")))]
pub mod rotation;
mod sharded;
mod time;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;
pub mod value;

#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

pub use self::{
    cache::events::{CacheStats, SecretEvent},
    cache::{SecretCache, SecretCacheBuilder},
    error::{Error, ErrorKind, Result},
    handle::{HandleStatus, SecretHandle, Snapshot},
    provider::{EnvProvider, FileProvider, MemoryProvider, SecretProvider},
    value::{Lease, SecretValue, Selector, Stage, Version, VersionId, Versioned},
};

/// Re-exported so secret fields of your own types can be unprintable too
/// (`password: SecretString`).
pub use secrecy;

/// What [`SecretHandle::load`] returns (from `arc-swap`): derefs to an `Arc<Snapshot<T>>`. Do not
/// hold it across an `.await`.
pub use arc_swap::Guard;

/// The attribute that implementing [`SecretProvider`] needs (`#[credswap::async_trait]`).
pub use async_trait::async_trait;
