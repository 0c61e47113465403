//! # Push invalidation: every consumer on the new secret within a second
//!
//! A cache learns of a rotation at its next refresh point. With a five-minute TTL that is up to
//! four and a half minutes of old credentials; with the one-hour TTLs that keep store bills low,
//! most of an hour. Push closes the gap: whatever rotates a secret *announces* it on a broker the
//! fleet already runs, and a [`Subscriber`](crate::push::Subscriber) in every process refreshes
//! that secret at once. The TTL stays as the backstop, so it can be long.
//!
//! ## Wiring a subscriber (once per process)
//!
//! ```no_run
//! # #![allow(dead_code)]
//! # async fn run() -> credswap::Result<()> {
//! # #[cfg(feature = "push-redis")] {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use credswap::push::{DEFAULT_CHANNEL, RedisListener, Subscriber};
//! use credswap::{FileProvider, SecretCache};
//!
//! let cache = SecretCache::builder(Arc::new(FileProvider::new("/var/run/secrets")))
//!     .ttl(Duration::from_secs(3600)) // push does the work; the TTL is the backstop
//!     .build()?;
//! let subscriber = Subscriber::builder(RedisListener::open("redis://broker:6379", DEFAULT_CHANNEL)?)
//!     .cache(cache.clone())
//!     .start()?;
//! // Keep `subscriber` alive as long as the cache (in your application state); at exit:
//! subscriber.shutdown().await;
//! # }
//! # Ok(()) }
//! ```
//!
//! With PostgreSQL, `PgListener::new(config, DEFAULT_CHANNEL)?` takes the place of the
//! `RedisListener` (feature `push-postgres`). One subscriber serves any number of caches
//! (`.cache(a).cache(b)`); it refreshes a secret only in the caches that hold it or follow it
//! with a handle.
//!
//! ## Publishing after a rotation
//!
//! Announce once the new version is *current* (AWS: after `finishSecret` moved `AWSCURRENT`;
//! Vault KV: after the write), never before: subscribers fetch at once and must find it.
//!
//! ```no_run
//! # #![allow(dead_code)]
//! # async fn run(version: credswap::VersionId) -> credswap::Result<()> {
//! # let _ = &version;
//! # #[cfg(feature = "push-postgres")] {
//! use credswap::push::{DEFAULT_CHANNEL, PgPublisher, announce};
//!
//! let config: tokio_postgres::Config = "host=db user=rotator dbname=app".parse().unwrap();
//! let publisher = PgPublisher::connect(&config, DEFAULT_CHANNEL).await?;
//! announce(&publisher, "prod/orders-db", &version).await?;
//! # }
//! # Ok(()) }
//! ```
//!
//! The version is the id the consumers' provider reports: the AWS `VersionId`, the Vault KV version
//! number (`"7"`), the `sha256:…` content id of a file. When the publisher does not know it,
//! `Announcement::unversioned(id)` asks subscribers to look without saying what they should find
//! (counted as applied once the store answered a refresh asked after it arrived; one answered by
//! the rate limit is followed up past it). Announcements carry the id, the version and the send
//! time, never a value.
//!
//! The payload is compact JSON, so rotation code in any language can announce:
//!
//! ```text
//! psql:      SELECT pg_notify('credswap', '{"id":"prod/orders-db","version":"7"}');
//! redis-cli: PUBLISH credswap '{"id":"prod/orders-db","version":"7"}'
//! ```
//!
//! (`sent_at_us`, microseconds since 1970, is optional; with it, events report the end-to-end
//! latency.) From a sqlx or deadpool pool, run `SELECT pg_notify($1, $2)` with the channel and
//! [`Announcement::encode`](crate::push::Announcement::encode).
//!
//! ## What is guaranteed
//!
//! - **No value travels, none can be injected.** A cache takes values only from its own store.
//!   An announcement only makes it ask, through
//!   [`SecretCache::refresh_if_cached`](crate::SecretCache::refresh_if_cached): coalesced with its
//!   other loads and rate-limited, so announcements of a secret, forged or repeated, cost at most
//!   one refresh (a probe, plus a fetch when the version changed) per `min_refresh_interval` per
//!   cache and secret, however many arrive. A single late or forged one costs at most two (its
//!   refresh and one follow-up, see below). An announcement for a secret no cache watches costs
//!   nothing, nor does one for a secret evicted or invalidated before its refresh ran; a malformed
//!   payload is dropped with a [`PushEvent::Malformed`](crate::push::PushEvent::Malformed) that
//!   names what is wrong (never its content), logged at most once a minute per kind.
//! - **A lost connection is never a silent miss.** Both brokers drop what is published while a
//!   subscriber is disconnected. A subscriber notices a lost connection at once, or through a
//!   keepalive ping after 30 s of silence when the network dies without a word; it reconnects with
//!   jittered exponential backoff (100 ms doubling to 30 s, up to twice that with jitter; reset
//!   after a connection that stayed up ten seconds), and then re-checks every secret its caches
//!   watch, once. A secret whose cache had asked the store moments before (inside its rate limit,
//!   where a change that landed just after would be answered from the cache) is asked again once
//!   the limit passed: deferred, never skipped. A re-check starts no sooner than a follow-up
//!   delay after the previous one, so a flapping connection cannot turn into a store call per
//!   secret per flap. A reconnect costs at most one store call per watched secret, and one more
//!   for each secret announced right after it: the first announcement after a re-check asks the
//!   store past the rate limit the re-check took, so it is applied at once instead of a follow-up
//!   delay later.
//! - **A store that lags is followed up, once.** If the cache still holds another version than
//!   the one announced after its refresh, the subscriber asks again after the follow-up delay
//!   ([`PushEvent::Behind`](crate::push::PushEvent::Behind)): while the cache's rate limit
//!   answered (no store call; at most three times by default), and once when the store itself
//!   answered with another version (a read replica behind). If the store still disagrees, it is
//!   believed: the announcement was late (a newer version is current) or forged
//!   ([`PushEvent::Unconfirmed`](crate::push::PushEvent::Unconfirmed)).
//! - **The TTL remains the backstop.** Whatever push misses, the cache's refresh-ahead finds.
//! - **Stopping stops.** After [`Subscriber::shutdown`](crate::push::Subscriber::shutdown) (it
//!   takes `&self`: call it on the subscriber in your application state) or a drop there is no
//!   connection and no new store call; waiting follow-ups and re-checks are cancelled. Refreshes a
//!   cache had already started may still finish inside it.
//! - **A flood costs the same whether it is read or dropped.** A connection holds at most 4,096
//!   payloads the subscriber has not read; what arrives past that is shed (counted in
//!   [`PushStats::shed`](crate::push::PushStats::shed), reported at most once a second as
//!   [`PushEvent::Shed`](crate::push::PushEvent::Shed)) and the connection stays up, so junk can
//!   neither grow memory nor make the fleet reconnect and re-check every secret. Tested: 200,000
//!   junk payloads pipelined at a subscriber holding 50 secrets cost no reconnect and no store
//!   call, on both brokers. A real announcement shed in a flood is caught by the TTL.
//! - **Signed announcements, when you want them.** With
//!   [`SubscriberBuilder::verify_with`](crate::push::SubscriberBuilder::verify_with) and a
//!   [`SignedPublisher`](crate::push::SignedPublisher), every announcement carries an HMAC-SHA-256
//!   with a key kept in the store ([`AnnouncementKey`](crate::push::AnnouncementKey)); unsigned
//!   and forged ones are counted ([`PushStats::rejected`](crate::push::PushStats::rejected)) and
//!   cost no store call beyond one refresh of the key per `min_refresh_interval`. The key rotates
//!   like any secret: subscribers accept the previous key within its grace period, and refresh
//!   theirs when a signature checks with neither, so a rotation of the key normally loses no
//!   announcement (one arriving within a rate-limit interval of such a refresh is rejected, and
//!   the TTL catches it: a forger active during a key rotation can make that happen).
//!
//! ## What is not
//!
//! - **Unsigned announcements are not authenticated.** Without a key, anyone who can publish on
//!   the channel can make every subscriber refresh (at the bounded cost above). PostgreSQL cannot
//!   restrict `NOTIFY` to some roles: any role that can connect can notify any channel. With
//!   Redis ACLs, give subscribers `+subscribe +ping &<channel>` and only the rotator `+publish`.
//!   A signature proves who sent an announcement, not when: a recorded one can be replayed, at
//!   the cost of any announcement of a current version.
//! - **Delivery is at most once and unordered across secrets**; the re-check after a reconnect
//!   and the TTL make up for it. "Within a second" is what a healthy broker delivers (see
//!   `BENCHMARKS.md`), not a deadline.
//! - **PostgreSQL delivers at commit.** A `NOTIFY` inside a transaction goes out when it commits,
//!   and not at all if it rolls back; identical payloads in one transaction are sent once.
//!   Subscribers must connect to PostgreSQL directly or through session pooling: a transaction
//!   pooler (PgBouncer in transaction mode) does not keep `LISTEN`.
//! - **Event latencies across machines** (`since_sent`) depend on their clocks agreeing;
//!   `since_received` is measured on one clock.
//! - **TLS**: PostgreSQL supports it on both sides (`PgListener::with_tls`,
//!   `PgPublisher::connect_with_tls`, with any `MakeTlsConnect`). Redis over TLS (`rediss://`) is
//!   not supported yet: such a URL is refused with a configuration error. Keep Redis on a network
//!   you trust.
//! - Dynamic credentials (each consumer its own Vault database user) have nothing to announce:
//!   each process manages its own lease.
//!
//! ## Sizing: PostgreSQL or Redis
//!
//! | | PostgreSQL `LISTEN`/`NOTIFY` | Redis pub/sub |
//! |---|---|---|
//! | new infrastructure | none if consumers already reach PostgreSQL | a Redis (or Valkey) server |
//! | cost per subscriber | one server connection: a backend process, counted in `max_connections` | one client connection: a few kilobytes |
//! | good for | tens to a few hundred processes | thousands of pods |
//! | publisher learns how many received | no | yes ([`Published::receivers`](crate::push::Published)) |
//!
//! Both fan out one announcement to 1,000 subscribers on loopback well inside the 250 ms goal
//! (`BENCHMARKS.md`). Beyond a few hundred processes, PostgreSQL's per-connection cost, not its
//! latency, is the limit.
//!
//! Each announcement makes every pod that holds the secret ask the store once (a probe and a
//! fetch). AWS Secrets Manager allows 10,000 `GetSecretValue` and 40,000 `DescribeSecret` calls a
//! second per region: a fleet of thousands of pods rotating several secrets at once should set
//! [`SubscriberBuilder::spread`](crate::push::SubscriberBuilder::spread) (each pod waits a random
//! delay below it) to stay under the quota. The
//! [`follow_up`](crate::push::SubscriberBuilder::follow_up) delay is raised to the caches' longest
//! `min_refresh_interval` on its own.
//!
//! ## Watching it
//!
//! [`Subscriber::subscribe`](crate::push::Subscriber::subscribe),
//! [`SubscriberBuilder::on_event`](crate::push::SubscriberBuilder::on_event) and `tracing` (target
//! `credswap::push`) report connects, disconnects with their error kind, reconnect attempts with
//! their delay, re-checks, each announcement applied with its latency from the sender's timestamp
//! and from receipt (by then every handle on it has swapped), caches behind an announced version,
//! announcements the store contradicted, version-less ones answered by the rate limit, ignored
//! announcements, malformed payloads, shed payloads and rejected signatures.
//! [`Subscriber::stats`](crate::push::Subscriber::stats) counts them.
