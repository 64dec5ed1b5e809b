//! `Publisher`: fan-out to subscribers with their own bounded channels; the full-subscriber
//! policies; subscribers joining, leaving and dying; shared memory not copied.

use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use memfile_core::Frozen;
use memfile_ipc::{Error, Fd, FullPolicy, Listener, Publisher, Receiver, Window, channel, connect};

/// Shmem is machine-wide: the test that measures it runs alone among these.
static SHMEM: Mutex<()> = Mutex::new(());

fn frame(n: u8, len: usize) -> Fd<Frozen> {
    Frozen::build("frame", len, |b| b.fill(n)).unwrap().into()
}

fn slow(rx: Receiver<Fd<Frozen>>, messages: u32) -> Receiver<Fd<Frozen>> {
    rx.with_window(Window::new(messages, 1 << 40))
}

#[test]
fn every_subscriber_gets_every_message_in_order() {
    let _g = SHMEM.lock().unwrap_or_else(|e| e.into_inner());
    let publisher = Publisher::new(FullPolicy::Block);
    let mut consumers = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = channel::<Fd<Frozen>>().unwrap();
        let rx = slow(rx, 2);
        publisher.subscribe(tx);
        consumers.push(thread::spawn(move || {
            (0..50).map(|_| rx.recv().unwrap()[0]).collect::<Vec<u8>>()
        }));
    }
    for n in 0..50 {
        let report = publisher.publish(&frame(n, 4096)).unwrap();
        assert_eq!(report.delivered, 3);
    }
    for c in consumers {
        assert_eq!(c.join().unwrap(), (0..50).collect::<Vec<u8>>());
    }
}

#[test]
fn skip_policy_counts_and_goes_on() {
    let publisher = Publisher::new(FullPolicy::Skip);
    let (fast_tx, fast_rx) = channel::<Fd<Frozen>>().unwrap();
    let (slow_tx, slow_rx) = channel::<Fd<Frozen>>().unwrap();
    let slow_rx = slow(slow_rx, 2);
    let fast = publisher.subscribe(fast_tx);
    let slow_id = publisher.subscribe(slow_tx);
    for n in 0..10 {
        let report = publisher.publish(&frame(n, 4096)).unwrap();
        assert_eq!(report.removed, []);
        assert_eq!(fast_rx.recv().unwrap()[0], n);
    }
    assert_eq!(publisher.skipped(fast), Some(0));
    assert_eq!(publisher.skipped(slow_id), Some(8));
    assert_eq!(slow_rx.recv().unwrap()[0], 0);
    assert_eq!(slow_rx.recv().unwrap()[0], 1);
    // Once it caught up (and asked for more), it gets messages again.
    assert!(matches!(slow_rx.try_recv(), Err(Error::WouldBlock)));
    let report = publisher.publish(&frame(10, 4096)).unwrap();
    assert_eq!(report.delivered, 2);
    assert_eq!(slow_rx.recv().unwrap()[0], 10);
}

#[test]
fn disconnect_policy_removes_a_full_subscriber() {
    let publisher = Publisher::new(FullPolicy::Disconnect);
    let (tx, rx) = channel::<Fd<Frozen>>().unwrap();
    let rx = slow(rx, 1);
    let id = publisher.subscribe(tx);
    assert_eq!(publisher.publish(&frame(0, 4096)).unwrap().delivered, 1);
    let report = publisher.publish(&frame(1, 4096)).unwrap();
    assert_eq!(report.removed, [id]);
    assert_eq!(publisher.subscribers(), []);
    // It sees the one message it had room for, then the end of the stream.
    assert_eq!(rx.recv().unwrap()[0], 0);
    assert!(matches!(rx.recv(), Err(Error::Disconnected { .. })));
}

#[test]
fn a_dying_subscriber_never_blocks_the_others() {
    let publisher = Publisher::new(FullPolicy::Block);
    let (dead_tx, dead_rx) = channel::<Fd<Frozen>>().unwrap();
    let dead_rx = slow(dead_rx, 1);
    let (live_tx, live_rx) = channel::<Fd<Frozen>>().unwrap();
    let dead = publisher.subscribe(dead_tx);
    publisher.subscribe(live_tx);
    publisher.publish(&frame(0, 4096)).unwrap(); // the dead one's window is now full
    drop(dead_rx); // it dies with its window full
    let report = publisher.publish(&frame(1, 4096)).unwrap();
    assert_eq!((report.delivered, report.removed), (1, vec![dead]));
    assert_eq!(live_rx.recv().unwrap()[0], 0);
    assert_eq!(live_rx.recv().unwrap()[0], 1);
}

#[test]
fn block_timeout_disconnects_a_stuck_subscriber() {
    let publisher = Publisher::new(FullPolicy::Block).with_block_timeout(Duration::from_millis(50));
    let (tx, rx) = channel::<Fd<Frozen>>().unwrap();
    let _rx = slow(rx, 1);
    let id = publisher.subscribe(tx);
    publisher.publish(&frame(0, 4096)).unwrap();
    assert_eq!(publisher.publish(&frame(1, 4096)).unwrap().removed, [id]);
}

#[test]
fn subscribers_join_from_a_listener_and_leave() {
    let dir = std::env::temp_dir().join(format!("memfile-publisher-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let listener = Listener::bind(&path).unwrap();
    let publisher = Publisher::new(FullPolicy::Block);
    publisher.publish(&frame(0, 4096)).unwrap(); // nobody yet
    let (_c1_tx, c1_rx) = connect::<(), Fd<Frozen>>(&path).unwrap();
    let (s1_tx, _) = listener.accept::<Fd<Frozen>, ()>().unwrap();
    let first = publisher.subscribe(s1_tx);
    publisher.publish(&frame(1, 4096)).unwrap();
    let (_c2_tx, c2_rx) = connect::<(), Fd<Frozen>>(&path).unwrap();
    let (s2_tx, _) = listener.accept::<Fd<Frozen>, ()>().unwrap();
    publisher.subscribe(s2_tx);
    publisher.publish(&frame(2, 4096)).unwrap();
    assert!(publisher.unsubscribe(first));
    assert!(!publisher.unsubscribe(first));
    publisher.publish(&frame(3, 4096)).unwrap();
    assert_eq!(c1_rx.recv().unwrap()[0], 1);
    assert_eq!(c1_rx.recv().unwrap()[0], 2);
    assert!(matches!(c1_rx.recv(), Err(Error::Disconnected { .. })));
    assert_eq!(c2_rx.recv().unwrap()[0], 2);
    assert_eq!(c2_rx.recv().unwrap()[0], 3);
    drop(listener);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn shmem() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = info.lines().find(|l| l.starts_with("Shmem:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn n_subscribers_share_one_frame() {
    let _g = SHMEM.lock().unwrap_or_else(|e| e.into_inner());
    const FRAME: usize = 64 << 20;
    const N: usize = 4;
    let publisher = Publisher::new(FullPolicy::Block);
    let receivers: Vec<_> = (0..N)
        .map(|_| {
            let (tx, rx) = channel::<Fd<Frozen>>().unwrap();
            publisher.subscribe(tx);
            rx
        })
        .collect();
    let before = shmem();
    publisher.publish(&frame(7, FRAME)).unwrap(); // the publisher's copy is dropped here
    let frames: Vec<_> = receivers.iter().map(|rx| rx.recv().unwrap()).collect();
    let sum: u64 = frames
        .iter()
        .map(|f| f.chunks(4096).map(|c| u64::from(c[0])).sum::<u64>())
        .sum();
    assert_eq!(sum, 7 * (N * FRAME / 4096) as u64);
    let growth = shmem().saturating_sub(before);
    assert!(
        growth < (3 * FRAME / 2) as u64,
        "{N} subscribers of a {} MiB frame raised Shmem by {} MiB",
        FRAME >> 20,
        growth >> 20
    );
    assert!(
        growth >= (FRAME / 2) as u64,
        "the frame itself counts: {growth}"
    );
}
