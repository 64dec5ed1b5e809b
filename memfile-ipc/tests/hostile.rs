//! The hostile-peer suite (issue 6): a peer that speaks the raw socket directly and sends
//! crafted packets. Every case must give a typed error (never a panic, abort, hang or
//! SIGBUS), leave this process's open-fd count unchanged, and leave the receiver usable for
//! the next valid message. `docs/security.md` lists every case with its result.
//!
//! Every test that counts fds takes `FD_LOCK`: the tests of this binary run in parallel
//! threads, and another test's fds would disturb the count. Cases that could kill the whole
//! process (an abort on allocation failure, a stack overflow, an endless loop) run in a child
//! process: this binary re-executes itself with the case's name in `HOSTILE_CHILD`.

use std::io::{IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memfile_core::{CreateOptions, Frozen, FrozenErrorKind, HugeTlb, MemFile, Seal};
use memfile_ipc::raw::{MAX_FDS_PER_PACKET, RawSocket};
use memfile_ipc::{Error, Fd, Limits, Receiver, Sender};
use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, OFlag, fallocate, open};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

mod util_wire;
use util_wire::{FLAG_SPILLED, header, inline, lock, memfd_with, open_fds, sealed, send, varint};

/// The message type most cases send to: a bit of everything, one `Frozen`.
#[derive(Debug, Serialize, Deserialize)]
struct Msg {
    seq: u64,
    text: String,
    frozen: Fd<Frozen>,
}

/// Two buffers: for the fd-index cases.
#[derive(Debug, Serialize, Deserialize)]
struct Two {
    a: Fd<Frozen>,
    b: Fd<Frozen>,
}

// ---------------------------------------------------------------------------------------
// Packets, after docs/protocol.md.

/// The payload of `Msg { seq, text, frozen: fd #index }`.
fn msg_payload(seq: u64, text: &str, index: u64) -> Vec<u8> {
    let mut p = varint(seq);
    p.extend(varint(text.len() as u64));
    p.extend_from_slice(text.as_bytes());
    p.extend(varint(index));
    p
}

/// A typed receiver of `T`, and the peer's raw end.
fn pair<T>() -> (Arc<RawSocket>, Receiver<T>) {
    let (a, b) = RawSocket::pair().unwrap();
    (Arc::new(a), Receiver::from_raw(Arc::new(b)))
}

/// After a bad packet: a valid `Msg` sent through the crate's own `Sender` over the same
/// socket arrives intact.
fn assert_usable(raw: &Arc<RawSocket>, rx: &Receiver<Msg>) {
    let tx = Sender::<Msg>::from_raw(raw.clone());
    // 5 bytes encoded: fits every limit the cases set.
    let good = Msg {
        seq: 42,
        text: "ok".into(),
        frozen: Fd::new(sealed(b"good")),
    };
    tx.send(&good).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        (got.seq, got.text.as_str(), &got.frozen[..]),
        (42, "ok", &b"good"[..])
    );
}

/// Runs one case against a `Receiver<Msg>` with `limits`: `attack` sends bad packets (and
/// closes every fd it made before returning), the receiver must fail with an error `expect`
/// accepts, the fd count must be what it was, and the receiver must then take a good message.
fn case_with(
    name: &str,
    limits: Limits,
    attack: impl FnOnce(&RawSocket),
    expect: impl FnOnce(&Error) -> bool,
) {
    let err = case_quiet(name, limits, attack, expect);
    println!("{name}: {err}");
}

/// [`case_with`] without printing the error: returns it.
fn case_quiet(
    name: &str,
    limits: Limits,
    attack: impl FnOnce(&RawSocket),
    expect: impl FnOnce(&Error) -> bool,
) -> Error {
    let (raw, rx) = pair::<Msg>();
    let rx = rx.with_limits(limits);
    let before = open_fds();
    attack(&raw);
    let err = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(m) => panic!("{name}: a bad packet was accepted: {m:?}"),
        Err(e) => e,
    };
    assert!(expect(&err), "{name}: unexpected error {err:?}");
    assert!(!err.to_string().is_empty());
    assert_eq!(open_fds(), before, "{name}: fd leak after {err}");
    assert_usable(&raw, &rx);
    assert_eq!(open_fds(), before, "{name}: fd leak after the good message");
    err
}

fn case(name: &str, attack: impl FnOnce(&RawSocket), expect: impl FnOnce(&Error) -> bool) {
    case_with(name, Limits::default(), attack, expect);
}

fn is_protocol(e: &Error) -> bool {
    matches!(e, Error::Protocol { .. })
}

fn is_decode(e: &Error) -> bool {
    matches!(
        e,
        Error::Codec {
            encoding: false,
            ..
        }
    )
}

// ---------------------------------------------------------------------------------------
// Bytes and headers.

#[test]
fn garbage_bytes() {
    let _g = lock();
    case(
        "garbage",
        |raw| send(raw, b"\x00\xffgarbage, not a packet at all", &[]),
        is_protocol,
    );
    // Garbage of every length from 1 to 4096 bytes, without fds and with two (closed).
    let f = sealed(b"x");
    for len in 1..=4096usize {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len * 11) as u8).collect();
        for fds in [&[][..], &[f.as_fd(), f.as_fd()][..]] {
            case_quiet(
                &format!("garbage of {len} bytes with {} fds", fds.len()),
                Limits::default(),
                |raw| send(raw, &bytes, fds),
                is_protocol,
            );
        }
    }
    println!("garbage of every length 1..=4096, with and without fds: Protocol each time");
}

#[test]
fn bad_magic_version_flags_reserved() {
    let _g = lock();
    let good = inline(&msg_payload(1, "a", 0), 1);
    let with_fd = |packet: Vec<u8>| {
        move |raw: &RawSocket| {
            let f = sealed(b"x");
            send(raw, &packet, &[f.as_fd()]);
        }
    };
    for magic in [*b"MFIQ", *b"mfip", [0; 4], *b"PIFM"] {
        let mut p = good.clone();
        p[..4].copy_from_slice(&magic);
        case(&format!("magic {magic:?}"), with_fd(p), is_protocol);
    }
    for version in [0u16, 3, 0x100, u16::MAX] {
        let mut p = good.clone();
        p[4..6].copy_from_slice(&version.to_le_bytes());
        case(
            &format!("version {version}"),
            with_fd(p),
            |e| matches!(e, Error::VersionMismatch { ours: 2, theirs, .. } if *theirs == version),
        );
    }
    for flags in [2u16, 4, 0x8000, u16::MAX] {
        let mut p = good.clone();
        p[6..8].copy_from_slice(&flags.to_le_bytes());
        case(&format!("flags {flags:#x}"), with_fd(p), is_protocol);
    }
    for reserved in [1u32, 0x8000_0000] {
        let mut p = good.clone();
        p[12..16].copy_from_slice(&reserved.to_le_bytes());
        case(&format!("reserved {reserved:#x}"), with_fd(p), is_protocol);
    }
}

#[test]
fn lengths_that_disagree_with_what_arrived() {
    let _g = lock();
    let payload = msg_payload(1, "abc", 0);
    let n = payload.len() as u64;
    for claimed in [n + 1, n + 1000, 1 << 32, u64::MAX, n - 1, 0] {
        let mut p = header(1, 0, 1, 0, claimed);
        p.extend_from_slice(&payload);
        case(
            &format!("payload length {claimed} for {n} bytes"),
            |raw| send(raw, &p, &[sealed(b"x").as_fd()]),
            is_protocol,
        );
    }
    // fd count in the header differs from the fds that came (both ways, and absurdly).
    for (claimed, sent) in [
        (1u32, 0usize),
        (0, 1),
        (1, 3),
        (3, 1),
        (u32::MAX, 1),
        (253, 252),
    ] {
        let p = inline(&payload, claimed);
        case(
            &format!("header says {claimed} fds, {sent} sent"),
            |raw| {
                let f = sealed(b"x");
                send(raw, &p, &vec![f.as_fd(); sent]);
            },
            is_protocol,
        );
    }
    // A header cut short.
    for len in [0usize, 1, 8, 23] {
        let p = inline(&payload, 1)[..len].to_vec();
        case(
            &format!("header cut to {len} bytes"),
            |raw| send(raw, &p, &[sealed(b"x").as_fd()]),
            is_protocol,
        );
    }
    // A header alone: a valid empty payload, which is not a `Msg`.
    case(
        "header with an empty payload",
        |raw| send(raw, &inline(&[], 0), &[]),
        is_decode,
    );
}

#[test]
fn empty_packet() {
    let _g = lock();
    // While the peer stays connected an empty packet is a protocol error, not end-of-file.
    case("empty packet", |raw| send(raw, &[], &[]), is_protocol);
    // A packet of zero bytes that carries fds: the fds are closed.
    case(
        "zero bytes with fds",
        |raw| {
            let f = sealed(b"x");
            send(raw, &[], &[f.as_fd(), f.as_fd()]);
        },
        is_protocol,
    );
}

/// An empty packet, a valid one, and the peer closes before the receiver looks: at the
/// syscall level the empty packet then looks like end-of-file, but bytes are still queued,
/// so it is reported as the protocol error it is and the valid message still arrives.
#[test]
fn empty_packet_then_close() {
    let _g = lock();
    let (raw, rx) = pair::<Msg>();
    let before = open_fds();
    send(&raw, &[], &[]);
    let tx = Sender::<Msg>::from_raw(raw);
    tx.send(&Msg {
        seq: 1,
        text: "after".into(),
        frozen: Fd::new(sealed(b"b")),
    })
    .unwrap();
    drop(tx);
    let first = rx.recv_timeout(Duration::from_secs(10));
    let second = rx.recv_timeout(Duration::from_secs(10));
    let third = rx.recv_timeout(Duration::from_secs(10));
    println!(
        "empty packet, valid packet, close: {first:?} / {:?} / {third:?}",
        second.as_ref().map(|m| &m.text)
    );
    // The valid message is never lost, and only the real end is reported as Disconnected.
    assert!(matches!(first, Err(Error::Protocol { .. })), "{first:?}");
    assert_eq!(second.unwrap().text, "after");
    assert!(
        matches!(third, Err(Error::Disconnected { .. })),
        "{third:?}"
    );
    assert_eq!(open_fds(), before - 1);
}

/// A packet larger than the receiver's buffer (the peer raised its `SO_SNDBUF` past the
/// receiver's inline limit): the kernel truncates it, the fds that came are closed, the
/// receiver goes on.
#[test]
fn packet_larger_than_the_receive_buffer() {
    let _g = lock();
    let (probe, _other) = RawSocket::pair().unwrap();
    let want: usize = 8 << 20;
    if let Err(e) = setsockopt(&probe, sockopt::SndBufForce, &want) {
        println!("skipped: SO_SNDBUFFORCE needs CAP_NET_ADMIN ({e})");
        return;
    }
    drop((probe, _other));
    case(
        "1 MiB inline packet",
        |raw| {
            setsockopt(raw, sockopt::SndBufForce, &want).unwrap();
            let mut p = header(1, 0, 1, 0, 1 << 20);
            p.resize(24 + (1 << 20), 7);
            send(raw, &p, &[sealed(b"x").as_fd()]);
        },
        |e| matches!(e, Error::Truncated { bytes: true, .. }),
    );
}

// ---------------------------------------------------------------------------------------
// Payloads whose lengths claim the moon.

/// Counts the largest single allocation of threads that asked for it, to show that a huge
/// length claim is refused before anything of that size is allocated.
mod alloc_probe {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct Probe;
    pub static LARGEST: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        // `const`, no destructor: safe to touch from inside the allocator.
        pub static ON: Cell<bool> = const { Cell::new(false) };
    }

    fn note(size: usize) {
        if ON.try_with(Cell::get).unwrap_or(false) {
            LARGEST.fetch_max(size, Ordering::Relaxed);
        }
    }

    // SAFETY: every method forwards to `System` unchanged; `note` only reads a thread-local
    // flag and updates an atomic, neither of which allocates.
    unsafe impl GlobalAlloc for Probe {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Runs `f` and returns its result with the largest allocation it made on this thread.
    pub fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
        LARGEST.store(0, Ordering::Relaxed);
        ON.with(|on| on.set(true));
        let r = f();
        ON.with(|on| on.set(false));
        (r, LARGEST.load(Ordering::Relaxed))
    }
}

#[global_allocator]
static PROBE: alloc_probe::Probe = alloc_probe::Probe;

/// The receive buffer with default limits: max(inline limit, 256 KiB) + the 24-byte header,
/// allocated once per thread on its first receive (docs/security.md). The default inline
/// limit (`SO_SNDBUF` − 88) is below 256 KiB; `huge_length_claims_allocate_nothing_big`
/// checks that.
const RECV_BUFFER: usize = (256 << 10) + 24;

/// What a refused claim may allocate once the thread's receive buffer exists: the error's
/// text and bookkeeping, nothing of the claimed size.
const NOTHING: usize = 128;

/// What a refused sequence claim of a few bytes may allocate once the thread's receive
/// buffer exists (a `HashMap`'s first table is the largest: 544 bytes measured).
const SMALL_SEQUENCE: usize = 1 << 10;

/// The codec's text for a string or byte buffer that claims more than the payload holds.
const CLAIMS_MORE: &str = "claims more bytes than the message holds";

/// Sends `payload` inline to a fresh `Receiver<T>` and expects a decode error (whose text
/// contains `text`, if given) with no allocation above `max_alloc`, no fd leak, and a
/// receiver that still takes `good`. With `warm`, this thread's receive buffer is allocated
/// by a good message first, so `max_alloc` bounds what the claim itself costs; without, the
/// receive is this thread's first, so the receive buffer is in the measured allocations.
fn huge_claim<T>(name: &str, payload: &[u8], good: T, warm: bool, max_alloc: usize, text: &str)
where
    T: Serialize + serde::de::DeserializeOwned + std::fmt::Debug + PartialEq,
{
    let (raw, rx) = pair::<T>();
    if warm {
        assert_next_valid(&raw, &rx, &good, name);
    }
    let before = open_fds();
    send(&raw, &inline(payload, 0), &[]);
    let (result, largest) =
        alloc_probe::largest_allocation(|| rx.recv_timeout(Duration::from_secs(10)));
    let err = result.expect_err(name);
    assert!(is_decode(&err), "{name}: {err:?}");
    assert!(err.to_string().contains(text), "{name}: {err}");
    assert!(
        largest <= max_alloc,
        "{name}: allocated {largest} bytes (at most {max_alloc}) for a {}-byte packet",
        payload.len()
    );
    assert_eq!(open_fds(), before, "{name}: fd leak");
    assert_next_valid(&raw, &rx, &good, name);
    assert_eq!(open_fds(), before, "{name}: fd leak after the good message");
    println!("{name}: {err} (largest allocation {largest} bytes)");
}

/// The next valid `T`, sent through the crate's own `Sender` over the same socket, arrives
/// equal to what was sent.
fn assert_next_valid<T>(raw: &Arc<RawSocket>, rx: &Receiver<T>, good: &T, name: &str)
where
    T: Serialize + serde::de::DeserializeOwned + std::fmt::Debug + PartialEq,
{
    Sender::<T>::from_raw(raw.clone()).send(good).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(10));
    assert_eq!(
        got.as_ref().ok(),
        Some(good),
        "{name}: next valid message: {got:?}"
    );
}

#[test]
fn huge_length_claims_allocate_nothing_big() {
    let _g = lock();
    {
        let (tx, _rx) = memfile_ipc::channel::<()>().unwrap();
        assert!(
            tx.inline_limit() + 24 <= RECV_BUFFER,
            "{}",
            tx.inline_limit()
        );
    }
    let claim = |n: u64, tail: &[u8]| [varint(n), tail.to_vec()].concat();
    // This test thread's first receive: the receive buffer is its largest allocation, the
    // claimed length adds nothing bigger.
    huge_claim(
        "Vec<u64> of 2^60 (first receive)",
        &claim(1 << 60, &[1, 2, 3]),
        vec![7u64, 8],
        false,
        RECV_BUFFER,
        "",
    );
    // Sequences, once the receive buffer exists: serde preallocates from the claimed length,
    // a hint the decoder caps at the elements the payload's few bytes can hold.
    huge_claim(
        "Vec<u64> of 2^60",
        &claim(1 << 60, &[1, 2, 3]),
        vec![7u64, 8],
        true,
        SMALL_SEQUENCE,
        "",
    );
    // The cap exactly: a `Vec<u64>` claim followed by 4000 bytes gets at most one element
    // (8 bytes) of capacity per payload byte.
    let payload = claim(1 << 60, &[1; 4000]);
    huge_claim(
        "Vec<u64> of 2^60 in 4009 bytes",
        &payload,
        vec![7u64, 8],
        true,
        8 * payload.len(),
        "",
    );
    huge_claim(
        "Vec<u8> of 2^60",
        &claim(1 << 60, &[1, 2, 3]),
        vec![7u8, 8],
        true,
        SMALL_SEQUENCE,
        "",
    );
    huge_claim(
        "Vec<String> of 2^60",
        &claim(1 << 60, &[3, b'a', b'b', b'c']),
        vec![String::from("ok")],
        true,
        SMALL_SEQUENCE,
        "",
    );
    huge_claim(
        "Vec<Vec<u8>> of 2^40",
        &claim(1 << 40, &varint(1 << 40)),
        vec![vec![1u8], vec![]],
        true,
        SMALL_SEQUENCE,
        "",
    );
    huge_claim(
        "HashMap of 2^60",
        &claim(1 << 60, &[]),
        std::collections::HashMap::from([(1u32, String::from("ok"))]),
        true,
        SMALL_SEQUENCE,
        "",
    );
    // Strings and byte buffers: refused by the bytes present before anything is allocated
    // for them (measured after the receive buffer exists).
    let bytes = serde_bytes::ByteBuf::from(vec![1u8, 2, 3]);
    huge_claim(
        "bytes of 2^60",
        &claim(1 << 60, &[1, 2, 3]),
        bytes.clone(),
        true,
        NOTHING,
        CLAIMS_MORE,
    );
    huge_claim(
        "String of 2^60",
        &claim(1 << 60, b"abc"),
        String::from("ok"),
        true,
        NOTHING,
        CLAIMS_MORE,
    );
    huge_claim(
        "String of u64::MAX",
        &claim(u64::MAX, b"abc"),
        String::from("ok"),
        true,
        NOTHING,
        CLAIMS_MORE,
    );
    // Within the codec's byte limit for a packet this small (64 KiB), beyond what it holds:
    // refused by the bytes present, before a buffer of the claimed size exists.
    huge_claim(
        "String of 60 000 bytes",
        &claim(60_000, b"abc"),
        String::from("ok"),
        true,
        NOTHING,
        "",
    );
    huge_claim(
        "bytes of 60 000",
        &claim(60_000, &[1, 2, 3]),
        bytes.clone(),
        true,
        NOTHING,
        "",
    );
    // Just above what the codec's limit allows for the packet.
    huge_claim(
        "bytes of 1 MiB",
        &claim(1 << 20, &[0; 64]),
        bytes,
        true,
        NOTHING,
        CLAIMS_MORE,
    );
    // `Msg` has no `PartialEq` (its `Frozen` field): checked field by field.
    let (raw, rx) = pair::<Msg>();
    assert_usable(&raw, &rx);
    let before = open_fds();
    let bad = [&[7u8][..], &varint(1 << 60), b"abc"].concat();
    send(&raw, &inline(&bad, 0), &[]);
    let (result, largest) =
        alloc_probe::largest_allocation(|| rx.recv_timeout(Duration::from_secs(10)));
    let err = result.unwrap_err();
    assert!(is_decode(&err), "{err:?}");
    assert!(err.to_string().contains(CLAIMS_MORE), "{err}");
    assert!(largest <= NOTHING, "allocated {largest} bytes");
    assert_eq!(open_fds(), before);
    assert_usable(&raw, &rx);
    assert_eq!(open_fds(), before);
    println!("Msg whose text claims 2^60: {err} (largest allocation {largest} bytes)");
}

/// The receive limit for `small_message_limit_bounds_every_allocation`, and what a receive
/// may allocate beyond it (bookkeeping: fd vectors, error texts).
const SMALL_MAX: u64 = 64 << 10;
const SMALL_SLACK: usize = 16 << 10;

/// Sends `packet` (with `fds`) to a `Receiver<T>` limited to `SMALL_MAX` bytes per message,
/// whose per-thread receive buffer is already allocated; expects an error `expect` accepts,
/// no allocation above `max_alloc`, no fd leak, and `good` to go through next.
fn small_limit_case<T>(
    name: &str,
    max_alloc: usize,
    packet: &[u8],
    fds: &[BorrowedFd<'_>],
    expect: impl FnOnce(&Error) -> bool,
    good: T,
) where
    T: Serialize + serde::de::DeserializeOwned + std::fmt::Debug + PartialEq,
{
    let (raw, rx) = pair::<T>();
    let rx = rx.with_limits(Limits::default().max_message_bytes(SMALL_MAX));
    // The first receive on a thread allocates its buffer, sized by the inline limit (not by
    // `max_message_bytes`): done here, outside the measured receive.
    assert_next_valid(&raw, &rx, &good, name);
    let before = open_fds();
    send(&raw, packet, fds);
    let (result, largest) =
        alloc_probe::largest_allocation(|| rx.recv_timeout(Duration::from_secs(10)));
    let err = result.expect_err(name);
    assert!(expect(&err), "{name}: {err:?}");
    assert!(
        largest <= max_alloc,
        "{name}: allocated {largest} bytes (at most {max_alloc}) with max_message_bytes = \
         {SMALL_MAX}"
    );
    assert_eq!(open_fds(), before, "{name}: fd leak");
    assert_next_valid(&raw, &rx, &good, name);
    assert_eq!(open_fds(), before, "{name}: fd leak after the good message");
    println!("{name}: {err} (largest allocation {largest} bytes)");
}

/// With `max_message_bytes` = 64 KiB, no length a peer claims (in the header, for a string
/// or byte buffer, or for a sequence) makes the receiver allocate more than that limit plus
/// a small constant: serde preallocates from a size hint that the decoder caps at the
/// elements the payload's bytes can hold.
#[test]
fn small_message_limit_bounds_every_allocation() {
    let _g = lock();
    let strict = SMALL_MAX as usize + SMALL_SLACK;
    let claim = |n: u64, tail: &[u8]| [varint(n), tail.to_vec()].concat();
    let text = String::from("ok");
    small_limit_case(
        "64 KiB limit: String of 2^60",
        strict,
        &inline(&claim(1 << 60, b"abc"), 0),
        &[],
        is_decode,
        text.clone(),
    );
    small_limit_case(
        "64 KiB limit: bytes of 2^60",
        strict,
        &inline(&claim(1 << 60, &[1, 2, 3]), 0),
        &[],
        is_decode,
        serde_bytes::ByteBuf::from(vec![1u8, 2]),
    );
    small_limit_case(
        "64 KiB limit: Vec<String> of 2^60",
        strict,
        &inline(&claim(1 << 60, &[3, b'a', b'b', b'c']), 0),
        &[],
        is_decode,
        vec![text.clone()],
    );
    small_limit_case(
        "64 KiB limit: Vec<u64> of 2^60",
        strict,
        &inline(&claim(1 << 60, &[1, 2, 3]), 0),
        &[],
        is_decode,
        vec![1u64, 2],
    );
    // The header claims more than the limit: refused before the payload is looked at.
    small_limit_case(
        "64 KiB limit: inline header claims u64::MAX",
        strict,
        &[header(1, 0, 0, 0, u64::MAX), claim(3, b"abc")].concat(),
        &[],
        |e| matches!(e, Error::Protocol { .. } | Error::MessageTooLarge { .. }),
        text.clone(),
    );
    let over = vec![b'x'; (SMALL_MAX + 1) as usize];
    small_limit_case(
        "64 KiB limit: inline payload of 64 KiB + 1",
        strict,
        &inline(&over, 0),
        &[],
        |e| matches!(e, Error::MessageTooLarge { size, max } if *size == SMALL_MAX + 1 && *max == SMALL_MAX),
        text.clone(),
    );
    // A real, allocated spill memfd of 1 MiB announced as 1 TiB or as itself: not mapped.
    let spill = sealed(&vec![b'y'; 1 << 20]);
    for claimed in [1u64 << 40, 1 << 20] {
        small_limit_case(
            &format!("64 KiB limit: spilled payload claims {claimed} bytes"),
            strict,
            &header(1, FLAG_SPILLED, 1, 0, claimed),
            &[spill.as_fd()],
            |e| matches!(e, Error::MessageTooLarge { size, max } if *size == claimed && *max == SMALL_MAX),
            text.clone(),
        );
    }
}

// ---------------------------------------------------------------------------------------
// Fd counts and indices.

#[test]
fn fds_more_fewer_out_of_range_twice() {
    let _g = lock();
    // More fds than the message references: the message is fine, the rest are closed.
    {
        let (raw, rx) = pair::<Msg>();
        let before = open_fds();
        let fs: Vec<Frozen> = (0..8u8).map(|i| sealed(&[i; 5])).collect();
        let b: Vec<BorrowedFd<'_>> = fs.iter().map(|f| f.as_fd()).collect();
        send(&raw, &inline(&msg_payload(3, "x", 6), 8), &b);
        drop(fs);
        let m = rx.recv().unwrap();
        assert_eq!(&m.frozen[..], &[6u8; 5][..]);
        drop(m);
        assert_eq!(open_fds(), before, "unreferenced fds must be closed");
        assert_usable(&raw, &rx);
        println!("more fds than referenced: accepted, 7 extra fds closed");
    }
    // Fewer fds than referenced.
    let p = inline(&msg_payload(1, "x", 0), 0);
    case(
        "no fd for the one referenced",
        |raw| send(raw, &p, &[]),
        |e| matches!(e, Error::FdIndexOutOfRange { index: 0, count: 0 }),
    );
    // Out-of-range indices, up to the largest u32; a u64 index is not a u32 at all.
    for index in [2u64, 3, 252, 253, u32::MAX as u64] {
        let p = inline(&msg_payload(1, "x", index), 2);
        case(
            &format!("fd index {index} of 2"),
            |raw| {
                let (f, g) = (sealed(b"f"), sealed(b"g"));
                send(raw, &p, &[f.as_fd(), g.as_fd()]);
            },
            |e| matches!(e, Error::FdIndexOutOfRange { index: i, count: 2 } if *i == index),
        );
    }
    let p = inline(&msg_payload(1, "x", 1 << 40), 1);
    case(
        "fd index 2^40",
        |raw| send(raw, &p, &[sealed(b"f").as_fd()]),
        is_decode,
    );
    // The same index twice (through a `Two`: the first field is decoded, then refused).
    {
        let (raw, rx) = pair::<Two>();
        let before = open_fds();
        let (f, g) = (sealed(b"f"), sealed(b"g"));
        send(&raw, &inline(&[1, 1], 2), &[f.as_fd(), g.as_fd()]);
        drop((f, g));
        let e = rx.recv().unwrap_err();
        assert!(matches!(e, Error::FdIndexReused { index: 1 }), "{e:?}");
        assert_eq!(open_fds(), before);
        // A valid `Two` with the indices crossed (raw), then one from the crate's `Sender`.
        let (f, g) = (sealed(b"f"), sealed(b"g"));
        send(&raw, &inline(&[1, 0], 2), &[f.as_fd(), g.as_fd()]);
        let two = rx.recv().unwrap();
        assert_eq!((&two.a[..], &two.b[..]), (&b"g"[..], &b"f"[..]));
        let good = Two {
            a: Fd::new(f),
            b: Fd::new(g),
        };
        Sender::<Two>::from_raw(raw.clone()).send(&good).unwrap();
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((&got.a[..], &got.b[..]), (&b"f"[..], &b"g"[..]));
        drop((two, good, got));
        assert_eq!(
            open_fds(),
            before,
            "same index twice: fd leak after the good messages"
        );
        println!("same index twice: {e}");
    }
}

/// The kernel maximum of fds, attached to a tiny message.
#[test]
fn max_fds_on_a_tiny_message() {
    let _g = lock();
    let f = sealed(b"one of many");
    let many = vec![f.as_fd(); MAX_FDS_PER_PACKET];
    // Accepted under the default limit (253); the 252 unreferenced copies are closed.
    {
        let (raw, rx) = pair::<Msg>();
        let before = open_fds();
        send(&raw, &inline(&msg_payload(1, "tiny", 200), 253), &many);
        let m = rx.recv().unwrap();
        assert_eq!(&m.frozen[..], b"one of many");
        drop(m);
        assert_eq!(open_fds(), before);
        assert_usable(&raw, &rx);
        println!("253 fds on a tiny message: accepted, 252 closed");
    }
    // Over a receiver's lower limit: refused, all closed.
    let p = inline(&msg_payload(1, "tiny", 0), 253);
    case_with(
        "253 fds, receiver allows 4",
        Limits::default().max_fds(4),
        |raw| send(raw, &p, &many),
        |e| matches!(e, Error::TooManyFds { count: 253, max: 4 }),
    );
    // The header disagrees: refused, all closed.
    let p = inline(&msg_payload(1, "tiny", 0), 0);
    case(
        "253 fds, header says 0",
        |raw| send(raw, &p, &many),
        is_protocol,
    );
    // The same 253 fds split over two SCM_RIGHTS control messages in one packet.
    let p = inline(&msg_payload(1, "tiny", 252), 253);
    case_with(
        "253 fds in two control messages, receiver allows 4",
        Limits::default().max_fds(4),
        |raw| {
            let raws: Vec<i32> = many.iter().map(|f| f.as_raw_fd()).collect();
            let cmsgs = [
                nix::sys::socket::ControlMessage::ScmRights(&raws[..100]),
                nix::sys::socket::ControlMessage::ScmRights(&raws[100..]),
            ];
            let iov = [IoSlice::new(&p)];
            let flags = nix::sys::socket::MsgFlags::empty();
            nix::sys::socket::sendmsg::<()>(raw.as_raw_fd(), &iov, &cmsgs, flags, None).unwrap();
        },
        |e| matches!(e, Error::TooManyFds { count: 253, max: 4 }),
    );
}

// ---------------------------------------------------------------------------------------
// Where a `Frozen` is expected.

/// Sends `fd` as the `Frozen` of a `Msg` and expects `BadBuffer` at index 0 with a kind
/// `kind` accepts.
fn bad_frozen(name: &str, fd: BorrowedFd<'_>, kind: impl Fn(&FrozenErrorKind) -> bool) {
    let p = inline(&msg_payload(9, "bad", 0), 1);
    case(
        name,
        |raw| send(raw, &p, &[fd]),
        |e| matches!(e, Error::BadBuffer { index: 0, kind: k, .. } if kind(k)),
    );
}

fn not_sealed(k: &FrozenErrorKind) -> bool {
    matches!(k, FrozenErrorKind::NotSealed { .. })
}

fn not_memfd(k: &FrozenErrorKind) -> bool {
    matches!(k, FrozenErrorKind::NotMemfd(_))
}

#[test]
fn unsealed_and_partially_sealed_memfds() {
    let _g = lock();
    bad_frozen(
        "unsealed memfd",
        memfd_with(b"data", &[]).as_fd(),
        not_sealed,
    );
    bad_frozen(
        "memfd sealed FutureWrite|Shrink",
        memfd_with(b"data", &[Seal::FutureWrite, Seal::Shrink]).as_fd(),
        not_sealed,
    );
    bad_frozen(
        "memfd sealed Write only",
        memfd_with(b"data", &[Seal::Write]).as_fd(),
        not_sealed,
    );
    bad_frozen(
        "memfd sealed Write|Grow|Seal (no Shrink)",
        memfd_with(b"data", &[Seal::Write, Seal::Grow, Seal::Seal]).as_fd(),
        not_sealed,
    );
    bad_frozen(
        "memfd sealed Shrink|Grow|Seal (no Write)",
        memfd_with(b"data", &[Seal::Shrink, Seal::Grow, Seal::Seal]).as_fd(),
        not_sealed,
    );
    let unsealable = CreateOptions::new()
        .allow_sealing(false)
        .create("no-sealing")
        .unwrap();
    unsealable.as_file().write_all(b"data").unwrap();
    bad_frozen(
        "memfd created without sealing",
        unsealable.as_fd(),
        not_sealed,
    );
    // The error names the fd index and the seals found and required.
    let (raw, rx) = pair::<Msg>();
    let m = memfd_with(b"data", &[Seal::Shrink]);
    send(&raw, &inline(&msg_payload(1, "x", 0), 1), &[m.as_fd()]);
    let text = rx.recv().unwrap_err().to_string();
    assert!(
        text.contains("fd #0") && text.contains("Shrink") && text.contains("Write"),
        "{text}"
    );
}

#[test]
fn other_kinds_of_fd_where_a_frozen_is_expected() {
    let _g = lock();
    // A /dev/shm file: tmpfs like a memfd, F_GET_SEALS works on it, but it is no memfd.
    let shm_path = format!("/dev/shm/memfile-hostile-{}", std::process::id());
    if let Ok(mut shm) = std::fs::File::create(&shm_path) {
        std::fs::remove_file(&shm_path).unwrap();
        shm.write_all(b"data").unwrap();
        bad_frozen("/dev/shm file", shm.as_fd(), not_memfd);
    } else {
        println!("skipped: /dev/shm is not writable here");
    }
    let tmp = tempfile_in_tmp();
    bad_frozen("regular disk file", tmp.as_fd(), not_memfd);
    let (r, w) = nix::unistd::pipe().unwrap();
    bad_frozen("pipe (read end)", r.as_fd(), not_memfd);
    bad_frozen("pipe (write end)", w.as_fd(), not_memfd);
    drop((r, w));
    let (s1, s2) = std::os::unix::net::UnixStream::pair().unwrap();
    bad_frozen("unix stream socket", s1.as_fd(), not_memfd);
    drop((s1, s2));
    let (q1, q2) = RawSocket::pair().unwrap();
    bad_frozen("seqpacket socket", q1.as_fd(), not_memfd);
    drop((q1, q2));
    let dir = std::fs::File::open("/tmp").unwrap();
    bad_frozen("directory", dir.as_fd(), not_memfd);
    let null = std::fs::File::open("/dev/null").unwrap();
    bad_frozen("/dev/null", null.as_fd(), not_memfd);
    let zero = std::fs::File::open("/dev/zero").unwrap();
    bad_frozen("/dev/zero", zero.as_fd(), not_memfd);
    // An O_PATH fd of a properly sealed memfd: cannot be read or mapped.
    let good = sealed(b"sealed, but reached through O_PATH");
    let proc_path = format!("/proc/self/fd/{}", good.as_fd().as_raw_fd());
    let opath: OwnedFd = open(
        proc_path.as_str(),
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    bad_frozen(
        "O_PATH fd of a sealed memfd",
        opath.as_fd(),
        |k| matches!(k, FrozenErrorKind::NotMemfd(what) if what.contains("O_PATH")),
    );
    // A write-only reopen of a sealed memfd: cannot be mapped for reading.
    let wronly: OwnedFd = open(
        proc_path.as_str(),
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    bad_frozen("O_WRONLY fd of a sealed memfd", wronly.as_fd(), |k| {
        matches!(k, FrozenErrorKind::NotReadable(_))
    });
    // A read-only reopen of the same sealed memfd is fine: same inode, same seals.
    let rdonly: OwnedFd = open(
        proc_path.as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    let (raw, rx) = pair::<Msg>();
    send(&raw, &inline(&msg_payload(1, "x", 0), 1), &[rdonly.as_fd()]);
    assert_eq!(
        &rx.recv().unwrap().frozen[..],
        b"sealed, but reached through O_PATH"
    );
}

fn tempfile_in_tmp() -> std::fs::File {
    let path = std::env::temp_dir().join(format!("memfile-hostile-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f.write_all(b"data").unwrap();
    f
}

#[test]
fn hugetlb_memfd() {
    let _g = lock();
    let size = HugeTlb::Huge2MB.size_bytes();
    let Ok(m) = CreateOptions::new()
        .allow_sealing(true)
        .huge_tlb(HugeTlb::Huge2MB)
        .create("hostile-huge")
    else {
        println!("skipped: the kernel cannot create 2 MiB hugetlb memfds here");
        return;
    };
    m.set_len(size).unwrap();
    // Without a page behind it, reading would SIGBUS when the pool is empty: refused.
    let holes = memfd_seal_all(m.try_clone().unwrap());
    bad_frozen("sealed hugetlb memfd with holes", holes.as_fd(), |k| {
        matches!(k, FrozenErrorKind::HugeTlbHoles { .. })
    });
    let free = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("HugePages_Free:")
                .map(|v| v.trim().parse::<u64>().unwrap())
        })
        .unwrap_or(0);
    if free == 0 {
        println!("skipped: no free huge pages (HugePages_Free = 0) for the fully backed case");
        return;
    }
    println!("hugetlb: {free} huge pages free, testing a fully backed sealed hugetlb memfd");
    let full = CreateOptions::new()
        .allow_sealing(true)
        .huge_tlb(HugeTlb::Huge2MB)
        .create("full")
        .unwrap();
    full.set_len(size).unwrap();
    if full.allocate(0, size).is_err() {
        println!("skipped: could not allocate a huge page");
        return;
    }
    let full = memfd_seal_all(full);
    // hugetlbfs cannot report holes (no SEEK_HOLE), so by default even a fully backed
    // hugetlb field is refused as possibly sparse; a receiver that allows sparse buffers
    // takes it (the huge pages are all there, checked by `st_blocks`).
    let (raw, rx) = pair::<Msg>();
    send(&raw, &inline(&msg_payload(1, "x", 0), 1), &[full.as_fd()]);
    match rx.recv() {
        Err(Error::BadBuffer {
            kind: FrozenErrorKind::Sparse {
                first_hole: None, ..
            },
            ..
        }) => {}
        other => panic!("a hugetlb field must be refused as Sparse by default: {other:?}"),
    }
    let rx = rx.with_limits(Limits::default().allow_sparse_buffers(true));
    send(&raw, &inline(&msg_payload(1, "x", 0), 1), &[full.as_fd()]);
    assert_eq!(rx.recv().unwrap().frozen.len() as u64, size);
}

fn memfd_seal_all(m: MemFile) -> MemFile {
    for s in [Seal::Write, Seal::Shrink, Seal::Grow, Seal::Seal] {
        m.add_seal(s).unwrap();
    }
    m
}

/// A sealed sparse memfd of 1 TiB costs its sender nothing; the receiver must refuse it by
/// its size before mapping it.
#[test]
fn sparse_terabyte_over_the_mapped_bytes_limit() {
    let _g = lock();
    let huge = MemFile::create_sealable("terabyte").unwrap();
    huge.set_len(1 << 40).unwrap();
    let huge = memfd_seal_all(huge);
    bad_frozen(
        "sparse 1 TiB sealed memfd",
        huge.as_fd(),
        |k| matches!(k, FrozenErrorKind::TooLarge { len, max } if *len == 1 << 40 && *max == Limits::DEFAULT_MAX_MAPPED_BYTES),
    );
    // The budget is per message: two buffers that fit alone do not fit together.
    let (raw, rx) = pair::<Two>();
    let rx = rx.with_limits(Limits::default().max_mapped_bytes(1 << 20));
    let before = open_fds();
    let (a, b) = (sealed(&vec![1; 600 << 10]), sealed(&vec![2; 600 << 10]));
    send(&raw, &inline(&[0, 1], 2), &[a.as_fd(), b.as_fd()]);
    let e = rx.recv().unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadBuffer {
                index: 1,
                kind: FrozenErrorKind::TooLarge { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        open_fds(),
        before + 2,
        "only the sender's own two fds remain"
    );
    drop((a, b));
    // Usable: the next valid `Two` (small buffers) goes through the crate's `Sender`.
    let good = Two {
        a: Fd::new(sealed(b"first")),
        b: Fd::new(sealed(b"second")),
    };
    Sender::<Two>::from_raw(raw.clone()).send(&good).unwrap();
    drop(good);
    let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((&got.a[..], &got.b[..]), (&b"first"[..], &b"second"[..]));
    drop(got);
    assert_eq!(open_fds(), before, "fd leak after the good message");
    // And as a spilled payload: refused by the header's length, before any mapping.
    let p = header(1, FLAG_SPILLED, 1, 0, 1 << 40);
    case(
        "spilled payload of 1 TiB",
        |raw| send(raw, &p, &[huge.as_fd()]),
        |e| matches!(e, Error::MessageTooLarge { size, .. } if *size == 1 << 40),
    );
}

// ---------------------------------------------------------------------------------------
// Spilled payloads.

#[test]
fn bad_spilled_payloads() {
    let _g = lock();
    let payload = msg_payload(5, "spilled", 0);
    let n = payload.len() as u64;
    let spilled = |fd_count: u32, len: u64| header(1, FLAG_SPILLED, fd_count, 0, len);
    case(
        "spilled payload in an unsealed memfd",
        |raw| {
            let m = memfd_with(&payload, &[]);
            send(raw, &spilled(2, n), &[sealed(b"f").as_fd(), m.as_fd()]);
        },
        |e| {
            matches!(
                e,
                Error::BadBuffer {
                    index: 1,
                    kind: FrozenErrorKind::NotSealed { .. },
                    ..
                }
            )
        },
    );
    case(
        "spilled payload sealed FutureWrite|Shrink",
        |raw| {
            let m = memfd_with(&payload, &[Seal::FutureWrite, Seal::Shrink]);
            send(raw, &spilled(2, n), &[sealed(b"f").as_fd(), m.as_fd()]);
        },
        |e| matches!(e, Error::BadBuffer { index: 1, .. }),
    );
    case(
        "spilled memfd larger than the header says",
        |raw| {
            send(
                raw,
                &spilled(2, n - 1),
                &[sealed(b"f").as_fd(), sealed(&payload).as_fd()],
            )
        },
        |e| {
            matches!(
                e,
                Error::BadBuffer {
                    index: 1,
                    kind: FrozenErrorKind::TooLarge { .. },
                    ..
                }
            )
        },
    );
    case(
        "spilled memfd smaller than the header says",
        |raw| {
            send(
                raw,
                &spilled(2, n + 100),
                &[sealed(b"f").as_fd(), sealed(&payload).as_fd()],
            )
        },
        is_protocol,
    );
    case(
        "spilled payload in a pipe",
        |raw| {
            let (r, _w) = nix::unistd::pipe().unwrap();
            send(raw, &spilled(2, n), &[sealed(b"f").as_fd(), r.as_fd()]);
        },
        |e| matches!(e, Error::BadBuffer { index: 1, kind, .. } if not_memfd(kind)),
    );
    case(
        "spilled flag without an fd",
        |raw| send(raw, &spilled(0, n), &[]),
        is_protocol,
    );
    case(
        "spilled packet with bytes after the header",
        |raw| {
            let mut p = spilled(2, n);
            p.extend_from_slice(&payload);
            send(raw, &p, &[sealed(b"f").as_fd(), sealed(&payload).as_fd()]);
        },
        is_protocol,
    );
    // A field may not claim the spill memfd itself (it is the last fd, index 1 here).
    let own = msg_payload(5, "spilled", 1);
    case(
        "field refers to the spill memfd",
        |raw| {
            send(
                raw,
                &spilled(2, own.len() as u64),
                &[sealed(b"f").as_fd(), sealed(&own).as_fd()],
            )
        },
        |e| matches!(e, Error::FdIndexOutOfRange { index: 1, count: 1 }),
    );
    // Above the receiver's message limit: refused by the header, nothing mapped.
    case_with(
        "spilled payload over max_message_bytes",
        Limits::default().max_message_bytes(8),
        |raw| {
            send(
                raw,
                &spilled(2, n),
                &[sealed(b"f").as_fd(), sealed(&payload).as_fd()],
            )
        },
        |e| matches!(e, Error::MessageTooLarge { size: 10, max: 8 }),
    );
    // And a well-formed spilled packet is accepted.
    let (raw, rx) = pair::<Msg>();
    send(
        &raw,
        &spilled(2, n),
        &[sealed(b"field").as_fd(), sealed(&payload).as_fd()],
    );
    let m = rx.recv().unwrap();
    assert_eq!(
        (m.seq, m.text.as_str(), &m.frozen[..]),
        (5, "spilled", &b"field"[..])
    );
}

// ---------------------------------------------------------------------------------------
// A peer that tries to change a buffer after sending it.

#[test]
fn peer_cannot_change_a_frozen_after_sending_it() {
    let _g = lock();
    let content: Vec<u8> = (0..3 * 4096 + 17).map(|i| (i % 251) as u8).collect();
    // The peer keeps a writable descriptor of its own buffer (a reopen through /proc).
    let frozen = sealed(&content);
    let path = format!("/proc/self/fd/{}", frozen.as_fd().as_raw_fd());
    let rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let (raw, rx) = pair::<Msg>();
    send(&raw, &inline(&msg_payload(1, "x", 0), 1), &[frozen.as_fd()]);
    drop(frozen);
    let got = rx.recv().unwrap();
    assert_eq!(&got.frozen[..], &content[..]);
    let eperm = |what: &str, r: std::io::Result<()>| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{what}: {e}");
    };
    eperm("write", (&rw).write_all(b"changed").map(|_| ()));
    eperm("pwrite", rw.write_all_at(b"changed", 100));
    eperm("ftruncate (shrink)", rw.set_len(10));
    eperm("ftruncate (to zero)", rw.set_len(0));
    eperm("ftruncate (grow)", rw.set_len(1 << 20));
    let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    eperm(
        "punch a hole",
        fallocate(&rw, punch, 0, 4096).map_err(Into::into),
    );
    assert_eq!(
        mmap_shared(&rw, libc::PROT_READ | libc::PROT_WRITE),
        Err(Errno::EPERM)
    );
    // Seals cannot be removed, and (sealed Seal) not even added.
    let future = nix::fcntl::SealFlag::F_SEAL_FUTURE_WRITE;
    let add = nix::fcntl::fcntl(&rw, nix::fcntl::FcntlArg::F_ADD_SEALS(future));
    assert_eq!(add, Err(Errno::EPERM));
    // A read-only shared mapping cannot be made writable.
    let addr = mmap_shared(&rw, libc::PROT_READ).unwrap();
    // SAFETY: `addr` is a live one-page mapping we just made; mprotect only changes rights.
    let r = unsafe { libc::mprotect(addr, 4096, libc::PROT_READ | libc::PROT_WRITE) };
    assert_eq!(Errno::result(r), Err(Errno::EACCES));
    // SAFETY: unmapping the mapping made above, which nothing else refers to.
    unsafe { libc::munmap(addr, 4096) };
    assert_eq!(
        &got.frozen[..],
        &content[..],
        "the receiver's bytes changed"
    );
    assert_eq!(got.frozen.len(), content.len());
}

/// `mmap(MAP_SHARED)` of the first page of `file` with `prot`.
fn mmap_shared(file: &std::fs::File, prot: libc::c_int) -> Result<*mut libc::c_void, Errno> {
    // SAFETY: a fresh mapping at an address the kernel picks; it aliases nothing of ours, and
    // the callers never dereference it.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            prot,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        Err(Errno::last())
    } else {
        Ok(addr)
    }
}

/// Sealed `Write | Shrink` without `Grow`: the peer may grow the file after sending it, which
/// neither changes nor extends the receiver's view.
#[test]
fn peer_growing_a_buffer_changes_nothing_for_the_receiver() {
    let _g = lock();
    let m = memfd_with(b"exactly these bytes", &[Seal::Write, Seal::Shrink]);
    let (raw, rx) = pair::<Msg>();
    send(&raw, &inline(&msg_payload(1, "x", 0), 1), &[m.as_fd()]);
    let got = rx.recv().unwrap();
    m.set_len(1 << 20).unwrap();
    assert_eq!(m.as_file().metadata().unwrap().len(), 1 << 20);
    assert_eq!(&got.frozen[..], b"exactly these bytes");
    let e = m.as_file().write_at(b"x", 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    assert_eq!(&got.frozen[..], b"exactly these bytes");
}

// ---------------------------------------------------------------------------------------
// Cases that could kill the process: run in a child.

const ROLE: &str = "HOSTILE_CHILD";

/// The child side: dispatches on the role. Ignored in normal runs.
#[test]
#[ignore = "entry point of the child processes the other tests spawn"]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    match role.as_str() {
        "spilled_claim" => child_spilled_claim(),
        "zero_sized_elements" => child_zero_sized_elements(),
        "deep_nesting" => child_deep_nesting(),
        other => panic!("unknown role {other}"),
    }
}

/// Runs `role` in a child (this binary), kills it after `limit`, and returns its output if it
/// exited successfully; panics (naming the signal) if it died or hung.
fn run_child(role: &str, limit: Duration) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{role}: the receiver hung for more than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{role}: the receiver died ({}):\n{text}",
        out.status
    );
    text
}

/// A sealed sparse spilled payload just under the default 2 GiB message limit, whose string
/// claims 32 GiB: the claim must be refused, not allocated (which aborts the process when
/// the allocation fails). The sparse file itself is refused first now (`Protocol`, see
/// `sparse_spilled_payloads_are_refused`); the claim in an allocated file is tested there.
fn child_spilled_claim() {
    let len: u64 = (2 << 30) - 1;
    let m = MemFile::create_sealable("sparse-claim").unwrap();
    m.set_len(len).unwrap();
    let mut p = varint(1);
    p.extend(varint(32 << 30));
    m.as_file().write_all_at(&p, 0).unwrap();
    let m = memfd_seal_all(m);
    let (raw, rx) = pair::<Msg>();
    let before = open_fds();
    send(&raw, &header(1, FLAG_SPILLED, 1, 0, len), &[m.as_fd()]);
    let r = rx.recv_timeout(Duration::from_secs(30));
    println!("RESULT {r:?}");
    assert!(
        matches!(&r, Err(e) if is_sparse_refusal(e, len, 0)),
        "{r:?}"
    );
    child_usable(before, || assert_usable(&raw, &rx));
}

/// In a child, after the bad packet: compares the fd count with `before`, runs `usable`
/// (which sends and receives a valid message, panicking if it does not arrive), compares
/// again, and prints `USABLE fds_same=<both equal>` for the parent to check.
fn child_usable(before: usize, usable: impl FnOnce()) {
    let after_error = open_fds();
    usable();
    let after_good = open_fds();
    println!(
        "USABLE fds_same={} (before {before}, after the error {after_error}, after the good \
         message {after_good})",
        after_error == before && after_good == before
    );
}

/// The parent's check of a child's output: the typed error, then the receiver usable with
/// no fd leak.
fn assert_child_usable(role: &str, out: &str) {
    assert!(out.contains("RESULT Err("), "{role}: {out}");
    assert!(out.contains("USABLE fds_same=true"), "{role}: {out}");
}

#[test]
fn sparse_spilled_payload_with_a_huge_claim_is_refused() {
    // The child's pipes would disturb the fd counts of the other tests.
    let _g = lock();
    let out = run_child("spilled_claim", Duration::from_secs(60));
    assert_child_usable("spilled_claim", &out);
}

#[test]
fn receiving_mode_does_not_matter() {
    let _g = lock();
    // The same bad packet fails the same way whichever way the receiver waits.
    let (raw, rx) = pair::<Msg>();
    let before = open_fds();
    for mode in 0..3 {
        send(&raw, b"bad", &[]);
        let e = match mode {
            0 => rx.recv(),
            1 => rx.try_recv(),
            _ => rx.recv_timeout(Duration::from_secs(5)),
        }
        .unwrap_err();
        assert!(is_protocol(&e), "mode {mode}: {e:?}");
        assert_eq!(open_fds(), before, "mode {mode}: fd leak");
        assert_usable(&raw, &rx);
        assert_eq!(
            open_fds(),
            before,
            "mode {mode}: fd leak after the good message"
        );
    }
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
}

/// `Vec<()>` claiming 2^60 elements: the elements take no bytes, so the byte limit alone
/// would never stop the loop (the codec's element budget does).
fn child_zero_sized_elements() {
    let (raw, rx) = pair::<Vec<()>>();
    let before = open_fds();
    send(&raw, &inline(&varint(1 << 60), 0), &[]);
    let r = rx.recv_timeout(Duration::from_secs(30));
    println!("RESULT {r:?}");
    assert!(matches!(&r, Err(e) if is_decode(e)), "{r:?}");
    child_usable(before, || {
        assert_next_valid(&raw, &rx, &vec![(); 3], "zero-sized elements")
    });
}

#[test]
fn zero_sized_elements_cannot_spin_the_receiver() {
    let _g = lock();
    let out = run_child("zero_sized_elements", Duration::from_secs(20));
    assert_child_usable("zero_sized_elements", &out);
}

/// A recursive message type.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Nest {
    End,
    More(Box<Nest>),
}

/// 200 000 levels of `Nest::More` in a 200 KB inline packet.
fn child_deep_nesting() {
    let (raw, rx) = pair::<Nest>();
    let depth = std::env::var("NEST_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(200_000);
    let mut payload = vec![1u8; depth];
    payload.push(0);
    let before = open_fds();
    send(&raw, &inline(&payload, 0), &[]);
    let r = rx.recv_timeout(Duration::from_secs(30));
    println!("RESULT {:?}", r.as_ref().map(|_| "a Nest"));
    assert!(
        matches!(&r, Err(e) if is_decode(e)),
        "{:?}",
        r.map(|_| "a Nest")
    );
    child_usable(before, || {
        let good = Nest::More(Box::new(Nest::More(Box::new(Nest::End))));
        assert_next_valid(&raw, &rx, &good, "deep nesting");
    });
}

#[test]
fn deep_nesting_cannot_overflow_the_stack() {
    let _g = lock();
    let out = run_child("deep_nesting", Duration::from_secs(20));
    assert_child_usable("deep_nesting", &out);
    // Nesting within the limit decodes.
    let (raw, rx) = pair::<Nest>();
    let mut payload = vec![1u8; 100];
    payload.push(0);
    send(&raw, &inline(&payload, 0), &[]);
    let mut nest = rx.recv().unwrap();
    let mut levels = 0;
    while let Nest::More(inner) = nest {
        nest = *inner;
        levels += 1;
    }
    assert_eq!(levels, 100);
}

// ---------------------------------------------------------------------------------------
// Other fd fields: a `MemFile` needs a memfd, a `Sender` an AF_UNIX SOCK_SEQPACKET connection.

#[derive(Debug, Serialize, Deserialize)]
struct Others {
    file: Fd<MemFile>,
    reply: Sender<u8>,
}

#[test]
fn wrong_kinds_for_memfile_and_socket_fields() {
    let _g = lock();
    // `found`: what the error must say the fd is.
    let run = |name: &str,
               file: BorrowedFd<'_>,
               socket: BorrowedFd<'_>,
               bad_index: usize,
               found: &str| {
        let (raw, rx) = pair::<Others>();
        let before = open_fds();
        send(&raw, &inline(&[0, 1], 2), &[file, socket]);
        let e = rx.recv_timeout(Duration::from_secs(10)).unwrap_err();
        let needed = ["a memfd", "an AF_UNIX SOCK_SEQPACKET socket"][bad_index];
        assert!(
            matches!(&e, Error::BadFdKind { index, expected, detail }
                if *index == bad_index && *expected == needed && detail.contains(found)),
            "{name}: {e:?}"
        );
        assert_eq!(open_fds(), before, "{name}: fd leak");
        // Usable: a valid `Others` through the crate's `Sender`, and its reply works.
        let (reply, replies) = memfile_ipc::channel::<u8>().unwrap();
        let good = Others {
            file: Fd::new(MemFile::create_default("good").unwrap()),
            reply,
        };
        Sender::<Others>::from_raw(raw.clone()).send(&good).unwrap();
        drop(good);
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        got.reply.send(&7).unwrap();
        assert_eq!(
            replies.recv_timeout(Duration::from_secs(10)).unwrap(),
            7,
            "{name}"
        );
        drop((got, replies));
        assert_eq!(open_fds(), before, "{name}: fd leak after the good message");
        println!("{name}: {e}");
    };
    let memfd = MemFile::create_default("ok").unwrap();
    let (good_socket, _peer) = RawSocket::pair().unwrap();
    let (r, _w) = nix::unistd::pipe().unwrap();
    run(
        "MemFile field gets a pipe",
        r.as_fd(),
        good_socket.as_fd(),
        0,
        "it is a pipe",
    );
    let shm = tempfile_in_tmp();
    run(
        "MemFile field gets a disk file",
        shm.as_fd(),
        good_socket.as_fd(),
        0,
        "it is a regular file",
    );
    run(
        "Sender field gets a memfd",
        memfd.as_fd(),
        memfd.as_fd(),
        1,
        "non-socket",
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    run(
        "Sender field gets a UDP socket",
        memfd.as_fd(),
        udp.as_fd(),
        1,
        "Inet Datagram socket",
    );
    let dgram = std::os::unix::net::UnixDatagram::unbound().unwrap();
    run(
        "Sender field gets a Unix datagram socket",
        memfd.as_fd(),
        dgram.as_fd(),
        1,
        "Unix Datagram socket",
    );
    let dir = std::env::temp_dir().join(format!("memfile-hostile-l-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let listener = memfile_ipc::Listener::bind(dir.join("l.sock")).unwrap();
    run(
        "Sender field gets a listening socket",
        memfd.as_fd(),
        listener.as_fd(),
        1,
        "listening",
    );
    drop(listener);
    std::fs::remove_dir_all(&dir).unwrap();
    // And the right kinds work.
    let (raw, rx) = pair::<Others>();
    send(
        &raw,
        &inline(&[0, 1], 2),
        &[memfd.as_fd(), good_socket.as_fd()],
    );
    let others = rx.recv().unwrap();
    others.reply.send(&5).unwrap();
}

// ---------------------------------------------------------------------------------------
// Sparse spilled payloads (audit f2): a sealed sparse memfd costs its sender nothing, but
// decoding it would make the receiver fault in and copy every byte it claims.

/// A sealed spill memfd of `len` bytes whose first bytes are `payload` and the rest a hole.
fn sparse_spill(payload: &[u8], len: u64) -> MemFile {
    let m = MemFile::create_sealable("sparse-spill").unwrap();
    m.as_file().write_all_at(payload, 0).unwrap();
    m.set_len(len).unwrap();
    memfd_seal_all(m)
}

/// `Protocol`, naming the spill memfd (fd #`index` of its packet) and its allocated size.
fn is_sparse_refusal(e: &Error, claimed: u64, index: usize) -> bool {
    let text = e.to_string();
    matches!(e, Error::Protocol { .. })
        && text.contains(&format!("fd #{index}"))
        && text.contains(&format!("{claimed} bytes allocated"))
}

#[test]
fn sparse_spilled_payloads_are_refused() {
    let _g = lock();
    let payload = msg_payload(3, "sparse", 0);
    let spilled = |len: u64| header(1, FLAG_SPILLED, 2, 0, len);
    // Just under the default 2 GiB message limit, one page allocated.
    let len: u64 = (2 << 30) - 1;
    case(
        "sparse 2 GiB spilled payload",
        |raw| {
            let m = sparse_spill(&payload, len);
            send(raw, &spilled(len), &[sealed(b"f").as_fd(), m.as_fd()]);
        },
        |e| is_sparse_refusal(e, len, 1),
    );
    // A hole in the middle of an otherwise written file is refused as well.
    let len: u64 = 3 << 20;
    case(
        "spilled payload with a hole in the middle",
        |raw| {
            let m = MemFile::create_sealable("holey-spill").unwrap();
            m.as_file().write_all_at(&payload, 0).unwrap();
            m.as_file().write_all_at(&[1], len - 1).unwrap();
            let m = memfd_seal_all(m);
            send(raw, &spilled(len), &[sealed(b"f").as_fd(), m.as_fd()]);
        },
        |e| is_sparse_refusal(e, len, 1),
    );
    // Allocated in full, but the string claims 32 GiB: refused by the codec, not allocated.
    case(
        "allocated spilled payload with a 32 GiB string claim",
        |raw| {
            let mut p = varint(1);
            p.extend(varint(32 << 30));
            p.resize(1 << 20, b'x');
            send(
                raw,
                &spilled(p.len() as u64),
                &[sealed(b"f").as_fd(), sealed(&p).as_fd()],
            );
        },
        is_decode,
    );
    // A spill filled through a mapping (`Frozen::build`, as `Frozen::from_bytes` does for
    // large payloads under shmem THP) is allocated in full, and accepted.
    let padded = msg_payload(9, &"y".repeat(300_000), 0);
    let (raw, rx) = pair::<Msg>();
    let mapped =
        Frozen::build("mapped-spill", padded.len(), |b| b.copy_from_slice(&padded)).unwrap();
    send(
        &raw,
        &spilled(padded.len() as u64),
        &[sealed(b"field").as_fd(), mapped.as_fd()],
    );
    let m = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        (m.seq, m.text.len(), &m.frozen[..]),
        (9, 300_000, &b"field"[..])
    );
    // And so is the crate's own spill of a large message (pwrite path).
    let tx = Sender::<Msg>::from_raw(raw.clone());
    let big = Msg {
        seq: 10,
        text: "z".repeat(3 << 20),
        frozen: Fd::new(sealed(b"big")),
    };
    tx.send(&big).unwrap();
    let m = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((m.seq, m.text.len()), (10, 3 << 20));
}
