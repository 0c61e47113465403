//! Guides: prose only, no code to call.

pub mod aws;
pub mod patterns;
pub mod performance;
pub mod pitfalls;
pub mod push;
pub mod vault;
