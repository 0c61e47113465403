//! # Rotating credentials
