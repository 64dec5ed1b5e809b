//! The raw transport: packets of bytes + fds over a SOCK_SEQPACKET socket pair.
//!
//! Every test takes `util_raw::serial()`: several count this process's fds or change
//! signal dispositions, which parallel test threads would disturb.

mod util_raw;
mod util_syscall;

use std::fs::File;
use std::io::{IoSlice, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use memfile_ipc::Error;
use memfile_ipc::raw::{MAX_FDS_PER_PACKET, RawSocket, RecvMode};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socketpair, sockopt};
use util_raw::{fd_count, file_id, is_cloexec, serial};
use util_syscall::{POLL, RECVMSG, SENDMSG, gettid, wait_until_blocked_in};

fn tmpfile(content: &[u8]) -> File {
    let mut f = tempfile_in_tmp();
    f.write_all(content).unwrap();
    f.rewind().unwrap();
    f
}

/// An anonymous file (O_TMPFILE) in /tmp.
fn tempfile_in_tmp() -> File {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(std::env::temp_dir())
        .expect("O_TMPFILE")
}

#[test]
fn types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<RawSocket>();
    check::<memfile_ipc::Listener>();
    check::<memfile_ipc::CredentialPolicy>();
    fn send<T: Send>() {}
    send::<memfile_ipc::ChildProcess>();
}

#[test]
fn round_trip_bytes_and_fds() {
    let _g = serial();
    let (a, b) = RawSocket::pair().unwrap();
    let f1 = tmpfile(b"first file");
    let f2 = tmpfile(b"second");
    a.send(
        &[
            IoSlice::new(b"head:"),
            IoSlice::new(b""),
            IoSlice::new(b"tail"),
        ],
        &[f1.as_fd(), f2.as_fd()],
    )
    .unwrap();

    let mut buf = [0u8; 64];
    let mut fds = Vec::new();
    let n = b.recv(&mut buf, &mut fds, RecvMode::Blocking).unwrap();
    assert_eq!(&buf[..n], b"head:tail");
    assert_eq!(fds.len(), 2);
    // New fd numbers, same open files, in the order sent.
    assert_ne!(fds[0].as_raw_fd(), f1.as_raw_fd());
    assert_eq!(file_id(&fds[0]), file_id(&f1));
    assert_eq!(file_id(&fds[1]), file_id(&f2));
    let mut s = String::new();
    File::from(fds.remove(1)).read_to_string(&mut s).unwrap();
    assert_eq!(s, "second");

    // Both directions work.
    b.send(&[IoSlice::new(b"back")], &[]).unwrap();
    let mut fds2 = Vec::new();
    let n = a.recv(&mut buf, &mut fds2, RecvMode::Blocking).unwrap();
    assert_eq!(&buf[..n], b"back");
    assert!(fds2.is_empty());
}

#[test]
fn packets_keep_their_boundaries() {
    let _g = serial();
    let (a, b) = RawSocket::pair().unwrap();
    for len in [1usize, 1000, 3, 0, 70_000] {
        a.send(&[IoSlice::new(&vec![len as u8; len])], &[]).unwrap();
    }
    let mut buf = vec![0u8; 100_000];
    let mut fds = Vec::new();
    for len in [1usize, 1000, 3, 0, 70_000] {
        let n = b.recv(&mut buf, &mut fds, RecvMode::Blocking).unwrap();
        assert_eq!(n, len);
        assert!(buf[..n].iter().all(|&x| x == len as u8));
    }
}

#[test]
fn fds_are_appended_to_the_callers_vec() {
    let _g = serial();
    let (a, b) = RawSocket::pair().unwrap();
    let f = tmpfile(b"x");
    let mut fds: Vec<OwnedFd> = vec![tmpfile(b"already here").into()];
    a.send(&[IoSlice::new(b"1")], &[f.as_fd()]).unwrap();
    b.recv(&mut [0u8; 8], &mut fds, RecvMode::Blocking).unwrap();
    assert_eq!(fds.len(), 2);
    assert_eq!(file_id(&fds[1]), file_id(&f));
}

#[test]
fn max_fds_per_packet_goes_through_and_one_more_is_refused() {
    let _g = serial();
    assert_eq!(MAX_FDS_PER_PACKET, 253);
    let (a, b) = RawSocket::pair().unwrap();
    let f = tmpfile(b"shared");
    let base = fd_count();
    {
        let many: Vec<BorrowedFd<'_>> = vec![f.as_fd(); MAX_FDS_PER_PACKET];
        a.send(&[IoSlice::new(b"253")], &many).unwrap();
        let mut fds = Vec::new();
        let n = b.recv(&mut [0u8; 8], &mut fds, RecvMode::Blocking).unwrap();
        assert_eq!(n, 3);
        assert_eq!(fds.len(), 253);
        assert!(fds.iter().all(|fd| file_id(fd) == file_id(&f)));
        assert_eq!(fd_count(), base + 253);
    }
    assert_eq!(fd_count(), base, "dropping the received fds closes them");

    let too_many: Vec<BorrowedFd<'_>> = vec![f.as_fd(); MAX_FDS_PER_PACKET + 1];
    match a.send(&[IoSlice::new(b"254")], &too_many) {
        Err(Error::TooManyFds {
            count: 254,
            max: 253,
        }) => {}
        other => panic!("expected TooManyFds, got {other:?}"),
    }
    match a.try_send(&[IoSlice::new(b"254")], &too_many) {
        Err(Error::TooManyFds {
            count: 254,
            max: 253,
        }) => {}
        other => panic!("expected TooManyFds, got {other:?}"),
    }
    // Nothing was sent.
    let mut fds = Vec::new();
    assert!(matches!(
        b.recv(&mut [0u8; 8], &mut fds, RecvMode::NonBlocking),
        Err(Error::WouldBlock)
    ));
    assert_eq!(fd_count(), base);
}

#[test]
fn short_buffer_is_truncated_and_closes_the_fds_that_arrived() {
    let _g = serial();
    let (a, b) = RawSocket::pair().unwrap();
    let f = tmpfile(b"x");
    let base = fd_count();
    a.send(
        &[IoSlice::new(&[7u8; 100])],
        &[f.as_fd(), f.as_fd(), f.as_fd()],
    )
    .unwrap();
    let keep: OwnedFd = tmpfile(b"mine").into();
    let keep_id = file_id(&keep);
    let mut fds = vec![keep];
    let mut buf = [0u8; 10];
    match b.recv(&mut buf, &mut fds, RecvMode::Blocking) {
        Err(Error::Truncated {
            fd,
            bytes: true,
            fds: false,
        }) => assert_eq!(fd, b.as_raw_fd()),
        other => panic!("expected Truncated (bytes), got {other:?}"),
    }
    assert_eq!(fds.len(), 1, "the caller's fds stay, the packet's are gone");
    assert_eq!(file_id(&fds[0]), keep_id);
    drop(fds);
    assert_eq!(fd_count(), base, "no fd of the truncated packet leaked");

    // The socket is still usable and the next packet is intact.
    a.send(&[IoSlice::new(b"next")], &[]).unwrap();
    let mut fds = Vec::new();
    let n = b
        .recv(&mut [0u8; 10], &mut fds, RecvMode::Blocking)
        .unwrap();
    assert_eq!(n, 4);
}

#[test]
fn control_truncation_closes_the_fds_that_arrived() {
    let _g = serial();
    let (a, b) = RawSocket::pair().unwrap();
    // SO_PASSCRED makes the kernel put an SCM_CREDENTIALS message in front of the fds, so
    // 253 fds no longer fit the control buffer: MSG_CTRUNC with some fds delivered.
    setsockopt(&b, sockopt::PassCred, &true).unwrap();
    let f = tmpfile(b"x");
    let base = fd_count();
    let many: Vec<BorrowedFd<'_>> = vec![f.as_fd(); MAX_FDS_PER_PACKET];
    a.send(&[IoSlice::new(b"ctrunc")], &many).unwrap();
    let mut fds = Vec::new();
    match b.recv(&mut [0u8; 64], &mut fds, RecvMode::Blocking) {
        Err(Error::Truncated {
            bytes: false,
            fds: true,
            ..
        }) => {}
        other => panic!("expected Truncated (fds), got {other:?}"),
    }
    assert!(fds.is_empty());
    assert_eq!(fd_count(), base, "the fds that did arrive were closed");
}

#[test]
fn sockets_and_received_fds_are_cloexec() {
    let _g = serial();
    let (a, b) = RawSocket::pair().unwrap();
    assert!(is_cloexec(&a) && is_cloexec(&b));
    // A file opened without O_CLOEXEC (dup never sets it).
    let f = tmpfile(b"x");
    let plain: OwnedFd = nix::unistd::dup(&f).unwrap();
    assert!(!is_cloexec(&plain));
    a.send(&[IoSlice::new(b"fd")], &[plain.as_fd()]).unwrap();
    let mut fds = Vec::new();
    b.recv(&mut [0u8; 8], &mut fds, RecvMode::Blocking).unwrap();
    assert!(is_cloexec(&fds[0]), "MSG_CMSG_CLOEXEC was not applied");
}

#[test]
fn send_to_closed_peer_is_disconnected_without_sigpipe() {
    let _g = serial();
    use nix::sys::signal::{SigHandler, Signal, signal};
    let (a, b) = RawSocket::pair().unwrap();
    drop(b);
    // The Rust runtime ignores SIGPIPE; restore the default (terminate) so that a SIGPIPE
    // would kill this test binary. (Linux 6.18 raises SIGPIPE for SOCK_STREAM only; for
    // SOCK_SEQPACKET the send fails with EPIPE with or without MSG_NOSIGNAL, so this test
    // cannot tell whether the flag is passed: `full_buffer_try_send_would_block_and_send_
    // waits_for_the_reader` reads the flags of a blocked `sendmsg` for that.)
    // SAFETY: SIG_DFL is not a Rust function; the file-wide lock keeps other tests of this
    // binary from relying on the disposition meanwhile.
    let old = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.unwrap();
    let r1 = a.send(&[IoSlice::new(b"anyone?")], &[]);
    let r2 = a.try_send(&[IoSlice::new(b"anyone?")], &[]);
    // SAFETY: restores the previous disposition, as above.
    unsafe { signal(Signal::SIGPIPE, old) }.unwrap();
    assert!(matches!(r1, Err(Error::Disconnected { .. })), "{r1:?}");
    assert!(matches!(r2, Err(Error::Disconnected { .. })), "{r2:?}");
}

#[test]
fn recv_from_closed_peer_drains_then_is_disconnected() {
    let _g = serial();
    let (a, b) = RawSocket::pair().unwrap();
    a.send(&[IoSlice::new(b"last words")], &[]).unwrap();
    drop(a);
    let mut buf = [0u8; 32];
    let mut fds = Vec::new();
    let n = b.recv(&mut buf, &mut fds, RecvMode::Blocking).unwrap();
    assert_eq!(&buf[..n], b"last words");
    for mode in [
        RecvMode::Blocking,
        RecvMode::NonBlocking,
        RecvMode::Deadline(Instant::now() + Duration::from_secs(5)),
    ] {
        let t = Instant::now();
        assert!(matches!(
            b.recv(&mut buf, &mut fds, mode),
            Err(Error::Disconnected { .. })
        ));
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{mode:?} waited for a dead peer"
        );
    }
}

#[test]
fn recv_blocked_while_peer_closes_returns_disconnected() {
    let _g = serial();
    let (a, b) = RawSocket::pair().unwrap();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        let mut fds = Vec::new();
        b.recv(&mut [0u8; 8], &mut fds, RecvMode::Blocking)
    });
    // The peer closes only once the receiver sleeps in recvmsg, not before it got there.
    let call = wait_until_blocked_in(tid_rx.recv().unwrap(), RECVMSG);
    // Received fds are close-on-exec atomically: the flag is passed to the recvmsg call
    // that installs them (its third argument), not set afterwards with fcntl.
    assert_ne!(
        call.args[2] & libc::MSG_CMSG_CLOEXEC as u64,
        0,
        "recvmsg without MSG_CMSG_CLOEXEC: {call:?}"
    );
    drop(a);
    assert!(matches!(t.join().unwrap(), Err(Error::Disconnected { .. })));
}

#[test]
fn every_waiting_receiver_sees_the_disconnect() {
    let _g = serial();
    let (a, b) = RawSocket::pair().unwrap();
    let b = Arc::new(b);
    let waiters: Vec<_> = [
        RecvMode::Blocking,
        RecvMode::Blocking,
        RecvMode::Deadline(Instant::now() + Duration::from_secs(30)),
    ]
    .into_iter()
    .map(|mode| {
        let b = b.clone();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            tid_tx.send(gettid()).unwrap();
            b.recv(&mut [0u8; 8], &mut Vec::new(), mode)
        });
        // Blocking waits in recvmsg, a deadline in poll: the peer closes only once all
        // three are asleep there.
        let syscalls = if matches!(mode, RecvMode::Blocking) {
            RECVMSG
        } else {
            POLL
        };
        wait_until_blocked_in(tid_rx.recv().unwrap(), syscalls);
        waiter
    })
    .collect();
    let t = Instant::now();
    drop(a);
    for w in waiters {
        assert!(matches!(w.join().unwrap(), Err(Error::Disconnected { .. })));
    }
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn empty_packet_is_not_eof() {
    let _g = serial();
    let (a, b) = RawSocket::pair().unwrap();
    let mut buf = [0u8; 8];
    let mut fds = Vec::new();
    a.send(&[], &[]).unwrap();
    assert_eq!(b.recv(&mut buf, &mut fds, RecvMode::Blocking).unwrap(), 0);
    assert!(fds.is_empty());
    // An empty packet that carries an fd.
    let f = tmpfile(b"x");
    a.send(&[IoSlice::new(b"")], &[f.as_fd()]).unwrap();
    assert_eq!(b.recv(&mut buf, &mut fds, RecvMode::Blocking).unwrap(), 0);
    assert_eq!(fds.len(), 1);
    // Still connected: nothing queued.
    assert!(matches!(
        b.recv(&mut buf, &mut fds, RecvMode::NonBlocking),
        Err(Error::WouldBlock)
    ));
    drop(a);
    assert!(matches!(
        b.recv(&mut buf, &mut fds, RecvMode::Blocking),
        Err(Error::Disconnected { .. })
    ));
}

#[test]
fn deadline_times_out_and_nonblocking_would_block() {
    let _g = serial();
    let (a, b) = RawSocket::pair().unwrap();
    let mut buf = [0u8; 8];
    let mut fds = Vec::new();
    assert!(matches!(
        b.recv(&mut buf, &mut fds, RecvMode::NonBlocking),
        Err(Error::WouldBlock)
    ));
    let start = Instant::now();
    let r = b.recv(
        &mut buf,
        &mut fds,
        RecvMode::Deadline(start + Duration::from_millis(120)),
    );
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(120),
        "returned early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "returned late: {took:?}");
    // A deadline in the past still returns a packet that is already there.
    a.send(&[IoSlice::new(b"ready")], &[]).unwrap();
    let n = b
        .recv(&mut buf, &mut fds, RecvMode::Deadline(Instant::now()))
        .unwrap();
    assert_eq!(&buf[..n], b"ready");
    // And a packet arriving before the deadline ends the wait.
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        a.send(&[IoSlice::new(b"later")], &[]).unwrap();
        a
    });
    let n = b
        .recv(
            &mut buf,
            &mut fds,
            RecvMode::Deadline(Instant::now() + Duration::from_secs(10)),
        )
        .unwrap();
    assert_eq!(&buf[..n], b"later");
    drop(sender.join().unwrap());
}

/// Fills `a`'s send buffer with try_send; returns how many packets went in.
fn fill(a: &RawSocket, packet: &[u8]) -> usize {
    let mut sent = 0;
    loop {
        match a.try_send(&[IoSlice::new(packet)], &[]) {
            Ok(()) => sent += 1,
            Err(Error::WouldBlock) => return sent,
            Err(e) => panic!("try_send: {e}"),
        }
        assert!(sent < 1_000_000, "the socket buffer never filled up");
    }
}

#[test]
fn full_buffer_try_send_would_block_and_send_waits_for_the_reader() {
    let _g = serial();
    let (a, b) = RawSocket::pair().unwrap();
    let packet = vec![0xAB; 4096];
    let queued = fill(&a, &packet);
    assert!(queued > 0);
    assert!(matches!(
        a.try_send(&[IoSlice::new(&packet)], &[]),
        Err(Error::WouldBlock)
    ));

    let done = Arc::new(AtomicBool::new(false));
    let a = Arc::new(a);
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let sender = {
        let (a, done, packet) = (a.clone(), done.clone(), packet.clone());
        std::thread::spawn(move || {
            tid_tx.send(gettid()).unwrap();
            a.send(&[IoSlice::new(b"after the wait")], &[]).unwrap();
            done.store(true, Ordering::SeqCst);
            drop(packet);
        })
    };
    // The send sleeps in the kernel (not merely late to start): it waits for room.
    let call = wait_until_blocked_in(tid_rx.recv().unwrap(), SENDMSG);
    assert!(
        !done.load(Ordering::SeqCst),
        "send did not wait for room in a full buffer"
    );
    // Its flags (sendmsg's third argument): MSG_NOSIGNAL, so a peer that closes cannot
    // raise SIGPIPE (which Linux does not raise for SOCK_SEQPACKET anyway, see
    // `send_to_closed_peer_is_disconnected_without_sigpipe`), and no MSG_DONTWAIT.
    let flags = call.args[2] as libc::c_int;
    assert_ne!(
        flags & libc::MSG_NOSIGNAL,
        0,
        "sendmsg without MSG_NOSIGNAL: {call:?}"
    );
    assert_eq!(flags & libc::MSG_DONTWAIT, 0, "{call:?}");

    // Drain everything: the blocked send completes and its packet comes last.
    let mut buf = vec![0u8; 8192];
    let mut fds = Vec::new();
    for _ in 0..queued {
        let n = b.recv(&mut buf, &mut fds, RecvMode::Blocking).unwrap();
        assert_eq!(n, packet.len());
    }
    let n = b.recv(&mut buf, &mut fds, RecvMode::Blocking).unwrap();
    assert_eq!(&buf[..n], b"after the wait");
    sender.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
}

#[test]
fn sockets_with_o_nonblock_still_block_in_send_and_recv() {
    let _g = serial();
    // A socket that arrives from elsewhere may have O_NONBLOCK set; Blocking must still wait.
    let (x, y) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .unwrap();
    let a = RawSocket::from_fd(x).unwrap();
    let b = RawSocket::from_fd(y).unwrap();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        let mut buf = [0u8; 8];
        let mut fds = Vec::new();
        let n = b.recv(&mut buf, &mut fds, RecvMode::Blocking).unwrap();
        assert_eq!(&buf[..n], b"late");
        // Drain slowly so that the peer's blocking sends must wait.
        let mut got = 0;
        while got < 2000 {
            b.recv(&mut [0u8; 4096], &mut fds, RecvMode::Blocking)
                .unwrap();
            got += 1;
        }
        got
    });
    // recvmsg on the O_NONBLOCK socket said EAGAIN; the receiver waits in poll.
    wait_until_blocked_in(tid_rx.recv().unwrap(), POLL);
    a.send(&[IoSlice::new(b"late")], &[]).unwrap();
    for _ in 0..2000 {
        a.send(&[IoSlice::new(&[1u8; 4096])], &[]).unwrap();
    }
    assert_eq!(t.join().unwrap(), 2000);
}

static SIGNALS_SEEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    SIGNALS_SEEN.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn interrupted_recv_and_send_are_retried() {
    let _g = serial();
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    // No SA_RESTART: blocking syscalls return EINTR when the signal arrives.
    let action = SigAction::new(
        SigHandler::Handler(count_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only touches an atomic, which is async-signal-safe.
    let old = unsafe { sigaction(Signal::SIGUSR1, &action) }.unwrap();

    for mode in [
        RecvMode::Blocking,
        RecvMode::Deadline(Instant::now() + Duration::from_secs(30)),
    ] {
        let (a, b) = RawSocket::pair().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let receiver = std::thread::spawn(move || {
            // SAFETY: pthread_self has no preconditions.
            tx.send((unsafe { libc::pthread_self() }, gettid()))
                .unwrap();
            let mut buf = [0u8; 16];
            let mut fds = Vec::new();
            let n = b.recv(&mut buf, &mut fds, mode).map(|n| buf[..n].to_vec());
            (n, b)
        });
        let (thread, tid) = rx.recv().unwrap();
        // The signals interrupt a receive that sleeps in the kernel (recvmsg when blocking,
        // poll with a deadline), not one that has yet to start.
        let waits_in = if matches!(mode, RecvMode::Blocking) {
            RECVMSG
        } else {
            POLL
        };
        wait_until_blocked_in(tid, waits_in);
        let before = SIGNALS_SEEN.load(Ordering::SeqCst);
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(10));
            // SAFETY: the receiver thread is alive (it has not been sent its packet yet and
            // we join it only below), so its pthread_t is valid.
            unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
        }
        // Handled (the handler ran in the receiver), then the receive went back to sleep
        // in the kernel: EINTR was retried, not returned.
        let deadline = Instant::now() + Duration::from_secs(30);
        while SIGNALS_SEEN.load(Ordering::SeqCst) == before {
            assert!(Instant::now() < deadline, "no signal was delivered");
            std::thread::sleep(Duration::from_millis(1));
        }
        wait_until_blocked_in(tid, waits_in);
        a.send(&[IoSlice::new(b"through")], &[]).unwrap();
        let (got, _b) = receiver.join().unwrap();
        assert_eq!(got.unwrap(), b"through", "{mode:?}");
    }

    // A sender blocked on a full buffer is interrupted too, and still delivers.
    let (a, b) = RawSocket::pair().unwrap();
    let queued = fill(&a, &[0u8; 4096]);
    let (tx, rx) = std::sync::mpsc::channel();
    let sender = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tx.send((unsafe { libc::pthread_self() }, gettid()))
            .unwrap();
        a.send(&[IoSlice::new(b"blocked")], &[]).map(|()| a)
    });
    let (thread, tid) = rx.recv().unwrap();
    wait_until_blocked_in(tid, SENDMSG);
    let before = SIGNALS_SEEN.load(Ordering::SeqCst);
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(10));
        // SAFETY: the sender is blocked (the buffer is full until we drain below).
        unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
    }
    let mut fds = Vec::new();
    for _ in 0..queued {
        b.recv(&mut [0u8; 4096], &mut fds, RecvMode::Blocking)
            .unwrap();
    }
    let mut buf = [0u8; 16];
    let n = b.recv(&mut buf, &mut fds, RecvMode::Blocking).unwrap();
    assert_eq!(&buf[..n], b"blocked");
    sender.join().unwrap().unwrap();
    assert!(
        SIGNALS_SEEN.load(Ordering::SeqCst) > before,
        "no signal reached the blocked send"
    );

    // SAFETY: restores the previous disposition.
    unsafe { sigaction(Signal::SIGUSR1, &old) }.unwrap();
}

#[test]
fn concurrent_senders_never_interleave() {
    let _g = serial();
    const THREADS: usize = 6;
    const PER_THREAD: usize = 300;
    let (a, b) = RawSocket::pair().unwrap();
    let a = Arc::new(a);
    let f = Arc::new(tmpfile(b"x"));
    let senders: Vec<_> = (0..THREADS)
        .map(|t| {
            let (a, f) = (a.clone(), f.clone());
            std::thread::spawn(move || {
                for seq in 0..PER_THREAD {
                    // Header: thread, sequence; body: a length and byte that depend on both.
                    let len = 1 + (seq * 37 + t * 101) % 6000;
                    let mut packet = vec![(t * 31 + seq) as u8; 8 + len];
                    packet[..4].copy_from_slice(&(t as u32).to_le_bytes());
                    packet[4..8].copy_from_slice(&(seq as u32).to_le_bytes());
                    let nfds = seq % 3;
                    let fds = vec![f.as_fd(); nfds];
                    // Split into several iovecs: still one packet.
                    let (x, y) = packet.split_at(5);
                    a.send(&[IoSlice::new(x), IoSlice::new(y)], &fds).unwrap();
                }
            })
        })
        .collect();
    let mut next = [0usize; THREADS];
    let mut buf = vec![0u8; 8192];
    for _ in 0..THREADS * PER_THREAD {
        let mut fds = Vec::new();
        let n = b.recv(&mut buf, &mut fds, RecvMode::Blocking).unwrap();
        let t = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
        let seq = u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize;
        assert_eq!(seq, next[t], "thread {t}'s packets out of order");
        next[t] += 1;
        let len = 1 + (seq * 37 + t * 101) % 6000;
        assert_eq!(n, 8 + len);
        assert!(
            buf[8..n].iter().all(|&x| x == (t * 31 + seq) as u8),
            "packet {t}/{seq} mixed"
        );
        assert_eq!(fds.len(), seq % 3);
    }
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(next, [PER_THREAD; THREADS]);
}

#[test]
fn concurrent_receivers_each_get_distinct_packets() {
    let _g = serial();
    let (a, b) = RawSocket::pair().unwrap();
    let b = Arc::new(b);
    let receivers: Vec<_> = (0..3)
        .map(|i| {
            let b = b.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 8];
                let mut fds = Vec::new();
                loop {
                    let mode = if i == 0 {
                        RecvMode::Blocking
                    } else {
                        RecvMode::Deadline(Instant::now() + Duration::from_secs(20))
                    };
                    match b.recv(&mut buf, &mut fds, mode) {
                        Ok(8) => got.push(u64::from_le_bytes(buf)),
                        Ok(0) => return got, // the end marker (an empty packet)
                        other => panic!("receiver {i}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    for i in 0..3000u64 {
        a.send(&[IoSlice::new(&i.to_le_bytes())], &[]).unwrap();
    }
    for _ in 0..3 {
        a.send(&[], &[]).unwrap();
    }
    let mut all: Vec<u64> = receivers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..3000).collect::<Vec<_>>());
}

#[test]
fn peer_credentials_of_a_pair_are_our_own() {
    let _g = serial();
    let (a, b) = RawSocket::pair().unwrap();
    for s in [&a, &b] {
        let c = s.peer_credentials().unwrap();
        assert_eq!(c.pid, std::process::id() as i32);
        assert_eq!(c.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(c.gid, nix::unistd::getegid().as_raw());
    }
}

#[test]
fn send_buffer_size_is_reported_and_bounds_the_packet_size() {
    let _g = serial();
    let (a, b) = RawSocket::pair().unwrap();
    let size = a.send_buffer_size().unwrap();
    assert!(size >= 4096, "SO_SNDBUF {size}");
    // A packet far larger than the send buffer cannot be sent at all (EMSGSIZE).
    let huge = vec![0u8; size * 4];
    match a.send(&[IoSlice::new(&huge)], &[]) {
        Err(Error::Io {
            op: "sendmsg",
            fd: Some(fd),
            source,
        }) => {
            assert_eq!(fd, a.as_raw_fd());
            assert_eq!(source.raw_os_error(), Some(libc::EMSGSIZE));
        }
        other => panic!("expected EMSGSIZE, got {other:?}"),
    }
    drop(b);
}

#[test]
fn from_fd_accepts_only_unix_seqpacket_sockets() {
    let _g = serial();
    let base = fd_count();
    // The right kind, made without CLOEXEC: from_fd sets it.
    let (x, _y) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::empty(),
    )
    .unwrap();
    assert!(!is_cloexec(&x));
    let s = RawSocket::from_fd(x).unwrap();
    assert!(is_cloexec(&s));
    let back: OwnedFd = s.into_fd();
    drop(back);

    let (stream, _other) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let raw = stream.as_raw_fd();
    match RawSocket::from_fd(stream) {
        Err(e @ Error::Io { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&format!("fd {raw}")), "{text}");
            assert!(text.contains("Stream"), "{text}");
        }
        other => panic!("a stream socket was accepted: {other:?}"),
    }
    let (dgram, _other2) = socketpair(
        AddressFamily::Unix,
        SockType::Datagram,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    // Refused as InvalidInput, naming the family and type found.
    let refused = |fd: OwnedFd, what: &str| {
        let raw = fd.as_raw_fd();
        let e = RawSocket::from_fd(fd).expect_err(what);
        let Error::Io { op, fd, source } = &e else {
            panic!("{what}: {e:?}")
        };
        assert_eq!((*op, *fd), ("RawSocket::from_fd", Some(raw)), "{e}");
        assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains(what), "{e}");
    };
    refused(dgram, "Unix Datagram");
    let udp = nix::sys::socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    refused(udp, "Inet Datagram");
    let listening =
        memfile_ipc::Listener::bind_abstract(util_raw::abstract_name("fromfd")).unwrap();
    let listening_fd: OwnedFd = nix::unistd::dup(&listening).unwrap();
    match RawSocket::from_fd(listening_fd) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("listening"), "{e}"),
        other => panic!("a listening socket was accepted: {other:?}"),
    }
    drop(listening);
    let file: OwnedFd = tmpfile(b"not a socket").into();
    match RawSocket::from_fd(file) {
        Err(Error::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::ENOTSOCK)),
        other => panic!("a file was accepted: {other:?}"),
    }
    drop((_y, _other, _other2));
    assert_eq!(fd_count(), base, "refused fds are closed, not leaked");
}

#[test]
fn a_socket_sent_over_a_socket_works() {
    let _g = serial();
    let (a, b) = RawSocket::pair().unwrap();
    let (c, d) = RawSocket::pair().unwrap();
    a.send(&[IoSlice::new(b"here is d")], &[d.as_fd()]).unwrap();
    drop(d);
    let mut fds = Vec::new();
    b.recv(&mut [0u8; 16], &mut fds, RecvMode::Blocking)
        .unwrap();
    let d2 = RawSocket::from_fd(fds.pop().unwrap()).unwrap();
    c.send(&[IoSlice::new(b"via d")], &[]).unwrap();
    let mut buf = [0u8; 16];
    let n = d2.recv(&mut buf, &mut fds, RecvMode::Blocking).unwrap();
    assert_eq!(&buf[..n], b"via d");
}
