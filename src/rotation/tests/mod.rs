//! The protocol's logic against an in-memory store and a stand-in database (the real database and
//! stores are exercised by the integration tests).

mod recovery;
mod schedule;
mod steps;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::*;
use crate::MemoryProvider;
use crate::error::{Error, ErrorKind, Result};
use crate::value::{SecretValue, VersionId, Versioned};

/// Roles with passwords and memberships, a lock table, and switches that make `verify` or
/// `begin` fail.
#[derive(Default)]
struct FakeDatabase {
    roles: Mutex<HashMap<String, (String, Option<String>)>>,
    locks: Mutex<HashSet<String>>,
    fail_verify: Mutex<bool>,
    fail_begin: Mutex<Option<ErrorKind>>,
    panic_on_begin: AtomicBool,
    applies: AtomicUsize,
}

fn login(value: &SecretValue) -> (String, String) {
    let parsed: serde_json::Value = serde_json::from_str(value.expose_str().unwrap()).unwrap();
    (
        parsed["username"].as_str().unwrap().to_owned(),
        parsed["password"].as_str().unwrap().to_owned(),
    )
}

impl FakeDatabase {
    fn accepts(&self, value: &SecretValue) -> bool {
        let (user, password) = login(value);
        self.roles.lock().unwrap().get(&user).map(|r| &r.0) == Some(&password)
    }

    fn password_of(&self, user: &str) -> Option<String> {
        self.roles.lock().unwrap().get(user).map(|r| r.0.clone())
    }
}

struct FakeTarget(Arc<FakeDatabase>);

struct FakeSession {
    db: Arc<FakeDatabase>,
    secret_id: String,
}

#[async_trait]
impl RotationTarget for FakeTarget {
    fn name(&self) -> &str {
        "fake"
    }

    fn check_username(&self, secret_id: &str, username: &str) -> Result<()> {
        super::target::sql::check_role_name(secret_id, username)
    }

    async fn begin(
        &self,
        secret_id: &str,
        _strategy: &Strategy,
        _current: &SecretValue,
        _pending: Option<&SecretValue>,
    ) -> Result<Option<Box<dyn TargetSession>>> {
        assert!(
            !self.0.panic_on_begin.load(Ordering::SeqCst),
            "the fake database panics"
        );
        if let Some(kind) = *self.0.fail_begin.lock().unwrap() {
            return Err(Error::new(kind).with_message("the fake database says no"));
        }
        if !self.0.locks.lock().unwrap().insert(secret_id.to_owned()) {
            return Ok(None);
        }
        Ok(Some(Box::new(FakeSession {
            db: self.0.clone(),
            secret_id: secret_id.to_owned(),
        })))
    }
}

impl Drop for FakeSession {
    fn drop(&mut self) {
        let _ = self.db.locks.lock().unwrap().remove(&self.secret_id);
    }
}

#[async_trait]
impl TargetSession for FakeSession {
    async fn logs_in(&mut self, credential: &SecretValue) -> Result<bool> {
        Ok(self.db.accepts(credential))
    }

    async fn apply(&mut self, credential: &SecretValue, clone_of: Option<&str>) -> Result<()> {
        let _ = self.db.applies.fetch_add(1, Ordering::SeqCst);
        let (user, password) = login(credential);
        let mut roles = self.db.roles.lock().unwrap();
        match roles.get_mut(&user) {
            Some(role) => role.0 = password,
            None if clone_of.is_some() => {
                let _ = roles.insert(user, (password, clone_of.map(str::to_owned)));
            }
            None => return Err(Error::invalid_request(&*self.secret_id, "no such role")),
        }
        Ok(())
    }

    async fn verify(&mut self, credential: &SecretValue) -> Result<()> {
        if *self.db.fail_verify.lock().unwrap() || !self.db.accepts(credential) {
            return Err(Error::new(ErrorKind::AuthRejected).with_message("test login failed"));
        }
        Ok(())
    }

    async fn release(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// The memory store with knobs: ids that differ only in case name one secret, a pending version
/// of another rotation slipped in just before a write, a failing `remove_pending`.
#[derive(Default)]
struct KnobStore {
    inner: MemoryProvider,
    case_insensitive: bool,
    slip_in_before_write: Mutex<Option<(String, SecretValue)>>,
    fail_remove_pending: AtomicBool,
}

impl KnobStore {
    fn key(&self, id: &str) -> String {
        if self.case_insensitive {
            id.to_lowercase()
        } else {
            id.to_owned()
        }
    }
}

#[async_trait]
impl RotationStore for KnobStore {
    fn name(&self) -> &str {
        "knobs"
    }
    async fn canonical_id(&self, id: &str) -> Result<String> {
        Ok(self.key(id))
    }
    async fn current(&self, id: &str) -> Result<Versioned<SecretValue>> {
        self.inner.current(&self.key(id)).await
    }
    async fn previous(&self, id: &str) -> Result<Option<Versioned<SecretValue>>> {
        self.inner.previous(&self.key(id)).await
    }
    async fn pending_token(&self, id: &str) -> Result<Option<String>> {
        self.inner.pending_token(&self.key(id)).await
    }
    async fn read_pending(&self, id: &str, token: &str) -> Result<Option<SecretValue>> {
        self.inner.read_pending(&self.key(id), token).await
    }
    async fn read_created(&self, id: &str, token: &str) -> Result<Option<SecretValue>> {
        self.inner.read_created(&self.key(id), token).await
    }
    async fn write_pending(
        &self,
        id: &str,
        token: &str,
        value: &SecretValue,
        base: &VersionId,
    ) -> Result<()> {
        let slipped = self.slip_in_before_write.lock().unwrap().take();
        if let Some((other, other_value)) = slipped {
            self.inner
                .write_pending(&self.key(id), &other, &other_value, base)
                .await?;
        }
        self.inner
            .write_pending(&self.key(id), token, value, base)
            .await
    }
    async fn promote(&self, id: &str, token: &str) -> Result<VersionId> {
        self.inner.promote(&self.key(id), token).await
    }
    async fn incomplete_token(&self, id: &str) -> Result<Option<String>> {
        self.inner.incomplete_token(&self.key(id)).await
    }
    async fn complete(&self, id: &str, token: &str) -> Result<()> {
        self.inner.complete(&self.key(id), token).await
    }
    async fn remove_pending(&self, id: &str, token: &str) -> Result<()> {
        if self.fail_remove_pending.load(Ordering::SeqCst) {
            return Err(Error::transient(id, "the store went away"));
        }
        self.inner.remove_pending(&self.key(id), token).await
    }
    async fn is_current(&self, id: &str, token: &str) -> Result<bool> {
        self.inner.is_current(&self.key(id), token).await
    }
}

struct Setup {
    db: Arc<FakeDatabase>,
    store: Arc<KnobStore>,
    rotator: Rotator,
    finished: Arc<AtomicUsize>,
}

const FIRST: &str = "first-Pass-0";

fn secret(user: &str, password: &str) -> String {
    format!(
        r#"{{"engine": "postgres", "host": "h", "port": 5432, "username": "{user}", "password": "{password}"}}"#
    )
}

fn setup(strategy: Strategy, user: &str) -> Setup {
    setup_with(strategy, user, KnobStore::default(), |builder| builder)
}

fn setup_with(
    strategy: Strategy,
    user: &str,
    store: KnobStore,
    configure: impl FnOnce(RotatorBuilder) -> RotatorBuilder,
) -> Setup {
    let db = Arc::new(FakeDatabase::default());
    let _ = db
        .roles
        .lock()
        .unwrap()
        .insert(user.to_owned(), (FIRST.to_owned(), None));
    let store = Arc::new(store);
    let _ = store.inner.set("db", secret(user, FIRST));
    let finished = Arc::new(AtomicUsize::new(0));
    let counter = finished.clone();
    let builder = Rotator::builder(store.clone(), Arc::new(FakeTarget(db.clone())))
        .strategy(strategy)
        .on_finished(move |_| {
            let _ = counter.fetch_add(1, Ordering::SeqCst);
            std::future::ready(())
        });
    let rotator = configure(builder).build().unwrap();
    Setup {
        db,
        store,
        rotator,
        finished,
    }
}

async fn current(store: &KnobStore) -> SecretValue {
    store.current("db").await.unwrap().value
}

/// Every event sent so far.
fn drain(events: &mut tokio::sync::broadcast::Receiver<RotationEvent>) -> Vec<RotationEvent> {
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    seen
}
