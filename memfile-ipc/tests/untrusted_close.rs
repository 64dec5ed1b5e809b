//! Closing an fd a peer chose never blocks the receiver: a TCP socket with
//! `SO_LINGER {1, 3600}` and unsent data to a peer that never reads stays in `close()` for
//! up to an hour. Attached to a packet as an extra fd nobody claims, as a field of the wrong
//! kind, or to a refused packet, it must not hold up `recv`, `recv_timeout`, `try_recv` or
//! the tokio `recv` (whose runtime must keep running other tasks), and the fd count must
//! return to its baseline once the TCP peer has read everything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use memfile_core::Frozen;
use memfile_ipc::raw::RawSocket;
use memfile_ipc::{Error, Fd, Receiver};
use serde::de::DeserializeOwned;

mod util_wire;
use util_wire::{inline, lock, open_fds, send};

mod util_linger;
use util_linger::lingering;

/// What each receive must take at most.
const PROMPT: Duration = Duration::from_secs(1);

/// Waits (bounded) for the fd count to come back to `baseline`: the closer thread closes the
/// lingering socket only once its data has left.
fn assert_back_to(baseline: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds() != baseline {
        assert!(
            Instant::now() < deadline,
            "fd count {} did not return to {baseline}",
            open_fds()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How a test packet carries the lingering socket.
#[derive(Clone, Copy, Debug)]
enum Attack {
    /// An extra fd of a `u32` message, which has no fd field.
    Unclaimed,
    /// The fd of a `Fd<Frozen>` field: refused as not a sealed memfd.
    RejectedField,
    /// A packet with a bad magic: refused before decoding.
    RejectedPacket,
}

/// Runs `receive` against one attack on a fresh connection, on a thread of its own so that
/// a receiver that blocks fails the test instead of hanging it.
fn run<T, R>(attack: Attack, receive: R)
where
    T: DeserializeOwned + Send + 'static,
    R: FnOnce(Receiver<T>) -> memfile_ipc::Result<T> + Send + 'static,
{
    let _lock = lock();
    let baseline = open_fds();
    let (a, b) = RawSocket::pair().unwrap();
    let rx = Receiver::<T>::from_raw(Arc::new(b));
    let mut victim = lingering();
    let packet = match attack {
        Attack::Unclaimed => inline(&[7], 1),
        Attack::RejectedField => inline(&[0], 1),
        Attack::RejectedPacket => {
            let mut p = inline(&[0], 1);
            p[0] = b'X';
            p
        }
    };
    send(&a, &packet, &[victim.fd()]);
    // From now on the receiver's copy is the last one: closing it lingers.
    victim.close_ours();
    let what = format!("{attack:?}");
    let (result, elapsed) = victim.time(&what, move || receive(rx).map(|_| ()));
    assert!(result.is_err(), "{attack:?}: the packet was accepted");
    assert!(
        elapsed < PROMPT,
        "{attack:?}: the receive took {elapsed:?} ({result:?})"
    );
    drop(victim);
    drop(a);
    assert_back_to(baseline);
}

fn unclaimed<R>(receive: R)
where
    R: FnOnce(Receiver<u32>) -> memfile_ipc::Result<u32> + Send + 'static,
{
    run(Attack::Unclaimed, receive);
}

fn rejected_field<R>(receive: R)
where
    R: FnOnce(Receiver<Fd<Frozen>>) -> memfile_ipc::Result<Fd<Frozen>> + Send + 'static,
{
    run(Attack::RejectedField, receive);
}

fn rejected_packet<R>(receive: R)
where
    R: FnOnce(Receiver<u32>) -> memfile_ipc::Result<u32> + Send + 'static,
{
    run(Attack::RejectedPacket, receive);
}

/// An unclaimed fd is not an error by itself: the message arrives. Then the next call
/// (nothing queued) says so.
fn recv_then_nothing<T: DeserializeOwned>(
    rx: &Receiver<T>,
    first: memfile_ipc::Result<T>,
) -> memfile_ipc::Result<T> {
    first?;
    Err(rx.try_recv().err().unwrap_or(Error::WouldBlock))
}

#[test]
fn unclaimed_fd_recv() {
    unclaimed(|rx| recv_then_nothing(&rx, rx.recv()));
}

#[test]
fn unclaimed_fd_recv_timeout() {
    unclaimed(|rx| recv_then_nothing(&rx, rx.recv_timeout(Duration::from_secs(10))));
}

#[test]
fn unclaimed_fd_try_recv() {
    unclaimed(|rx| recv_then_nothing(&rx, rx.try_recv()));
}

#[test]
fn rejected_field_recv() {
    rejected_field(|rx| rx.recv());
}

#[test]
fn rejected_field_recv_timeout() {
    rejected_field(|rx| rx.recv_timeout(Duration::from_secs(10)));
}

#[test]
fn rejected_field_try_recv() {
    rejected_field(|rx| rx.try_recv());
}

#[test]
fn rejected_packet_recv() {
    rejected_packet(|rx| rx.recv());
}

#[test]
fn rejected_packet_try_recv() {
    rejected_packet(|rx| rx.try_recv());
}

/// The tokio receiver on a current-thread runtime: `recv` returns promptly, and a ticker
/// task on the same runtime keeps ticking meanwhile and afterwards.
#[cfg(feature = "tokio")]
fn tokio_case<T: DeserializeOwned + Send + 'static>(attack: Attack) {
    run(attack, |rx: Receiver<T>| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let ticker = tokio::spawn({
                let ticks = ticks.clone();
                async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
            let rx = memfile_ipc::tokio::AsyncReceiver::from_blocking(rx)?;
            let mut result = rx.recv().await;
            if result.is_ok() {
                // An unclaimed extra fd: the message itself was fine.
                result = Err(Error::WouldBlock);
            }
            let before = ticks.load(std::sync::atomic::Ordering::Relaxed);
            while ticks.load(std::sync::atomic::Ordering::Relaxed) < before + 3 {
                tokio::task::yield_now().await;
            }
            ticker.abort();
            result
        })
    });
}

#[cfg(feature = "tokio")]
#[test]
fn unclaimed_fd_tokio_recv() {
    tokio_case::<u32>(Attack::Unclaimed);
}

#[cfg(feature = "tokio")]
#[test]
fn rejected_field_tokio_recv() {
    tokio_case::<Fd<Frozen>>(Attack::RejectedField);
}
