//! Audit fixes of the typed channel (helper f2): `Sender::send_timeout`, iteration (and the
//! async `Stream`) ending after a persistent socket error, the inline limit capped to what a
//! default receiver accepts, and `EMSGSIZE` turning into a spill instead of an error.
//! (Sparse spilled payloads are in `hostile.rs`.)
//!
//! Every test takes `LOCK`: several count this process's open fds or fill socket buffers, and
//! the tests of one binary run in parallel threads.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use memfile_ipc::raw::{RawSocket, RecvMode};
use memfile_ipc::{Error, Receiver, Sender, channel};
use nix::sys::socket::{setsockopt, sockopt};

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A numbered chunk: the receiver checks order and content.
type Chunk = (u32, Vec<u8>);

fn chunk(n: u32, len: usize) -> Chunk {
    (n, vec![n as u8; len])
}

/// Sends numbered 4 KiB chunks until the socket's buffer is full; returns how many went.
fn fill(tx: &Sender<Chunk>) -> u32 {
    let mut n = 0;
    loop {
        match tx.try_send(&chunk(n, 4096)) {
            Ok(()) => n += 1,
            Err(Error::WouldBlock) => return n,
            Err(e) => panic!("filling the buffer: {e}"),
        }
    }
}

/// Receives every queued chunk; they must be `0..count` in order, whole.
fn drain(rx: &Receiver<Chunk>, count: u32) {
    for n in 0..count {
        let got = rx.try_recv().unwrap();
        assert_eq!(got, chunk(n, 4096), "chunk {n}");
    }
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
}

/// Puts `/dev/null` in place of `fd`: every later `recvmsg` on that number fails with
/// `ENOTSOCK`, an error that no retry cures.
fn break_socket(fd: RawFd) {
    let null = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: both fds are open; dup2 atomically closes the socket `fd` named and puts the
    // null device there. The `RawSocket` owning `fd` closes that number later, as it would
    // have closed the socket; `null`'s own fd is closed when it drops.
    let r = unsafe { libc::dup2(null.as_raw_fd(), fd) };
    assert_eq!(r, fd, "dup2: {}", std::io::Error::last_os_error());
}

// ---------------------------------------------------------------------------------------
// send_timeout

#[test]
fn send_timeout_on_a_full_buffer_times_out_and_sends_nothing() {
    let _g = lock();
    let (tx, rx) = channel::<Chunk>().unwrap();
    let sent = fill(&tx);
    assert!(sent > 0);
    let before = open_fds();
    let timeout = Duration::from_millis(200);
    // Inline and spilled (a memfd is made, then must be closed again).
    for len in [4096, 4 << 20] {
        let start = Instant::now();
        let r = tx.send_timeout(&chunk(999, len), timeout);
        let took = start.elapsed();
        assert!(
            matches!(r, Err(Error::Timeout { .. })),
            "{len} bytes: {r:?}"
        );
        assert!(took >= timeout, "{len} bytes: timed out after {took:?}");
        assert!(
            took < timeout + Duration::from_secs(10),
            "{len} bytes: {took:?}"
        );
        assert_eq!(open_fds(), before, "{len} bytes: fd leak");
    }
    // A zero timeout is one attempt.
    assert!(matches!(
        tx.send_timeout(&chunk(999, 1), Duration::ZERO),
        Err(Error::Timeout { .. })
    ));
    // Nothing of the timed-out messages went out: exactly the chunks that fit, in order.
    drain(&rx, sent);
    // With room again, sending works (inline, spilled, zero and endless timeouts).
    tx.send_timeout(&chunk(1, 4096), timeout).unwrap();
    tx.send_timeout(&chunk(2, 4 << 20), timeout).unwrap();
    tx.send_timeout(&chunk(3, 10), Duration::ZERO).unwrap();
    tx.send_timeout(&chunk(4, 10), Duration::MAX).unwrap();
    assert_eq!(rx.recv().unwrap(), chunk(1, 4096));
    assert_eq!(rx.recv().unwrap(), chunk(2, 4 << 20));
    assert_eq!(rx.recv().unwrap(), chunk(3, 10));
    assert_eq!(rx.recv().unwrap(), chunk(4, 10));
    assert_eq!(open_fds(), before);
}

#[test]
fn send_timeout_goes_out_as_soon_as_a_reader_makes_room() {
    let _g = lock();
    let (tx, rx) = channel::<Chunk>().unwrap();
    let sent = fill(&tx);
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        for n in 0..sent {
            assert_eq!(rx.recv().unwrap(), chunk(n, 4096));
        }
        rx.recv_timeout(Duration::from_secs(30)).unwrap()
    });
    let start = Instant::now();
    tx.send_timeout(&chunk(sent, 4096), Duration::from_secs(30))
        .unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(100),
        "sent after {took:?}, before any room"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(reader.join().unwrap(), chunk(sent, 4096));
}

#[test]
fn send_timeout_to_a_closed_peer_is_disconnected() {
    let _g = lock();
    let (tx, rx) = channel::<Chunk>().unwrap();
    drop(rx);
    let r = tx.send_timeout(&chunk(0, 1), Duration::from_secs(5));
    assert!(matches!(r, Err(Error::Disconnected { .. })), "{r:?}");
}

// ---------------------------------------------------------------------------------------
// Iteration ends after a persistent socket error, goes on after a bad message.

#[test]
fn iter_goes_on_after_a_bad_message_and_ends_after_an_io_error() {
    let _g = lock();
    let (tx, rx) = channel::<u32>().unwrap();
    tx.send(&1).unwrap();
    tx.raw()
        .send(&[IoSlice::new(b"not a packet")], &[])
        .unwrap();
    tx.send(&2).unwrap();
    let mut it = rx.iter();
    assert_eq!(it.next().unwrap().unwrap(), 1);
    let e = it.next().unwrap().unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    assert_eq!(it.next().unwrap().unwrap(), 2);
    break_socket(rx.as_fd().as_raw_fd());
    let e = it.next().unwrap().unwrap_err();
    assert!(matches!(e, Error::Io { op: "recvmsg", .. }), "{e:?}");
    // Ended for good: the error is not repeated for ever.
    assert!(it.next().is_none());
    assert!(it.next().is_none());
}

#[test]
fn into_iter_ends_after_an_io_error_and_on_disconnect() {
    let _g = lock();
    let (tx, rx) = channel::<u32>().unwrap();
    tx.send(&7).unwrap();
    let fd = rx.as_fd().as_raw_fd();
    let mut it = rx.into_iter();
    assert_eq!(it.next().unwrap().unwrap(), 7);
    break_socket(fd);
    let items: Vec<_> = it.by_ref().take(5).collect();
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(matches!(items[0], Err(Error::Io { .. })), "{items:?}");
    assert!(it.next().is_none());

    // Disconnect: every message, then the end.
    let (tx, rx) = channel::<u32>().unwrap();
    for n in 0..3 {
        tx.send(&n).unwrap();
    }
    drop(tx);
    let all: Vec<u32> = rx.into_iter().map(Result::unwrap).collect();
    assert_eq!(all, [0, 1, 2]);
}

// ---------------------------------------------------------------------------------------
// The inline limit and EMSGSIZE.

/// The payload bytes a receiver with default limits accepts in one packet (256 KiB of
/// header and payload).
const DEFAULT_RECV_PAYLOAD: usize = (256 << 10) - 24;

#[test]
fn inline_limit_never_exceeds_what_a_default_receiver_accepts() {
    let _g = lock();
    let (a, b) = RawSocket::pair().unwrap();
    // Raising SO_SNDBUF past net.core.wmem_max needs SO_SNDBUFFORCE (CAP_NET_ADMIN).
    if let Err(e) = setsockopt(&a, sockopt::SndBufForce, &(4 << 20)) {
        println!("skipped: SO_SNDBUFFORCE needs CAP_NET_ADMIN ({e})");
        return;
    }
    assert!(a.send_buffer_size().unwrap() >= 4 << 20);
    let tx = Sender::<Vec<u8>>::from_raw(Arc::new(a));
    let rx = Receiver::<Vec<u8>>::from_raw(Arc::new(b));
    assert!(
        tx.inline_limit() <= DEFAULT_RECV_PAYLOAD,
        "inline limit {} with a 4 MiB SO_SNDBUF",
        tx.inline_limit()
    );
    // 1 MiB would fit the sender's buffer inline, but not the receiver's: it must spill.
    let big = vec![0xA5u8; 1 << 20];
    tx.send(&big).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), big);
}

/// Shrinks `socket`'s send buffer to the kernel's minimum (about 4.5 KiB).
fn shrink_send_buffer(socket: &RawSocket) {
    setsockopt(socket, sockopt::SndBuf, &1).unwrap();
    assert!(socket.send_buffer_size().unwrap() < 16 << 10);
}

#[test]
fn emsgsize_on_an_inline_packet_spills_it_instead() {
    let _g = lock();
    let (a, b) = RawSocket::pair().unwrap();
    let a = Arc::new(a);
    let tx = Sender::<Vec<u8>>::from_raw(a.clone());
    let limit = tx.inline_limit();
    assert!(limit > 100_000, "{limit}");
    // Smaller than the limit derived when the sender was made: the kernel now refuses
    // packets of more than a few KiB with EMSGSIZE.
    shrink_send_buffer(&a);
    let raw = a.send(&[IoSlice::new(&[0u8; 64 << 10])], &[]).unwrap_err();
    assert!(
        matches!(&raw, Error::Io { source, .. } if source.raw_os_error() == Some(libc::EMSGSIZE)),
        "{raw:?}"
    );
    let before = open_fds();
    let msg = vec![0x3Cu8; 64 << 10];
    assert!(msg.len() < limit);
    tx.send(&msg).unwrap();
    // On the wire: a header-only packet with one fd (the spilled payload).
    let mut buf = vec![0u8; 1 << 20];
    let mut fds = Vec::new();
    let n = b.recv(&mut buf, &mut fds, RecvMode::Blocking).unwrap();
    assert_eq!((n, fds.len()), (24, 1), "not spilled");
    assert_eq!(u16::from_le_bytes([buf[6], buf[7]]), 1, "spilled flag");
    drop(fds);
    assert_eq!(open_fds(), before, "the sender keeps no spill memfd");
    // Typed, blocking and non-blocking: it arrives whole.
    let rx = Receiver::<Vec<u8>>::from_raw(Arc::new(b));
    tx.send(&msg).unwrap();
    assert_eq!(rx.recv().unwrap(), msg);
    tx.try_send(&msg).unwrap();
    assert_eq!(rx.recv().unwrap(), msg);
    tx.send_timeout(&msg, Duration::from_secs(10)).unwrap();
    assert_eq!(rx.recv().unwrap(), msg);
    // Small messages still go inline.
    tx.send(&vec![1, 2, 3]).unwrap();
    assert_eq!(rx.recv().unwrap(), [1, 2, 3]);
}

// ---------------------------------------------------------------------------------------
// Async: the stream ends after an Io error; EMSGSIZE spills there too.

#[cfg(feature = "tokio")]
mod with_tokio {
    use std::future::poll_fn;
    use std::pin::Pin;

    use futures_core::{FusedStream, Stream};
    use memfile_ipc::tokio::AsyncSender;

    use super::*;

    /// The stream's next item, failing the test if none comes within 30 s.
    async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
        let item = poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx));
        tokio::time::timeout(Duration::from_secs(30), item)
            .await
            .expect("the stream hung")
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn stream_goes_on_after_a_bad_message_and_ends_after_an_io_error() {
        let _g = lock();
        let (tx, rx) = channel::<u32>().unwrap();
        tx.send(&1).unwrap();
        tx.raw().send(&[IoSlice::new(b"bad")], &[]).unwrap();
        tx.send(&2).unwrap();
        tx.send(&3).unwrap();
        runtime().block_on(async {
            let mut rx = memfile_ipc::tokio::AsyncReceiver::from_blocking(rx).unwrap();
            assert_eq!(next(&mut rx).await.unwrap().unwrap(), 1);
            let e = next(&mut rx).await.unwrap().unwrap_err();
            assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
            assert_eq!(next(&mut rx).await.unwrap().unwrap(), 2);
            assert!(!rx.is_terminated());
            // Readiness is known (3 is queued); now the socket goes bad.
            break_socket(rx.get_ref().as_fd().as_raw_fd());
            let e = next(&mut rx).await.unwrap().unwrap_err();
            assert!(matches!(e, Error::Io { .. }), "{e:?}");
            assert!(rx.is_terminated());
            assert!(next(&mut rx).await.is_none());
            assert!(next(&mut rx).await.is_none());
        });
    }

    #[test]
    fn stream_ends_on_disconnect() {
        let _g = lock();
        runtime().block_on(async {
            let (tx, mut rx) = memfile_ipc::tokio::channel::<u32>().unwrap();
            tx.send(&5).await.unwrap();
            drop(tx);
            assert_eq!(next(&mut rx).await.unwrap().unwrap(), 5);
            assert!(next(&mut rx).await.is_none());
            assert!(rx.is_terminated());
            assert!(matches!(rx.recv().await, Err(Error::Disconnected { .. })));
        });
    }

    #[test]
    fn async_send_spills_on_emsgsize() {
        let _g = lock();
        let (tx, rx) = channel::<Vec<u8>>().unwrap();
        shrink_send_buffer(tx.raw());
        let msg = vec![0x11u8; 64 << 10];
        assert!(msg.len() < tx.inline_limit());
        runtime().block_on(async {
            let tx = AsyncSender::from_blocking(tx).unwrap();
            tx.send(&msg).await.unwrap();
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), msg);
    }
}
