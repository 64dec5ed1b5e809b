//! `Listener` on paths and abstract names, `connect_raw`, and the credential policy.
//!
//! Every test takes `util_raw::serial()` (fd counts; the child processes).

mod util_raw;

use std::io::{ErrorKind, IoSlice};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memfile_ipc::raw::{RawSocket, RecvMode};
use memfile_ipc::{
    CredentialPolicy, Credentials, Error, Listener, connect_abstract_raw, connect_raw,
};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};
use util_raw::{TempDir, abstract_name, fd_count, serial};

/// `source` is `errno` (its kind, and its text, which wraps the OS error with the path).
fn assert_errno(source: &std::io::Error, errno: i32) {
    let os = std::io::Error::from_raw_os_error(errno);
    assert_eq!(source.kind(), os.kind(), "{source}");
    assert!(
        source.to_string().contains(&format!("(os error {errno})")),
        "{source}"
    );
}

fn recv_packet(s: &RawSocket) -> memfile_ipc::Result<Vec<u8>> {
    let mut buf = [0u8; 256];
    let mut fds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let n = s.recv(&mut buf, &mut fds, RecvMode::Deadline(deadline))?;
    Ok(buf[..n].to_vec())
}

/// Accepts connections until one delivers `hello` (skipping probe connections that a failed
/// `bind` of the same path made, which close at once).
fn accept_hello(l: &Listener, hello: &[u8]) -> (RawSocket, Credentials) {
    for _ in 0..5 {
        let (s, c) = l.accept_raw_timeout(Duration::from_secs(10)).unwrap();
        match recv_packet(&s) {
            Ok(p) if p == hello => return (s, c),
            Err(Error::Disconnected { .. }) => continue,
            other => panic!("unexpected first packet: {other:?}"),
        }
    }
    panic!("no connection said hello");
}

#[test]
fn path_listener_round_trip_with_credentials() {
    let _g = serial();
    let dir = TempDir::new("rt");
    let path = dir.path("sock");
    let l = Listener::bind(&path).unwrap();
    assert_eq!(l.local_path(), Some(path.as_path()));
    assert_eq!(l.abstract_name(), None);
    assert!(matches!(l.policy(), CredentialPolicy::SameUid));
    let client = connect_raw(&path).unwrap();
    let (server, peer) = l.accept_raw().unwrap();
    assert_eq!(peer.pid, std::process::id() as i32);
    assert_eq!(peer.uid, nix::unistd::geteuid().as_raw());
    assert_eq!(peer.gid, nix::unistd::getegid().as_raw());
    assert_eq!(server.peer_credentials().unwrap(), peer);
    assert_eq!(
        client.peer_credentials().unwrap().pid,
        std::process::id() as i32
    );
    client.send(&[IoSlice::new(b"ping")], &[]).unwrap();
    assert_eq!(recv_packet(&server).unwrap(), b"ping");
    server.send(&[IoSlice::new(b"pong")], &[]).unwrap();
    assert_eq!(recv_packet(&client).unwrap(), b"pong");
    drop(server);
    assert!(matches!(
        recv_packet(&client),
        Err(Error::Disconnected { .. })
    ));
}

/// The socket file never exists with a mode wider than 0600: it is created 0600 and its mode
/// is never changed afterwards. Proven with inotify rather than by watching the file in a
/// race: `IN_ATTRIB` reports every `chmod`/`fchmod` of the file after `bind` created it
/// (`IN_CREATE`), so a file created wider and narrowed later would be seen, however fast.
#[test]
fn socket_file_is_0600_from_the_start() {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let _g = serial();
    let dir = TempDir::new("mode");
    let path = dir.path("sock");
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).unwrap();
    inotify
        .add_watch(
            &dir.0,
            AddWatchFlags::IN_CREATE | AddWatchFlags::IN_ATTRIB | AddWatchFlags::IN_DELETE,
        )
        .unwrap();
    let l = Listener::bind(&path).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    drop(l);
    // Every event of the directory, in order: created, deleted; no mode change between.
    let events: Vec<(AddWatchFlags, Option<std::ffi::OsString>)> = inotify
        .read_events()
        .unwrap()
        .into_iter()
        .map(|e| (e.mask, e.name))
        .collect();
    let sock = Some(std::ffi::OsString::from("sock"));
    assert_eq!(
        events,
        [
            (AddWatchFlags::IN_CREATE, sock.clone()),
            (AddWatchFlags::IN_DELETE, sock)
        ],
        "the socket file's mode was changed after it was created"
    );
}

#[test]
fn relative_path_is_removed_even_after_chdir() {
    let _g = serial();
    // The current directory is process-wide; serial() keeps the other tests of this file
    // (which use absolute paths anyway) from running meanwhile.
    let dir = TempDir::new("rel");
    let old = std::env::current_dir().unwrap();
    std::env::set_current_dir(&dir.0).unwrap();
    let l = Listener::bind("relative.sock");
    std::env::set_current_dir(&old).unwrap();
    let l = l.unwrap();
    assert_eq!(l.local_path(), Some(dir.path("relative.sock").as_path()));
    assert!(dir.path("relative.sock").exists());
    drop(l);
    assert!(!dir.path("relative.sock").exists());
}

#[test]
fn socket_file_is_removed_on_drop_but_not_a_replacement() {
    let _g = serial();
    let dir = TempDir::new("drop");
    let path = dir.path("sock");
    drop(Listener::bind(&path).unwrap());
    assert!(!path.exists(), "socket file left behind");

    // Someone replaced the file while the listener lived: Drop must not remove theirs.
    let l = Listener::bind(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"not ours").unwrap();
    drop(l);
    assert_eq!(std::fs::read(&path).unwrap(), b"not ours");
}

#[test]
fn stale_socket_file_is_replaced() {
    let _g = serial();
    let dir = TempDir::new("stale");
    let path = dir.path("sock");
    // A listener that died without cleaning up: bound, then closed; the file stays.
    let dead = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(dead.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    drop(dead);
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket()
    );
    match connect_raw(&path) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), ErrorKind::ConnectionRefused, "{source}")
        }
        other => panic!("the stale socket should refuse connections: {other:?}"),
    }

    let l = Listener::bind(&path).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let c = connect_raw(&path).unwrap();
    c.send(&[IoSlice::new(b"hi")], &[]).unwrap();
    let (s, _) = l.accept_raw().unwrap();
    assert_eq!(recv_packet(&s).unwrap(), b"hi");
}

#[test]
fn live_listener_is_not_replaced() {
    let _g = serial();
    let dir = TempDir::new("live");
    let path = dir.path("sock");
    let first = Listener::bind(&path).unwrap();
    match Listener::bind(&path) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), ErrorKind::AddrInUse, "{source}");
            assert!(
                source.to_string().contains("sock"),
                "path not named: {source}"
            );
        }
        other => panic!("a second listener took over a live one: {other:?}"),
    }
    // The first one still works.
    let c = connect_raw(&path).unwrap();
    c.send(&[IoSlice::new(b"still here")], &[]).unwrap();
    accept_hello(&first, b"still here");
    // Also a live listener of another socket type.
    let dir2 = TempDir::new("live2");
    let path2 = dir2.path("stream");
    let stream = std::os::unix::net::UnixListener::bind(&path2).unwrap();
    // Its probe connect says EPROTOTYPE (a live socket of another type): left alone.
    match Listener::bind(&path2) {
        Err(Error::Io { source, .. }) => assert_errno(&source, libc::EPROTOTYPE),
        other => panic!("a listener took over a live stream socket: {other:?}"),
    }
    assert!(path2.exists());
    drop(stream);
}

#[test]
fn non_socket_file_is_an_error_and_left_alone() {
    let _g = serial();
    let dir = TempDir::new("file");
    let path = dir.path("precious");
    std::fs::write(&path, b"do not delete").unwrap();
    match Listener::bind(&path) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), ErrorKind::AddrInUse);
            assert!(source.to_string().contains("not a socket"), "{source}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"do not delete");
    // A directory too.
    let sub = dir.path("subdir");
    std::fs::create_dir(&sub).unwrap();
    match Listener::bind(&sub) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), ErrorKind::AddrInUse, "{source}");
            assert!(source.to_string().contains("not a socket"), "{source}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(sub.is_dir());
}

#[test]
fn bind_and_connect_errors_name_the_path() {
    let _g = serial();
    let missing = std::env::temp_dir().join("memfile-h3-no-such-dir/sock");
    match Listener::bind(&missing) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("no-such-dir"), "{e}"),
        other => panic!("{other:?}"),
    }
    match connect_raw(&missing) {
        Err(Error::Io { source, .. }) => assert_eq!(source.kind(), ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
    // Longer than sun_path (108 bytes).
    let long = std::env::temp_dir().join("x".repeat(200));
    match Listener::bind(&long) {
        Err(Error::Io { source, .. }) => assert_errno(&source, libc::ENAMETOOLONG),
        other => panic!("{other:?}"),
    }
}

#[test]
fn accept_timeout_and_try_accept() {
    let _g = serial();
    let l = Listener::bind_abstract(abstract_name("timeout")).unwrap();
    assert!(matches!(l.try_accept_raw(), Err(Error::WouldBlock)));
    let t = Instant::now();
    assert!(matches!(
        l.accept_raw_timeout(Duration::from_millis(100)),
        Err(Error::Timeout { .. })
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    let c = connect_abstract_raw(l.abstract_name().unwrap()).unwrap();
    let (s, _) = l.try_accept_raw().unwrap();
    c.send(&[IoSlice::new(b"x")], &[]).unwrap();
    assert_eq!(recv_packet(&s).unwrap(), b"x");
    // A huge timeout is fine (no overflow).
    let c2 = connect_abstract_raw(l.abstract_name().unwrap()).unwrap();
    l.accept_raw_timeout(Duration::MAX).unwrap();
    drop(c2);
}

#[test]
fn several_threads_accept_at_once() {
    let _g = serial();
    let l = Arc::new(Listener::bind_abstract(abstract_name("threads")).unwrap());
    let acceptors: Vec<_> = (0..3)
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || {
                let mut got = 0;
                while let Ok((s, _)) = l.accept_raw_timeout(Duration::from_secs(2)) {
                    assert_eq!(recv_packet(&s).unwrap(), b"n");
                    got += 1;
                }
                got
            })
        })
        .collect();
    let clients: Vec<_> = (0..30)
        .map(|_| {
            let c = connect_abstract_raw(l.abstract_name().unwrap()).unwrap();
            c.send(&[IoSlice::new(b"n")], &[]).unwrap();
            c
        })
        .collect();
    let total: usize = acceptors.into_iter().map(|a| a.join().unwrap()).sum();
    assert_eq!(total, 30);
    drop(clients);
}

#[test]
fn abstract_listener() {
    let _g = serial();
    let name = abstract_name("abs");
    let l = Listener::bind_abstract(&name).unwrap();
    assert_eq!(l.abstract_name(), Some(name.as_slice()));
    assert_eq!(l.local_path(), None);
    // Nothing in the filesystem.
    assert!(!std::path::Path::new(std::str::from_utf8(&name).unwrap()).exists());
    // The name is taken while the listener lives.
    match Listener::bind_abstract(&name) {
        Err(Error::Io { source, .. }) => assert_eq!(source.kind(), ErrorKind::AddrInUse),
        other => panic!("{other:?}"),
    }
    let c = connect_abstract_raw(&name).unwrap();
    c.send(&[IoSlice::new(b"abstract")], &[]).unwrap();
    let (s, peer) = l.accept_raw().unwrap();
    assert_eq!(peer.pid, std::process::id() as i32);
    assert_eq!(recv_packet(&s).unwrap(), b"abstract");
    drop(l);
    // Gone with the listener: connecting is refused, and the name can be bound again.
    match connect_abstract_raw(&name) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), ErrorKind::ConnectionRefused);
            assert!(source.to_string().contains("memfile-h3-abs"), "{source}");
        }
        other => panic!("{other:?}"),
    }
    drop(Listener::bind_abstract(&name).unwrap());
}

#[test]
fn policy_rejection_closes_the_connection_and_keeps_listening() {
    let _g = serial();
    let our_uid = nix::unistd::geteuid().as_raw();
    let l = Listener::bind_abstract(abstract_name("policy"))
        .unwrap()
        .credential_policy(CredentialPolicy::Uids(vec![our_uid.wrapping_add(12345)]))
        .report_refusals(true);
    let name = l.abstract_name().unwrap().to_vec();
    let base = fd_count();
    let c = connect_abstract_raw(&name).unwrap();
    match l.accept_raw() {
        Err(Error::PeerRejected {
            pid,
            uid,
            gid,
            reason,
        }) => {
            assert_eq!(pid, std::process::id() as i32);
            assert_eq!(uid, our_uid);
            assert_eq!(gid, nix::unistd::getegid().as_raw());
            assert!(reason.contains(&our_uid.to_string()), "{reason}");
        }
        other => panic!("expected PeerRejected, got {other:?}"),
    }
    // The rejected peer sees the connection closed, and no fd of ours leaked.
    assert!(matches!(recv_packet(&c), Err(Error::Disconnected { .. })));
    drop(c);
    assert_eq!(fd_count(), base);

    // A custom check, set through the setter, sees the credentials.
    let mut l = l;
    l.set_credential_policy(CredentialPolicy::Custom(Arc::new(
        move |c: &Credentials| {
            if c.pid == std::process::id() as i32 {
                Ok(())
            } else {
                Err("not us".into())
            }
        },
    )));
    let c = connect_abstract_raw(&name).unwrap();
    let (_s, peer) = l.accept_raw().unwrap();
    assert_eq!(peer.pid, std::process::id() as i32);
    drop(c);
    let l = l.credential_policy(CredentialPolicy::Custom(Arc::new(|_: &Credentials| {
        Err("nobody gets in".into())
    })));
    let _c = connect_abstract_raw(&name).unwrap();
    match l.accept_raw() {
        Err(Error::PeerRejected { reason, .. }) => assert_eq!(reason, "nobody gets in"),
        other => panic!("{other:?}"),
    }
    assert!(format!("{:?}", l.policy()).contains("Custom"));
}

/// Runs [`child_connect_as_nobody`] in a new process of this test binary.
fn spawn_nobody_child(name: &[u8], expect: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_connect_as_nobody",
            "--ignored",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env("H3_LISTENER_CHILD_NAME", std::str::from_utf8(name).unwrap())
        .env("H3_LISTENER_CHILD_EXPECT", expect)
        .stdout(std::process::Stdio::null()) // libtest's chatter; failures go to stderr
        .spawn()
        .unwrap()
}

#[test]
fn other_uid_is_rejected_by_default() {
    let _g = serial();
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root to run a child as uid 65534");
        return;
    }
    let l = Listener::bind_abstract(abstract_name("nobody"))
        .unwrap()
        .report_refusals(true);
    let name = l.abstract_name().unwrap().to_vec();
    let mut child = spawn_nobody_child(&name, "rejected");
    match l.accept_raw_timeout(Duration::from_secs(30)) {
        Err(Error::PeerRejected {
            pid,
            uid: 65534,
            gid: 65534,
            reason,
        }) => {
            assert_eq!(pid, child.id() as i32);
            assert!(reason.contains("65534"), "{reason}");
        }
        other => panic!("expected PeerRejected for uid 65534, got {other:?}"),
    }
    assert!(
        child.wait().unwrap().success(),
        "the child did not see Disconnected"
    );

    // The listener still accepts a same-uid peer.
    let c = connect_abstract_raw(&name).unwrap();
    c.send(&[IoSlice::new(b"same uid")], &[]).unwrap();
    let (s, peer) = l.accept_raw().unwrap();
    assert_eq!(peer.uid, 0);
    assert_eq!(recv_packet(&s).unwrap(), b"same uid");

    // And a policy that lists uid 65534 admits it.
    let l = l.credential_policy(CredentialPolicy::Uids(vec![65534]));
    let mut child = spawn_nobody_child(&name, "accepted");
    let (s, peer) = l.accept_raw_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!((peer.uid, peer.pid), (65534, child.id() as i32));
    s.send(&[IoSlice::new(b"welcome")], &[]).unwrap();
    assert!(child.wait().unwrap().success(), "the admitted child failed");
}

/// Not a test on its own: the child process of `other_uid_is_rejected_by_default`.
#[test]
#[ignore = "helper process, started by other_uid_is_rejected_by_default"]
fn child_connect_as_nobody() {
    let name = std::env::var("H3_LISTENER_CHILD_NAME").expect("run only as a child process");
    let expect = std::env::var("H3_LISTENER_CHILD_EXPECT").unwrap();
    nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).unwrap();
    nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).unwrap();
    // An abstract name has no file permissions: the connect itself succeeds.
    let c = connect_abstract_raw(name.as_bytes()).unwrap();
    match (expect.as_str(), recv_packet(&c)) {
        ("rejected", Err(Error::Disconnected { .. })) => {}
        ("accepted", Ok(p)) if p == b"welcome" => {}
        (want, got) => panic!("expected {want}, got {got:?}"),
    }
}
