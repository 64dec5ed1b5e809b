//! A bounded channel bounds the shared memory a slow consumer pins: the scenario
//! (8 MiB frames, a consumer that takes 20 ms per frame) measured in `/proc/meminfo` Shmem.
//!
//! One test per binary: Shmem is machine-wide, and other tests here would move it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use memfile_core::Frozen;
use memfile_ipc::{Fd, Window, channel};

const MIB: u64 = 1 << 20;

/// `Shmem:` of `/proc/meminfo`, in bytes.
fn shmem() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = info.lines().find(|l| l.starts_with("Shmem:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn slow_consumer_pins_at_most_the_window_plus_one_frame() {
    const FRAME: usize = 8 << 20;
    const FRAMES: u64 = 40;
    let window = 4 * FRAME as u64 + MIB; // four frames and their (tiny) payloads
    let (tx, rx) = channel::<(u64, Fd<Frozen>)>().unwrap();
    let rx = rx.with_window(Window::new(1024, window));

    let baseline = shmem();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(shmem(), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let consumer = thread::spawn(move || {
        for n in 0..FRAMES {
            let (seq, frame) = rx.recv().unwrap();
            assert_eq!(seq, n, "frames arrive in order");
            assert_eq!(frame.len(), FRAME);
            let sum: u64 = frame.chunks(4096).map(|c| u64::from(c[0])).sum();
            assert_eq!(sum, (FRAME as u64 / 4096) * (n % 251));
            // The slow part of the consumer (the 20 ms of work per frame).
            thread::sleep(Duration::from_millis(20));
        }
    });
    for n in 0..FRAMES {
        let frame = Frozen::build("frame", FRAME, |b| b.fill((n % 251) as u8)).unwrap();
        tx.send(&(n, frame.into())).unwrap();
        let in_flight = tx.in_flight();
        assert!(in_flight.bytes <= window, "{in_flight:?}");
    }
    consumer.join().unwrap();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    // The window, the frame the producer is filling, and 4 MiB for anything else on the
    // machine (without the window: 40 frames, 320 MiB).
    let bound = window + FRAME as u64 + 4 * MIB;
    assert!(
        growth <= bound,
        "Shmem grew by {} MiB, bound {} MiB",
        growth / MIB,
        bound / MIB
    );
}
