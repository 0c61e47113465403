//! A counter that threads bump without writing a shared cache line: one slot per shard, each on a
//! line of its own, a thread always bumping the slot of its shard. Reading sums the slots.
//!
//! For counters on the read path (cache hits), where an `AtomicU64` shared by every reader is a
//! contended line: two threads hitting the cache each pay for moving it between their cores.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Enough shards that the threads of a busy service rarely share one.
const SHARDS: usize = 16;

/// Threads take shard numbers in turn, the first time they bump any sharded counter.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn shard() -> usize {
    SHARD.with(|shard| {
        let mut index = shard.get();
        if index == usize::MAX {
            index = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            shard.set(index);
        }
        index
    })
}

/// 128 bytes: a cache line, or the pair of lines that adjacent-line prefetching moves together.
#[repr(align(128))]
#[derive(Default)]
struct Slot(AtomicU64);

/// A counter sharded by thread. [`add`](Self::add) writes only its thread's slot;
/// [`load`](Self::load) sums them (not a snapshot across slots, which counters do not need).
#[derive(Default)]
pub(crate) struct ShardedCounter {
    slots: [Slot; SHARDS],
}

impl ShardedCounter {
    pub(crate) fn add(&self, n: u64) {
        let _ = self.slots[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn load(&self) -> u64 {
        self.slots.iter().fold(0u64, |sum, slot| {
            sum.wrapping_add(slot.0.load(Ordering::Relaxed))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_sum_counts_every_bump_from_every_thread() {
        let counter = Arc::new(ShardedCounter::default());
        let threads: Vec<_> = (0..40)
            .map(|_| {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        counter.add(1);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(counter.load(), 40_000);
    }

    #[test]
    fn slots_sit_on_lines_of_their_own() {
        assert_eq!(std::mem::align_of::<Slot>(), 128);
        assert_eq!(std::mem::size_of::<ShardedCounter>(), 128 * SHARDS);
    }
}
