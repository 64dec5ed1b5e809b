//! The spill path: messages above the inline limit travel as a sealed memfd.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use memfile_core::{Frozen, FrozenErrorKind, MemFile, Seal};
use memfile_ipc::raw::{RawSocket, RecvMode};
use memfile_ipc::{Error, Fd, Limits, Receiver, Sender};
use serde::{Deserialize, Serialize};

/// Receives one raw packet and returns (flags, fd count, payload length, bytes received).
fn raw_header(raw: &RawSocket) -> (u16, u32, u64, usize, Vec<OwnedFd>) {
    let mut buf = vec![0u8; 1 << 20];
    let mut fds = Vec::new();
    let n = raw.recv(&mut buf, &mut fds, RecvMode::NonBlocking).unwrap();
    assert_eq!(&buf[0..4], b"MFIP");
    assert_eq!(u16::from_le_bytes([buf[4], buf[5]]), 2);
    let flags = u16::from_le_bytes([buf[6], buf[7]]);
    let fd_count = u32::from_le_bytes(buf[8..12].try_into().unwrap());
    // 12..16: the message type's fingerprint (tests/type_check.rs), never 0 by default.
    assert_ne!(&buf[12..16], &[0; 4]);
    let len = u64::from_le_bytes(buf[16..24].try_into().unwrap());
    (flags, fd_count, len, n, fds)
}

#[test]
fn inline_up_to_the_limit_spilled_above() {
    let (a, b) = RawSocket::pair().unwrap();
    let tx: Sender<Vec<u8>> = Sender::from_raw(Arc::new(a)).with_limits(Limits::default());
    let limit = tx.inline_limit();
    assert!(limit > 100_000, "derived from SO_SNDBUF: {limit}");
    // A Vec<u8> of n bytes encodes as a varint length (here 5 bytes) plus n bytes.
    let n_inline = limit - 5;
    tx.send(&vec![1; n_inline]).unwrap();
    let (flags, fds, len, n, _) = raw_header(&b);
    assert_eq!((flags, fds, len, n), (0, 0, limit as u64, 24 + limit));
    tx.send(&vec![1; n_inline + 1]).unwrap();
    let (flags, fds, len, n, got) = raw_header(&b);
    assert_eq!((flags, fds, len, n), (1, 1, limit as u64 + 1, 24));
    // The spilled payload is a sealed memfd of exactly that length.
    let payload = Frozen::from_fd(got.into_iter().next().unwrap()).unwrap();
    assert_eq!(payload.len(), limit + 1);
}

#[test]
fn spilled_round_trip_at_the_boundary() {
    let (tx, rx) = memfile_ipc::channel::<Vec<u8>>().unwrap();
    let limit = tx.inline_limit();
    for n in [limit - 6, limit - 5, limit - 4, 3 * limit] {
        let msg: Vec<u8> = (0..n).map(|i| (i % 241) as u8).collect();
        tx.send(&msg).unwrap();
        assert_eq!(rx.recv().unwrap(), msg);
    }
}

#[derive(Serialize, Deserialize)]
struct Mixed {
    #[serde(with = "serde_bytes")]
    bulk: Vec<u8>,
    buffers: Vec<Fd<Frozen>>,
}

#[test]
fn spilled_message_with_fd_fields() {
    let (tx, rx) = memfile_ipc::channel::<Mixed>().unwrap();
    let tx = tx.with_limits(Limits::default().inline_limit(Some(1000)));
    let buffers = (0..10u8)
        .map(|i| Fd::new(Frozen::from_bytes("b", &[i; 10]).unwrap()))
        .collect();
    tx.send(&Mixed {
        bulk: vec![9; 5000],
        buffers,
    })
    .unwrap();
    let got = rx.recv().unwrap();
    assert_eq!(got.bulk, vec![9; 5000]);
    for (i, b) in got.buffers.iter().enumerate() {
        assert_eq!(&b[..], &[i as u8; 10]);
    }
}

#[test]
fn receiver_limit_applies_to_spilled_messages() {
    let (tx, rx) = memfile_ipc::channel::<Vec<u8>>().unwrap();
    let rx: Receiver<Vec<u8>> = rx.with_limits(Limits::default().max_message_bytes(1 << 20));
    tx.send(&vec![0; 2 << 20]).unwrap();
    let e = rx.recv().unwrap_err();
    assert!(
        matches!(e, Error::MessageTooLarge { max: 1_048_576, .. }),
        "{e:?}"
    );
    tx.send(&vec![3; 1 << 19]).unwrap();
    assert_eq!(rx.recv().unwrap(), vec![3; 1 << 19]);
}

/// A sealed memfd of `len` bytes with nothing allocated (never written, no `fallocate`):
/// made by hand rather than with `Frozen::build`, which allocates its pages up front unless
/// the host's shmem THP setting is `advise`.
fn sparse_sealed(len: u64) -> Frozen {
    let m = MemFile::create_sealable("sparse").unwrap();
    m.set_len(len).unwrap();
    for seal in [Seal::Write, Seal::Shrink, Seal::Grow, Seal::Seal] {
        m.add_seal(seal).unwrap();
    }
    Frozen::from_fd(m.into_fd()).unwrap()
}

/// Bytes of memory the file behind `fd` has allocated (`st_blocks` is in 512-byte units).
fn allocated(fd: &impl AsFd) -> u64 {
    nix::sys::stat::fstat(fd.as_fd()).unwrap().st_blocks as u64 * 512
}

#[test]
fn sparse_gib_frozen_field_and_mapped_budget() {
    let (tx, rx) = memfile_ipc::channel::<Fd<Frozen>>().unwrap();
    // Sparse `Frozen` fields are refused by default (sparse_buffers.rs); this receiver
    // trusts its peer with them, and the mapped-bytes budget still applies.
    let rx = rx.with_limits(Limits::default().allow_sparse_buffers(true));
    // 1 GiB of holes: costs no memory to make or to send.
    let sparse = sparse_sealed(1 << 30);
    assert_eq!(allocated(&sparse), 0);
    tx.send(&Fd::new(sparse.clone())).unwrap();
    let got = rx.recv().unwrap();
    assert_eq!(got.len(), 1 << 30);
    assert_eq!(allocated(&*got), 0, "receiving maps, it does not allocate");
    // Reading allocates the pages read, no more: two (huge, with shmem THP) pages at most.
    assert_eq!((got[0], got[(1 << 30) - 1]), (0, 0));
    let after_reading = allocated(&*got);
    assert!(
        after_reading <= 2 * (2 << 20),
        "{after_reading} bytes allocated"
    );
    drop(got);
    let rx = rx.with_limits(Limits::default().max_mapped_bytes(1 << 29));
    tx.send(&Fd::new(sparse)).unwrap();
    let e = rx.recv().unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadBuffer {
                index: 0,
                kind: FrozenErrorKind::TooLarge {
                    len: 0x4000_0000,
                    max: 0x2000_0000
                },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("fd #0"), "{e}");
}

/// Sends `payload` (a sealed memfd) as a spilled payload of `len` bytes to a `Receiver<String>`.
fn send_spilled(payload: &impl AsFd, len: u64) -> memfile_ipc::Result<String> {
    use std::io::IoSlice;

    let (a, b) = RawSocket::pair().unwrap();
    let rx: Receiver<String> = Receiver::from_raw(Arc::new(b));
    let mut header = b"MFIP\x01\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00".to_vec();
    header.extend_from_slice(&len.to_le_bytes());
    a.send(&[IoSlice::new(&header)], &[payload.as_fd()])
        .unwrap();
    rx.recv()
}

/// A spilled payload whose string claims 40 GiB, more than this machine has: in a fully
/// allocated 1 MiB memfd, refused as a codec error by the bytes present (that nothing is
/// allocated for the claim is measured in hostile.rs); in a sparse 2 GiB one (one page
/// written), refused before decoding because it is not fully allocated.
#[test]
fn huge_length_claim_in_a_spilled_payload_is_refused() {
    let mut claim = vec![253u8]; // varint marker: a u64 length follows
    claim.extend_from_slice(&(40u64 << 30).to_le_bytes());
    let len: u64 = 1 << 20;
    let m = MemFile::create_sealable("claim").unwrap();
    // Written in full: on tmpfs a page that `fallocate` reserved still counts as a hole.
    let mut bytes = vec![0u8; len as usize];
    bytes[..claim.len()].copy_from_slice(&claim);
    m.as_file().write_all_at(&bytes, 0).unwrap();
    for seal in [Seal::Write, Seal::Shrink] {
        m.add_seal(seal).unwrap();
    }
    assert_eq!(allocated(&m), len);
    let e = send_spilled(&m, len).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Codec {
                encoding: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("claims more bytes than the message holds"),
        "{e}"
    );

    let len: u64 = 2 << 30;
    let m = MemFile::create_sealable("sparse-claim").unwrap();
    m.set_len(len).unwrap();
    m.as_file().write_all_at(&claim, 0).unwrap();
    for seal in [Seal::Write, Seal::Shrink] {
        m.add_seal(seal).unwrap();
    }
    let e = send_spilled(&m, len).unwrap_err();
    assert!(
        matches!(&e, Error::Protocol { detail, .. } if detail.contains("allocated")),
        "{e:?}"
    );
}
