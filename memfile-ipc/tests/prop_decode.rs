//! Property tests of the receive path (issue 6, the stable-Rust counterpart of `fuzz/`):
//! random and mutated packets, with random fds attached, go through a real socket into a
//! `Receiver`. Whatever arrives, the receiver returns a message or a typed error, never
//! panics or blocks, closes every fd it does not hand out, and takes the next valid message.
//!
//! Bounded: a few thousand cases in a few seconds of a debug build. `PROPTEST_CASES` raises
//! the count for a longer local run.

use std::io::{IoSlice, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use memfile_core::{Frozen, MemFile, Seal};
use memfile_ipc::raw::{RawSocket, RecvMode};
use memfile_ipc::{Error, Fd, Limits, Receiver, Sender};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

mod util_wire;
use util_wire::{lock, open_fds};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Unit,
    Pair(i16, u8),
    Named { x: u64, tag: Option<char> },
}

/// A message with a bit of every serde shape and every kind of fd field.
#[derive(Debug, Serialize, Deserialize)]
struct Msg {
    n: u32,
    text: String,
    numbers: Vec<u16>,
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
    shape: Shape,
    buffer: Option<Fd<Frozen>>,
    others: Vec<Fd<OwnedFd>>,
}

/// What to attach to a packet.
#[derive(Debug, Clone, Copy)]
enum FdKind {
    Sealed,
    EmptySealed,
    Unsealed,
    WriteOnly,
    Pipe,
    DevNull,
}

fn make_fd(kind: FdKind) -> OwnedFd {
    match kind {
        FdKind::Sealed => Frozen::from_bytes("prop", b"sealed bytes")
            .unwrap()
            .try_clone_fd()
            .unwrap(),
        FdKind::EmptySealed => Frozen::from_bytes("prop", b"")
            .unwrap()
            .try_clone_fd()
            .unwrap(),
        FdKind::Unsealed => {
            let m = MemFile::create_sealable("prop").unwrap();
            m.as_file().write_all(b"unsealed").unwrap();
            m.into_fd()
        }
        FdKind::WriteOnly => {
            let m = MemFile::create_sealable("prop").unwrap();
            m.as_file().write_all(b"write only").unwrap();
            m.add_seal(Seal::Write).unwrap();
            m.into_fd()
        }
        FdKind::Pipe => nix::unistd::pipe().unwrap().0,
        FdKind::DevNull => std::fs::File::open("/dev/null").unwrap().into(),
    }
}

fn fd_kind() -> impl Strategy<Value = FdKind> {
    prop_oneof![
        4 => Just(FdKind::Sealed),
        1 => Just(FdKind::EmptySealed),
        1 => Just(FdKind::Unsealed),
        1 => Just(FdKind::WriteOnly),
        1 => Just(FdKind::Pipe),
        1 => Just(FdKind::DevNull),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Unit),
        (any::<i16>(), any::<u8>()).prop_map(|(a, b)| Shape::Pair(a, b)),
        (any::<u64>(), any::<Option<char>>()).prop_map(|(x, tag)| Shape::Named { x, tag }),
    ]
}

/// The parts of a valid `Msg` (its fds are made when it is encoded).
type Parts = (u32, String, Vec<u16>, Vec<u8>, Shape, bool, usize);

fn parts() -> impl Strategy<Value = Parts> {
    (
        any::<u32>(),
        ".{0,20}",
        prop::collection::vec(any::<u16>(), 0..20),
        prop::collection::vec(any::<u8>(), 0..64),
        shape(),
        any::<bool>(),
        0usize..4,
    )
}

/// Encodes a valid `Msg` with the crate's own sender and captures the packet and its fds as
/// they arrive (so the packet is exactly what a well-behaved peer sends).
fn valid_packet(p: &Parts) -> (Vec<u8>, Vec<OwnedFd>) {
    let (n, text, numbers, bytes, shape, with_buffer, others) = p.clone();
    let msg = Msg {
        n,
        text,
        numbers,
        bytes,
        shape,
        buffer: with_buffer.then(|| Fd::new(Frozen::from_bytes("valid", b"buffer").unwrap())),
        others: (0..others)
            .map(|_| Fd::new(make_fd(FdKind::DevNull)))
            .collect(),
    };
    let (a, b) = RawSocket::pair().unwrap();
    Sender::<Msg>::from_raw(Arc::new(a)).send(&msg).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut fds = Vec::new();
    let len = b.recv(&mut buf, &mut fds, RecvMode::NonBlocking).unwrap();
    buf.truncate(len);
    (buf, fds)
}

/// How to damage a valid packet.
#[derive(Debug, Clone)]
enum Mutation {
    /// Set byte `at % len` to `value`.
    Set(usize, u8),
    /// XOR a bit.
    Flip(usize, u8),
    /// Keep only the first `at % (len + 1)` bytes.
    Truncate(usize),
    /// Append bytes.
    Extend(Vec<u8>),
    /// Overwrite a header field (0 = magic, 1 = version, 2 = flags, 3 = fd count,
    /// 4 = reserved, 5 = payload length) with this value.
    Field(u8, u64),
    /// Drop the `at % count`-th fd, or add one of this kind.
    DropFd(usize),
    AddFd(FdKind),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), any::<u8>()).prop_map(|(a, v)| Mutation::Set(a, v)),
        3 => (any::<usize>(), 0u8..8).prop_map(|(a, b)| Mutation::Flip(a, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => prop::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Extend),
        2 => (0u8..6, prop_oneof![Just(0u64), Just(1), Just(2), Just(u64::MAX), any::<u64>(), 0u64..300])
            .prop_map(|(f, v)| Mutation::Field(f, v)),
        1 => any::<usize>().prop_map(Mutation::DropFd),
        1 => fd_kind().prop_map(Mutation::AddFd),
    ]
}

fn apply(m: &Mutation, packet: &mut Vec<u8>, fds: &mut Vec<OwnedFd>) {
    let len = packet.len().max(1);
    match m {
        Mutation::Set(at, v) if !packet.is_empty() => packet[at % len] = *v,
        Mutation::Flip(at, bit) if !packet.is_empty() => packet[at % len] ^= 1 << bit,
        Mutation::Truncate(at) => packet.truncate(at % (packet.len() + 1)),
        Mutation::Extend(more) => packet.extend_from_slice(more),
        Mutation::Field(field, v) if packet.len() >= 24 => {
            let (range, bytes) = match field {
                0 => (0..4, (*v as u32).to_le_bytes().to_vec()),
                1 => (4..6, (*v as u16).to_le_bytes().to_vec()),
                2 => (6..8, (*v as u16).to_le_bytes().to_vec()),
                3 => (8..12, (*v as u32).to_le_bytes().to_vec()),
                4 => (12..16, (*v as u32).to_le_bytes().to_vec()),
                _ => (16..24, v.to_le_bytes().to_vec()),
            };
            packet[range].copy_from_slice(&bytes);
        }
        Mutation::DropFd(at) if !fds.is_empty() => {
            let i = at % fds.len();
            fds.remove(i);
        }
        Mutation::AddFd(kind) if fds.len() < 253 => fds.push(make_fd(*kind)),
        _ => {}
    }
}

/// Sends `packet` with `fds` to a fresh receiver and checks the receiver's contract.
fn check_receive(packet: &[u8], fds: Vec<OwnedFd>) -> Result<(), TestCaseError> {
    let (a, b) = RawSocket::pair().unwrap();
    let (peer, rx) = (Arc::new(a), Receiver::<Msg>::from_raw(Arc::new(b)));
    // Small limits, so that the limit paths are exercised too.
    let rx = rx.with_limits(Limits::default().max_fds(6).max_mapped_bytes(1 << 20));
    let before = open_fds();
    {
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        peer.send(&[IoSlice::new(packet)], &borrowed).unwrap();
    }
    drop(fds);
    let sent_fds = before - open_fds();
    // The packet is queued: this returns at once. (Not `try_recv`, which never waits for the
    // closer thread that closes refused fds such as `/dev/null`'s: see closer.rs.)
    let result = rx.recv_timeout(std::time::Duration::from_secs(10));
    match &result {
        Ok(_) => {}
        Err(
            Error::WouldBlock
            | Error::Disconnected { .. }
            | Error::Timeout { .. }
            | Error::Io { .. },
        ) => {
            return Err(TestCaseError::fail(format!(
                "not a per-message error: {result:?}"
            )));
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    drop(result);
    prop_assert_eq!(open_fds(), before - sent_fds, "fd leak");
    // The next valid message goes through.
    let good = Msg {
        n: 1,
        text: "next".into(),
        numbers: vec![],
        bytes: vec![],
        shape: Shape::Unit,
        buffer: None,
        others: vec![],
    };
    Sender::<Msg>::from_raw(peer).send(&good).unwrap();
    let next = rx.try_recv();
    prop_assert!(
        matches!(&next, Ok(m) if m.text == "next"),
        "receiver unusable: {:?}",
        next
    );
    Ok(())
}

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(4000))]

    /// Valid packets decode to what was sent (the baseline the mutations start from).
    #[test]
    fn valid_packets_decode(p in parts()) {
        let _g = lock();
        let (packet, fds) = valid_packet(&p);
        let (a, b) = RawSocket::pair().unwrap();
        let rx = Receiver::<Msg>::from_raw(Arc::new(b));
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        a.send(&[IoSlice::new(&packet)], &borrowed).unwrap();
        let m = rx.try_recv().unwrap();
        prop_assert_eq!((m.n, &m.text, &m.numbers, &m.bytes, &m.shape), (p.0, &p.1, &p.2, &p.3, &p.4));
        prop_assert_eq!(m.buffer.is_some(), p.5);
        prop_assert_eq!(m.others.len(), p.6);
    }

    /// Valid packets with a few mutations applied.
    #[test]
    fn mutated_packets(p in parts(), mutations in prop::collection::vec(mutation(), 1..4)) {
        let _g = lock();
        let (mut packet, mut fds) = valid_packet(&p);
        for m in &mutations {
            apply(m, &mut packet, &mut fds);
        }
        check_receive(&packet, fds)?;
    }

    /// A valid header in front of random bytes, with random fds.
    #[test]
    fn random_payloads(
        payload in prop::collection::vec(any::<u8>(), 0..200),
        kinds in prop::collection::vec(fd_kind(), 0..5),
    ) {
        let _g = lock();
        let mut packet = b"MFIP\x01\x00\x00\x00".to_vec();
        packet.extend_from_slice(&(kinds.len() as u32).to_le_bytes());
        packet.extend_from_slice(&0u32.to_le_bytes());
        packet.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        packet.extend_from_slice(&payload);
        check_receive(&packet, kinds.iter().map(|&k| make_fd(k)).collect())?;
    }

    /// Random bytes, random fds.
    #[test]
    fn random_packets(
        packet in prop::collection::vec(any::<u8>(), 0..100),
        kinds in prop::collection::vec(fd_kind(), 0..3),
    ) {
        let _g = lock();
        check_receive(&packet, kinds.iter().map(|&k| make_fd(k)).collect())?;
    }
}
