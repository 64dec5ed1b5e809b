//! Typed accepting: a [`Listener`]'s connections as [`Sender`]/[`Receiver`] pairs, one at a
//! time ([`Listener::accept`] and its `_timeout`, `try_` and `_with_credentials` forms) or
//! as an endless iterator ([`Listener::incoming`]).
//!
//! The raw accept in `listener.rs` decides who gets in (the credential policy, refused
//! peers closed, traced and counted); this file only wraps what it admits.

use std::fmt;
use std::iter::FusedIterator;
use std::marker::PhantomData;
use std::time::Duration;

use crate::channel::duplex;
use crate::{Credentials, Listener, Receiver, Result, Sender};

/// Typed accepting.
impl Listener {
    /// Waits for a connection whose peer passes the credential policy; returns a duplex pair
    /// of endpoints over it: send `Tx`, receive `Rx`.
    ///
    /// Refused peers are closed, traced and counted on the way, and the wait goes on (see
    /// [`report_refusals`](Self::report_refusals) to see them instead). For the peer's
    /// credentials with the endpoints, use
    /// [`accept_with_credentials`](Self::accept_with_credentials); a loop over connections
    /// is [`incoming`](Self::incoming).
    ///
    /// # Errors
    ///
    /// [`Error::PeerRejected`](crate::Error::PeerRejected) only with
    /// [`report_refusals`](Self::report_refusals); [`Error::Io`](crate::Error::Io) when
    /// `accept4`, `poll` or `getsockopt(SO_PEERCRED)` fail (e.g. `EMFILE`).
    pub fn accept<Tx, Rx>(&self) -> Result<(Sender<Tx>, Receiver<Rx>)> {
        Ok(duplex(self.accept_raw()?.0))
    }

    /// Like [`accept`](Self::accept), without waiting.
    ///
    /// # Errors
    ///
    /// [`Error::WouldBlock`](crate::Error::WouldBlock) when no connection is pending, or
    /// only refused ones were (they have been closed); otherwise as
    /// [`accept`](Self::accept).
    pub fn try_accept<Tx, Rx>(&self) -> Result<(Sender<Tx>, Receiver<Rx>)> {
        Ok(duplex(self.try_accept_raw()?.0))
    }

    /// Like [`accept`](Self::accept), waiting at most `timeout` (refused peers do not end
    /// the wait early).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`](crate::Error::Timeout) when no admitted peer came in time;
    /// otherwise as [`accept`](Self::accept).
    pub fn accept_timeout<Tx, Rx>(&self, timeout: Duration) -> Result<(Sender<Tx>, Receiver<Rx>)> {
        Ok(duplex(self.accept_raw_timeout(timeout)?.0))
    }

    /// Like [`accept`](Self::accept), and also returns the peer's credentials
    /// (`SO_PEERCRED`, as the policy saw them).
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept).
    ///
    /// # Examples
    ///
    /// ```
    /// use memfile::ipc::{connect_abstract, Listener};
    ///
    /// let name = format!("memfile-doc-awc-{}", std::process::id());
    /// let listener = Listener::bind_abstract(&name)?;
    /// let (_tx, _rx) = connect_abstract::<u32, ()>(&name)?;
    /// let (_server_tx, _server_rx, peer) = listener.accept_with_credentials::<(), u32>()?;
    /// assert_eq!(peer.pid, std::process::id() as i32);
    /// # Ok::<(), memfile::ipc::Error>(())
    /// ```
    pub fn accept_with_credentials<Tx, Rx>(
        &self,
    ) -> Result<(Sender<Tx>, Receiver<Rx>, Credentials)> {
        let (socket, peer) = self.accept_raw()?;
        let (tx, rx) = duplex(socket);
        Ok((tx, rx, peer))
    }

    /// Like [`try_accept`](Self::try_accept), and also returns the peer's credentials.
    ///
    /// # Errors
    ///
    /// As [`try_accept`](Self::try_accept).
    pub fn try_accept_with_credentials<Tx, Rx>(
        &self,
    ) -> Result<(Sender<Tx>, Receiver<Rx>, Credentials)> {
        let (socket, peer) = self.try_accept_raw()?;
        let (tx, rx) = duplex(socket);
        Ok((tx, rx, peer))
    }

    /// Like [`accept_timeout`](Self::accept_timeout), and also returns the peer's
    /// credentials.
    ///
    /// # Errors
    ///
    /// As [`accept_timeout`](Self::accept_timeout).
    pub fn accept_with_credentials_timeout<Tx, Rx>(
        &self,
        timeout: Duration,
    ) -> Result<(Sender<Tx>, Receiver<Rx>, Credentials)> {
        let (socket, peer) = self.accept_raw_timeout(timeout)?;
        let (tx, rx) = duplex(socket);
        Ok((tx, rx, peer))
    }

    /// An endless iterator over admitted connections: each item is what
    /// [`accept_with_credentials`](Self::accept_with_credentials) returns.
    ///
    /// It never ends (`next` never returns `None`): refused peers are closed, traced and
    /// counted without showing up (or, with [`report_refusals`](Self::report_refusals),
    /// show up as [`Error::PeerRejected`](crate::Error::PeerRejected) items), and an
    /// [`Error::Io`](crate::Error::Io) (e.g. `EMFILE`) is yielded and the iteration goes
    /// on, as with [`std::net::TcpListener::incoming`]: write `connection?` to stop the
    /// server on such an error, or log it and go on. For many clients on one thread, put
    /// the listener and the clients' receivers in a [`ReceiverSet`](crate::ReceiverSet).
    ///
    /// # Examples
    ///
    /// ```
    /// use memfile::ipc::{connect_abstract, Listener};
    ///
    /// let name = format!("memfile-doc-incoming-{}", std::process::id());
    /// let listener = Listener::bind_abstract(&name)?;
    /// let server = std::thread::spawn(move || -> memfile::ipc::Result<()> {
    ///     for connection in listener.incoming::<String, String>().take(3) {
    ///         let (tx, rx, peer) = connection?;
    ///         let who = rx.recv()?;
    ///         tx.send(&format!("hello {who}, pid {}", peer.pid))?;
    ///     }
    ///     Ok(())
    /// });
    /// for who in ["a", "b", "c"] {
    ///     let (tx, rx) = connect_abstract::<String, String>(&name)?;
    ///     tx.send(&who.to_owned())?;
    ///     assert!(rx.recv()?.starts_with(&format!("hello {who}")));
    /// }
    /// server.join().unwrap()?;
    /// # Ok::<(), memfile::ipc::Error>(())
    /// ```
    pub fn incoming<Tx, Rx>(&self) -> Incoming<'_, Tx, Rx> {
        Incoming {
            listener: self,
            _types: PhantomData,
        }
    }
}

/// The endless iterator of [`Listener::incoming`]: admitted connections as typed duplex
/// endpoints with the peer's credentials.
pub struct Incoming<'a, Tx, Rx> {
    listener: &'a Listener,
    _types: PhantomData<fn() -> (Tx, Rx)>,
}

impl<Tx, Rx> Iterator for Incoming<'_, Tx, Rx> {
    type Item = Result<(Sender<Tx>, Receiver<Rx>, Credentials)>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.listener.accept_with_credentials())
    }
}

impl<Tx, Rx> FusedIterator for Incoming<'_, Tx, Rx> {}

impl<Tx, Rx> fmt::Debug for Incoming<'_, Tx, Rx> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("listener", self.listener)
            .finish()
    }
}
