//! TLS certificates that rotate without a restart.
