//! Observability: `tracing` events (feature `tracing`) for what an operator needs to see:
//! connections accepted or refused, peers going away, and every rejected message with the
//! reason.
//!
//! The functions here are what the rest of the crate calls; without the feature their
//! bodies are empty and inlined, so they cost nothing. The events' target is
//! `memfile_ipc`; fields: `fd` (our socket), `pid`/`uid`/`gid` (the peer's `SO_PEERCRED`),
//! `reason` (the [`Error`]'s `Display`).

#[cfg(feature = "tracing")]
use std::os::fd::AsRawFd;
use std::os::fd::RawFd;

use crate::cred::Credentials;
use crate::error::Error;
use crate::raw::RawSocket;

/// `event!(level, fields..., message)`: a `tracing` event, or nothing at all without the
/// feature (the arguments are not even evaluated).
macro_rules! event {
    ($level:ident, $($arg:tt)+) => {
        #[cfg(feature = "tracing")]
        {
            ::tracing::$level!(target: "memfile_ipc", $($arg)+);
        }
    };
}

/// A listener accepted a connection whose peer passed the credential policy.
#[inline]
pub(crate) fn accepted(listener: RawFd, socket: RawFd, peer: &Credentials) {
    event!(
        info,
        listener,
        fd = socket,
        pid = peer.pid,
        uid = peer.uid,
        gid = peer.gid,
        "accepted a connection"
    );
    let _ = (listener, socket, peer);
}

/// A listener refused a connection (`error` is the [`Error::PeerRejected`] naming the peer
/// and the policy's reason).
#[inline]
pub(crate) fn refused(listener: RawFd, error: &Error) {
    event!(warn, listener, reason = %error, "refused a connection");
    let _ = (listener, error);
}

/// What a receive on `socket` came to. Logs the end of the connection at debug level and
/// every other failure but "nothing there yet" (a rejected message, a receive error) at
/// warn level, with the peer's credentials so the operator knows whom to blame.
#[inline]
pub(crate) fn received<T>(socket: &RawSocket, result: &crate::Result<T>) {
    if let Err(error) = result {
        received_error(socket, error);
    }
}

#[cfg_attr(not(feature = "tracing"), inline)]
fn received_error(socket: &RawSocket, error: &Error) {
    match error {
        Error::WouldBlock | Error::Timeout { .. } => {}
        Error::Disconnected { .. } => {
            event!(debug, fd = socket.as_raw_fd(), "peer closed the connection");
        }
        _ => {
            #[cfg(feature = "tracing")]
            {
                let peer = socket.peer_credentials().ok();
                event!(
                    warn,
                    fd = socket.as_raw_fd(),
                    pid = peer.map(|c| c.pid),
                    uid = peer.map(|c| c.uid),
                    gid = peer.map(|c| c.gid),
                    reason = %error,
                    "rejected a message"
                );
            }
        }
    }
    let _ = (socket, error);
}

/// A send on `socket` found the peer gone.
#[inline]
pub(crate) fn sent<T>(socket: &RawSocket, result: &crate::Result<T>) {
    if let Err(Error::Disconnected { .. }) = result {
        event!(
            debug,
            fd = socket.as_raw_fd(),
            "peer closed the connection (while sending)"
        );
    }
    let _ = socket;
}
