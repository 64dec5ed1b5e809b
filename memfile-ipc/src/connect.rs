//! Typed connecting that authenticates the server: [`connect_with_policy`] and
//! [`connect_abstract_with_policy`].
//!
//! Kept apart from `channel.rs` (which has the unauthenticated [`connect`](crate::connect))
//! so that the server check lives next to nothing else: the raw check is in `listener.rs`,
//! this file only wraps the checked socket into typed endpoints.

use std::path::Path;

use crate::channel::duplex;
use crate::listener::{connect_abstract_raw_with_policy, connect_raw_with_policy};
use crate::{CredentialPolicy, Receiver, Result, Sender};

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
