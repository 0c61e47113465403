//! HTTP clients and servers whose credentials follow a secret.
//!
//! - **Clients** (feature `http-client`): [`AuthMiddleware`], a `reqwest-middleware` middleware
//!   that puts a credential from a handle on each request ([`Bearer`], [`Basic`], a
//!   [`NamedHeader`], or your own [`AuthScheme`]) and, when the server rejects it, refreshes once
//!   for all the requests refused together (coalesced with every other load of the secret) and
//!   replays each request once with the new credential.
//! - **Servers** (feature `http-server`): [`ApiKeyLayer`], a `tower` layer (usable from axum)
//!   that checks a presented API key or bearer token against a handle — the current version and,
//!   during the grace period, the previous one — in constant time, from plain or SHA-256 hashed
//!   keys, counting rejections by reason and never logging a presented key.
//!
//! The guide `credswap::docs::http` (with the `http-client`, `http-server` and `jwt` features)
//! walks through both sides of a key rotation.

#[cfg(feature = "http-client")]
pub(crate) mod client;
#[cfg(feature = "http-client")]
mod scheme;
#[cfg(feature = "http-server")]
pub(crate) mod server;

#[cfg(feature = "http-server")]
pub use self::server::{
    AcceptedKey, ApiKeyLayer, ApiKeyService, ApiKeys, KeyLocation, Rejection, RejectionStats,
};
#[cfg(feature = "http-client")]
pub use self::{
    client::{AuthMiddleware, AuthStats, NotReplayed},
    scheme::{AuthScheme, Basic, BasicCredentials, Bearer, NamedHeader},
};

/// The `http` crate's header types the schemes use.
pub use http::header;
