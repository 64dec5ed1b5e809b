//! Sparse sealed buffers (issue 10, item 4): a spilled payload or a `Frozen` field with
//! holes below its end makes the receiver pay for memory its sender never paid for. The
//! hole check is `lseek(SEEK_HOLE)`: `st_blocks` also counts pages allocated past the end
//! with `fallocate(FALLOC_FL_KEEP_SIZE)`, which hid the holes from the old check.

mod util_wire;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use memfile_core::{Frozen, FrozenErrorKind, MemFile, Seal, WritableRegion};
use memfile_ipc::fd::Fd;
use memfile_ipc::raw::RawSocket;
use memfile_ipc::{Error, Limits, Receiver, channel};
use nix::fcntl::{FallocateFlags, fallocate};
use util_wire::{FLAG_SPILLED, header, send, varint};

const PAGE: u64 = 4096;

/// A memfd of `len` bytes with `head` written at 0, everything else a hole, and `extra`
/// bytes allocated *past* its end (`FALLOC_FL_KEEP_SIZE`), sealed for good.
fn holes_padded_past_eof(head: &[u8], len: u64, extra: u64) -> MemFile {
    let m = MemFile::create_sealable("sparse-padded").unwrap();
    m.set_len(len).unwrap();
    m.as_file().write_all_at(head, 0).unwrap();
    if extra > 0 {
        fallocate(
            m.as_fd(),
            FallocateFlags::FALLOC_FL_KEEP_SIZE,
            len as i64,
            extra as i64,
        )
        .unwrap();
    }
    m.add_seals(Seal::Write | Seal::Shrink | Seal::Grow | Seal::Seal)
        .unwrap();
    m
}

/// `st_blocks * 512`: what the old check compared with the length.
fn allocated_bytes(m: &MemFile) -> u64 {
    let st = nix::sys::stat::fstat(m.as_fd()).unwrap();
    st.st_blocks as u64 * 512
}

/// A spill memfd of 8 MiB with one written page and 8 MiB allocated past its end: the
/// allocated-bytes count says "full", the file is all holes after its first page. The old
/// check accepted it (and the decoder then read 8 MiB of holes); now it is refused, naming
/// the fd and the hole, and the receiver stays usable.
#[test]
fn sparse_spill_padded_past_eof_is_refused() {
    let len: u64 = 8 << 20;
    // A `Vec<u8>` of `len - 4` bytes: 4 bytes of varint length, then the bytes.
    let body = len - 5;
    let mut head = varint(body);
    assert_eq!(head.len(), 5);
    head.extend_from_slice(b"data");
    let m = holes_padded_past_eof(&head, len, len);
    assert!(
        allocated_bytes(&m) >= len,
        "precondition: st_blocks counts the pages past the end ({} < {len})",
        allocated_bytes(&m)
    );

    let (a, b) = RawSocket::pair().unwrap();
    let rx: Receiver<Vec<u8>> = Receiver::from_raw(Arc::new(b));
    send(&a, &header(1, FLAG_SPILLED, 1, 0, len), &[m.as_fd()]);
    let e = rx.recv().unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("fd #0"), "{text}");
    assert!(text.contains(&format!("{len} bytes allocated")), "{text}");
    assert!(
        text.contains(&format!("first hole is at offset {PAGE}")),
        "{text}"
    );

    // Still usable: a good inline message goes through.
    let payload = [varint(3), b"abc".to_vec()].concat();
    send(&a, &util_wire::inline(&payload, 0), &[]);
    assert_eq!(rx.recv().unwrap(), b"abc");
}

/// The same file written in full is accepted: the check refuses holes, not spills.
#[test]
fn fully_written_spill_is_accepted() {
    let len: u64 = 1 << 20;
    let mut payload = varint(len - 5);
    payload.resize(len as usize, 7);
    let m = MemFile::create_sealable("full-spill").unwrap();
    m.as_file().write_all_at(&payload, 0).unwrap();
    m.add_seals(Seal::Write | Seal::Shrink).unwrap();
    let (a, b) = RawSocket::pair().unwrap();
    let rx: Receiver<Vec<u8>> = Receiver::from_raw(Arc::new(b));
    send(&a, &header(1, FLAG_SPILLED, 1, 0, len), &[m.as_fd()]);
    let v = rx.recv().unwrap();
    assert_eq!(v.len() as u64, len - 5);
    assert!(v.iter().all(|&b| b == 7));
}

/// A `Frozen` field with holes (with and without pages padded past its end) is refused by
/// default with `BadBuffer` of kind `Sparse`, naming the first hole; a receiver that opts
/// out with `allow_sparse_buffers(true)` gets it.
#[test]
fn sparse_frozen_field_refused_by_default_accepted_with_the_opt_out() {
    let len: u64 = 1 << 20;
    for extra in [0, len] {
        let sparse = holes_padded_past_eof(b"head", len, extra);
        // `from_fd` (not `_fully_allocated`) takes it: the sender side does not check.
        let frozen = Frozen::from_fd(sparse.into_fd()).unwrap();
        assert_eq!(frozen.first_hole().unwrap(), Some(PAGE));

        let (tx, rx) = channel::<Fd<Frozen>>().unwrap();
        tx.send(&Fd::new(frozen.clone())).unwrap();
        let e = rx.recv().unwrap_err();
        match &e {
            Error::BadBuffer {
                index: 0,
                kind:
                    FrozenErrorKind::Sparse {
                        len: l,
                        first_hole: Some(hole),
                    },
                ..
            } => assert_eq!((*l, *hole), (len, PAGE), "{e}"),
            other => panic!("extra {extra}: expected BadBuffer(Sparse), got {other:?}"),
        }
        assert!(
            e.to_string().contains("first hole is at offset 4096"),
            "{e}"
        );

        let rx = rx.with_limits(Limits::default().allow_sparse_buffers(true));
        tx.send(&Fd::new(frozen)).unwrap();
        let got = rx.recv().unwrap();
        assert_eq!(got.len() as u64, len);
        assert_eq!(&got[..4], b"head");
    }
}

/// Every producer of the crate makes buffers that a default receiver accepts, whatever
/// the caller left unwritten.
#[test]
fn own_producers_pass_the_default_receiver() {
    let len = 1 << 20;
    let mut producers: Vec<(&str, Frozen)> = Vec::new();

    producers.push((
        "Frozen::build, one byte written",
        Frozen::build("untouched", len, |buf| buf[0] = 1).unwrap(),
    ));
    producers.push((
        "Frozen::build, odd length",
        Frozen::build("odd", 3 * PAGE as usize + 5, |_| {}).unwrap(),
    ));
    producers.push((
        "Frozen::from_bytes",
        Frozen::from_bytes("bytes", &vec![0; len]).unwrap(),
    ));
    let mut region = WritableRegion::new("region", len).unwrap();
    region[PAGE as usize] = 9;
    producers.push(("WritableRegion::freeze", region.freeze().unwrap()));

    let holey = MemFile::create_sealable("holey").unwrap();
    holey.set_len(len as u64).unwrap();
    holey.as_file().write_all_at(b"x", 2 * PAGE).unwrap();
    producers.push(("MemFile::freeze, set_len", holey.freeze().unwrap()));

    let reserved = MemFile::create_sealable("reserved").unwrap();
    reserved.allocate(0, len as u64).unwrap(); // reserved, not written: holes to SEEK_HOLE
    producers.push(("MemFile::freeze, fallocate", reserved.freeze().unwrap()));

    let padded = MemFile::create_sealable("padded").unwrap();
    padded.set_len(len as u64).unwrap();
    fallocate(
        padded.as_fd(),
        FallocateFlags::FALLOC_FL_KEEP_SIZE,
        len as i64,
        len as i64,
    )
    .unwrap();
    producers.push((
        "MemFile::freeze, pages past the end",
        padded.freeze().unwrap(),
    ));

    let (tx, rx) = channel::<Fd<Frozen>>().unwrap();
    for (what, frozen) in producers {
        assert_eq!(frozen.first_hole().unwrap(), None, "{what}");
        tx.send(&Fd::new(frozen.clone())).unwrap();
        let got = rx.recv().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(&got[..], &frozen[..], "{what}");
    }
}
