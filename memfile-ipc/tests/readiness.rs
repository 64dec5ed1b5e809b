//! A server signalling readiness: `Listener::bind` returns only once `connect` can succeed,
//! and `retry_connect` lets a client started in parallel wait for the server's socket.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use memfile_ipc::{
    CredentialPolicy, Error, Listener, connect, connect_abstract, connect_abstract_raw,
    connect_raw, connect_with_policy, retry_connect,
};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};

const LONG: Duration = Duration::from_secs(30);

fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("memfile-ready-{tag}-{}-{n}", std::process::id())
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server thread that announces readiness right after `bind` (before any `accept`): a
/// client connecting on that signal, without retrying, succeeds at once, and the server
/// serves it when it gets to `accept`.
#[test]
fn connect_succeeds_as_soon_as_bind_returns() {
    let dir = TempDir::new("bind");
    let path = dir.0.join("server.sock");
    let name = unique("abstract");
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let server_path = path.clone();
    let server_name = name.clone();
    let server = std::thread::spawn(move || {
        let by_path = Listener::bind(&server_path).unwrap();
        let by_name = Listener::bind_abstract(&server_name).unwrap();
        ready_tx.send(()).unwrap();
        // Accept only once the clients have connected.
        go_rx.recv().unwrap();
        for listener in [by_path, by_name] {
            let (tx, rx) = listener.accept_timeout::<u32, u32>(LONG).unwrap();
            tx.send(&(rx.recv().unwrap() * 2)).unwrap();
        }
    });
    ready_rx.recv().unwrap();
    let (tx1, rx1) = connect::<u32, u32>(&path).expect("connect right after bind");
    let (tx2, rx2) = connect_abstract::<u32, u32>(&name).expect("connect right after bind");
    go_tx.send(()).unwrap();
    tx1.send(&1).unwrap();
    tx2.send(&2).unwrap();
    assert_eq!(rx1.recv_timeout(LONG).unwrap(), 2);
    assert_eq!(rx2.recv_timeout(LONG).unwrap(), 4);
    server.join().unwrap();
}

/// A client that starts before its server retries until the server has bound its path.
#[test]
fn retry_connect_waits_for_the_socket_file() {
    let dir = TempDir::new("retry");
    let path = dir.0.join("server.sock");
    let (bind_now_tx, bind_now_rx) = mpsc::channel::<()>();
    let server_path = path.clone();
    let server = std::thread::spawn(move || {
        bind_now_rx.recv().unwrap();
        let listener = Listener::bind(&server_path).unwrap();
        let (tx, rx) = listener.accept_timeout::<String, String>(LONG).unwrap();
        tx.send(&format!("{} back", rx.recv().unwrap())).unwrap();
    });
    let mut attempts = 0;
    let mut first_error = None;
    let (tx, rx) = retry_connect(LONG, || {
        attempts += 1;
        let r = connect_with_policy::<String, String>(&path, CredentialPolicy::SameUid);
        if attempts == 1 {
            // Only now may the server bind: the first attempt has surely failed.
            first_error = r.as_ref().err().map(|e| e.to_string());
            bind_now_tx.send(()).unwrap();
        }
        r
    })
    .unwrap();
    assert!(attempts >= 2, "{attempts}");
    let first_error = first_error.unwrap();
    assert!(first_error.contains("server.sock"), "{first_error}");
    tx.send(&"ping".to_owned()).unwrap();
    assert_eq!(rx.recv_timeout(LONG).unwrap(), "ping back");
    server.join().unwrap();
}

/// A stale socket file (nobody listening: `ECONNREFUSED`) is retried too, and an abstract
/// name that nobody listens on yet.
#[test]
fn retry_connect_waits_past_a_stale_socket_and_for_an_abstract_name() {
    let dir = TempDir::new("stale");
    let path = dir.0.join("server.sock");
    // A socket file whose socket never listens: what a crashed server leaves.
    let stale = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(stale.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    drop(stale);
    let name = unique("retry-abstract");

    let (bind_now_tx, bind_now_rx) = mpsc::channel::<()>();
    let (server_path, server_name) = (path.clone(), name.clone());
    let server = std::thread::spawn(move || {
        bind_now_rx.recv().unwrap();
        let by_path = Listener::bind(&server_path).unwrap(); // removes the stale file
        bind_now_rx.recv().unwrap();
        let by_name = Listener::bind_abstract(&server_name).unwrap();
        let a = by_path.accept_raw_timeout(LONG).unwrap();
        let b = by_name.accept_raw_timeout(LONG).unwrap();
        (a, b)
    });
    let mut errors = Vec::new();
    let by_path = retry_connect(LONG, || {
        let r = connect_raw(&path);
        if let Err(Error::Io { source, .. }) = &r {
            if errors.is_empty() {
                bind_now_tx.send(()).unwrap();
            }
            errors.push(source.kind());
        }
        r
    })
    .unwrap();
    assert_eq!(errors.first(), Some(&ErrorKind::ConnectionRefused));
    errors.clear();
    let by_name = retry_connect(LONG, || {
        let r = connect_abstract_raw(&name);
        if let Err(Error::Io { source, .. }) = &r {
            if errors.is_empty() {
                bind_now_tx.send(()).unwrap();
            }
            errors.push(source.kind());
        }
        r
    })
    .unwrap();
    assert_eq!(errors.first(), Some(&ErrorKind::ConnectionRefused));
    let (a, b) = server.join().unwrap();
    assert_eq!(a.1.pid, std::process::id() as i32);
    assert_eq!(b.1.pid, std::process::id() as i32);
    drop((by_path, by_name));
}

/// Errors that waiting cannot fix are returned at once; when nothing comes, the last
/// attempt's error is returned at the deadline.
#[test]
fn retry_connect_gives_up_on_other_errors_and_at_the_deadline() {
    let name = unique("refused-server");
    let listener = Listener::bind_abstract(&name).unwrap();
    let mut attempts = 0;
    let r = retry_connect(LONG, || {
        attempts += 1;
        memfile_ipc::connect_abstract_with_policy::<(), ()>(&name, CredentialPolicy::Uids(vec![]))
    });
    assert!(matches!(r, Err(Error::PeerRejected { .. })));
    assert_eq!(attempts, 1);
    drop(listener);

    let dir = TempDir::new("never");
    let path = dir.0.join("nobody.sock");
    let mut attempts = 0;
    let started = Instant::now();
    let r = retry_connect(Duration::from_millis(50), || {
        attempts += 1;
        connect_raw(&path)
    });
    match r {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), ErrorKind::NotFound);
            assert!(source.to_string().contains("nobody.sock"), "{source}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(attempts >= 2, "{attempts}");
}
