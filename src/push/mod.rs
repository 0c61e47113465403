//! Fleet-wide push invalidation: when a secret rotates, every cache that holds it refreshes within
//! a second, through infrastructure you already run, with the TTL as the backstop.
//!
//! - A **publisher** announces "secret `id` changed, version `v` is current" (never a value) on a
//!   broker channel: [`Publisher::announce`] or the free [`announce`].
//! - A **subscriber** in each process listens on that channel and refreshes the secret in its
//!   caches through their normal, rate-limited [`refresh`](crate::SecretCache::refresh); handles
//!   swap at once. It reconnects with jittered backoff and re-checks every watched secret after
//!   each reconnect, because brokers drop what is sent while a subscriber is away.
//! - Brokers: PostgreSQL `LISTEN`/`NOTIFY` (feature `push-postgres`; no new infrastructure where
//!   consumers already talk to PostgreSQL, one connection per process) and Redis pub/sub (feature
//!   `push-redis`; made for fan-out to thousands of pods). Both are thin transports over one
//!   shared mechanism; a broker of your own implements [`Channel`] and [`Publisher`].
//! - **Signed announcements** (optional): a [`SignedPublisher`] signs each one with an
//!   [`AnnouncementKey`] kept in the store, and subscribers built with
//!   [`verify_with`](SubscriberBuilder::verify_with) ignore (and count) unsigned and forged ones.
//!
//! The guide, with what is guaranteed and what is not and how to choose and size a broker, is
//! [`docs::push`](crate::docs::push).

mod announcement;
mod builder;
mod channel;
mod events;
mod pending;
#[cfg(feature = "push-postgres")]
mod postgres;
mod recheck;
#[cfg(feature = "push-redis")]
mod redis;
mod refresh;
mod settings;
mod shared;
mod signing;
pub(crate) mod subscriber;
#[cfg(test)]
mod tests;
mod throttle;

pub use self::{
    announcement::{Announcement, AnnouncementError, MAX_ANNOUNCEMENT_BYTES},
    builder::SubscriberBuilder,
    channel::{Channel, DEFAULT_CHANNEL, Inbox, Published, Publisher, announce},
    events::{PushEvent, PushStats, RecheckPass, Rejection},
    signing::{AnnouncementKey, SignedPublisher},
    subscriber::Subscriber,
};

#[cfg(feature = "push-postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "push-postgres")))]
pub use self::postgres::{PgListener, PgPublisher};

#[cfg(feature = "push-redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "push-redis")))]
pub use self::redis::{RedisListener, RedisPublisher};
