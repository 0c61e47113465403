//! How a handle takes what the cache tells it: new values (never older than what it holds),
//! failures, and the status that follows from them.

use std::sync::Arc;
use std::time::Duration;

use super::snapshot::{Previous, Snapshot};
use super::status::HandleStatus;
use super::{Shared, decode_guarded, lease_end};
use crate::cache::Loaded;
use crate::cache::events::SecretEvent;
use crate::cache::watch::Follower;
use crate::error::Error;
use crate::time::{Instant, later};
use crate::value::VersionId;

/// A handle's mutable state, behind its lock.
pub(super) struct State {
    /// The newest load the handle has seen: anything not newer is ignored.
    newest_seq: u64,
    /// What the store's answers say about the value (without the lease overlay).
    status: HandleStatus,
    /// A version that failed to decode: not decoded again.
    rejected: Option<VersionId>,
    /// The state last announced (an ended lease changes the state by the clock alone, so the
    /// change is found by comparing with what was said, not with what was stored).
    reported: &'static str,
}

impl State {
    pub(super) fn new(seq: u64) -> Self {
        State {
            newest_seq: seq,
            status: HandleStatus::Fresh,
            rejected: None,
            reported: HandleStatus::Fresh.as_str(),
        }
    }
}

/// What to announce once the lock is released (hooks may call back into the handle).
enum Announce {
    Swapped {
        old: VersionId,
        new: VersionId,
        since_created: Option<Duration>,
    },
    DecodeFailed {
        version: VersionId,
        reason: Arc<str>,
    },
}

impl<T: Send + Sync + 'static> Shared<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn status(&self) -> HandleStatus {
        let lease_end = self.snapshot.load().lease_end;
        self.lock().status.at(Instant::now(), lease_end)
    }

    /// Takes a loaded value unless the handle has seen a newer one. Fails with the decode error
    /// when the newest version the handle knows of (this one or a later one) does not decode.
    pub(super) fn take(&self, loaded: &Loaded) -> Result<(), Error> {
        let mut state = self.lock();
        let mut announce = None;
        if loaded.seq > state.newest_seq {
            state.newest_seq = loaded.seq;
            announce = self.apply(&mut state, loaded);
        }
        let outcome = match &state.status {
            HandleStatus::DecodeFailed { error, .. } => Err(error.clone()),
            _ => Ok(()),
        };
        let change = self.status_change(&mut state);
        drop(state);
        self.announce(announce);
        if let Some(event) = change {
            self.cache.emit(event);
        }
        outcome
    }

    /// Applies a value newer than anything seen (under the lock).
    fn apply(&self, state: &mut State, loaded: &Loaded) -> Option<Announce> {
        let value = &loaded.value;
        let old = self.snapshot.load_full();
        if old.version.id == value.version.id {
            if old.version != value.version {
                // Same version, new metadata (a renewed lease, moved stages): no swap to announce.
                self.snapshot.store(Arc::new(Snapshot {
                    current: Arc::clone(&old.current),
                    version: value.version.clone(),
                    lease_end: lease_end(&value.version),
                    previous: old.previous.clone(),
                }));
            }
            state.status = HandleStatus::Fresh;
            return None;
        }
        if state.rejected.as_ref() == Some(&value.version.id) {
            // Already refused this version and said so.
            return None;
        }
        match decode_guarded(self.decoder, &self.key.id, &value.value) {
            Ok(decoded) => {
                self.snapshot.store(Arc::new(Snapshot {
                    current: Arc::new(decoded),
                    version: value.version.clone(),
                    lease_end: lease_end(&value.version),
                    previous: Some(Previous {
                        value: Arc::clone(&old.current),
                        version: old.version.clone(),
                        valid_until: later(Instant::now(), self.grace),
                    }),
                }));
                state.rejected = None;
                state.status = HandleStatus::Fresh;
                self.changes.send_modify(|n| *n = n.wrapping_add(1));
                Some(Announce::Swapped {
                    old: old.version.id.clone(),
                    new: value.version.id.clone(),
                    since_created: value.version.since_created(),
                })
            }
            Err(error) => {
                let reason = Arc::from(error.message().unwrap_or("decode failed"));
                state.rejected = Some(value.version.id.clone());
                state.status = HandleStatus::DecodeFailed {
                    error,
                    version: value.version.id.clone(),
                };
                Some(Announce::DecodeFailed {
                    version: value.version.id.clone(),
                    reason,
                })
            }
        }
    }

    fn announce(&self, announce: Option<Announce>) {
        let id = Arc::clone(&self.key.id);
        match announce {
            None => {}
            Some(Announce::Swapped {
                old,
                new,
                since_created,
            }) => {
                self.cache.emit(SecretEvent::HandleSwapped {
                    id,
                    old,
                    new,
                    since_created,
                });
            }
            Some(Announce::DecodeFailed { version, reason }) => {
                self.cache.emit(SecretEvent::DecodeFailed {
                    id,
                    version,
                    reason,
                });
            }
        }
    }

    /// The status event to emit (once the lock is released) when the state, not only its
    /// details, differs from the one last announced.
    fn status_change(&self, state: &mut State) -> Option<SecretEvent> {
        let snapshot = self.snapshot.load();
        let now = state.status.at(Instant::now(), snapshot.lease_end);
        if now.as_str() == state.reported {
            return None;
        }
        state.reported = now.as_str();
        Some(SecretEvent::HandleStatusChanged {
            id: Arc::clone(&self.key.id),
            version: snapshot.version.id.clone(),
            status: now,
        })
    }
}

impl<T: Send + Sync + 'static> Follower for Shared<T> {
    fn loaded(&self, loaded: &Loaded) {
        let _ = self.take(loaded);
    }

    fn failed(&self, error: &Error) {
        let mut state = self.lock();
        state.status = state.status.after_failure(error, Instant::now());
        let change = self.status_change(&mut state);
        drop(state);
        if let Some(event) = change {
            self.cache.emit(event);
        }
    }
}
