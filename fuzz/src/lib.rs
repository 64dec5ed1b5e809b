//! Shared harness of the memfile-ipc fuzz targets.
//!
//! Both targets push their input through the real receive path: a `SOCK_SEQPACKET` socket
//! pair, `recvmsg`, the header checks, the fd checks and the bincode decoder of a
//! `Receiver`. After every input the harness asserts the receiver's contract (a message or a
//! typed per-message error, no fd leak, nothing left queued) and aborts otherwise, which
//! libFuzzer reports as a crash.

use std::io::{IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use memfile_core::{Frozen, MemFile, Seal};
use memfile_ipc::raw::RawSocket;
use memfile_ipc::{Error, Fd, Limits, Receiver, Sender};
use serde::{Deserialize, Serialize};

/// A message type with a bit of every serde shape and every kind of fd field.
#[derive(Debug, Serialize, Deserialize)]
pub struct Msg {
    /// A fixed-size integer.
    pub n: u32,
    /// A length-prefixed string.
    pub text: String,
    /// A sequence.
    pub numbers: Vec<u16>,
    /// A byte buffer.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// An enum.
    pub shape: Shape,
    /// A sealed buffer, maybe.
    pub buffer: Option<Fd<Frozen>>,
    /// A memfd that may be writable.
    pub file: Option<Fd<MemFile>>,
    /// Any fds.
    pub others: Vec<Fd<OwnedFd>>,
    /// A reply channel, maybe.
    pub reply: Option<Sender<u8>>,
    /// Far larger in memory than on the wire (a `None` is 1 byte, 264 in memory): the
    /// decoder's heap budget.
    pub wide: Vec<Option<[u64; 32]>>,
    /// Zero-sized elements: the decoder's element budget.
    pub units: Vec<()>,
    /// A recursive value: the decoder's nesting depth, and preallocation at every level.
    pub tree: Option<Box<Tree>>,
}

/// A recursive type with a boxed and a sequence branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Tree {
    /// No children.
    Leaf,
    /// One child behind a box.
    One(Box<Tree>),
    /// Any number of children.
    Many(Vec<Tree>),
}

/// Enum variants of every kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    /// Unit variant.
    Unit,
    /// Tuple variant.
    Pair(i16, u8),
    /// Struct variant.
    Named {
        /// A varint.
        x: u64,
        /// An optional char.
        tag: Option<char>,
    },
}

/// Kinds of fd the typed target can attach (selected by one input byte each).
pub const FD_KINDS: u8 = 10;

/// Makes fd kind `kind % FD_KINDS`.
pub fn make_fd(kind: u8) -> OwnedFd {
    let memfd = |bytes: &[u8], seals: &[Seal]| {
        let m = MemFile::create_sealable("fuzz").unwrap();
        m.as_file().write_all(bytes).unwrap();
        for &s in seals {
            m.add_seal(s).unwrap();
        }
        m.into_fd()
    };
    match kind % FD_KINDS {
        0 => Frozen::from_bytes("fuzz", b"sealed")
            .unwrap()
            .try_clone_fd()
            .unwrap(),
        1 => memfd(b"unsealed", &[]),
        2 => memfd(b"write only", &[Seal::Write]),
        3 => memfd(b"future write", &[Seal::FutureWrite, Seal::Shrink]),
        4 => {
            // A sealed sparse terabyte: over any mapped-bytes limit.
            let m = MemFile::create_sealable("fuzz-huge").unwrap();
            m.set_len(1 << 40).unwrap();
            m.add_seals(Seal::Write | Seal::Shrink | Seal::Grow)
                .unwrap();
            m.into_fd()
        }
        5 => RawSocket::pair().unwrap().0.into_fd(),
        6 => std::fs::File::open("/dev/null").unwrap().into(),
        7 => {
            let (r, _w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
            r
        }
        8 => Frozen::from_bytes("fuzz", b"")
            .unwrap()
            .try_clone_fd()
            .unwrap(),
        _ => {
            // A write-only reopen of a sealed memfd: refused as not readable.
            let frozen = Frozen::from_bytes("fuzz", b"sealed").unwrap();
            let path = format!("/proc/self/fd/{}", frozen.as_fd().as_raw_fd());
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .into()
        }
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Sends `packet` with `fds` to a fresh receiver and checks its contract; aborts (a crash
/// for libFuzzer) when it is broken. Returns what the receiver made of it (`None`: the
/// packet could not be sent).
pub fn check(packet: &[u8], fds: Vec<OwnedFd>) -> Option<Result<Msg, Error>> {
    let (a, b) = RawSocket::pair().unwrap();
    let peer = Arc::new(a);
    let rx = Receiver::<Msg>::from_raw(Arc::new(b))
        .with_limits(Limits::default().max_fds(8).max_mapped_bytes(1 << 20));
    let before = open_fds();
    {
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        // A packet larger than the socket buffer cannot be sent: nothing to test.
        if peer.send(&[IoSlice::new(packet)], &borrowed).is_err() {
            return None;
        }
    }
    let sent = fds.len();
    drop(fds);
    let result = rx.try_recv();
    match &result {
        Ok(_) => {}
        // A well-formed flow-control packet (flag 0x0002, protocol v2) carries no message:
        // the receiver applies it and finds nothing else queued.
        Err(Error::WouldBlock) if packet.len() >= 8 && packet[6] & 2 != 0 => {}
        Err(
            Error::WouldBlock
            | Error::Disconnected { .. }
            | Error::Timeout { .. }
            | Error::Io { .. },
        ) => {
            panic!("not a per-message error")
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    // The message's own fds are counted while it is alive: compare without them.
    let kept = result.as_ref().map_or(0, held_fds);
    assert_eq!(open_fds(), before - sent + kept, "fd leak");
    assert!(
        matches!(rx.try_recv(), Err(Error::WouldBlock)),
        "a packet was left queued"
    );
    Some(result)
}

/// How many fds a received message holds.
fn held_fds(msg: &Msg) -> usize {
    usize::from(msg.buffer.is_some())
        + usize::from(msg.file.is_some())
        + msg.others.len()
        + usize::from(msg.reply.is_some())
}

/// The `packet` target: the input is one packet, without fds.
pub fn run_packet(data: &[u8]) -> Option<Result<Msg, Error>> {
    check(data, Vec::new())
}

/// The `typed_fds` target: `data[0] % 9` fds, of the kinds `data[1..=n]`, then the packet.
pub fn run_typed(data: &[u8]) -> Option<Result<Msg, Error>> {
    let (&count, rest) = data.split_first()?;
    let count = (count % 9) as usize;
    if rest.len() < count {
        return None;
    }
    let (kinds, packet) = rest.split_at(count);
    check(packet, kinds.iter().map(|&k| make_fd(k)).collect())
}

// ---------------------------------------------------------------------------------------
// Regression inputs: the hostile cases of issue 10 that these targets can express, written
// into the seed corpus by `seed_corpus` and replayed by the workspace test
// `memfile-ipc/tests/fuzz_corpus.rs` (which also checks each one's outcome).

/// What a regression input must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A message.
    Message,
    /// `Error::HeapLimitExceeded`.
    HeapLimit,
    /// `Error::Codec` whose text contains this.
    Codec(&'static str),
    /// `Error::BadBuffer` for a buffer that is not readable.
    NotReadable,
}

impl Expect {
    /// Whether `result` is what was expected.
    pub fn matches(self, result: &Result<Msg, Error>) -> bool {
        match (self, result) {
            (Expect::Message, Ok(_)) => true,
            (Expect::HeapLimit, Err(Error::HeapLimitExceeded { .. })) => true,
            (Expect::Codec(text), Err(Error::Codec { detail, .. })) => detail.contains(text),
            (Expect::NotReadable, Err(Error::BadBuffer { kind, .. })) => {
                matches!(kind, memfile_core::FrozenErrorKind::NotReadable(_))
            }
            _ => false,
        }
    }
}

/// One regression input: its file name, the target (`"packet"` or `"typed_fds"`), the
/// input, and what it must give.
pub struct Regression {
    /// File name in the corpus directory.
    pub name: &'static str,
    /// `"packet"` or `"typed_fds"`.
    pub target: &'static str,
    /// The fuzz input.
    pub input: Vec<u8>,
    /// The outcome it must have.
    pub expect: Expect,
}

/// bincode's varint (docs/protocol.md).
fn varint(v: u64) -> Vec<u8> {
    match v {
        0..=250 => vec![v as u8],
        251..=0xffff => [&[251u8][..], &(v as u16).to_le_bytes()].concat(),
        0x1_0000..=0xffff_ffff => [&[252u8][..], &(v as u32).to_le_bytes()].concat(),
        _ => [&[253u8][..], &v.to_le_bytes()].concat(),
    }
}

/// An inline packet (protocol version 1) around `payload`.
fn inline(payload: &[u8], fd_count: u32) -> Vec<u8> {
    let mut p = b"MFIP".to_vec();
    p.extend_from_slice(&1u16.to_le_bytes());
    p.extend_from_slice(&0u16.to_le_bytes());
    p.extend_from_slice(&fd_count.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    p.extend_from_slice(payload);
    p
}

/// The payload of a `Msg` with `pad` zero bytes in `bytes`, `buffer` = fd #0 if `buffer`,
/// then the encoded `wide`, `units` and `tree` fields.
fn msg_payload(pad: usize, buffer: bool, wide: &[u8], units: &[u8], tree: &[u8]) -> Vec<u8> {
    // n = 7, text "", numbers [], bytes, shape Unit, buffer, file None, others [],
    // reply None.
    let mut p = vec![7, 0, 0];
    p.extend(varint(pad as u64));
    p.resize(p.len() + pad, 0);
    p.push(0);
    p.extend_from_slice(if buffer { &[1, 0] } else { &[0] });
    p.extend_from_slice(&[0, 0, 0]);
    p.extend_from_slice(wide);
    p.extend_from_slice(units);
    p.extend_from_slice(tree);
    p
}

/// `tree` = `Some` of `One` nested `depth` times around a `Leaf`: `depth + 3` levels
/// (the `Msg` struct, the option, the enums).
fn nested_tree(depth: usize) -> Vec<u8> {
    let mut t = vec![1];
    t.extend(std::iter::repeat_n(1u8, depth));
    t.push(0);
    t
}

/// The regression inputs of both targets.
pub fn regressions() -> Vec<Regression> {
    let empty = [0u8];
    let packet = |name, payload: Vec<u8>, expect| Regression {
        name,
        target: "packet",
        input: inline(&payload, 0),
        expect,
    };
    let mut all = Vec::new();
    // Heap: 60 000 `None`s of 264 bytes each in a 60 KB packet (15 MB in memory).
    let mut wide = varint(60_000);
    wide.resize(wide.len() + 60_000, 0);
    all.push(packet(
        "regress-heap-wide-none",
        msg_payload(0, false, &wide, &empty, &empty),
        Expect::HeapLimit,
    ));
    // Heap: 100 nested `Many`s each claiming 40 000 children, behind 60 KB of bytes that
    // make the claims plausible: serde preallocates 960 KB for each (96 MB in all, before).
    let mut tree = vec![1];
    for _ in 0..100 {
        tree.push(2);
        tree.extend(varint(40_000));
    }
    tree.push(0);
    all.push(packet(
        "regress-heap-prealloc-every-level",
        msg_payload(60_000, false, &empty, &empty, &tree),
        Expect::HeapLimit,
    ));
    // Elements: the payload's length plus 65 536 zero-sized elements, and one more.
    for (name, extra, expect) in [
        ("regress-elements-at-budget", 0, Expect::Message),
        (
            "regress-elements-over-budget",
            1,
            Expect::Codec("collection elements"),
        ),
    ] {
        // The budget: the payload's length (with a 5-byte count) plus 65 536.
        let len = msg_payload(0, false, &empty, &varint(1 << 16), &empty).len() as u64;
        let n = len + 65_536 + extra;
        all.push(packet(
            name,
            msg_payload(0, false, &empty, &varint(n), &empty),
            expect,
        ));
    }
    // Depth: `Msg` (1) + `Option` (1) + `One`s + `Leaf`: 128 levels, then 129.
    all.push(packet(
        "regress-depth-128",
        msg_payload(0, false, &empty, &empty, &nested_tree(125)),
        Expect::Message,
    ));
    all.push(packet(
        "regress-depth-129",
        msg_payload(0, false, &empty, &empty, &nested_tree(126)),
        Expect::Codec("deeper than 128 levels"),
    ));
    // A write-only reopen of a sealed memfd where a `Frozen` is expected.
    let mut input = vec![1, 9];
    input.extend(inline(&msg_payload(0, true, &empty, &empty, &empty), 1));
    all.push(Regression {
        name: "regress-frozen-write-only",
        target: "typed_fds",
        input,
        expect: Expect::NotReadable,
    });
    all
}
