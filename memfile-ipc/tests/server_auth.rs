//! Clients authenticating the server: `connect_raw_with_policy`,
//! `connect_abstract_raw_with_policy` and the typed `connect_with_policy`,
//! `connect_abstract_with_policy`.
//!
//! Every test takes `util_raw::serial()` (fd counts; the child processes).

mod util_raw;

use std::io::{BufRead, BufReader, IoSlice};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memfile_ipc::raw::{RawSocket, RecvMode};
use memfile_ipc::{
    CredentialPolicy, Credentials, Error, Listener, connect_abstract_raw_with_policy,
    connect_abstract_with_policy, connect_raw_with_policy, connect_with_policy,
};
use util_raw::{TempDir, abstract_name, fd_count, serial};

fn recv_packet(s: &RawSocket) -> memfile_ipc::Result<Vec<u8>> {
    let mut buf = [0u8; 256];
    let mut fds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let n = s.recv(&mut buf, &mut fds, RecvMode::Deadline(deadline))?;
    Ok(buf[..n].to_vec())
}

/// A uid that is not ours.
fn other_uid() -> u32 {
    nix::unistd::geteuid().as_raw().wrapping_add(12345)
}

#[test]
fn path_server_is_checked_before_use() {
    let _g = serial();
    let dir = TempDir::new("srvchk");
    let path = dir.path("sock");
    let l = Listener::bind(&path).unwrap();
    let our = (
        std::process::id() as i32,
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );

    // Our own server passes SameUid, and the connection works.
    let c = connect_raw_with_policy(&path, CredentialPolicy::SameUid).unwrap();
    let (s, _) = l.accept_raw().unwrap();
    c.send(&[IoSlice::new(b"ping")], &[]).unwrap();
    assert_eq!(recv_packet(&s).unwrap(), b"ping");
    drop((c, s));

    // A policy the server fails: PeerRejected naming the server, the client socket closed
    // (no fd of ours left), and the server sees a connection that ends without a message.
    let base = fd_count();
    match connect_raw_with_policy(&path, CredentialPolicy::Uids(vec![other_uid()])) {
        Err(Error::PeerRejected {
            pid,
            uid,
            gid,
            reason,
        }) => {
            assert_eq!((pid, uid, gid), our);
            assert!(reason.contains(&our.1.to_string()), "{reason}");
        }
        other => panic!("expected PeerRejected, got {other:?}"),
    }
    assert_eq!(fd_count(), base, "the refused client socket leaked");
    let (s, peer) = l.accept_raw().unwrap();
    assert_eq!(peer.pid, our.0);
    assert!(matches!(recv_packet(&s), Err(Error::Disconnected { .. })));
    drop(s);

    // Typed: the same check, then working endpoints.
    let (tx, rx) = connect_with_policy::<String, u64>(&path, CredentialPolicy::SameUid).unwrap();
    let (stx, srx) = l.accept::<u64, String>().unwrap();
    tx.send(&"hello".to_owned()).unwrap();
    assert_eq!(srx.recv().unwrap(), "hello");
    stx.send(&5).unwrap();
    assert_eq!(rx.recv().unwrap(), 5);
    assert_eq!(tx.peer_credentials().unwrap().pid, our.0);
    let refused = connect_with_policy::<String, u64>(&path, CredentialPolicy::Uids(vec![]));
    assert!(
        matches!(refused, Err(Error::PeerRejected { uid, .. }) if uid == our.1),
        "{refused:?}"
    );

    // Errors of the connect itself are unchanged (and name the path).
    match connect_raw_with_policy(dir.path("missing"), CredentialPolicy::SameUid) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("missing"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn abstract_server_is_checked_before_use() {
    let _g = serial();
    let l = Listener::bind_abstract(abstract_name("srvabs")).unwrap();
    let name = l.abstract_name().unwrap().to_vec();
    let pid = std::process::id() as i32;

    let c = connect_abstract_raw_with_policy(&name, CredentialPolicy::SameUid).unwrap();
    let (s, _) = l.accept_raw().unwrap();
    s.send(&[IoSlice::new(b"from server")], &[]).unwrap();
    assert_eq!(recv_packet(&c).unwrap(), b"from server");

    // A custom check sees the server's credentials; its reason is reported.
    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen2 = seen.clone();
    let policy = CredentialPolicy::Custom(Arc::new(move |c: &Credentials| {
        *seen2.lock().unwrap() = Some(*c);
        Err("not the server I want".to_owned())
    }));
    match connect_abstract_with_policy::<(), ()>(&name, policy) {
        Err(Error::PeerRejected { reason, pid: p, .. }) => {
            assert_eq!(reason, "not the server I want");
            assert_eq!(p, pid);
        }
        other => panic!("expected PeerRejected, got {other:?}"),
    }
    assert_eq!(seen.lock().unwrap().map(|c| c.pid), Some(pid));

    // Nobody listening: the connect error, not a credential error.
    drop(l);
    assert!(matches!(
        connect_abstract_raw_with_policy(&name, CredentialPolicy::AnyUid),
        Err(Error::Io { .. })
    ));
}

#[test]
fn server_of_another_uid_is_rejected() {
    let _g = serial();
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root to run a listener as uid 65534");
        return;
    }
    let name = abstract_name("squatter");
    // A child process that drops to uid 65534 and listens on the name (as a squatter
    // that bound it before the real server would).
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_listen_as_nobody",
            "--ignored",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env(
            "F3_LISTENER_CHILD_NAME",
            std::str::from_utf8(&name).unwrap(),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("CHILD-LISTENING") => break,
            Some(Ok(_)) => continue,
            other => panic!("the child did not start listening: {other:?}"),
        }
    }
    let child_pid = child.id() as i32;

    // SameUid (raw and typed): refused, naming the squatter.
    for typed in [false, true] {
        let result = if typed {
            connect_abstract_with_policy::<(), ()>(&name, CredentialPolicy::SameUid).map(|_| ())
        } else {
            connect_abstract_raw_with_policy(&name, CredentialPolicy::SameUid).map(|_| ())
        };
        match result {
            Err(Error::PeerRejected {
                pid,
                uid: 65534,
                gid: 65534,
                reason,
            }) => {
                assert_eq!(pid, child_pid);
                assert!(reason.contains("65534"), "{reason}");
            }
            other => panic!("expected PeerRejected for uid 65534, got {other:?}"),
        }
    }
    // AnyUid: connected to the squatter, which gets what we send.
    let c = connect_abstract_raw_with_policy(&name, CredentialPolicy::AnyUid).unwrap();
    assert_eq!(c.peer_credentials().unwrap().uid, 65534);
    c.send(&[IoSlice::new(b"hello")], &[]).unwrap();
    assert_eq!(recv_packet(&c).unwrap(), b"welcome");
    assert!(child.wait().unwrap().success(), "the child failed");
}

/// Not a test on its own: the child process of `server_of_another_uid_is_rejected`.
#[test]
#[ignore = "helper process, started by server_of_another_uid_is_rejected"]
fn child_listen_as_nobody() {
    let name = std::env::var("F3_LISTENER_CHILD_NAME").expect("run only as a child process");
    nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).unwrap();
    nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).unwrap();
    let l = Listener::bind_abstract(name.as_bytes())
        .unwrap()
        .credential_policy(CredentialPolicy::AnyUid);
    println!("CHILD-LISTENING");
    // The two refusing clients close the connection without a message.
    for _ in 0..2 {
        let (s, peer) = l.accept_raw_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(peer.uid, 0);
        assert!(matches!(recv_packet(&s), Err(Error::Disconnected { .. })));
    }
    let (s, _) = l.accept_raw_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(recv_packet(&s).unwrap(), b"hello");
    s.send(&[IoSlice::new(b"welcome")], &[]).unwrap();
}
