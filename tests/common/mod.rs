//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub mod capture;

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

/// A provider in front of a [`MemoryProvider`] whose calls can be scripted one by one: each call
/// reads the store when it starts and can then be held until released (so a test forces the order
/// in which loads finish), the next call can be made to panic, values can carry leases (version id
/// = lease id, as Vault's dynamic credentials do), renewals can fail, and probes can be denied.
pub struct Scripted {
    pub store: MemoryProvider,
    fetches: AtomicU64,
    probes: AtomicU64,
    renewals: AtomicU64,
    #[allow(clippy::type_complexity)]
    holds: std::sync::Mutex<
        std::collections::VecDeque<(
            tokio::sync::oneshot::Sender<()>,
            tokio::sync::oneshot::Receiver<()>,
        )>,
    >,
    panic_next: std::sync::atomic::AtomicBool,
    lease: std::sync::Mutex<Option<Duration>>,
    leases_issued: AtomicU64,
    renewal_error: std::sync::Mutex<Option<credswap::Error>>,
    deny_probe: std::sync::atomic::AtomicBool,
    pub revoked: std::sync::Mutex<Vec<String>>,
}

/// A held call: tells when it started, and releases it.
pub struct Hold {
    release: tokio::sync::oneshot::Sender<()>,
    started: tokio::sync::oneshot::Receiver<()>,
}

impl Hold {
    /// Waits until the held call has started (and read the store).
    pub async fn started(&mut self) {
        let _ = (&mut self.started).await;
    }

    pub fn release(self) {
        let _ = self.release.send(());
    }
}

impl Scripted {
    pub fn new() -> Arc<Self> {
        Arc::new(Scripted {
            store: MemoryProvider::new(),
            fetches: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            renewals: AtomicU64::new(0),
            holds: Default::default(),
            panic_next: Default::default(),
            lease: Default::default(),
            leases_issued: AtomicU64::new(0),
            renewal_error: Default::default(),
            deny_probe: Default::default(),
            revoked: Default::default(),
        })
    }

    /// Values carry a renewable lease of `duration`.
    pub fn with_leases(self: Arc<Self>, duration: Duration) -> Arc<Self> {
        *self.lease.lock().unwrap() = Some(duration);
        self
    }

    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn probes(&self) -> u64 {
        self.probes.load(Ordering::SeqCst)
    }

    pub fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::SeqCst)
    }

    /// Store calls of every kind.
    pub fn calls(&self) -> u64 {
        self.fetches() + self.probes() + self.renewals()
    }

    pub fn revoked(&self) -> Vec<String> {
        self.revoked.lock().unwrap().clone()
    }

    /// Holds the next call (fetch, probe or renewal) that starts, after it has read the store, until the
    /// returned hold is released.
    pub fn hold_next(&self) -> Hold {
        let (release, held) = tokio::sync::oneshot::channel();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        self.holds.lock().unwrap().push_back((started_tx, held));
        Hold { release, started }
    }

    pub fn panic_next(&self) {
        self.panic_next.store(true, Ordering::SeqCst);
    }

    pub fn fail_renewals(&self, error: Option<credswap::Error>) {
        *self.renewal_error.lock().unwrap() = error;
    }

    pub fn deny_probes(&self) {
        self.deny_probe.store(true, Ordering::SeqCst);
    }

    async fn held(&self) {
        let held = self.holds.lock().unwrap().pop_front();
        if let Some((started, held)) = held {
            let _ = started.send(());
            let _ = held.await;
        }
    }
}

#[async_trait]
impl SecretProvider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn fetch(&self, id: &str, selector: &Selector) -> Result<Versioned<SecretValue>> {
        let _ = self.fetches.fetch_add(1, Ordering::SeqCst);
        if self.panic_next.swap(false, Ordering::SeqCst) {
            panic!("scripted provider panics as told");
        }
        let read = self.store.fetch(id, selector).await;
        self.held().await;
        let mut value = read?;
        if let Some(duration) = *self.lease.lock().unwrap() {
            let n = self.leases_issued.fetch_add(1, Ordering::SeqCst) + 1;
            let lease = credswap::Lease::new(format!("lease-{n}"), duration, true);
            value.version.id = credswap::VersionId::new(lease.id.as_str());
            value.version.lease = Some(lease);
        }
        Ok(value)
    }

    async fn probe(&self, id: &str, selector: &Selector) -> Result<Option<credswap::VersionId>> {
        let _ = self.probes.fetch_add(1, Ordering::SeqCst);
        if self.deny_probe.load(Ordering::SeqCst) {
            return Err(credswap::Error::access_denied(id).with_message("probe not allowed"));
        }
        if self.lease.lock().unwrap().is_some() {
            return Ok(None);
        }
        let read = self.store.probe(id, selector).await;
        self.held().await;
        read
    }

    async fn renew_lease(&self, lease: &credswap::Lease) -> Result<Option<credswap::Lease>> {
        let _ = self.renewals.fetch_add(1, Ordering::SeqCst);
        let error = self.renewal_error.lock().unwrap().clone();
        self.held().await;
        match error {
            Some(error) => Err(error),
            None => Ok(Some(credswap::Lease::new(
                lease.id.clone(),
                lease.duration,
                true,
            ))),
        }
    }

    async fn revoke_lease(&self, lease: &credswap::Lease) -> Result<()> {
        self.revoked.lock().unwrap().push(lease.id.clone());
        Ok(())
    }
}

/// Runs `test` on a current-thread runtime with paused time, and fails (rather than hangs) if it
/// has not finished after `real_limit` of real time: code that loops against the wall clock under
/// paused time never lets virtual time advance.
pub fn paused<F>(real_limit: Duration, test: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let (done, finished) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(test());
        let _ = done.send(());
    });
    match finished.recv_timeout(real_limit) {
        Ok(()) => thread.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The test panicked: show its panic.
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the test did not finish within {real_limit:?} of real time: it loops")
        }
    }
}
