//! `FramePool`: ready regions are faulted in ahead of time, handed out once, frozen sound;
//! the pool's memory stays within its cap and idle sizes are released.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use memfile_core::{FramePool, FramePoolOptions, FramePoolStats, Seal};

const MIB: usize = 1 << 20;

/// Waits (up to 20 s) until `pool`'s stats satisfy `done`; returns them.
fn wait_for(pool: &FramePool, done: impl Fn(&FramePoolStats) -> bool) -> FramePoolStats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = pool.stats();
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "pool never reached the state: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The inode number of `fd` (`fstat` through std).
fn inode(fd: std::os::fd::BorrowedFd<'_>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::from(fd.try_clone_to_owned().unwrap());
    file.metadata().unwrap().ino()
}

#[test]
fn ready_regions_are_handed_out_once_and_freeze_sealed() {
    let pool = FramePool::with_options(FramePoolOptions::default().depth(2)).unwrap();
    let first = pool.take(MIB).unwrap(); // a miss: the pool learns the size
    assert_eq!(first.len(), MIB);
    wait_for(&pool, |s| s.ready == 2);
    let mut inodes = HashSet::new();
    for n in 0..20u8 {
        let frame = pool.build(MIB, |b| b.fill(n)).unwrap();
        assert!(frame.iter().all(|&b| b == n));
        assert!(frame.seals().contains(Seal::Write) && frame.seals().contains(Seal::Shrink));
        assert!(
            inodes.insert(inode(frame.as_fd())),
            "a region was handed out twice"
        );
    }
    let stats = pool.stats();
    assert_eq!(stats.hits + stats.misses, 21);
    assert!(stats.hits >= 2, "{stats:?}");
}

#[test]
fn ready_regions_have_their_pages_allocated() {
    let pool = FramePool::new().unwrap();
    drop(pool.take(4 * MIB).unwrap());
    wait_for(&pool, |s| s.ready >= 1);
    let region = pool.take(4 * MIB).unwrap();
    assert_eq!(pool.stats().hits, 1);
    let frozen = region.freeze().unwrap();
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::from(frozen.try_clone_fd().unwrap());
    let allocated = file.metadata().unwrap().blocks() * 512;
    assert!(
        allocated >= 4 * MIB as u64,
        "only {allocated} bytes allocated"
    );
}

#[test]
fn memory_stays_within_the_cap() {
    let options = FramePoolOptions::default()
        .depth(8)
        .max_bytes(3 * MIB as u64);
    let pool = FramePool::with_options(options).unwrap();
    drop(pool.take(MIB).unwrap());
    drop(pool.take(2 * MIB).unwrap());
    let stats = wait_for(&pool, |s| s.ready_bytes >= 2 * MIB as u64);
    assert!(stats.ready_bytes <= 3 * MIB as u64, "{stats:?}");
    // A size above the cap is never prepared, but still served inline.
    let big = pool.build(4 * MIB, |b| b.fill(1)).unwrap();
    assert_eq!(big.len(), 4 * MIB);
    for _ in 0..50 {
        assert!(pool.stats().ready_bytes <= 3 * MIB as u64);
        drop(pool.take(MIB).unwrap());
    }
}

#[test]
fn idle_sizes_are_released() {
    let options = FramePoolOptions::default().idle(Duration::from_millis(100));
    let pool = FramePool::with_options(options).unwrap();
    drop(pool.take(MIB).unwrap());
    wait_for(&pool, |s| s.ready >= 1);
    let stats = wait_for(&pool, |s| s.ready == 0);
    assert!(stats.released >= 1, "{stats:?}");
    assert_eq!(stats.ready_bytes, 0);
}

#[test]
fn empty_pool_falls_back_to_inline_and_shuts_down_cleanly() {
    let pool = FramePool::with_options(FramePoolOptions::default().max_bytes(0)).unwrap();
    for n in 0..5u8 {
        let frame = pool.build(64 << 10, |b| b.fill(n)).unwrap();
        assert!(frame.iter().all(|&b| b == n));
    }
    let stats = pool.stats();
    assert_eq!((stats.hits, stats.misses, stats.ready), (0, 5, 0));
    // A pool with ready regions: dropping it stops the thread and frees them; regions
    // already handed out stay valid.
    let pool = FramePool::new().unwrap();
    let kept = pool.take(MIB).unwrap();
    wait_for(&pool, |s| s.ready >= 1);
    drop(pool);
    let frozen = kept.freeze().unwrap();
    assert_eq!(frozen.len(), MIB);
}

#[test]
fn prepare_makes_the_first_take_a_hit() {
    let pool = FramePool::new().unwrap();
    pool.prepare(MIB);
    wait_for(&pool, |s| s.ready == 2);
    drop(pool.take(MIB).unwrap());
    assert_eq!((pool.stats().hits, pool.stats().misses), (1, 0));
}
