//! # What things cost
//!
//! Measured on a 2-core virtual machine (see `BENCHMARKS.md` for methods and intervals).
//!
//! | operation | cost | allocates | store calls |
//! |---|---|---|---|
//! | [`SecretHandle::load`](crate::SecretHandle::load) | ~6 ns, flat under contention | no | 0 |
//! | [`SecretCache::get`](crate::SecretCache::get), fresh hit | ~85 ns (1 thread), ~130 ns (2) | no | 0 |
//! | `get` past the refresh point | as a hit; one background load per entry | — | 1 (or a probe) |
//! | `get` of a missing or expired key, N waiters | one load shared by all N | per load | 1 |
//! | [`SecretCache::refresh`](crate::SecretCache::refresh), N at once | one load; at most one per `min_refresh_interval` | per load | ≤ 1 |
//! | `get` of a missing or denied secret, again and again | the remembered answer (`negative_ttl`, doubling) | no | 1 per period |
//! | a rotating pool's acquire | what the plain pool's costs (ratio 0.997) | no more than the pool's | 0 |
//!
//! Where the time goes in a hit: reading the clock (~29 ns here), one lock-free load of the read
//! index and a hash lookup, an `Arc` clone of the value and a counter. A handle read skips all of
//! that: the snapshot is published with arc-swap and read without touching shared counters, which
//! is why it does not slow down as threads are added (an `RwLock<Arc<T>>` read goes from ~6 ns to
//! ~46 ns on two threads).
//!
//! Use a handle for anything read per request; use `get` for occasional or computed ids.
//!
//! Writes (a load completing, an invalidation) copy the read index: proportional to the number of
//! cached secrets, and rare for secrets. moka still bounds the cache and expires entries, off the
//! read path.
