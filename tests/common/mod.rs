//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use credswap::{MemoryProvider, Result, SecretProvider, SecretValue, Selector, Versioned};

/// A provider in front of a [`MemoryProvider`] that counts fetches, can be slowed down, and can be
/// held shut (fetches wait until the gate opens). It has no probe, so every refresh is a fetch.
pub struct GatedProvider {
    pub store: MemoryProvider,
    calls: AtomicU64,
    delay_ms: AtomicU64,
    gate: tokio::sync::RwLock<()>,
}

impl GatedProvider {
    pub fn new() -> Arc<Self> {
        Arc::new(GatedProvider {
            store: MemoryProvider::new(),
            calls: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
            gate: tokio::sync::RwLock::new(()),
        })
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Holds every fetch until the guard is dropped.
    pub async fn close_gate(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.gate.write().await
    }
}

#[async_trait]
impl SecretProvider for GatedProvider {
    fn name(&self) -> &str {
        "gated"
    }

    async fn fetch(&self, id: &str, selector: &Selector) -> Result<Versioned<SecretValue>> {
        let _ = self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let _open = self.gate.read().await;
        self.store.fetch(id, selector).await
    }
}

/// Waits until `condition` holds, for at most `limit` (a test timeout, not a speed assertion).
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}
