//! I/O safety on the send side: a packet carries exactly the files its message held while it
//! was encoded, even when the value that held an fd is dropped (by a `Serialize` impl, or by
//! another thread through a `Mutex`) before the packet leaves, and the fd number is reused by
//! another file meanwhile. The receiver must only ever see the original sealed memfds.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::Duration;

use memfile_core::{Frozen, MemFile};
use memfile_ipc::raw::RawSocket;
use memfile_ipc::{Error, Fd, Receiver, Sender};
use serde::{Deserialize, Serialize, Serializer};

/// The tests of this file count on "the lowest free fd number is the next one handed out":
/// they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A sender of `Tx` and a receiver of `Rx` over one fresh socketpair.
fn pair<Tx, Rx>() -> (Sender<Tx>, Receiver<Rx>) {
    let (a, b) = RawSocket::pair().unwrap();
    (
        // The send-side and receive-side types differ on purpose (a send-only type that
        // borrows, received as owned fds): no type check.
        Sender::from_raw(Arc::new(a)).without_type_check(),
        Receiver::from_raw(Arc::new(b)).without_type_check(),
    )
}

/// `Sender::send` needs `T: Deserialize<'static>` (the type check describes the type the
/// way a receiver reads it); these send-only test types are received as other types, so
/// their `Deserialize` only reads what was sent and then refuses.
fn send_only<'de, D: serde::Deserializer<'de>, R: Deserialize<'de>, T>(
    deserializer: D,
) -> Result<T, D::Error> {
    R::deserialize(deserializer)?;
    Err(serde::de::Error::custom("a send-only test type"))
}

/// Files that grab freed fd numbers: whatever is opened here must never reach the peer.
fn open_other_files(n: usize) -> Vec<std::fs::File> {
    (0..n)
        .map(|_| std::fs::File::open("/etc/passwd").or_else(|_| std::fs::File::open("/dev/null")))
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Asserts that `fd` is a sealed memfd holding `want`, and says what it is otherwise.
fn assert_original(fd: OwnedFd, want: &[u8]) {
    match Frozen::from_fd(fd) {
        Ok(frozen) => assert_eq!(&frozen[..], want, "a sealed memfd with other bytes"),
        Err(e) => {
            let what = e.to_string();
            let mut head = Vec::new();
            let _ = std::fs::File::from(e.into_fd())
                .take(64)
                .read_to_end(&mut head);
            panic!(
                "the receiver got a file the message never held: {what}; it starts with {:?}",
                String::from_utf8_lossy(&head)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// (a) A `Serialize` impl that serializes a temporary buffer and drops it.

/// Serializes a temporary fd-holding value with `memfile_ipc::fd::serialize`, drops it, and
/// opens other files right away to take its number.
struct Temporary {
    make: fn() -> Tmp,
    opened: Mutex<Vec<std::fs::File>>,
}

enum Tmp {
    Frozen(Frozen),
    MemFile(MemFile),
    Owned(OwnedFd),
}

impl<'de> Deserialize<'de> for Temporary {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        send_only::<D, Fd<OwnedFd>, Self>(deserializer)
    }
}

impl Serialize for Temporary {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let result = match (self.make)() {
            Tmp::Frozen(value) => memfile_ipc::fd::serialize(&value, serializer),
            Tmp::MemFile(value) => memfile_ipc::fd::serialize(&value, serializer),
            Tmp::Owned(value) => memfile_ipc::fd::serialize(&value, serializer),
        };
        // The value is gone; its number is free (unless the packet keeps the file open).
        self.opened.lock().unwrap().extend(open_other_files(4));
        result
    }
}

const TEMPORARY: &[u8] = b"a temporary sealed buffer";

fn sealed_memfd() -> MemFile {
    Frozen::from_bytes("temporary", TEMPORARY)
        .unwrap()
        .try_clone_fd()
        .map(|fd| MemFile::from_fd(fd).unwrap())
        .unwrap()
}

fn temporary_case(make: fn() -> Tmp) {
    let _serial = serial();
    let (tx, rx) = pair::<Temporary, Fd<OwnedFd>>();
    let msg = Temporary {
        make,
        opened: Mutex::new(Vec::new()),
    };
    tx.send(&msg).unwrap();
    let fd = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap()
        .into_inner();
    assert_original(fd, TEMPORARY);
    // The same through a send that must wait and retry: fill the socket first.
    let (tx, rx) = pair::<Temporary, Fd<OwnedFd>>();
    let filler = Temporary {
        make,
        opened: Mutex::new(Vec::new()),
    };
    let mut queued = 0;
    loop {
        match tx.try_send(&filler) {
            Ok(()) => queued += 1,
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("filling the socket: {e}"),
        }
    }
    std::thread::scope(|s| {
        let sent = s.spawn(|| tx.send_timeout(&msg, Duration::from_secs(60)));
        for _ in 0..=queued {
            let fd = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap()
                .into_inner();
            assert_original(fd, TEMPORARY);
        }
        sent.join().unwrap().unwrap();
    });
}

#[test]
fn temporary_frozen_dropped_inside_serialize() {
    temporary_case(|| Tmp::Frozen(Frozen::from_bytes("temporary", TEMPORARY).unwrap()));
}

#[test]
fn temporary_memfile_dropped_inside_serialize() {
    temporary_case(|| Tmp::MemFile(sealed_memfd()));
}

#[test]
fn temporary_owned_fd_dropped_inside_serialize() {
    temporary_case(|| Tmp::Owned(sealed_memfd().into_fd()));
}

// ---------------------------------------------------------------------------------------
// (b) A field behind a `Mutex`, taken and dropped by another thread while the send waits.

/// Waits at a barrier when serialized (after the fields before it): tells the test that
/// the message has been encoded up to here.
struct Encoded<'a>(Option<&'a Barrier>);

impl Serialize for Encoded<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let Some(barrier) = self.0 {
            barrier.wait();
        }
        serializer.serialize_unit()
    }
}

#[derive(Serialize)]
struct Msg<'a> {
    buf: &'a Mutex<Option<Fd<Frozen>>>,
    encoded: Encoded<'a>,
}

impl<'de> Deserialize<'de> for Msg<'_> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        send_only::<D, Got, Self>(deserializer)
    }
}

#[derive(Deserialize)]
struct Got {
    buf: Option<Fd<OwnedFd>>,
    #[allow(dead_code)]
    encoded: (),
}

const ORIGINAL: &[u8] = b"the original sealed buffer";

/// Fills `tx`'s socket with messages without a buffer; returns how many were queued.
fn fill(tx: &Sender<Msg<'static>>) -> usize {
    static EMPTY: Mutex<Option<Fd<Frozen>>> = Mutex::new(None);
    let filler = Msg {
        buf: &EMPTY,
        encoded: Encoded(None),
    };
    let mut queued = 0;
    loop {
        match tx.try_send(&filler) {
            Ok(()) => queued += 1,
            Err(Error::WouldBlock) => return queued,
            Err(e) => panic!("filling the socket: {e}"),
        }
    }
}

/// Runs `send` (which sends `msg` on a full socket and waits for room) on another thread;
/// once the message is encoded, takes the buffer out of the `Mutex`, drops it, opens other
/// files, then drains the socket: the last message must carry the original buffer.
/// (The message borrows for `'static` because a `Sender<T>` names one `T`; a few bytes
/// leak per test.)
fn mutex_case(
    tx: &Sender<Msg<'static>>,
    rx: &Receiver<Got>,
    send: impl FnOnce(&Msg<'static>) -> memfile_ipc::Result<()> + Send,
) {
    let _serial = serial();
    let queued = fill(tx);
    let frozen = Frozen::from_bytes("original", ORIGINAL).unwrap();
    let buf: &'static Mutex<_> = Box::leak(Box::new(Mutex::new(Some(Fd::new(frozen)))));
    let barrier: &'static Barrier = Box::leak(Box::new(Barrier::new(2)));
    let msg = Msg {
        buf,
        encoded: Encoded(Some(barrier)),
    };
    std::thread::scope(|s| {
        let sent = s.spawn(|| send(&msg));
        barrier.wait();
        // Encoded; the socket is full, so the packet has not left. Drop the only copy of
        // the buffer and take its number.
        drop(buf.lock().unwrap().take());
        let _others = open_other_files(4);
        for _ in 0..queued {
            let got = rx.recv_timeout(Duration::from_secs(60)).unwrap();
            assert!(got.buf.is_none());
        }
        let got = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        let fd = got.buf.expect("the message had a buffer").into_inner();
        assert_original(fd, ORIGINAL);
        sent.join().unwrap().unwrap();
    });
}

#[test]
fn mutex_field_dropped_while_send_timeout_waits() {
    let (tx, rx) = pair::<Msg<'static>, Got>();
    mutex_case(&tx, &rx, |msg| {
        tx.send_timeout(msg, Duration::from_secs(60))
    });
}

#[test]
fn mutex_field_dropped_while_send_waits() {
    let (tx, rx) = pair::<Msg<'static>, Got>();
    mutex_case(&tx, &rx, |msg| tx.send(msg));
}

#[cfg(feature = "tokio")]
#[test]
fn mutex_field_dropped_while_async_send_waits() {
    let (tx, rx) = pair::<Msg<'static>, Got>();
    let blocking = tx.clone();
    mutex_case(&blocking, &rx, move |msg| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async {
            let tx = memfile_ipc::tokio::AsyncSender::from_blocking(tx)?;
            tx.send(msg).await
        })
    });
}

// ---------------------------------------------------------------------------------------
// (c) Stress: buffers dropped right after encoding while another thread opens and closes
// files as fast as it can.

#[test]
fn concurrent_close_and_reopen() {
    let _serial = serial();
    const MESSAGES: usize = 2000;
    let (tx, rx) = pair::<Temporary, Fd<OwnedFd>>();
    let stop = AtomicBool::new(false);
    /// Stops the churning thread however the test ends (else a failure would hang it).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let stopper = Stop(&stop);
        let churn = s.spawn(|| {
            let mut opened = 0u64;
            while !stop.load(Ordering::Relaxed) {
                drop(open_other_files(2));
                opened += 2;
            }
            opened
        });
        let sender = s.spawn(move || {
            let msg = Temporary {
                make: || Tmp::Frozen(Frozen::from_bytes("temporary", TEMPORARY).unwrap()),
                opened: Mutex::new(Vec::new()),
            };
            for _ in 0..MESSAGES {
                msg.opened.lock().unwrap().clear();
                // A failed send (EBADF: the number was closed) is a failure too.
                tx.send_timeout(&msg, Duration::from_secs(60))?;
            }
            Ok::<(), Error>(())
        });
        for _ in 0..MESSAGES {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(fd) => assert_original(fd.into_inner(), TEMPORARY),
                Err(Error::Disconnected { .. }) => break,
                Err(e) => panic!("receiving: {e}"),
            }
        }
        let sent = sender.join().unwrap();
        drop(stopper);
        assert!(churn.join().unwrap() > 0);
        sent.unwrap();
    });
}
