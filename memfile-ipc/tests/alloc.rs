//! The inline path allocates nothing per message (issue 5, "no per-message heap allocation
//! on the inline path"): buffers are reused, and a message whose decoded value owns no heap
//! memory costs no allocation at all, sending or receiving.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memfile_ipc::channel;
use serde::{Deserialize, Serialize};

/// Counts allocations made while `COUNTING` is on (this test binary has one test, so no
/// other test's allocations can interleave).
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counter has no
// effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Tick {
    seq: u64,
    payload: [u8; 32],
    tag: Option<u32>,
}

#[test]
fn inline_messages_allocate_nothing_once_warm() {
    let (tx, rx) = channel::<Tick>().unwrap();
    let tick = |seq| Tick {
        seq,
        payload: [seq as u8; 32],
        tag: Some(seq as u32),
    };
    // Warm-up: per-thread buffers, lazily sized receive buffer, thread-locals.
    for seq in 0..16 {
        tx.send(&tick(seq)).unwrap();
        assert_eq!(rx.recv().unwrap(), tick(seq));
    }
    const N: u64 = 1000;
    COUNTING.store(true, Ordering::SeqCst);
    for seq in 0..N {
        tx.send(&tick(seq)).unwrap();
        let got = rx.recv().unwrap();
        assert_eq!(got.seq, seq);
    }
    COUNTING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for {N} inline round trips"
    );
}
