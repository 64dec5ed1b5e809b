//! Typed channels within one process: round trips, fd fields, spilling, limits, threads.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::thread;
use std::time::{Duration, Instant};

use memfile_core::Frozen;
use memfile_ipc::{Error, Fd, Limits, Receiver, Sender, channel};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum Shape {
    Circle { r: f64 },
    Poly(Vec<(i32, i32)>),
    Nothing,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Plain {
    id: u64,
    name: String,
    tags: BTreeMap<String, i64>,
    shapes: Vec<Shape>,
    maybe: Option<Box<Plain>>,
}

fn plain() -> Plain {
    Plain {
        id: u64::MAX - 3,
        name: "ünïcode ✓".into(),
        tags: [("a".to_string(), -1), ("b".to_string(), i64::MIN)].into(),
        shapes: vec![
            Shape::Circle { r: 1.5 },
            Shape::Poly(vec![(1, -2), (3, 4)]),
            Shape::Nothing,
        ],
        maybe: Some(Box::new(Plain {
            id: 0,
            name: String::new(),
            tags: BTreeMap::new(),
            shapes: vec![],
            maybe: None,
        })),
    }
}

#[test]
fn plain_round_trip() {
    let (tx, rx) = channel::<Plain>().unwrap();
    tx.send(&plain()).unwrap();
    tx.send(&plain()).unwrap();
    assert_eq!(rx.recv().unwrap(), plain());
    assert_eq!(rx.try_recv().unwrap(), plain());
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
}

#[derive(Serialize, Deserialize)]
struct WithFds {
    #[serde(with = "memfile_ipc::fd")]
    first: Frozen,
    others: Vec<Fd<Frozen>>,
    file: Option<Fd<OwnedFd>>,
    reply: Sender<String>,
}

#[test]
fn frozen_fields_and_reply_channel() {
    let (tx, rx) = channel::<WithFds>().unwrap();
    let (reply_tx, reply_rx) = channel::<String>().unwrap();
    let first = Frozen::from_bytes("first", b"hello").unwrap();
    let others = (0..5u8)
        .map(|i| Fd::new(Frozen::from_bytes("other", &vec![i; 10_000]).unwrap()))
        .collect();
    let file = Some(Fd::new(OwnedFd::from(
        std::fs::File::open("/dev/null").unwrap(),
    )));
    tx.send(&WithFds {
        first,
        others,
        file,
        reply: reply_tx,
    })
    .unwrap();
    let got = rx.recv().unwrap();
    assert_eq!(&got.first[..], b"hello");
    assert_eq!(got.others.len(), 5);
    for (i, f) in got.others.iter().enumerate() {
        assert_eq!(f.len(), 10_000);
        assert!(f.iter().all(|&b| b == i as u8));
    }
    assert!(got.file.is_some());
    got.reply.send(&"answer".to_string()).unwrap();
    assert_eq!(reply_rx.recv().unwrap(), "answer");
}

#[test]
fn spilled_message() {
    let (tx, rx) = channel::<Vec<u64>>().unwrap();
    let big: Vec<u64> = (0..200_000).collect();
    tx.send(&big).unwrap();
    assert_eq!(rx.recv().unwrap(), big);
    // A forced small inline limit spills even tiny messages.
    let (tx, rx) = channel::<String>().unwrap();
    let tx = tx.with_limits(Limits::default().inline_limit(Some(4)));
    tx.send(&"spilled!".to_string()).unwrap();
    tx.send(&"ok".to_string()).unwrap();
    assert_eq!(rx.recv().unwrap(), "spilled!");
    assert_eq!(rx.recv().unwrap(), "ok");
}

#[test]
fn message_too_large_on_both_sides() {
    let (tx, rx) = channel::<Vec<u8>>().unwrap();
    let small = tx
        .clone()
        .with_limits(Limits::default().max_message_bytes(100));
    let r = small.send(&vec![0; 1000]);
    assert!(
        matches!(r, Err(Error::MessageTooLarge { max: 100, .. })),
        "{r:?}"
    );
    let rx = rx.with_limits(Limits::default().max_message_bytes(100));
    tx.send(&vec![0; 1000]).unwrap();
    tx.send(&vec![1; 10]).unwrap();
    let r = rx.recv();
    assert!(
        matches!(r, Err(Error::MessageTooLarge { max: 100, .. })),
        "{r:?}"
    );
    assert_eq!(rx.recv().unwrap(), vec![1; 10]);
}

#[test]
fn fd_and_mapped_limits() {
    let (tx, rx) = channel::<Vec<Fd<Frozen>>>().unwrap();
    let f = || Fd::new(Frozen::from_bytes("x", &[1; 100]).unwrap());
    let limited = tx.clone().with_limits(Limits::default().max_fds(2));
    let r = limited.send(&vec![f(), f(), f()]);
    assert!(
        matches!(r, Err(Error::TooManyFds { count: 3, max: 2 })),
        "{r:?}"
    );
    let rx = rx.with_limits(Limits::default().max_fds(2).max_mapped_bytes(150));
    tx.send(&vec![f(), f(), f()]).unwrap();
    assert!(matches!(
        rx.recv(),
        Err(Error::TooManyFds { count: 3, max: 2 })
    ));
    tx.send(&vec![f(), f()]).unwrap();
    let r = rx.recv();
    // 100 + 100 bytes over a budget of 150: the second buffer is too large for what is left.
    assert!(
        matches!(
            r,
            Err(Error::BadBuffer {
                index: 1,
                kind: memfile_core::FrozenErrorKind::TooLarge { len: 100, max: 50 },
                ..
            })
        ),
        "{r:?}"
    );
    tx.send(&vec![f()]).unwrap();
    assert_eq!(rx.recv().unwrap().len(), 1);
}

/// `max_fds` above the kernel's `SCM_MAX_FD` (253) is clamped to it: 253 fd fields travel,
/// 254 are refused by the sender before anything is sent.
#[test]
fn max_fds_is_clamped_to_253() {
    for asked in [254, 1000, usize::MAX] {
        assert_eq!(
            Limits::default().max_fds(asked).get_max_fds(),
            253,
            "{asked}"
        );
    }
    assert_eq!(Limits::default().get_max_fds(), 253);
    assert_eq!(Limits::default().max_fds(252).get_max_fds(), 252);
    let (tx, rx) = channel::<Vec<Fd<Frozen>>>().unwrap();
    let many = Limits::default().max_fds(usize::MAX);
    let (tx, rx) = (tx.with_limits(many), rx.with_limits(many));
    let f = Frozen::from_bytes("x", b"x").unwrap();
    let fields = |n: usize| (0..n).map(|_| Fd::new(f.clone())).collect::<Vec<_>>();
    tx.send(&fields(253)).unwrap();
    assert_eq!(rx.recv().unwrap().len(), 253);
    let r = tx.send(&fields(254));
    assert!(
        matches!(
            r,
            Err(Error::TooManyFds {
                count: 254,
                max: 253
            })
        ),
        "{r:?}"
    );
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
}

#[test]
fn timeout_and_iteration() {
    let (tx, rx) = channel::<u32>().unwrap();
    let start = Instant::now();
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(50)),
        Err(Error::Timeout { .. })
    ));
    assert!(start.elapsed() >= Duration::from_millis(50));
    let t = thread::spawn(move || {
        for i in 0..10 {
            tx.send(&i).unwrap();
        }
    });
    let got: Vec<u32> = rx.iter().map(Result::unwrap).collect();
    t.join().unwrap();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert!(matches!(rx.recv(), Err(Error::Disconnected { .. })));
}

#[test]
fn many_threads_send_at_once() {
    let (tx, rx) = channel::<(u32, u32, Vec<u8>)>().unwrap();
    const THREADS: u32 = 8;
    const EACH: u32 = 200;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..EACH {
                    // Mixed sizes: some inline, some spilled.
                    let len = if i % 50 == 0 {
                        300_000
                    } else {
                        (i as usize * 37) % 2000
                    };
                    tx.send(&(t, i, vec![t as u8; len])).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut next = vec![0u32; THREADS as usize];
    for msg in &rx {
        let (t, i, data) = msg.unwrap();
        assert_eq!(next[t as usize], i, "per-thread order");
        assert!(data.iter().all(|&b| b == t as u8));
        next[t as usize] += 1;
    }
    for h in handles {
        h.join().unwrap();
    }
    assert!(next.iter().all(|&n| n == EACH));
}

#[test]
fn receiver_inside_a_message() {
    let (tx, rx) = channel::<Receiver<u8>>().unwrap();
    let (inner_tx, inner_rx) = channel::<u8>().unwrap();
    tx.send(&inner_rx).unwrap();
    drop(inner_rx);
    let got = rx.recv().unwrap();
    inner_tx.send(&42).unwrap();
    assert_eq!(got.recv().unwrap(), 42);
}

#[test]
fn frozen_outlives_its_sender() {
    let (tx, rx) = channel::<Fd<Frozen>>().unwrap();
    {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let f = Frozen::from_bytes("short-lived", &data).unwrap();
        tx.send(&Fd::new(f)).unwrap();
    }
    drop(tx);
    let got = rx.recv().unwrap().into_inner();
    assert!(matches!(rx.recv(), Err(Error::Disconnected { .. })));
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
}

#[test]
fn sender_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone>() {}
    check::<Sender<Vec<Fd<Frozen>>>>();
    fn check_rx<T: Send>() {}
    check_rx::<Receiver<Fd<OwnedFd>>>();
}

#[test]
fn try_send_would_block_when_full() {
    let (tx, rx) = channel::<Vec<u8>>().unwrap();
    let mut sent = 0;
    loop {
        match tx.try_send(&vec![7; 1000]) {
            Ok(()) => sent += 1,
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(sent < 1_000_000, "never blocked");
    }
    assert!(sent > 0);
    for _ in 0..sent {
        assert_eq!(rx.recv().unwrap(), vec![7; 1000]);
    }
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
    tx.try_send(&vec![1]).unwrap();
}

#[test]
fn fd_fields_outside_a_channel_fail() {
    // Error::FdOutsideChannel, reported through the serde error of the format used.
    let outside = Error::FdOutsideChannel.to_string();
    let f = Fd::new(Frozen::from_bytes("x", b"x").unwrap());
    let e = bincode::serde::encode_to_vec(&f, bincode::config::standard()).unwrap_err();
    assert!(e.to_string().contains(&outside), "{e}");
    let e = bincode::serde::decode_from_slice::<Fd<Frozen>, _>(&[0], bincode::config::standard())
        .unwrap_err();
    assert!(e.to_string().contains(&outside), "{e}");
}

/// A message whose `Serialize` panics after an fd field was recorded.
#[derive(serde::Deserialize)]
struct Bomb(Fd<Frozen>);

impl Serialize for Bomb {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.0)?;
        panic!("boom");
    }
}

/// Sends another message from inside `Serialize` (a nested encode on the same thread).
#[derive(serde::Deserialize)]
struct Nested(Fd<Frozen>, Sender<Fd<Frozen>>, Fd<Frozen>);

impl Serialize for Nested {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.0)?;
        self.1.send(&self.2).map_err(serde::ser::Error::custom)?;
        t.serialize_element(&self.2)?;
        t.end()
    }
}

#[test]
fn encode_tables_survive_panics_and_nesting() {
    let frozen = |b: &[u8]| Fd::new(Frozen::from_bytes("x", b).unwrap());
    let (tx, _rx) = channel::<Bomb>().unwrap();
    let bomb = Bomb(frozen(b"bomb"));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tx.send(&bomb)));
    assert!(r.is_err());
    // The next message on this thread starts with a clean table: its fd is index 0.
    let (tx, rx) = channel::<(Fd<Frozen>, Fd<Frozen>)>().unwrap();
    tx.send(&(frozen(b"a"), frozen(b"b"))).unwrap();
    let (a, b) = rx.recv().unwrap();
    assert_eq!((&a[..], &b[..]), (&b"a"[..], &b"b"[..]));
    // Nested: the inner send has its own table, the outer one continues where it was.
    let (inner_tx, inner_rx) = channel::<Fd<Frozen>>().unwrap();
    let (outer_tx, outer_rx) = channel::<(Fd<Frozen>, Fd<Frozen>)>().unwrap();
    let nested = Nested(frozen(b"outer"), inner_tx, frozen(b"inner"));
    // `Nested` serializes like the tuple type the receiver expects (but is another type:
    // without the type check, the receiver takes it).
    let nested_tx: Sender<Nested> = Sender::from_raw(outer_tx.raw().clone()).without_type_check();
    nested_tx.send(&nested).unwrap();
    assert_eq!(&inner_rx.recv().unwrap()[..], b"inner");
    let (a, b) = outer_rx.recv().unwrap();
    assert_eq!((&a[..], &b[..]), (&b"outer"[..], &b"inner"[..]));
}
