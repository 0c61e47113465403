#![doc = include_str!("tls.md")]
