//! The one event mechanism of the crate. Each subsystem keeps its own vocabulary (an [`Event`]:
//! the cache's [`SecretEvent`](crate::SecretEvent), push's, the pools', the rotation engine's, the
//! Vault session's); an [`Emitter`] logs each event as its vocabulary says, runs the hooks (one
//! that panics is contained and logged, and the event still reaches everyone else), and
//! broadcasts it to subscribers. [`counters!`] writes a subsystem's counters and their snapshot.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

/// A subsystem's vocabulary of events.
pub(crate) trait Event: Clone + Send + 'static {
    /// Logs the event (the level and fields are the vocabulary's choice).
    fn log(&self);

    /// A short, stable name, for the log line of a hook that panicked.
    fn name(&self) -> &'static str;

    /// The secret the event is about, when it is about one.
    fn id(&self) -> Option<&str> {
        None
    }
}

/// A hook called with every event.
pub(crate) type Hook<E> = Arc<dyn Fn(&E) + Send + Sync + 'static>;

/// Logs, hooks and a broadcast channel for events of one vocabulary.
pub(crate) struct Emitter<E> {
    sender: broadcast::Sender<E>,
    hooks: RwLock<Vec<Hook<E>>>,
}

impl<E: Event> Emitter<E> {
    /// An emitter whose subscribers may lag `capacity` events behind.
    pub(crate) fn new(capacity: usize, hooks: Vec<Hook<E>>) -> Self {
        Emitter {
            sender: broadcast::channel(capacity).0,
            hooks: RwLock::new(hooks),
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<E> {
        self.sender.subscribe()
    }

    pub(crate) fn add_hook(&self, hook: Hook<E>) {
        self.hooks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    /// Logs `event`, then [`deliver`](Self::deliver)s it.
    pub(crate) fn emit(&self, event: E) {
        event.log();
        self.deliver(event);
    }

    /// Hands `event` to the hooks and the subscribers, without logging it (for a vocabulary
    /// that decides itself which events to log, such as push's floods).
    pub(crate) fn deliver(&self, event: E) {
        let hooks = self.hooks.read().unwrap_or_else(|e| e.into_inner());
        for hook in hooks.iter() {
            if std::panic::catch_unwind(AssertUnwindSafe(|| hook(&event))).is_err() {
                // The panic's message is the hook's business (and could quote anything): say only
                // that it happened.
                tracing::error!(
                    event = event.name(),
                    id = event.id().unwrap_or(""),
                    "credswap: an event hook panicked; the event was still delivered elsewhere"
                );
            }
        }
        drop(hooks);
        let _ = self.sender.send(event);
    }
}

pub(crate) fn bump(counter: &std::sync::atomic::AtomicU64) {
    let _ = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Counters of a subsystem: `$counters` holds an `AtomicU64` per field (bumped with [`bump`]);
/// `fill` copies them into the public snapshot `$stats` (its other fields are the caller's).
macro_rules! counters {
    ($(#[$meta:meta])* $vis:vis struct $counters:ident => $stats:ty { $($field:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Default)]
        $vis struct $counters {
            $(pub(crate) $field: std::sync::atomic::AtomicU64,)*
        }

        impl $counters {
            /// Copies every counter into `stats`.
            #[allow(dead_code)]
            pub(crate) fn fill(&self, stats: &mut $stats) {
                $(stats.$field = self.$field.load(std::sync::atomic::Ordering::Relaxed);)*
            }
        }
    };
}
pub(crate) use counters;
