//! The hot paths allocate nothing: `handle.load()` and a fresh-hit `cache.get()`, counted with a
//! counting global allocator on this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use credswap::{MemoryProvider, SecretCache};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Creds {
    username: String,
    password: credswap::secrecy::SecretString,
}

#[test]
fn handle_load_and_cache_hits_do_not_allocate() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Arc::new(MemoryProvider::new());
        let _ = store.set("db", r#"{"username": "app", "password": "pw"}"#);
        let cache = SecretCache::builder(store).build().unwrap();
        let handle = cache.handle::<Creds>("db").await.unwrap();
        // Warm up: first reads may set up thread-local state in arc-swap and moka.
        for _ in 0..1000 {
            let _ = handle.load();
            let _ = cache.get("db").await.unwrap();
        }

        let before = allocations();
        let mut total = 0usize;
        for _ in 0..10_000 {
            let snapshot = handle.load();
            total += snapshot.current().username.len();
        }
        assert_eq!(allocations() - before, 0, "handle.load() allocated");
        assert_eq!(total, 30_000);

        let before = allocations();
        for _ in 0..10_000 {
            let value = cache.get("db").await.unwrap();
            total += value.value.len();
        }
        let during = allocations() - before;
        assert_eq!(during, 0, "cache.get() hit allocated {during} times");
        assert_eq!(total, 30_000 + 10_000 * 37);

        // The counter works: a fetch allocates.
        let before = allocations();
        cache.invalidate("db");
        let _ = cache.get("db").await.unwrap();
        assert!(allocations() > before);
    });
}
