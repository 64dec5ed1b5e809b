//! Typed connecting that authenticates the server: [`connect_with_policy`] and
//! [`connect_abstract_with_policy`]; and [`retry_connect`], for clients that may start
//! before their server.
//!
//! Kept apart from `channel.rs` (which has the unauthenticated [`connect`](crate::connect))
//! so that the server check lives next to nothing else: the raw check is in `listener.rs`,
//! this file only wraps the checked socket into typed endpoints.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::channel::duplex;
use crate::listener::{connect_abstract_raw_with_policy, connect_raw_with_policy};
use crate::{CredentialPolicy, Error, Receiver, Result, Sender};

/// Connects to a [`Listener`](crate::Listener) bound to a filesystem path, after checking
/// the listening process's credentials against `policy`; returns a duplex pair of
/// endpoints over the connection: send `Tx`, receive `Rx`.
///
/// Use this rather than [`connect`](crate::connect) whenever another user could have
/// bound `path` first (a shared directory): nothing is sent before the server passed the
/// check. [`CredentialPolicy::SameUid`] is the recommended policy. See
/// [`connect_raw_with_policy`](crate::connect_raw_with_policy) for the details.
///
/// # Errors
///
/// [`Error::PeerRejected`](crate::Error::PeerRejected) naming the server's pid, uid and gid
/// when `policy` refuses it (the connection is closed); [`Error::Io`](crate::Error::Io)
/// when `socket`, `connect` or `getsockopt(SO_PEERCRED)` fail (no such socket, nobody
/// listening, permission denied).
///
/// # Examples
///
/// ```
/// use memfile::ipc::{connect_with_policy, CredentialPolicy, Error, Listener};
///
/// let dir = std::env::temp_dir().join(format!("memfile-ipc-doc-cwp-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let listener = Listener::bind(dir.join("sock"))?;
///
/// // Our own server: admitted.
/// let (tx, _rx) = connect_with_policy::<String, ()>(dir.join("sock"), CredentialPolicy::SameUid)?;
/// let (_server_tx, server_rx) = listener.accept::<(), String>()?;
/// tx.send(&"hello".to_string())?;
/// assert_eq!(server_rx.recv()?, "hello");
///
/// // A policy the server does not meet: refused before anything is sent.
/// let nobody = CredentialPolicy::Uids(vec![]);
/// let refused = connect_with_policy::<String, ()>(dir.join("sock"), nobody);
/// assert!(matches!(refused, Err(Error::PeerRejected { .. })));
/// # drop(listener); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), memfile::ipc::Error>(())
/// ```
pub fn connect_with_policy<Tx, Rx>(
    path: impl AsRef<Path>,
    policy: CredentialPolicy,
) -> Result<(Sender<Tx>, Receiver<Rx>)> {
    Ok(duplex(connect_raw_with_policy(path, policy)?))
}

/// Connects to a [`Listener`](crate::Listener) bound to a Linux abstract name, after
/// checking the listening process's credentials against `policy`; returns a duplex pair of
/// endpoints, as [`connect_with_policy`].
///
/// Any local process can bind an abstract name (they have no permissions), so this check
/// is the only way to know who receives what you send. [`CredentialPolicy::SameUid`] is
/// the recommended policy.
///
/// # Errors
///
/// [`Error::PeerRejected`](crate::Error::PeerRejected) when `policy` refuses the server
/// (the connection is closed); [`Error::Io`](crate::Error::Io) when `socket`, `connect`
/// (e.g. `ECONNREFUSED`: nobody listening) or `getsockopt(SO_PEERCRED)` fail.
pub fn connect_abstract_with_policy<Tx, Rx>(
    name: impl AsRef<[u8]>,
    policy: CredentialPolicy,
) -> Result<(Sender<Tx>, Receiver<Rx>)> {
    Ok(duplex(connect_abstract_raw_with_policy(name, policy)?))
}

/// Calls `connect` until the server is there: retries while it fails because the socket
/// does not exist yet (`ENOENT`) or nobody listens on it yet (`ECONNREFUSED`), for at most
/// `timeout`; any other result (success, or another error such as
/// [`Error::PeerRejected`](crate::Error::PeerRejected) or `EACCES`) is returned at once.
///
/// For clients started at the same time as their server: wrap whichever connect you use
/// (`connect`, `connect_with_policy`, the abstract and raw forms, the tokio ones). The
/// server side needs nothing: [`Listener::bind`](crate::Listener::bind) returns only once
/// `connect` can succeed. Between attempts this sleeps, starting at 1 ms and doubling up
/// to 50 ms (there is no kernel notification for "a socket appeared", and abstract names
/// have no directory to watch).
///
/// # Errors
///
/// The first error that is not `ENOENT`/`ECONNREFUSED`, or, when `timeout` has passed,
/// the last attempt's error (an [`Error::Io`](crate::Error::Io) naming the path or name:
/// "No such file or directory" or "Connection refused").
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use memfile::ipc::{connect_with_policy, retry_connect, CredentialPolicy, Listener};
///
/// let dir = std::env::temp_dir().join(format!("memfile-doc-retry-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("server.sock");
///
/// // The client may start before the server has bound its socket.
/// let client_path = path.clone();
/// let client = std::thread::spawn(move || -> memfile::ipc::Result<u64> {
///     let (tx, rx) = retry_connect(Duration::from_secs(10), || {
///         connect_with_policy::<String, u64>(&client_path, CredentialPolicy::SameUid)
///     })?;
///     tx.send(&"ping".to_owned())?;
///     rx.recv()
/// });
///
/// let listener = Listener::bind(&path)?;
/// let (tx, rx) = listener.accept::<u64, String>()?;
/// tx.send(&(rx.recv()?.len() as u64))?;
/// assert_eq!(client.join().unwrap()?, 4);
/// # drop(listener); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), memfile::ipc::Error>(())
/// ```
pub fn retry_connect<T>(timeout: Duration, mut connect: impl FnMut() -> Result<T>) -> Result<T> {
    // An unrepresentable deadline (centuries away) means: retry for ever.
    let deadline = Instant::now().checked_add(timeout);
    let mut pause = Duration::from_millis(1);
    loop {
        let error = match connect() {
            Err(error) if not_there_yet(&error) => error,
            done => return done,
        };
        let left = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => pause,
        };
        if left.is_zero() {
            return Err(error);
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// `ENOENT` (no socket file yet) or `ECONNREFUSED` (nobody listening yet).
fn not_there_yet(error: &Error) -> bool {
    // By kind, not by number: the connect functions attach the path to the OS error.
    matches!(error, Error::Io { source, .. }
        if matches!(source.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused))
}
