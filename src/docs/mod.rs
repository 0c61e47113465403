//! Guides: prose only, no code to call.

pub mod architecture;
pub mod aws;
#[cfg(all(feature = "http-client", feature = "http-server", feature = "jwt"))]
#[cfg_attr(
    docsrs,
    doc(cfg(all(feature = "http-client", feature = "http-server", feature = "jwt")))
)]
pub mod http;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod patterns;
pub mod performance;
pub mod pitfalls;
pub mod push;
#[cfg(feature = "rotation")]
#[cfg_attr(docsrs, doc(cfg(feature = "rotation")))]
pub mod rotation;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;
#[cfg(feature = "vault")]
#[cfg_attr(docsrs, doc(cfg(feature = "vault")))]
pub mod vault;
