//! `spawn_raw` / `raw_from_parent`: a child process (this test binary, re-executed with
//! `--exact child_process_main --ignored`) that gets exactly one inherited fd.
//!
//! Every test takes `util_raw::serial()`: one of them opens a non-CLOEXEC fd on purpose, and
//! children spawned meanwhile by parallel tests would inherit it.

mod util_raw;

use std::fs::File;
use std::io::{ErrorKind, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use memfile_ipc::raw::{RawSocket, RecvMode};
use memfile_ipc::{Error, FD_ENV, INODE_ENV, raw_from_parent, spawn_raw};
use util_raw::{fd_count, file_id, is_cloexec, open_fds, serial};

const MODE_ENV: &str = "H3_PROCESS_CHILD_MODE";

/// A command that re-runs this binary's `child_process_main` in `mode`.
fn child_cmd(mode: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_process_main", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(MODE_ENV, mode)
        .stdout(Stdio::null()); // libtest's chatter; failures go to stderr
    cmd
}

fn recv_within(s: &RawSocket, secs: u64) -> memfile_ipc::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 4096];
    let mut fds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let n = s.recv(&mut buf, &mut fds, RecvMode::Deadline(deadline))?;
    buf.truncate(n);
    Ok((buf, fds))
}

#[test]
fn child_gets_its_socket_and_nothing_else() {
    let _g = serial();
    // An fd without CLOEXEC in the parent: spawn_raw must keep it from the child anyway.
    let leaky: OwnedFd = nix::unistd::dup(File::open("/dev/null").unwrap()).unwrap();
    assert!(!is_cloexec(&leaky));
    let base = fd_count();

    let (mut child, sock) = spawn_raw(&mut child_cmd("echo")).unwrap();
    assert_eq!(fd_count(), base + 1, "the parent keeps only its own end");
    assert!(is_cloexec(&sock));

    // First packet: "<fd number from the env>|<the child's open fds>".
    let (report, _) = recv_within(&sock, 30).unwrap();
    let report = String::from_utf8(report).unwrap();
    let (n, list) = report.split_once('|').unwrap();
    let n: i32 = n.parse().unwrap();
    let fds: Vec<i32> = list.split(',').map(|x| x.parse().unwrap()).collect();
    assert!(n >= 3);
    assert_eq!(
        fds,
        vec![0, 1, 2, n],
        "the child inherited other fds (leaky one: {leaky:?})"
    );

    // Echo: bytes reversed, the fds sent back.
    let f = File::open("/proc/self/exe").unwrap();
    sock.send(&[IoSlice::new(b"hello")], &[f.as_fd(), f.as_fd()])
        .unwrap();
    let (echo, fds) = recv_within(&sock, 30).unwrap();
    assert_eq!(echo, b"olleh");
    assert_eq!(fds.len(), 2);
    assert!(fds.iter().all(|fd| file_id(fd) == file_id(&f)));

    let creds = child.credentials().unwrap();
    assert_eq!(creds.pid, child.id() as i32);
    assert_eq!(creds.uid, nix::unistd::geteuid().as_raw());
    assert_eq!(creds.gid, nix::unistd::getegid().as_raw());

    sock.send(&[IoSlice::new(b"bye")], &[]).unwrap();
    assert!(matches!(
        recv_within(&sock, 30),
        Err(Error::Disconnected { .. })
    ));
    assert!(child.wait().unwrap().success());
    assert!(child.try_wait().unwrap().is_some());
    drop((sock, fds, f));
    assert_eq!(fd_count(), base);
}

#[test]
fn a_command_can_be_reused() {
    let _g = serial();
    let mut cmd = child_cmd("exit");
    for _ in 0..3 {
        let (mut child, sock) = spawn_raw(&mut cmd).unwrap();
        assert!(matches!(
            recv_within(&sock, 30),
            Err(Error::Disconnected { .. })
        ));
        assert_eq!(
            child.wait().unwrap().code(),
            Some(7),
            "the child did not get its socket"
        );
    }
}

#[test]
fn child_that_exits_is_disconnected() {
    let _g = serial();
    let (mut child, sock) = spawn_raw(&mut child_cmd("exit")).unwrap();
    let t = Instant::now();
    assert!(matches!(
        recv_within(&sock, 30),
        Err(Error::Disconnected { .. })
    ));
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(child.wait().unwrap().code(), Some(7));
    // Sending to it is Disconnected too.
    assert!(matches!(
        sock.send(&[IoSlice::new(b"x")], &[]),
        Err(Error::Disconnected { .. })
    ));
}

#[test]
fn killed_child_mid_conversation_is_disconnected() {
    let _g = serial();
    let (mut child, sock) = spawn_raw(&mut child_cmd("hang")).unwrap();
    let (ready, _) = recv_within(&sock, 30).unwrap();
    assert_eq!(ready, b"ready");
    child.kill().unwrap();
    let t = Instant::now();
    assert!(matches!(
        recv_within(&sock, 30),
        Err(Error::Disconnected { .. })
    ));
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(!child.wait().unwrap().success());
}

#[test]
fn child_rejects_stale_or_bad_environment() {
    let _g = serial();
    let status = child_cmd("bad-env").status().unwrap();
    assert!(status.success(), "see the child's stderr");
}

#[test]
fn raw_from_parent_without_a_parent_is_not_found() {
    let _g = serial();
    assert!(std::env::var_os(FD_ENV).is_none());
    match raw_from_parent() {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), ErrorKind::NotFound);
            assert!(source.to_string().contains(FD_ENV), "{source}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn spawn_failure_leaks_nothing() {
    let _g = serial();
    let base = fd_count();
    match spawn_raw(&mut Command::new("/nonexistent/memfile-h3-program")) {
        Err(Error::Io {
            op: "spawn",
            source,
            ..
        }) => {
            assert_eq!(source.kind(), ErrorKind::NotFound)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fd_count(), base);
}

/// Not a test on its own: the child process of the tests above.
#[test]
#[ignore = "helper process, started by the other tests of this file"]
fn child_process_main() {
    let mode = std::env::var(MODE_ENV).expect("run only as a child process");
    match mode.as_str() {
        "echo" => {
            let n = std::env::var(FD_ENV).unwrap();
            let sock = raw_from_parent().unwrap();
            assert!(
                is_cloexec(&sock),
                "the adopted socket must be CLOEXEC again"
            );
            // Adopting twice would make two owners of one fd.
            match raw_from_parent() {
                Err(Error::Io { source, .. }) => {
                    assert_eq!(source.kind(), ErrorKind::AlreadyExists)
                }
                other => panic!("second raw_from_parent: {other:?}"),
            }
            let fds: Vec<String> = open_fds().iter().map(|f| f.to_string()).collect();
            let report = format!("{n}|{}", fds.join(","));
            sock.send(&[IoSlice::new(report.as_bytes())], &[]).unwrap();
            loop {
                let (mut bytes, fds) = recv_within(&sock, 60).unwrap();
                if bytes == b"bye" {
                    return;
                }
                bytes.reverse();
                let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
                sock.send(&[IoSlice::new(&bytes)], &borrowed).unwrap();
            }
        }
        "exit" => {
            let _sock = raw_from_parent().unwrap();
            std::process::exit(7);
        }
        "hang" => {
            let sock = raw_from_parent().unwrap();
            sock.send(&[IoSlice::new(b"ready")], &[]).unwrap();
            std::thread::sleep(Duration::from_secs(120));
        }
        "bad-env" => bad_env_checks(),
        other => panic!("unknown mode {other}"),
    }
}

/// In a child that was not started by spawn_raw: stale, wrong or malformed variables are
/// errors, and the fd they name is left open (it belongs to someone else).
fn bad_env_checks() {
    let kind_of = |r: memfile_ipc::Result<RawSocket>| match r {
        Err(Error::Io { source, .. }) => source.kind(),
        other => panic!("expected an error, got {other:?}"),
    };
    let set = |fd: &str, ino: Option<&str>| {
        // SAFETY: this helper process runs only this test; the only other thread is libtest's
        // main thread, which waits for the test and does not touch the environment meanwhile.
        unsafe {
            std::env::set_var(FD_ENV, fd);
            match ino {
                Some(i) => std::env::set_var(INODE_ENV, i),
                None => std::env::remove_var(INODE_ENV),
            }
        }
    };
    // Not a number.
    set("abc", None);
    assert_eq!(kind_of(raw_from_parent()), ErrorKind::InvalidInput);
    // A closed fd.
    set("999", None);
    let r = raw_from_parent();
    assert!(
        matches!(&r, Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EBADF)),
        "{r:?}"
    );
    // An open fd that is another socket than the one named (stale inode).
    let (a, b) = RawSocket::pair().unwrap();
    let fd = util_raw::raw(&a).to_string();
    set(&fd, Some("1"));
    let r = raw_from_parent();
    assert_eq!(kind_of(r), ErrorKind::InvalidInput);
    assert!(is_cloexec(&a), "the fd must still be open and untouched");
    // An open fd that is not a socket at all (stderr), without the inode check.
    set("2", None);
    let r = raw_from_parent();
    assert!(
        matches!(&r, Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOTSOCK)),
        "{r:?}"
    );
    assert!(nix::fcntl::fcntl(std::io::stderr().as_fd(), nix::fcntl::FcntlArg::F_GETFD).is_ok());
    // The right socket, named with its inode: adopted.
    let ino = nix::sys::stat::fstat(a.as_fd()).unwrap().st_ino.to_string();
    let fd_a: OwnedFd = a.into_fd();
    let fd_num = util_raw::raw(&fd_a).to_string();
    set(&fd_num, Some(&ino));
    // Ownership moves to raw_from_parent: forget ours so the fd is not closed twice.
    std::mem::forget(fd_a);
    let s = raw_from_parent().unwrap();
    s.send(&[IoSlice::new(b"ok")], &[]).unwrap();
    let (got, _) = recv_within(&b, 5).unwrap();
    assert_eq!(got, b"ok");
}
