//! Guides: prose only, no code to call.

pub mod pitfalls;
