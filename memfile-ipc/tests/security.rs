//! Security properties (issue 6): received fds never leak into exec'd children, and a path
//! `Listener` keeps other users out twice over (file mode 0600, then the same-uid policy).
//!
//! The abstract-namespace refusal of another uid is in `tests/listener.rs`
//! (`other_uid_is_rejected_by_default`), the 0600 mode from the first instant in
//! `socket_file_is_0600_from_the_start`; not repeated here.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use memfile_core::{Frozen, MemFile};
use memfile_ipc::raw::{RawSocket, RecvMode};
use memfile_ipc::{Error, Fd, Listener, Sender, channel, connect_raw};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use serde::{Deserialize, Serialize};

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

const ROLE: &str = "SECURITY_CHILD";

fn is_cloexec(fd: BorrowedFd<'_>) -> bool {
    let flags = fcntl(fd, FcntlArg::F_GETFD).unwrap();
    FdFlag::from_bits_retain(flags).contains(FdFlag::FD_CLOEXEC)
}

/// A dup of `fd` with close-on-exec cleared: what a careless sender holds.
fn inheritable(fd: BorrowedFd<'_>) -> OwnedFd {
    let dup = fd.try_clone_to_owned().unwrap();
    fcntl(&dup, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
    assert!(!is_cloexec(dup.as_fd()));
    dup
}

/// The targets of the fds an exec'd program inherits from this process, as that program
/// sees them (`ls -l /proc/self/fd` lists its own fd table, inherited fds included).
fn fds_of_an_execd_child() -> String {
    let out = Command::new("ls")
        .args(["-l", "/proc/self/fd/"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[derive(Debug, Serialize, Deserialize)]
struct Bundle {
    frozen: Fd<Frozen>,
    memfile: Fd<MemFile>,
    any: Fd<OwnedFd>,
    reply: Sender<u8>,
}

#[test]
fn received_fds_are_close_on_exec() {
    let _g = lock();
    let marker = format!("memfile-sec-{}", std::process::id());
    // What the sender sends is deliberately inheritable on its side.
    let frozen = Frozen::from_bytes(&format!("{marker}-frozen"), b"frozen").unwrap();
    let memfile = MemFile::create_default(&format!("{marker}-memfile")).unwrap();
    let (pipe_r, _pipe_w) = nix::unistd::pipe().unwrap();
    let (reply_a, _reply_b) = RawSocket::pair().unwrap();
    let sent = [
        inheritable(frozen.as_fd()),
        inheritable(memfile.as_fd()),
        inheritable(pipe_r.as_fd()),
        inheritable(reply_a.as_fd()),
    ];
    // Positive control: an inheritable fd does show up in the child.
    let control = MemFile::create_default(&format!("{marker}-control")).unwrap();
    let control = inheritable(control.as_fd());
    let listing = fds_of_an_execd_child();
    assert!(
        listing.contains(&format!("{marker}-control")),
        "the check cannot see fds:\n{listing}"
    );
    drop(control);

    // Through the raw layer.
    let (a, b) = RawSocket::pair().unwrap();
    let borrowed: Vec<BorrowedFd<'_>> = sent.iter().map(|f| f.as_fd()).collect();
    a.send(&[IoSlice::new(b"raw")], &borrowed).unwrap();
    let mut buf = [0u8; 16];
    let mut raw_fds = Vec::new();
    b.recv(&mut buf, &mut raw_fds, RecvMode::Blocking).unwrap();
    assert_eq!(raw_fds.len(), 4);
    for fd in &raw_fds {
        assert!(
            is_cloexec(fd.as_fd()),
            "fd {} received without FD_CLOEXEC",
            fd.as_raw_fd()
        );
    }

    // Through the typed layer, every kind of fd field.
    let (typed_tx, typed_rx) = channel::<Bundle>().unwrap();
    let bundle_raw = typed_tx.raw().clone();
    let mut packet = b"MFIP\x01\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00".to_vec();
    packet.extend_from_slice(&4u64.to_le_bytes());
    packet.extend_from_slice(&[0, 1, 2, 3]);
    bundle_raw
        .send(&[IoSlice::new(&packet)], &borrowed)
        .unwrap();
    let bundle = typed_rx.recv().unwrap();
    let typed: Vec<RawFd> = vec![
        bundle.frozen.as_fd().as_raw_fd(),
        bundle.memfile.as_fd().as_raw_fd(),
        bundle.any.as_raw_fd(),
        bundle.reply.as_fd().as_raw_fd(),
    ];
    for &fd in &typed {
        // SAFETY: `fd` belongs to `bundle`, alive until the end of this test.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        assert!(
            is_cloexec(fd),
            "typed field fd {} without FD_CLOEXEC",
            fd.as_raw_fd()
        );
    }

    // An exec'd child inherits none of them: neither the memfds by name nor any fd number
    // that is a received one.
    drop(sent);
    let listing = fds_of_an_execd_child();
    assert!(
        !listing.contains(&marker),
        "a received fd leaked into the child:\n{listing}"
    );
    let inherited: Vec<RawFd> = listing
        .lines()
        .filter_map(|l| {
            l.split(" -> ")
                .next()?
                .split_whitespace()
                .last()?
                .parse()
                .ok()
        })
        .collect();
    // 0-2 are stdio, 3 is the directory `ls` reads.
    for fd in raw_fds
        .iter()
        .map(|f| f.as_raw_fd())
        .chain(typed.iter().copied())
    {
        assert!(
            fd <= 3 || !inherited.contains(&fd),
            "fd {fd} leaked into the child:\n{listing}"
        );
    }
    drop((bundle, frozen, memfile));
}

/// Receiving goes on in one thread while another spawns programs: `MSG_CMSG_CLOEXEC` sets
/// the flag atomically with the receipt, so no spawned program ever catches a received fd
/// in the window a separate `fcntl` would leave.
#[test]
fn no_window_between_receipt_and_close_on_exec() {
    let _g = lock();
    let marker = format!("memfile-race-{}", std::process::id());
    let buffer = MemFile::create_default(&marker).unwrap();
    let (tx, rx) = channel::<Vec<Fd<OwnedFd>>>().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(fds) => n += fds.len(),
                    Err(Error::Timeout { .. }) => {}
                    // The sender thread stopped first.
                    Err(Error::Disconnected { .. }) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            n
        })
    };
    let sender = {
        let stop = stop.clone();
        let fd = buffer.as_fd().try_clone_to_owned().unwrap();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // The sender's copies are close-on-exec (as everything std and this crate
                // open): any inheritable copy a child sees would be a received one.
                let batch: Vec<Fd<OwnedFd>> =
                    (0..100).map(|_| Fd::new(fd.try_clone().unwrap())).collect();
                let _ = tx.try_send(&batch);
            }
        })
    };
    let mut leaks = Vec::new();
    for _ in 0..30 {
        let listing = fds_of_an_execd_child();
        leaks.extend(
            listing
                .lines()
                .filter(|l| l.contains(&marker))
                .map(str::to_owned),
        );
    }
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let received = receiver.join().unwrap();
    assert!(received > 0);
    assert!(
        leaks.is_empty(),
        "received fds seen by spawned programs: {leaks:?}"
    );
    println!("{received} fds received while 30 programs were spawned: none inherited");
}

/// The uid-65534 client's entry point. Ignored in normal runs.
#[test]
#[ignore = "entry point of the child processes the other tests spawn"]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let path = std::env::var("SECURITY_PATH").unwrap();
    nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).unwrap();
    nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).unwrap();
    match (role.as_str(), connect_raw(&path)) {
        ("denied", Err(Error::Io { source, .. })) => {
            assert_eq!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied,
                "{source}"
            );
        }
        ("rejected", Ok(s)) => {
            let mut buf = [0u8; 8];
            let r = s.recv(
                &mut buf,
                &mut Vec::new(),
                RecvMode::Deadline(std::time::Instant::now() + Duration::from_secs(20)),
            );
            assert!(matches!(r, Err(Error::Disconnected { .. })), "{r:?}");
        }
        (role, other) => panic!("{role}: {other:?}"),
    }
}

fn run_as_nobody(role: &str, path: &std::path::Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child",
            "--ignored",
            "--test-threads=1",
            "--quiet",
        ])
        .env(ROLE, role)
        .env("SECURITY_PATH", path)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Another uid cannot connect to a path listener (mode 0600); and if the socket file is
/// made world-writable, the default same-uid policy still refuses it.
#[test]
fn path_listener_refuses_another_uid_twice() {
    let _g = lock();
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root to run a child as uid 65534");
        return;
    }
    let dir = std::env::temp_dir().join(format!("memfile-sec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("listener.sock");
    let listener = Listener::bind(&path).unwrap().report_refusals(true);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Layer 1: file permissions. (Root passes them, a uid-65534 process does not.)
    let mut child = run_as_nobody("denied", &path);
    assert!(
        child.wait().unwrap().success(),
        "uid 65534 could connect to a 0600 socket"
    );
    assert!(matches!(
        listener.try_accept::<(), ()>(),
        Err(Error::WouldBlock)
    ));
    // Layer 2: the credential policy.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut child = run_as_nobody("rejected", &path);
    match listener.accept_timeout::<(), ()>(Duration::from_secs(30)) {
        Err(Error::PeerRejected { uid: 65534, .. }) => {}
        other => panic!("expected PeerRejected, got {:?}", other.map(|_| ())),
    }
    assert!(
        child.wait().unwrap().success(),
        "the refused child did not see Disconnected"
    );
    drop(listener);
    std::fs::remove_dir_all(&dir).unwrap();
}
