//! Shared harness of the memfile-ipc fuzz targets.
//!
//! Both targets push their input through the real receive path: a `SOCK_SEQPACKET` socket
//! pair, `recvmsg`, the header checks, the fd checks and the bincode decoder of a
//! `Receiver`. After every input the harness asserts the receiver's contract (a message or a
//! typed per-message error, no fd leak, nothing left queued) and aborts otherwise, which
//! libFuzzer reports as a crash.

use std::io::{IoSlice, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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
pub const FD_KINDS: u8 = 9;

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
            let (r, _w) = std::io::pipe().unwrap();
            r.into()
        }
        _ => Frozen::from_bytes("fuzz", b"")
            .unwrap()
            .try_clone_fd()
            .unwrap(),
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Sends `packet` with `fds` to a fresh receiver and checks its contract; aborts (a crash
/// for libFuzzer) when it is broken.
pub fn check(packet: &[u8], fds: Vec<OwnedFd>) {
    let (a, b) = RawSocket::pair().unwrap();
    let peer = Arc::new(a);
    let rx = Receiver::<Msg>::from_raw(Arc::new(b))
        .with_limits(Limits::default().max_fds(8).max_mapped_bytes(1 << 20));
    let before = open_fds();
    {
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        // A packet larger than the socket buffer cannot be sent: nothing to test.
        if peer.send(&[IoSlice::new(packet)], &borrowed).is_err() {
            return;
        }
    }
    let sent = fds.len();
    drop(fds);
    match rx.try_recv() {
        Ok(_) => {}
        // A well-formed flow-control packet (flag 0x0002, protocol v2) carries no message:
        // the receiver applies it and finds nothing else queued.
        Err(Error::WouldBlock) if packet.len() >= 8 && packet[6] & 2 != 0 => {}
        Err(Error::WouldBlock | Error::Disconnected | Error::Timeout | Error::Io { .. }) => {
            panic!("not a per-message error")
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    assert_eq!(open_fds(), before - sent, "fd leak");
    assert!(
        matches!(rx.try_recv(), Err(Error::WouldBlock)),
        "a packet was left queued"
    );
}

/// The `packet` target: the input is one packet, without fds.
pub fn run_packet(data: &[u8]) {
    check(data, Vec::new());
}

/// The `typed_fds` target: `data[0] % 9` fds, of the kinds `data[1..=n]`, then the packet.
pub fn run_typed(data: &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = (count % 9) as usize;
    if rest.len() < count {
        return;
    }
    let (kinds, packet) = rest.split_at(count);
    check(packet, kinds.iter().map(|&k| make_fd(k)).collect());
}
