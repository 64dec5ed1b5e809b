//! The message-type check (protocol version 2): a receiver whose message type differs from
//! the sender's rejects the message with `Error::TypeMismatch`, naming both types, instead
//! of decoding garbage; the escape hatches; version-1 packets; the fingerprint as
//! `docs/protocol.md` specifies it, computed here independently of the crate.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use memfile_core::Frozen;
use memfile_ipc::raw::RawSocket;
use memfile_ipc::{Error, Fd, Listener, Receiver, Sender, channel, connect};
use serde::{Deserialize, Serialize};

const TIMEOUT: Duration = Duration::from_secs(30);

static FD_LOCK: Mutex<()> = Mutex::new(());

/// Held by every test of this file: some count open fds, and the tests of one binary run
/// in parallel threads.
fn lock() -> MutexGuard<'static, ()> {
    FD_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    id: u64,
    name: String,
    payload: Option<Fd<Frozen>>,
}

/// The report's case: a client built against `(u8, String)` talking to a server that
/// expects `Request`. Before the check, `(13, "...")` was read as a `Request` whose fd
/// index 13 did not exist.
#[test]
fn mismatch_is_caught_and_named() {
    let _g = lock();
    let (tx, rx) = channel::<Request>().unwrap();
    let wrong: Sender<(u8, String)> = Sender::from_raw(tx.raw().clone());
    let before = open_fds();
    wrong.send(&(13, "thirteen char".to_string())).unwrap();
    let err = rx.recv_timeout(TIMEOUT).unwrap_err();
    let Error::TypeMismatch {
        expected,
        expected_fingerprint,
        received,
        received_fingerprint,
        fd,
    } = &err
    else {
        panic!("expected TypeMismatch, got {err:?}");
    };
    assert!(expected.ends_with("Request"), "{expected}");
    // This process knows `(u8, String)`: it has sent one.
    assert!(received.unwrap().contains("u8"), "{received:?}");
    assert_ne!(expected_fingerprint, received_fingerprint);
    assert_eq!(*fd, Some(rx.as_fd().as_raw_fd()));
    let text = err.to_string();
    for needle in ["Request", "u8", "String", "fingerprint"] {
        assert!(text.contains(needle), "{text:?} lacks {needle:?}");
    }
    assert_eq!(open_fds(), before);

    // The receiver stays usable, and a message of the right type goes through.
    let good = Request {
        id: 1,
        name: "one".into(),
        payload: Some(Frozen::from_bytes("p", b"abc").unwrap().into()),
    };
    tx.send(&good).unwrap();
    let got = rx.recv_timeout(TIMEOUT).unwrap();
    assert_eq!((got.id, &got.name[..]), (1, "one"));
    assert_eq!(&got.payload.unwrap()[..], b"abc");
}

/// A mismatching message's fds (its fd fields, the spill memfd) are closed, and a spilled
/// one is rejected before its payload is mapped.
#[test]
fn mismatch_closes_fds_inline_and_spilled() {
    let _g = lock();
    let (tx, rx) = channel::<Request>().unwrap();
    let wrong: Sender<(Fd<Frozen>, Vec<u8>)> = Sender::from_raw(tx.raw().clone());
    let before = open_fds();
    for size in [10, 4 << 20] {
        let buffer = Frozen::from_bytes("x", b"xyz").unwrap();
        wrong.send(&(buffer.into(), vec![7u8; size])).unwrap();
        let err = rx.recv_timeout(TIMEOUT).unwrap_err();
        assert!(matches!(err, Error::TypeMismatch { .. }), "{err:?}");
        assert_eq!(open_fds(), before, "fd leak after a {size}-byte mismatch");
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Ask(String);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Answer(u64);

/// Issue 12 item 4: `connect::<Ask, Answer>` on the client and `accept::<Ask, Answer>`
/// (instead of `<Answer, Ask>`) on the server compile; the first message now fails with a
/// `TypeMismatch` that names both types, on the server, and the client learns it from the
/// server's reply.
#[test]
fn swapped_type_parameters() {
    let _g = lock();
    let dir = std::env::temp_dir().join(format!("memfile-ipc-types-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("swapped");
    let listener = Listener::bind(&path).unwrap();
    let (client_tx, client_rx) = connect::<Ask, Answer>(&path).unwrap();
    // Wrong: the server should accept::<Answer, Ask>.
    let (server_tx, server_rx) = listener.accept::<Ask, Answer>().unwrap();

    client_tx.send(&Ask("hello".into())).unwrap();
    let err = server_rx.recv_timeout(TIMEOUT).unwrap_err();
    match &err {
        Error::TypeMismatch {
            expected, received, ..
        } => {
            assert!(expected.ends_with("Answer"), "{expected}");
            assert!(received.is_some_and(|r| r.ends_with("Ask")), "{received:?}");
        }
        other => panic!("expected TypeMismatch, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("Ask") && text.contains("Answer"), "{text}");
    assert!(text.contains("swapped"), "{text}");

    // The server answers with what it believes is right: the client sees the mismatch too.
    server_tx.send(&Ask("reply".into())).unwrap();
    let err = client_rx.recv_timeout(TIMEOUT).unwrap_err();
    assert!(
        matches!(&err, Error::TypeMismatch { expected, .. } if expected.ends_with("Answer")),
        "{err:?}"
    );
    drop(listener);
    std::fs::remove_dir_all(&dir).unwrap();
}

mod client {
    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct Point {
        pub x: i32,
        pub y: i32,
    }
}

mod server {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Point {
        pub x: i32,
        pub y: i32,
    }
}

/// The fingerprint depends on the definitions, not on where they live: two programs with
/// their own copy of the type (here two modules) agree.
#[test]
fn same_definition_elsewhere_matches() {
    let _g = lock();
    let (tx, rx) = channel::<server::Point>().unwrap();
    let tx: Sender<client::Point> = Sender::from_raw(tx.raw().clone());
    tx.send(&client::Point { x: 1, y: -2 }).unwrap();
    assert_eq!(
        rx.recv_timeout(TIMEOUT).unwrap(),
        server::Point { x: 1, y: -2 }
    );
}

#[derive(Serialize, Deserialize)]
struct Celsius(f64);

#[derive(Debug, Serialize, Deserialize)]
struct Fahrenheit(f64);

/// A renamed but wire-identical type mismatches (documented), and both escape hatches let
/// it through.
#[test]
fn renamed_type_mismatches_unless_unchecked() {
    let _g = lock();
    let (tx, rx) = channel::<Fahrenheit>().unwrap();
    let tx: Sender<Celsius> = Sender::from_raw(tx.raw().clone());
    tx.send(&Celsius(1.5)).unwrap();
    assert!(matches!(
        rx.recv_timeout(TIMEOUT),
        Err(Error::TypeMismatch { .. })
    ));

    // The sender opts out: fingerprint 0.
    let unchecked = tx.clone().without_type_check();
    unchecked.send(&Celsius(2.5)).unwrap();
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap().0, 2.5);

    // The receiver opts out.
    let mut rx: Receiver<Fahrenheit> = rx;
    rx.set_type_check(false);
    tx.send(&Celsius(3.5)).unwrap();
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap().0, 3.5);
    rx.set_type_check(true);
    tx.send(&Celsius(4.5)).unwrap();
    assert!(matches!(
        rx.recv_timeout(TIMEOUT),
        Err(Error::TypeMismatch { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// The wire, written by hand from docs/protocol.md.

/// 32-bit FNV-1a, as docs/protocol.md specifies it (0 becomes 1).
fn fnv1a(text: &str) -> u32 {
    let mut h: u32 = 2_166_136_261;
    for b in text.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(16_777_619);
    }
    if h == 0 { 1 } else { h }
}

fn packet(version: u16, fingerprint: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = b"MFIP".to_vec();
    p.extend_from_slice(&version.to_le_bytes());
    p.extend_from_slice(&0u16.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(&fingerprint.to_le_bytes());
    p.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    p.extend_from_slice(payload);
    p
}

fn raw_pair<T>() -> (RawSocket, Receiver<T>) {
    let (a, b) = RawSocket::pair().unwrap();
    (a, Receiver::from_raw(std::sync::Arc::new(b)))
}

/// `(u8, String)` = `tuple<u8,str>`; the payload `07 02 'h' 'i'` is `(7, "hi")`.
const PAYLOAD: &[u8] = &[7, 2, b'h', b'i'];

#[test]
fn foreign_peer_fingerprints() {
    let _g = lock();
    let (raw, rx) = raw_pair::<(u8, String)>();
    let send = |p: Vec<u8>| raw.send(&[IoSlice::new(&p)], &[]).unwrap();
    // The documented fingerprint is accepted.
    send(packet(2, fnv1a("tuple<u8,str>"), PAYLOAD));
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), (7, "hi".into()));
    // 0 ("not checked") in version 2, and a version-1 packet (bytes 12..16 zero).
    send(packet(2, 0, PAYLOAD));
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), (7, "hi".into()));
    send(packet(1, 0, PAYLOAD));
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), (7, "hi".into()));
    // Another shape's fingerprint is refused; a version-1 packet may not carry one.
    let other = fnv1a("tuple<u16,str>");
    send(packet(2, other, PAYLOAD));
    let err = rx.recv_timeout(TIMEOUT).unwrap_err();
    assert!(
        matches!(err, Error::TypeMismatch { received_fingerprint, expected_fingerprint, .. }
            if received_fingerprint == other
                && expected_fingerprint == fnv1a("tuple<u8,str>")),
        "{err:?}"
    );
    send(packet(1, fnv1a("tuple<u8,str>"), PAYLOAD));
    assert!(matches!(
        rx.recv_timeout(TIMEOUT),
        Err(Error::Protocol { .. })
    ));
    // Still usable.
    send(packet(2, fnv1a("tuple<u8,str>"), PAYLOAD));
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), (7, "hi".into()));
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Job {
    id: u64,
    kind: Kind,
    input: Fd<Frozen>,
    reply: Option<Sender<u64>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
enum Kind {
    Stop,
    Scale(f32),
    Crop { width: u32, height: u32 },
}

/// The fingerprint of a struct with an enum and fd fields, from the text docs/protocol.md
/// gives for it; and what a sender puts in the header.
#[test]
fn documented_example_fingerprint() {
    let _g = lock();
    let text = "Job;struct Job{id:u64,kind:Kind,input:fd<frozen>,reply:option<fd<socket>>};\
                enum Kind{Stop,Scale(f32),Crop{width:u32,height:u32}}";
    let (raw, rx) = raw_pair::<Job>();
    // id 5, kind Stop (variant 0), input fd #0, reply None.
    let payload = [5u8, 0, 0, 0];
    let input = Frozen::from_bytes("input", b"data").unwrap();
    let send = |fp: u32| {
        let mut p = packet(2, fp, &payload);
        p[8..12].copy_from_slice(&1u32.to_le_bytes()); // one fd
        raw.send(&[IoSlice::new(&p)], &[input.as_fd()]).unwrap();
    };
    send(fnv1a(text));
    let job = rx.recv_timeout(TIMEOUT).unwrap();
    assert_eq!((job.id, &job.input[..]), (5, &b"data"[..]));
    // One character off (a field renamed) is another type.
    send(fnv1a(&text.replace("width", "w")));
    assert!(matches!(
        rx.recv_timeout(TIMEOUT),
        Err(Error::TypeMismatch { .. })
    ));

    // A sender writes version 2 and its type's fingerprint in bytes 12..16.
    let (a, b) = RawSocket::pair().unwrap();
    let sender: Sender<(u8, String)> = Sender::from_raw(std::sync::Arc::new(a));
    sender.send(&(1, String::new())).unwrap();
    let mut buf = [0u8; 64];
    let mut fds = Vec::new();
    let n = b
        .recv(&mut buf, &mut fds, memfile_ipc::raw::RecvMode::Blocking)
        .unwrap();
    assert_eq!(n, 24 + 2);
    assert_eq!(u16::from_le_bytes([buf[4], buf[5]]), 2, "version");
    assert_eq!(
        u32::from_le_bytes(buf[12..16].try_into().unwrap()),
        fnv1a("tuple<u8,str>")
    );
    // Without the type check: 0.
    sender
        .clone()
        .without_type_check()
        .send(&(1, String::new()))
        .unwrap();
    b.recv(&mut buf, &mut fds, memfile_ipc::raw::RecvMode::Blocking)
        .unwrap();
    assert_eq!(u32::from_le_bytes(buf[12..16].try_into().unwrap()), 0);
}

/// The async endpoints check the same way, and have the same escape hatches.
#[cfg(feature = "tokio")]
#[test]
fn async_endpoints_check_too() {
    use memfile_ipc::tokio::{AsyncReceiver, AsyncSender};
    let _g = lock();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (tx, rx) = channel::<Fahrenheit>().unwrap();
        let wrong: Sender<Celsius> = Sender::from_raw(tx.raw().clone());
        let wrong = AsyncSender::from_blocking(wrong).unwrap();
        let rx = AsyncReceiver::from_blocking(rx).unwrap();
        wrong.send(&Celsius(1.0)).await.unwrap();
        let err = rx.recv().await.unwrap_err();
        assert!(matches!(err, Error::TypeMismatch { .. }), "{err:?}");
        let wrong = wrong.without_type_check();
        wrong.send(&Celsius(2.0)).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().0, 2.0);
        let rx = rx.without_type_check();
        let checked =
            AsyncSender::from_blocking(Sender::<Celsius>::from_raw(tx.raw().clone())).unwrap();
        checked.send(&Celsius(3.0)).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().0, 3.0);
    });
}
