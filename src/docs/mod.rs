//! Guides: prose only, no code to call.

pub mod aws;
pub mod pitfalls;
pub mod vault;
