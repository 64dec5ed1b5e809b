//! Hostile packets, crafted byte by byte with the raw socket (following docs/protocol.md):
//! each gets its typed error, nothing panics, no fd leaks, and the channel stays usable.
//!
//! Every test takes `FD_LOCK` so that the open-fd counts of one test are not disturbed by
//! another running in parallel in this binary.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use memfile_core::Frozen;
use memfile_core::{FrozenErrorKind, Seal, Seals};
use memfile_ipc::raw::RawSocket;
use memfile_ipc::{Error, Fd, Receiver, Sender};
use serde::{Deserialize, Serialize};

mod util_wire;
use util_wire::{header, inline, lock, memfd_with, open_fds, sealed, send};

#[derive(Debug, Serialize, Deserialize)]
struct Two {
    a: Fd<Frozen>,
    b: Fd<Frozen>,
}

/// A typed receiver and the raw socket that feeds it.
fn pair<T>() -> (RawSocket, Receiver<T>) {
    let (a, b) = RawSocket::pair().unwrap();
    (a, Receiver::from_raw(Arc::new(b)))
}

/// Checks that after the bad packet the receiver still works: a good message goes through.
fn still_usable(raw: &RawSocket, rx: &Receiver<Two>) {
    let (x, y) = (sealed(b"x"), sealed(b"yy"));
    send(raw, &inline(&[0, 1], 2), &[x.as_fd(), y.as_fd()]);
    let two = rx.recv().unwrap();
    assert_eq!((&two.a[..], &two.b[..]), (&b"x"[..], &b"yy"[..]));
}

/// Runs `bad` (which sends one bad packet), expects `check` to accept the error, then checks
/// the receiver still works and no fd leaked.
fn expect_error(bad: impl FnOnce(&RawSocket), check: impl FnOnce(&Error) -> bool) {
    let (raw, rx) = pair::<Two>();
    let before = open_fds();
    bad(&raw);
    let err = rx.recv().unwrap_err();
    assert!(check(&err), "unexpected error: {err:?}");
    // Display names the problem (never empty).
    assert!(!err.to_string().is_empty());
    assert_eq!(open_fds(), before, "fd leak after {err}");
    still_usable(&raw, &rx);
    assert_eq!(open_fds(), before, "fd leak after a good message");
}

#[test]
fn bad_headers() {
    let _g = lock();
    let proto = |e: &Error| matches!(e, Error::Protocol { .. });
    // Bad magic.
    expect_error(
        |raw| {
            let mut p = inline(&[], 0);
            p[0] = b'X';
            send(raw, &p, &[]);
        },
        proto,
    );
    // Another version (this crate receives versions 1 and 2).
    expect_error(
        |raw| send(raw, &header(3, 0, 0, 0, 0), &[]),
        |e| {
            matches!(
                e,
                Error::VersionMismatch {
                    ours: 2,
                    theirs: 3,
                    ..
                }
            )
        },
    );
    // Unknown flag, reserved field set.
    expect_error(|raw| send(raw, &header(1, 4, 0, 0, 0), &[]), proto);
    expect_error(|raw| send(raw, &header(1, 0, 0, 1, 0), &[]), proto);
    // Shorter than a header.
    expect_error(|raw| send(raw, b"MFIP\x01\x00", &[]), proto);
    // Length claims more (and less) than arrived.
    expect_error(|raw| send(raw, &header(1, 0, 0, 0, 1000), &[]), proto);
    expect_error(
        |raw| {
            let mut p = header(1, 0, 0, 0, 1);
            p.extend_from_slice(&[0, 1, 2]);
            send(raw, &p, &[]);
        },
        proto,
    );
    // fd count differs from the fds that came (both ways); the fds are closed.
    expect_error(
        |raw| {
            let f = sealed(b"a");
            send(raw, &inline(&[0, 0], 2), &[f.as_fd()]);
        },
        proto,
    );
    expect_error(
        |raw| {
            let (f, g) = (sealed(b"a"), sealed(b"b"));
            send(raw, &inline(&[0, 1], 1), &[f.as_fd(), g.as_fd()]);
        },
        proto,
    );
    // A spilled packet carrying bytes after its header.
    expect_error(
        |raw| {
            let f = sealed(&[0, 1]);
            let mut p = header(1, 1, 1, 0, 2);
            p.push(0);
            send(raw, &p, &[f.as_fd()]);
        },
        proto,
    );
}

#[test]
fn bad_fd_indexes() {
    let _g = lock();
    expect_error(
        |raw| {
            let f = sealed(b"a");
            send(raw, &inline(&[0, 5], 1), &[f.as_fd()]);
        },
        |e| matches!(e, Error::FdIndexOutOfRange { index: 5, count: 1 }),
    );
    expect_error(
        |raw| {
            let (f, g) = (sealed(b"a"), sealed(b"b"));
            send(raw, &inline(&[1, 1], 2), &[f.as_fd(), g.as_fd()]);
        },
        |e| matches!(e, Error::FdIndexReused { index: 1 }),
    );
    // No fds at all.
    expect_error(
        |raw| send(raw, &inline(&[0, 1], 0), &[]),
        |e| matches!(e, Error::FdIndexOutOfRange { index: 0, count: 0 }),
    );
}

/// Sends `fd` as field `b` of a `Two` and expects `BadBuffer` for index 1 of `kind`.
fn bad_frozen(fd: BorrowedFd<'_>, kind: impl Fn(&FrozenErrorKind) -> bool) {
    expect_error(
        |raw| {
            let good = sealed(b"fine");
            send(raw, &inline(&[0, 1], 2), &[good.as_fd(), fd]);
        },
        |e| matches!(e, Error::BadBuffer { index: 1, kind: k, .. } if kind(k)),
    );
}

#[test]
fn unsealed_and_wrong_kinds_where_a_frozen_is_expected() {
    let _g = lock();
    let not_sealed = |k: &FrozenErrorKind| matches!(k, FrozenErrorKind::NotSealed { .. });
    let not_memfd = |k: &FrozenErrorKind| matches!(k, FrozenErrorKind::NotMemfd(_));
    bad_frozen(memfd_with(b"data", &[]).as_fd(), not_sealed);
    bad_frozen(
        memfd_with(b"data", &[Seal::FutureWrite, Seal::Shrink]).as_fd(),
        not_sealed,
    );
    bad_frozen(memfd_with(b"data", &[Seal::Write]).as_fd(), not_sealed);
    let (r, w) = nix::unistd::pipe().unwrap();
    bad_frozen(r.as_fd(), not_memfd);
    drop((r, w));
    let dir = std::fs::File::open("/tmp").unwrap();
    bad_frozen(dir.as_fd(), not_memfd);
    let opath: OwnedFd = nix::fcntl::open(
        "/proc/self/exe",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    bad_frozen(
        opath.as_fd(),
        |k| matches!(k, FrozenErrorKind::NotMemfd(what) if what.contains("O_PATH")),
    );
    // The error names the fd, the seals found and the seals required.
    let (raw, rx) = pair::<Two>();
    let m = memfd_with(b"data", &[Seal::Shrink]);
    send(
        &raw,
        &inline(&[0, 1], 2),
        &[sealed(b"ok").as_fd(), m.as_fd()],
    );
    let e = rx.recv().unwrap_err();
    let Error::BadBuffer {
        index: 1,
        kind: FrozenErrorKind::NotSealed { found, required },
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    // (The kernel may add `Exec` by itself: memfds of a noexec default.)
    assert!(
        found.contains(Seal::Shrink) && !found.contains(Seal::Write),
        "{found:?}"
    );
    let mut write_shrink = Seals::from(Seal::Write);
    write_shrink.insert(Seal::Shrink);
    assert_eq!(*required, write_shrink);
    let msg = e.to_string();
    assert!(
        msg.contains("fd #1")
            && msg.contains(&format!("seals found: {found};"))
            && msg.contains(&format!("required: {required};"))
            && msg.contains("missing: Write"),
        "{msg}"
    );
}

#[test]
fn extra_unreferenced_fds_are_closed() {
    let _g = lock();
    let (raw, rx) = pair::<Two>();
    let before = open_fds();
    let fs: Vec<Frozen> = (0..6).map(|i| sealed(&[i; 3])).collect();
    let borrowed: Vec<BorrowedFd<'_>> = fs.iter().map(|f| f.as_fd()).collect();
    send(&raw, &inline(&[4, 2], 6), &borrowed);
    drop(fs);
    let two = rx.recv().unwrap();
    assert_eq!((&two.a[..], &two.b[..]), (&[4u8; 3][..], &[2u8; 3][..]));
    drop(two);
    assert_eq!(open_fds(), before);
}

#[test]
fn bad_spilled_payloads() {
    let _g = lock();
    // Spilled payload in an unsealed memfd.
    expect_error(
        |raw| {
            let m = memfd_with(&[0, 1], &[]);
            send(raw, &header(1, 1, 1, 0, 2), &[m.as_fd()]);
        },
        |e| {
            matches!(
                e,
                Error::BadBuffer {
                    index: 0,
                    kind: FrozenErrorKind::NotSealed { .. },
                    ..
                }
            )
        },
    );
    // Announced length differs from the memfd's size (shorter and longer).
    expect_error(
        |raw| send(raw, &header(1, 1, 1, 0, 2), &[sealed(&[0, 1, 2]).as_fd()]),
        |e| {
            matches!(
                e,
                Error::BadBuffer {
                    index: 0,
                    kind: FrozenErrorKind::TooLarge { len: 3, max: 2 },
                    ..
                }
            )
        },
    );
    expect_error(
        |raw| send(raw, &header(1, 1, 1, 0, 3), &[sealed(&[0, 1]).as_fd()]),
        |e| matches!(e, Error::Protocol { .. }),
    );
    // A pipe as the payload.
    expect_error(
        |raw| {
            let (r, _w) = nix::unistd::pipe().unwrap();
            send(raw, &header(1, 1, 1, 0, 2), &[r.as_fd()]);
        },
        |e| {
            matches!(
                e,
                Error::BadBuffer {
                    index: 0,
                    kind: FrozenErrorKind::NotMemfd(_),
                    ..
                }
            )
        },
    );
    // A good spilled payload whose fields refer to the fds before it.
    let (raw, rx) = pair::<Two>();
    let (x, y, payload) = (sealed(b"x"), sealed(b"y"), sealed(&[1, 0]));
    send(
        &raw,
        &header(1, 1, 3, 0, 2),
        &[x.as_fd(), y.as_fd(), payload.as_fd()],
    );
    let two = rx.recv().unwrap();
    assert_eq!((&two.a[..], &two.b[..]), (&b"y"[..], &b"x"[..]));
    // A field may not claim the spill memfd itself.
    send(
        &raw,
        &header(1, 1, 2, 0, 2),
        &[x.as_fd(), sealed(&[0, 1]).as_fd()],
    );
    assert!(matches!(
        rx.recv(),
        Err(Error::FdIndexOutOfRange { index: 1, count: 1 })
    ));
}

#[test]
fn bad_payload_bytes() {
    let _g = lock();
    // Not a `Two` (index is not a valid varint).
    expect_error(
        |raw| send(raw, &inline(&[0xff; 3], 0), &[]),
        |e| {
            matches!(
                e,
                Error::Codec {
                    encoding: false,
                    ..
                }
            )
        },
    );
    // Trailing bytes.
    expect_error(
        |raw| {
            let (x, y) = (sealed(b"x"), sealed(b"y"));
            send(raw, &inline(&[0, 1, 7], 2), &[x.as_fd(), y.as_fd()]);
        },
        |e| {
            matches!(
                e,
                Error::Codec {
                    encoding: false,
                    ..
                }
            )
        },
    );
    // A string that claims 2^60 bytes: refused by the bytes present (that nothing is
    // allocated for the claim is measured in hostile.rs, `huge_length_claims_allocate_
    // nothing_big`).
    let (raw, rx) = pair::<String>();
    let mut payload = vec![0xfd]; // varint marker: u64 follows
    payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
    send(&raw, &inline(&payload, 0), &[]);
    let e = rx.recv().unwrap_err();
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
}

#[derive(Debug, Serialize, Deserialize)]
struct WithSocket {
    reply: Sender<u8>,
}

#[test]
fn socket_field_needs_a_seqpacket_socket() {
    let _g = lock();
    let (raw, rx) = pair::<WithSocket>();
    let before = open_fds();
    let (r, w) = nix::unistd::pipe().unwrap();
    send(&raw, &inline(&[0], 1), &[r.as_fd()]);
    drop((r, w));
    let e = rx.recv().unwrap_err();
    assert!(matches!(e, Error::BadFdKind { index: 0, .. }), "{e:?}");
    // A stream socket is refused too.
    let (s1, s2) = std::os::unix::net::UnixStream::pair().unwrap();
    send(&raw, &inline(&[0], 1), &[s1.as_fd()]);
    drop((s1, s2));
    assert!(matches!(rx.recv(), Err(Error::BadFdKind { index: 0, .. })));
    assert_eq!(open_fds(), before);
    // And a real one works.
    let (a, b) = RawSocket::pair().unwrap();
    send(&raw, &inline(&[0], 1), &[a.as_fd()]);
    let got = rx.recv().unwrap();
    drop(a);
    got.reply.send(&7).unwrap();
    let mut buf = [0u8; 64];
    let n = b
        .recv(
            &mut buf,
            &mut Vec::new(),
            memfile_ipc::raw::RecvMode::Blocking,
        )
        .unwrap();
    assert!(
        n > 24,
        "the reply went through the received socket: {n} bytes"
    );
}
