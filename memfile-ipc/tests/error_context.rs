//! Errors that say where: `Disconnected` names the operation (send or receive), the socket
//! and, where known, the peer's pid; protocol, codec, version, type and timeout errors name
//! the socket (connection) they happened on.
//!
//! The pid tests re-execute this binary as the peer (`--exact child`, role in
//! `ERROR_CONTEXT_CHILD`).

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use memfile_ipc::raw::RawSocket;
use memfile_ipc::{Error, Listener, Operation, Receiver, Sender, channel, connect};

const ROLE: &str = "ERROR_CONTEXT_CHILD";
const TIMEOUT: Duration = Duration::from_secs(30);

fn fd_of(x: &impl AsFd) -> RawFd {
    x.as_fd().as_raw_fd()
}

#[test]
fn disconnected_says_send_or_receive_and_which_socket() {
    let (tx, rx) = channel::<u32>().unwrap();
    let tx_fd = fd_of(&tx);
    drop(rx);
    let err = tx.send(&1).unwrap_err();
    assert!(
        matches!(err, Error::Disconnected { op: Operation::Send, fd: Some(fd), .. } if fd == tx_fd),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!("send on fd {tx_fd}")),
        "{err}"
    );
    assert_eq!(err.fd(), Some(tx_fd));

    let (tx, rx) = channel::<u32>().unwrap();
    drop(tx);
    let err = rx.recv().unwrap_err();
    assert!(
        matches!(err, Error::Disconnected { op: Operation::Receive, fd: Some(fd), .. } if fd == fd_of(&rx)),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("receive on fd"), "{err}");
    // A socketpair made by this process: the kernel names this process as the peer, which
    // is not necessarily the process at the other end, so no pid is claimed.
    assert!(
        matches!(err, Error::Disconnected { peer_pid: None, .. }),
        "{err:?}"
    );
}

#[test]
fn timeouts_name_the_operation_and_socket() {
    let (tx, rx) = channel::<Vec<u8>>().unwrap();
    let err = rx.recv_timeout(Duration::from_millis(1)).unwrap_err();
    assert!(
        matches!(err, Error::Timeout { op: Operation::Receive, fd: Some(fd) } if fd == fd_of(&rx)),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("receive on fd {}", fd_of(&rx))),
        "{err}"
    );

    // Fill the socket's buffer, then a send times out.
    let chunk = vec![0u8; 64 << 10];
    let err = loop {
        match tx.send_timeout(&chunk, Duration::from_millis(1)) {
            Ok(()) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, Error::Timeout { op: Operation::Send, fd: Some(fd) } if fd == fd_of(&tx)),
        "{err:?}"
    );

    let dir = temp_dir("timeout");
    let listener = Listener::bind(dir.join("sock")).unwrap();
    let err = listener
        .accept_timeout::<u8, u8>(Duration::from_millis(1))
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { op: Operation::Accept, fd: Some(fd) } if fd == fd_of(&listener)),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("accept on fd"), "{err}");
    drop(listener);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn raw_pair<T>() -> (RawSocket, Receiver<T>) {
    let (a, b) = RawSocket::pair().unwrap();
    (a, Receiver::from_raw(Arc::new(b)))
}

fn packet(version: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = b"MFIP".to_vec();
    p.extend_from_slice(&version.to_le_bytes());
    p.extend_from_slice(&[0; 10]); // flags, fd count, fingerprint 0
    p.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    p.extend_from_slice(payload);
    p
}

#[test]
fn protocol_codec_and_version_errors_name_the_socket() {
    let (raw, rx) = raw_pair::<String>();
    let rx_fd = fd_of(&rx);
    let send = |p: &[u8]| raw.send(&[IoSlice::new(p)], &[]).unwrap();

    send(b"MFIQ and some more bytes than a header");
    let err = rx.recv_timeout(TIMEOUT).unwrap_err();
    assert!(
        matches!(err, Error::Protocol { fd: Some(fd), .. } if fd == rx_fd),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("protocol error on fd {rx_fd}:")),
        "{err}"
    );

    send(&packet(2, &[3, b'a', 0xff, b'c'])); // not UTF-8
    let err = rx.recv_timeout(TIMEOUT).unwrap_err();
    assert!(
        matches!(err, Error::Codec { encoding: false, fd: Some(fd), .. } if fd == rx_fd),
        "{err:?}"
    );
    assert!(err.to_string().contains(&format!("on fd {rx_fd}")), "{err}");

    send(&packet(9, &[]));
    let err = rx.recv_timeout(TIMEOUT).unwrap_err();
    assert!(
        matches!(err, Error::VersionMismatch { ours: 2, theirs: 9, fd: Some(fd) } if fd == rx_fd),
        "{err:?}"
    );
    assert_eq!(err.fd(), Some(rx_fd));

    // Still usable.
    send(&packet(2, &[2, b'o', b'k']));
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), "ok");
}

#[test]
fn encoding_errors_name_the_socket() {
    /// A value whose `Serialize` fails.
    #[derive(serde::Deserialize)]
    struct Refuses;
    impl serde::Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refused"))
        }
    }
    let (tx, _rx) = channel::<Refuses>().unwrap();
    let err = tx.send(&Refuses).unwrap_err();
    assert!(
        matches!(&err, Error::Codec { encoding: true, fd: Some(fd), .. } if *fd == fd_of(&tx)),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("refused") && text.contains(&format!("for fd {}", fd_of(&tx))),
        "{text}"
    );
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("memfile-ipc-errctx-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The peer's pid is named when another process is at the other end of a connection: the
/// child connects to this process's listener, sends one message and exits.
#[test]
fn disconnected_names_the_peer_pid() {
    let dir = temp_dir("pid");
    let path = dir.join("sock");
    let listener = Listener::bind(&path).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--ignored", "--test-threads=1"])
        .env(ROLE, "connect_and_exit")
        .env("ERROR_CONTEXT_PATH", &path)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = listener.accept_timeout::<u8, u8>(TIMEOUT).unwrap();
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), 7);
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
    let pid = child.id() as i32;

    let err = rx.recv_timeout(TIMEOUT).unwrap_err();
    assert!(
        matches!(err, Error::Disconnected { op: Operation::Receive, peer_pid: Some(p), .. } if p == pid),
        "{err:?}"
    );
    assert!(err.to_string().contains(&format!("pid {pid}")), "{err}");
    let err = tx.send(&1).unwrap_err();
    assert!(
        matches!(err, Error::Disconnected { op: Operation::Send, peer_pid: Some(p), .. } if p == pid),
        "{err:?}"
    );
    drop(listener);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The child side: connects to the path in `ERROR_CONTEXT_PATH`, sends 7, exits.
#[test]
#[ignore = "entry point of the child process that disconnected_names_the_peer_pid spawns"]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    assert_eq!(role, "connect_and_exit");
    let path = std::env::var("ERROR_CONTEXT_PATH").unwrap();
    let (tx, _rx): (Sender<u8>, Receiver<u8>) = connect(path).unwrap();
    tx.send(&7).unwrap();
}
