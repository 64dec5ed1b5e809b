//! Hostile control packets (flag 0x0002, docs/protocol.md "Flow control (v2)"):
//!
//! - an fd attached to a control packet is closed where a blocking `close` cannot stall
//!   the caller (as for any other packet: see untrusted_close.rs), on the receive path
//!   and on the send path (which reads control packets while it waits for credit);
//! - a peer that floods control packets cannot keep `try_recv`, `recv_timeout`,
//!   `try_send` or `send_timeout` from returning.

use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use memfile_ipc::raw::RawSocket;
use memfile_ipc::{Error, Receiver, Sender};

mod util_linger;
use util_linger::lingering;

mod util_wire;
use util_wire::control;

/// What each call must take at most (its own timeout is far shorter).
const PROMPT: Duration = Duration::from_secs(2);

/// The flood: probes (each one makes the victim answer with a credit).
const FLOOD_FLAGS: u32 = 4;

/// Sends a control packet carrying a lingering TCP socket, then runs `op` on a thread and
/// asserts it returns within PROMPT.
fn control_with_lingering_fd<R>(what: &str, fd_count: u32, op: R)
where
    R: FnOnce(Arc<RawSocket>) + Send + 'static,
{
    let (a, b) = RawSocket::pair().unwrap();
    let b = Arc::new(b);
    let mut victim = lingering();
    a.send(
        &[IoSlice::new(&control(1, 0, 4, 1 << 20, fd_count))],
        &[victim.fd()],
    )
    .unwrap();
    victim.close_ours(); // the receiver's copy is the last one now
    let ((), elapsed) = victim.time(what, move || op(b));
    assert!(elapsed < PROMPT, "{what}: took {elapsed:?}");
}

#[test]
fn control_packet_fd_recv_timeout_does_not_block_in_close() {
    for fd_count in [0, 1] {
        control_with_lingering_fd("recv_timeout", fd_count, |b| {
            let rx = Receiver::<u32>::from_raw(b);
            let r = rx.recv_timeout(Duration::from_millis(100));
            assert!(r.is_err(), "{r:?}");
        });
    }
}

#[test]
fn control_packet_fd_try_recv_does_not_block_in_close() {
    control_with_lingering_fd("try_recv", 1, |b| {
        let rx = Receiver::<u32>::from_raw(b);
        let r = rx.try_recv();
        assert!(r.is_err(), "{r:?}");
    });
}

#[test]
fn control_packet_fd_try_send_does_not_block_in_close() {
    control_with_lingering_fd("try_send", 1, |b| {
        let tx = Sender::<u32>::from_raw(b);
        let _ = tx.try_send(&1);
    });
}

/// Floods `a` with well-formed zero credits from two threads until `stop`.
fn flooders(a: &Arc<RawSocket>, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    (0..2)
        .map(|_| {
            let a = a.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let p = control(FLOOD_FLAGS, 0, 0, 0, 0);
                while !stop.load(Ordering::Relaxed) {
                    match a.try_send(&[IoSlice::new(&p)], &[]) {
                        Ok(()) | Err(Error::WouldBlock) => {}
                        Err(_) => return,
                    }
                }
            })
        })
        .collect()
}

/// Runs `op` while the peer floods control packets; it must return within PROMPT.
fn under_flood<R>(what: &str, setup: impl FnOnce(&RawSocket), op: R)
where
    R: FnOnce(Arc<RawSocket>) + Send + 'static,
{
    let (a, b) = RawSocket::pair().unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    setup(&a);
    let stop = Arc::new(AtomicBool::new(false));
    let floods = flooders(&a, &stop);
    // Let the flood fill the socket before the call starts.
    while !b.raw_readable_hint() {}
    let (done_tx, done_rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let start = Instant::now();
        op(b);
        done_tx.send(start.elapsed()).unwrap();
    });
    let result = done_rx.recv_timeout(PROMPT * 3);
    stop.store(true, Ordering::Relaxed);
    for f in floods {
        f.join().unwrap();
    }
    worker.join().unwrap();
    match result {
        Ok(elapsed) => assert!(elapsed < PROMPT, "{what}: took {elapsed:?} under a flood"),
        Err(_) => panic!("{what}: did not return while the peer flooded control packets"),
    }
}

trait Readable {
    fn raw_readable_hint(&self) -> bool;
}

impl Readable for Arc<RawSocket> {
    fn raw_readable_hint(&self) -> bool {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD stores one int through the pointer, which points at `n`.
        unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&**self),
                libc::FIONREAD,
                &mut n,
            )
        };
        n > 0
    }
}

#[test]
fn control_flood_try_recv_returns() {
    under_flood(
        "try_recv",
        |_| {},
        |b| {
            let rx = Receiver::<u32>::from_raw(b);
            assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
        },
    );
}

#[test]
fn control_flood_recv_timeout_returns() {
    under_flood(
        "recv_timeout",
        |_| {},
        |b| {
            let rx = Receiver::<u32>::from_raw(b);
            let r = rx.recv_timeout(Duration::from_millis(100));
            assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        },
    );
}

/// The peer announced a window of one message; one is in flight; then zero credits flood.
fn one_in_flight(a: &RawSocket) {
    a.send(&[IoSlice::new(&control(3, 0, 1, 1 << 20, 0))], &[])
        .unwrap();
}

#[test]
fn control_flood_try_send_returns() {
    under_flood("try_send", one_in_flight, |b| {
        let tx = Sender::<u32>::from_raw(b);
        tx.try_send(&1).unwrap();
        let r = tx.try_send(&2);
        assert!(matches!(r, Err(Error::Full)), "{r:?}");
    });
}

#[test]
fn control_flood_send_timeout_returns() {
    under_flood("send_timeout", one_in_flight, |b| {
        let tx = Sender::<u32>::from_raw(b);
        tx.try_send(&1).unwrap();
        let r = tx.send_timeout(&2, Duration::from_millis(100));
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    });
}
