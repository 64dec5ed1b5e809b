//! The inline path allocates nothing per message (issue 5, "no per-message heap allocation
//! on the inline path"): buffers are reused, and a message whose decoded value owns no heap
//! memory costs no allocation at all, sending or receiving.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use memfile_ipc::channel;
use serde::{Deserialize, Serialize};

/// Counts the allocations of the thread that turned `COUNTING` on (the test harness's own
/// threads allocate now and then, and are not the code under test).
struct Counting;

std::thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn counting() -> bool {
    // `try_with`: the allocator also runs while thread-locals are being torn down.
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter has no
// effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
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
        if counting() {
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
    COUNTING.with(|c| c.set(true));
    for seq in 0..N {
        tx.send(&tick(seq)).unwrap();
        let got = rx.recv().unwrap();
        assert_eq!(got.seq, seq);
    }
    COUNTING.with(|c| c.set(false));
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for {N} inline round trips"
    );
}
