//! # API keys, bearer tokens and signing keys that rotate
//!
//! Database passwords are one kind of secret that rotates. The others people name are a third
//! party's API key (a payment gateway's), the API keys your own services issue and check, and the
//! keys that sign your tokens. Each has two sides — who presents the secret and who checks it —
//! and a rotation breaks whichever side moves last. The crate's handle already has what both sides
//! need: one coalesced refresh, and the previous version kept for a grace period.
//!
//! ## Presenting a credential: [`AuthMiddleware`](crate::http::AuthMiddleware)
//!
//! A client learns of a rotation at its next refresh point, or from push. Between the store
//! changing and that moment the server may already refuse the old key: that is the 401 this
//! middleware turns into a success.
//!
//! ```text
//! store: key-1 → key-2          server: accepts key-2 only
//! request A (key-1) ─────────────► 401 ─┐
//! request B (key-1) ─────────────► 401 ─┤  A refreshes the handle (one store call);
//! request C (key-1) ─────────────► 401 ─┘  B and C wait for it, then find key-2
//! A, B, C replayed once with key-2 ──► 200
//! request D ── key-2 from the start ──► 200
//! ```
//!
//! - Choose how the credential goes on the request: [`Bearer`](crate::http::Bearer),
//!   [`Basic`](crate::http::Basic), [`NamedHeader`](crate::http::NamedHeader), or a closure
//!   ([`AuthScheme`](crate::http::AuthScheme)). Header values are marked sensitive.
//! - A replay needs the body again. Bodies built from bytes or strings can be cloned; a stream
//!   cannot, and such a call fails with [`NotReplayed`](crate::http::NotReplayed), which hands
//!   over the 401. The next request carries the new credential.
//! - A key the store cannot fix (revoked at the provider, wrong scopes) gets its 401 back after
//!   one store call, and for `min_refresh_interval` after that without any.
//! - Answer 403 for a missing permission? Pass `rejected_on([StatusCode::UNAUTHORIZED])`.
//!
//! ## Checking a credential: [`ApiKeyLayer`](crate::http::ApiKeyLayer)
//!
//! Rotating a key your service checks, with one secret and no coordination:
//!
//! 1. Store the new key (or its SHA-256, for [`ApiKeys::sha256`](crate::http::ApiKeys::sha256)).
//! 2. Every server swaps within its TTL (or at once with push) and accepts **both** keys for the
//!    cache's grace period; handlers see which one matched in
//!    [`AcceptedKey`](crate::http::AcceptedKey).
//! 3. Clients move to the new key (with the middleware above, at their next refresh or first
//!    401).
//! 4. When the grace period ends, the old key is refused, and counted as `previous_expired`
//!    rather than `unknown`: a rising count names clients that did not move.
//!
//! Set the grace period longer than your clients' TTL plus their deploy lag. Keys are compared
//! as SHA-256 digests in constant time, so neither their length nor their prefix leaks, and with
//! hashed keys the servers never hold a usable key at all. Nothing logs a presented key; a
//! rejection's log line names the reason only.
//!
//! ## Signing tokens: [`SigningKeys`](crate::jwt::SigningKeys) (feature `jwt`)
//!
//! A token signed just before a rotation must still verify until it expires. Sign with the
//! current key; verify by `kid` with the current and, for the grace period, the previous one;
//! publish both in the JWKS so verifiers elsewhere do the same. Set the grace period to at least
//! the tokens' lifetime plus how long verifiers cache the JWKS. Keys are asymmetric (RSA, ECDSA,
//! Ed25519): an HMAC key in a JWKS document would be a published secret. A new version that is
//! not a usable key is refused as a decode error, and the last good key keeps signing.
