//! Async endpoints on a tokio runtime (feature `tokio`): [`AsyncSender`], [`AsyncReceiver`]
//! (also a [`Stream`]) and [`AsyncListener`].
//!
//! They are the blocking endpoints plus a registration with the runtime's reactor
//! ([`AsyncFd`]): every operation is the blocking type's non-blocking step (`try_send`,
//! `try_recv`, `try_accept`: `MSG_DONTWAIT` / a non-blocking listener) retried on
//! readiness, so the wire format, the [`Limits`], the checks of incoming packets and the
//! errors are exactly those of [`Sender`], [`Receiver`] and [`Listener`]. Either kind
//! converts into the other (`from_blocking` / `into_blocking`), so a child started with the
//! blocking [`from_parent`](crate::from_parent) can go async, and an async endpoint can be
//! handed to a thread that blocks.
//!
//! **Cancel safety.** [`AsyncReceiver::recv`], [`AsyncSender::send`] and
//! [`AsyncListener::accept`] are cancel-safe: the only `.await` inside them is the wait for
//! readiness, and a packet is taken off the socket (or put on it) only within one
//! synchronous step that also decodes it (or that sends it whole). A future dropped while
//! waiting (in `select!`, or by a timeout) has received nothing, sent nothing and holds no
//! fd; a message it did not return is still queued for the next `recv`.
//!
//! **One registration per socket.** epoll takes each fd once per runtime, so the sender and
//! receiver of one connection share one registration when they are made together
//! ([`channel`], [`connect`], [`from_parent`], [`duplex_from_blocking`],
//! [`AsyncListener::accept`]). Converting the two halves separately also works: the
//! second one then registers a duplicate of the socket's fd.
//!
//! **What still runs on the task's thread.** Encoding a message (and writing a large one
//! into its memfd) and decoding a received one (mapping and checking its buffers) are
//! synchronous CPU work, as in the blocking API; only the waiting is async. For messages
//! of many megabytes of serialized bytes, prefer `Frozen` fields, which cost no copy at
//! all, or move the work to `spawn_blocking` with the blocking endpoints.
//!
//! **Runtime.** Creating an async endpoint needs a tokio runtime with IO enabled
//! (`Runtime::new()`, `#[tokio::main]`, or `enable_io()`); the endpoint then belongs to that
//! runtime and stops working when it shuts down (convert it back with `into_blocking`
//! first to keep using the connection).
//!
//! ```
//! use memfile::Frozen;
//! use memfile::ipc::Fd;
//! use memfile::ipc::tokio::channel;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
//! rt.block_on(async {
//!     let (tx, rx) = channel::<(u32, Fd<Frozen>)>()?;
//!     let buffer = Frozen::from_bytes("greeting", b"hello")?;
//!     tx.send(&(1, buffer.into())).await?;
//!     let (n, buffer) = rx.recv().await?;
//!     assert_eq!((n, &buffer[..]), (1, &b"hello"[..]));
//!     Ok(())
//! })
//! # }
//! ```

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use ::tokio::io::Interest;
use ::tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use ::tokio::runtime::Handle;
use futures_core::{FusedStream, Stream};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::channel::{recycle_send_buffer, take_send_buffer};
use crate::raw::RawSocket;
use crate::{Credentials, Error, Limits, Listener, Receiver, Result, Sender, trace};

/// What the reactor watches for one socket.
#[derive(Debug)]
enum Watched {
    /// The socket's own fd (the `Arc` keeps it open until the registration is gone).
    Socket(Arc<RawSocket>),
    /// A duplicate of the socket's fd, used when the fd itself is registered already (the
    /// other half of a connection, converted on its own). Readiness is the socket's either
    /// way; the endpoints keep using the original fd.
    Dup(OwnedFd),
}

impl AsRawFd for Watched {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Watched::Socket(socket) => socket.as_raw_fd(),
            Watched::Dup(fd) => fd.as_raw_fd(),
        }
    }
}

/// A connection's registration with the reactor, shared by its sender and receiver.
type Registration = Arc<AsyncFd<Watched>>;

/// Fails cleanly (instead of panicking inside tokio) when there is no runtime.
fn current_runtime(op: &'static str, fd: RawFd) -> Result<Handle> {
    Handle::try_current().map_err(|e| Error::io(op, Some(fd), io::Error::other(e)))
}

/// Registers `socket` with the current runtime's reactor for reading and writing.
fn register(socket: &Arc<RawSocket>) -> Result<Registration> {
    const OP: &str = "registering the socket with the tokio reactor (epoll_ctl)";
    let fd = socket.as_raw_fd();
    current_runtime(OP, fd)?;
    let interest = Interest::READABLE | Interest::WRITABLE;
    let watched = Watched::Socket(socket.clone());
    // SAFETY: the `Arc` inside `Watched` keeps the `RawSocket`, and so its fd, open for as
    // long as the `AsyncFd` lives, and a `RawSocket` never changes the fd it owns.
    let first = unsafe { AsyncFd::register_with_interest(watched, interest) };
    let error = match first {
        Ok(io) => return Ok(Arc::new(io)),
        Err(e) => e.into_parts().1,
    };
    if error.raw_os_error() != Some(libc::EEXIST) {
        return Err(Error::io(OP, Some(fd), error));
    }
    let dup = socket
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io("fcntl(F_DUPFD_CLOEXEC)", Some(fd), e))?;
    // SAFETY: the `OwnedFd` is moved into the `AsyncFd`, which keeps it open and unchanged
    // until it is dropped.
    unsafe { AsyncFd::register_with_interest(Watched::Dup(dup), interest) }
        .map(Arc::new)
        .map_err(|e| Error::io(OP, Some(fd), e.into_parts().1))
}

fn readiness_error(fd: RawFd, e: io::Error) -> Error {
    Error::io("waiting for readiness (tokio reactor)", Some(fd), e)
}

/// Runs the non-blocking `step` until it does something other than [`Error::WouldBlock`]:
/// once right away, then each time the reactor reports the fd ready in `direction`.
///
/// The only `.await` is the wait for readiness, so dropping the future between two steps
/// loses nothing: each step is whole or did nothing.
async fn on_readiness<T: AsRawFd, R>(
    io: &AsyncFd<T>,
    direction: Interest,
    mut step: impl FnMut() -> Result<R>,
) -> Result<R> {
    match step() {
        Err(Error::WouldBlock) => {}
        done => return done,
    }
    loop {
        let mut guard = if direction.is_writable() {
            io.writable().await
        } else {
            io.readable().await
        }
        .map_err(|e| readiness_error(io.as_raw_fd(), e))?;
        match step() {
            // Only now is the readiness known stale; clearing it makes the next wait park.
            Err(Error::WouldBlock) => guard.clear_ready(),
            done => return done,
        }
    }
}

/// Waits (asynchronously) until the connection's window has room for a message of `cost`
/// bytes (see `flow.rs`): woken by whoever applies a credit, or by the socket becoming
/// readable when this task must read the credit itself.
async fn acquire_budget<'a>(
    io: &AsyncFd<Watched>,
    socket: &'a RawSocket,
    cost: u64,
) -> Result<crate::flow::Reserved<'a>> {
    let flow = socket.flow();
    std::future::poll_fn(|cx| {
        loop {
            let must_read = match flow.poll_acquire(socket, cost, cx.waker()) {
                Err(e) => return Poll::Ready(Err(e)),
                Ok(Ok(reserved)) => return Poll::Ready(Ok(reserved)),
                Ok(Err(must_read)) => must_read,
            };
            // A probe that did not fit into the full socket: wait for room to send it too.
            if flow.due() {
                match io.poll_write_ready(cx) {
                    Poll::Ready(Ok(mut guard)) => {
                        if flow.flush(socket) {
                            guard.clear_ready();
                        }
                        continue;
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Err(readiness_error(io.as_raw_fd(), e)));
                    }
                    Poll::Pending => {}
                }
            }
            // Another thread or task must act first; it wakes us.
            if !must_read {
                return Poll::Pending;
            }
            // Nothing to read: wait for the socket too. The readiness guard is taken before
            // looking again, so clearing it cannot hide a packet that came in between.
            let mut guard = match io.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(readiness_error(io.as_raw_fd(), e)));
                }
                Poll::Ready(Ok(guard)) => guard,
            };
            match flow.poll_acquire(socket, cost, cx.waker()) {
                Err(e) => return Poll::Ready(Err(e)),
                Ok(Ok(reserved)) => return Poll::Ready(Ok(reserved)),
                Ok(Err(false)) => return Poll::Pending,
                Ok(Err(true)) => guard.clear_ready(),
            }
        }
    })
    .await
}

// -----------------------------------------------------------------------------------------

/// The async sending half of a typed channel: a [`Sender`] registered with a tokio runtime.
///
/// Same messages, limits and errors as [`Sender`]; `Clone + Send + Sync`.
/// [`send`](Self::send) waits for room in the socket's buffer without blocking the thread.
pub struct AsyncSender<T> {
    inner: Sender<T>,
    io: Registration,
}

impl<T> AsyncSender<T> {
    /// Registers a blocking sender with the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when called outside a tokio runtime, or when the reactor refuses the
    /// socket (`epoll_ctl`, e.g. out of memory).
    ///
    /// # Panics
    ///
    /// When the current runtime was built without IO (`enable_io`), as every tokio IO
    /// type does.
    pub fn from_blocking(sender: Sender<T>) -> Result<AsyncSender<T>> {
        let io = register(sender.raw())?;
        Ok(AsyncSender { inner: sender, io })
    }

    /// Leaves the runtime: the blocking sender over the same connection.
    pub fn into_blocking(self) -> Sender<T> {
        self.inner
    }

    /// The blocking sender underneath (for its limits, socket and peer).
    pub fn get_ref(&self) -> &Sender<T> {
        &self.inner
    }

    /// Replaces the limits (see [`Sender::with_limits`]).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> AsyncSender<T> {
        self.inner.set_limits(limits);
        self
    }

    /// Sends fingerprint 0 ("not checked") instead of the message type's (see
    /// [`Sender::without_type_check`]).
    #[must_use]
    pub fn without_type_check(mut self) -> AsyncSender<T> {
        self.inner.set_type_check(false);
        self
    }

    /// The process at the other end (see [`Sender::peer_credentials`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `getsockopt` fails.
    pub fn peer_credentials(&self) -> Result<Credentials> {
        self.inner.peer_credentials()
    }
}

impl<T: Serialize + Deserialize<'static>> AsyncSender<T> {
    /// Sends one message, waiting (asynchronously) while the peer's window is used up (a
    /// bounded channel, see [`Window`](crate::Window)) or the socket's buffer is full.
    ///
    /// The message is encoded once (a large one into a sealed memfd), then sent whole when
    /// there is room. Cancel-safe: if the future is dropped before it completes, nothing
    /// was sent.
    ///
    /// Only the wait is async: encoding, and copying a spilled message into its memfd, run
    /// synchronously on the task's thread when the future is first polled. For messages
    /// of many MiB, send `Frozen` fields (no copy at all), or send with the blocking
    /// [`Sender`] inside `tokio::task::spawn_blocking`.
    ///
    /// # Errors
    ///
    /// As [`Sender::send`], plus [`Error::Io`] when the reactor fails (e.g. its runtime
    /// shut down).
    pub async fn send(&self, msg: &T) -> Result<()> {
        let mut buffer = take_send_buffer();
        let result = match self.inner.encode(msg, &mut buffer) {
            Ok(mut packet) => {
                let socket = self.inner.raw();
                // Budget first (a bounded channel), then room in the socket; a cancelled
                // future gives the budget back (`Reserved` is dropped).
                match acquire_budget(&self.io, socket, packet.cost).await {
                    Ok(reserved) => {
                        let sent = on_readiness(&self.io, Interest::WRITABLE, || {
                            packet.send(socket, true)
                        })
                        .await;
                        sent.map(|()| reserved.sent())
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
        .map_err(|e| e.on_socket(self.inner.raw().as_raw_fd()));
        recycle_send_buffer(buffer);
        trace::sent(self.inner.raw(), &result);
        result
    }

    /// Sends one message if the socket's buffer has room now (see [`Sender::try_send`]).
    ///
    /// # Errors
    ///
    /// [`Error::Full`] when the peer's window is used up, [`Error::WouldBlock`] when the
    /// buffer is full; otherwise as [`send`](Self::send).
    pub fn try_send(&self, msg: &T) -> Result<()> {
        self.inner.try_send(msg)
    }
}

impl<T> Clone for AsyncSender<T> {
    fn clone(&self) -> AsyncSender<T> {
        AsyncSender {
            inner: self.inner.clone(),
            io: self.io.clone(),
        }
    }
}

impl<T> std::fmt::Debug for AsyncSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncSender")
            .field("inner", &self.inner)
            .field("watched_fd", &self.io.as_raw_fd())
            .finish()
    }
}

impl<T> AsFd for AsyncSender<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

// -----------------------------------------------------------------------------------------

/// The async receiving half of a typed channel: a [`Receiver`] registered with a tokio
/// runtime; also a [`Stream`] of messages that ends when the peer disconnects (or the
/// socket fails: see the `Stream` impl).
///
/// Same checks, limits and errors as [`Receiver`]: a bad packet is an error for that one
/// `recv` (or one `Err` item of the stream), and the next one reads the next packet.
pub struct AsyncReceiver<T> {
    inner: Receiver<T>,
    io: Registration,
    /// The [`Stream`] has ended (it returns `None` from now on); `recv` is unaffected.
    stream_ended: bool,
}

impl<T> AsyncReceiver<T> {
    /// Registers a blocking receiver with the current tokio runtime.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (tx, rx) = memfile::ipc::channel::<String>()?;
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    /// let rx = rt.block_on(async {
    ///     let rx = memfile::ipc::tokio::AsyncReceiver::from_blocking(rx)?;
    ///     tx.send(&"hi".to_string())?; // the blocking sender, from anywhere
    ///     assert_eq!(rx.recv().await?, "hi");
    ///     Ok::<_, memfile::ipc::Error>(rx)
    /// })?;
    /// drop(rt);
    /// let rx = rx.into_blocking(); // and back, usable without a runtime
    /// tx.send(&"again".to_string())?;
    /// assert_eq!(rx.recv()?, "again");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when called outside a tokio runtime, or when the reactor refuses the
    /// socket.
    ///
    /// # Panics
    ///
    /// When the current runtime was built without IO (`enable_io`).
    pub fn from_blocking(receiver: Receiver<T>) -> Result<AsyncReceiver<T>> {
        let io = register(receiver.raw())?;
        Ok(AsyncReceiver {
            inner: receiver,
            io,
            stream_ended: false,
        })
    }

    /// Leaves the runtime: the blocking receiver over the same connection. Messages not
    /// received yet stay queued for it.
    pub fn into_blocking(self) -> Receiver<T> {
        self.inner
    }

    /// The blocking receiver underneath (for its limits, socket and peer).
    pub fn get_ref(&self) -> &Receiver<T> {
        &self.inner
    }

    /// Replaces the limits incoming messages are checked against (see
    /// [`Receiver::with_limits`]).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> AsyncReceiver<T> {
        self.inner.set_limits(limits);
        self
    }

    /// Accepts messages whatever type fingerprint they carry (see
    /// [`Receiver::without_type_check`]).
    #[must_use]
    pub fn without_type_check(mut self) -> AsyncReceiver<T> {
        self.inner.set_type_check(false);
        self
    }

    /// The process at the other end (see [`Sender::peer_credentials`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `getsockopt` fails.
    pub fn peer_credentials(&self) -> Result<Credentials> {
        self.inner.peer_credentials()
    }
}

impl<T: DeserializeOwned> AsyncReceiver<T> {
    /// Waits (asynchronously) for the next message.
    ///
    /// Cancel-safe: a packet is taken off the socket and decoded in one synchronous step,
    /// so dropping this future (in `select!`, or a timeout) loses no message and leaks no
    /// fd. Several tasks may wait on one receiver; each message goes to one of them.
    ///
    /// Only the wait is async: checking the fds, mapping a spilled payload and decoding it
    /// run synchronously on the task's thread. For messages of many MiB of serialized
    /// bytes, send `Frozen` fields instead, or receive with the blocking [`Receiver`]
    /// inside `tokio::task::spawn_blocking`.
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv`], plus [`Error::Io`] when the reactor fails (e.g. its runtime
    /// shut down).
    pub async fn recv(&self) -> Result<T> {
        on_readiness(&self.io, Interest::READABLE, || self.inner.try_recv()).await
    }

    /// Takes the next message if one is queued (see [`Receiver::try_recv`]).
    ///
    /// # Errors
    ///
    /// [`Error::WouldBlock`] when nothing is queued; otherwise as [`recv`](Self::recv).
    pub fn try_recv(&self) -> Result<T> {
        self.inner.try_recv()
    }

    /// Polls for the next message: `Ready` with what [`recv`](Self::recv) would return, or
    /// `Pending` (and `cx` is woken when a packet may have come).
    ///
    /// Only the waker of the latest call is kept, so poll from one task at a time (or use
    /// [`recv`](Self::recv), which has no such limit).
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<T>> {
        loop {
            let mut guard: AsyncFdReadyGuard<'_, Watched> = ready!(self.io.poll_read_ready(cx))
                .map_err(|e| readiness_error(self.io.as_raw_fd(), e))?;
            match self.inner.try_recv() {
                Err(Error::WouldBlock) => guard.clear_ready(),
                done => return Poll::Ready(done),
            }
        }
    }
}

/// Yields every message, or the error for a packet that was rejected (and goes on), like
/// [`Receiver::iter`]; ends at [`Error::Disconnected`], and right after yielding an
/// [`Error::Io`] (the socket or the reactor failed, and would fail the same way for ever).
impl<T: DeserializeOwned> Stream for AsyncReceiver<T> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        let this = self.get_mut();
        if this.stream_ended {
            return Poll::Ready(None);
        }
        match ready!(this.poll_recv(cx)) {
            Err(Error::Disconnected { .. }) => {
                this.stream_ended = true;
                Poll::Ready(None)
            }
            Err(e @ Error::Io { .. }) => {
                this.stream_ended = true;
                Poll::Ready(Some(Err(e)))
            }
            other => Poll::Ready(Some(other)),
        }
    }
}

impl<T: DeserializeOwned> FusedStream for AsyncReceiver<T> {
    fn is_terminated(&self) -> bool {
        self.stream_ended
    }
}

impl<T> std::fmt::Debug for AsyncReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncReceiver")
            .field("inner", &self.inner)
            .field("watched_fd", &self.io.as_raw_fd())
            .finish()
    }
}

impl<T> AsFd for AsyncReceiver<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

// -----------------------------------------------------------------------------------------

/// Registers both halves of one connection (or of two, if they do not share a socket),
/// sharing one registration when they do.
///
/// This is how a process started with the blocking API goes async:
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn child() -> Result<(), memfile::ipc::Error> {
/// let (tx, rx) = memfile::ipc::from_parent::<u64, String>()?;
/// let (tx, rx) = memfile::ipc::tokio::duplex_from_blocking(tx, rx)?;
/// let job = rx.recv().await?;
/// tx.send(&(job.len() as u64)).await?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// As [`AsyncSender::from_blocking`].
///
/// # Panics
///
/// When the current runtime was built without IO (`enable_io`).
pub fn duplex_from_blocking<Tx, Rx>(
    tx: Sender<Tx>,
    rx: Receiver<Rx>,
) -> Result<(AsyncSender<Tx>, AsyncReceiver<Rx>)> {
    let tx_io = register(tx.raw())?;
    let rx_io = if Arc::ptr_eq(tx.raw(), rx.raw()) {
        tx_io.clone()
    } else {
        register(rx.raw())?
    };
    Ok((
        AsyncSender {
            inner: tx,
            io: tx_io,
        },
        AsyncReceiver {
            inner: rx,
            io: rx_io,
            stream_ended: false,
        },
    ))
}

/// Creates a connected pair of async endpoints (see [`crate::channel`]).
///
/// # Errors
///
/// [`Error::Io`] when `socketpair` fails, or as [`AsyncSender::from_blocking`].
///
/// # Panics
///
/// When the current runtime was built without IO (`enable_io`).
pub fn channel<T>() -> Result<(AsyncSender<T>, AsyncReceiver<T>)> {
    let (tx, rx) = crate::channel()?;
    duplex_from_blocking(tx, rx)
}

/// Connects to a listener bound to a filesystem path (see [`crate::connect`]).
///
/// The `connect` itself is the blocking one: it returns at once unless the listener's
/// backlog (`SOMAXCONN`) is full, when it waits for room like `connect(2)` does.
///
/// # Errors
///
/// As [`crate::connect`], or as [`AsyncSender::from_blocking`].
///
/// # Panics
///
/// When the current runtime was built without IO (`enable_io`).
pub fn connect<Tx, Rx>(path: impl AsRef<Path>) -> Result<(AsyncSender<Tx>, AsyncReceiver<Rx>)> {
    let (tx, rx) = crate::connect(path)?;
    duplex_from_blocking(tx, rx)
}

/// Connects to a listener bound to a Linux abstract name (see [`crate::connect_abstract`]);
/// as [`connect`].
///
/// # Errors
///
/// As [`crate::connect_abstract`], or as [`AsyncSender::from_blocking`].
///
/// # Panics
///
/// When the current runtime was built without IO (`enable_io`).
pub fn connect_abstract<Tx, Rx>(
    name: impl AsRef<[u8]>,
) -> Result<(AsyncSender<Tx>, AsyncReceiver<Rx>)> {
    let (tx, rx) = crate::connect_abstract(name)?;
    duplex_from_blocking(tx, rx)
}

/// In a child started by [`crate::spawn`]: the connection to the parent, async (see
/// [`crate::from_parent`]). The parent may use either API.
///
/// # Errors
///
/// As [`crate::from_parent`], or as [`AsyncSender::from_blocking`].
///
/// # Panics
///
/// When the current runtime was built without IO (`enable_io`).
pub fn from_parent<Tx, Rx>() -> Result<(AsyncSender<Tx>, AsyncReceiver<Rx>)> {
    let (tx, rx) = crate::from_parent()?;
    duplex_from_blocking(tx, rx)
}

// -----------------------------------------------------------------------------------------

/// An async [`Listener`]: accepts connections without blocking the thread, with the same
/// credential policy and errors.
#[derive(Debug)]
pub struct AsyncListener {
    io: AsyncFd<Listener>,
}

impl AsyncListener {
    /// Binds to a filesystem path (see [`Listener::bind`]) and registers with the current
    /// runtime.
    ///
    /// # Errors
    ///
    /// As [`Listener::bind`], or as [`from_blocking`](Self::from_blocking).
    ///
    /// # Panics
    ///
    /// When the current runtime was built without IO (`enable_io`).
    pub fn bind(path: impl AsRef<Path>) -> Result<AsyncListener> {
        AsyncListener::from_blocking(Listener::bind(path)?)
    }

    /// Binds to a Linux abstract name (see [`Listener::bind_abstract`]) and registers with
    /// the current runtime.
    ///
    /// # Errors
    ///
    /// As [`Listener::bind_abstract`], or as [`from_blocking`](Self::from_blocking).
    ///
    /// # Panics
    ///
    /// When the current runtime was built without IO (`enable_io`).
    pub fn bind_abstract(name: impl AsRef<[u8]>) -> Result<AsyncListener> {
        AsyncListener::from_blocking(Listener::bind_abstract(name)?)
    }

    /// Registers a listener with the current runtime (its socket is non-blocking already).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when called outside a tokio runtime, or when the reactor refuses the
    /// socket; the listener is dropped then.
    ///
    /// # Panics
    ///
    /// When the current runtime was built without IO (`enable_io`).
    pub fn from_blocking(listener: Listener) -> Result<AsyncListener> {
        const OP: &str = "registering the listener with the tokio reactor (epoll_ctl)";
        let fd = listener.as_raw_fd();
        current_runtime(OP, fd)?;
        // SAFETY: the `Listener` is moved into the `AsyncFd`; it owns its fd, keeps it open
        // until it is dropped and never swaps it for another.
        let io = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
            .map_err(|e| Error::io(OP, Some(fd), e.into_parts().1))?;
        Ok(AsyncListener { io })
    }

    /// Leaves the runtime: the blocking listener.
    pub fn into_blocking(self) -> Listener {
        self.io.into_inner()
    }

    /// The blocking listener underneath (for its policy, path or name).
    pub fn get_ref(&self) -> &Listener {
        self.io.get_ref()
    }

    /// Replaces the credential policy (see [`Listener::set_credential_policy`]).
    pub fn set_credential_policy(&mut self, policy: crate::CredentialPolicy) {
        self.io.get_mut().set_credential_policy(policy);
    }

    /// Sets whether refused peers are returned as errors (see
    /// [`Listener::report_refusals`]); by default they are closed, traced and counted
    /// ([`Listener::refused_count`], through [`get_ref`](Self::get_ref)) and the accept
    /// goes on waiting.
    pub fn set_report_refusals(&mut self, report: bool) {
        self.io.get_mut().set_report_refusals(report);
    }

    /// Waits for a connection whose peer passes the credential policy; returns it with
    /// the peer's credentials (see [`Listener::accept_raw`]). Refused peers are closed,
    /// traced and counted on the way, and the wait goes on.
    ///
    /// Cancel-safe: a connection is taken only in the step that returns it.
    ///
    /// # Errors
    ///
    /// As [`Listener::accept_raw`]: [`Error::PeerRejected`] for a refused peer only with
    /// [`set_report_refusals`](Self::set_report_refusals), [`Error::Io`] when `accept4` or
    /// the reactor fails.
    pub async fn accept_raw(&self) -> Result<(RawSocket, Credentials)> {
        let listener = self.io.get_ref();
        on_readiness(&self.io, Interest::READABLE, || listener.try_accept_raw()).await
    }

    /// Polls for a connection whose peer passes the credential policy: the poll form of
    /// [`accept_raw`](Self::accept_raw), for hand-written futures and streams.
    ///
    /// Only the waker of the latest call is kept, so poll from one task at a time.
    pub fn poll_accept_raw(&self, cx: &mut Context<'_>) -> Poll<Result<(RawSocket, Credentials)>> {
        loop {
            let mut guard = ready!(self.io.poll_read_ready(cx))
                .map_err(|e| readiness_error(self.io.as_raw_fd(), e))?;
            match self.io.get_ref().try_accept_raw() {
                Err(Error::WouldBlock) => guard.clear_ready(),
                done => return Poll::Ready(done),
            }
        }
    }

    /// Waits for a connection whose peer passes the credential policy; returns a duplex
    /// pair of async endpoints over it: send `Tx`, receive `Rx` (see [`Listener::accept`]).
    ///
    /// # Errors
    ///
    /// As [`accept_raw`](Self::accept_raw), or as [`AsyncSender::from_blocking`] (the
    /// connection is closed then).
    pub async fn accept<Tx, Rx>(&self) -> Result<(AsyncSender<Tx>, AsyncReceiver<Rx>)> {
        let (tx, rx, _peer) = self.accept_with_credentials().await?;
        Ok((tx, rx))
    }

    /// Like [`accept`](Self::accept), and also returns the peer's credentials
    /// (`SO_PEERCRED`, as the policy saw them).
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept).
    pub async fn accept_with_credentials<Tx, Rx>(
        &self,
    ) -> Result<(AsyncSender<Tx>, AsyncReceiver<Rx>, Credentials)> {
        let (socket, peer) = self.accept_raw().await?;
        async_duplex(socket, peer)
    }

    /// An endless [`Stream`] of admitted connections, as typed async endpoints with the
    /// peer's credentials: the async [`Listener::incoming`].
    ///
    /// It never ends: refused peers are closed, traced and counted without showing up
    /// (with [`set_report_refusals`](Self::set_report_refusals): as
    /// [`Error::PeerRejected`] items), and an [`Error::Io`] (e.g. `EMFILE`) is yielded and
    /// the stream goes on. Taking the next item is cancel-safe.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::future::poll_fn;
    /// use std::pin::Pin;
    /// use futures_core::Stream;
    /// use memfile::ipc::tokio::{connect_abstract, AsyncListener};
    ///
    /// let name = format!("memfile-doc-async-incoming-{}", std::process::id());
    /// let listener = AsyncListener::bind_abstract(&name)?;
    /// let (client_tx, _client_rx) = connect_abstract::<u32, ()>(&name)?;
    /// client_tx.send(&7).await?;
    ///
    /// let mut incoming = listener.incoming::<(), u32>();
    /// // `StreamExt::next` from `futures` or `tokio-stream` does the same.
    /// let next = poll_fn(|cx| Pin::new(&mut incoming).poll_next(cx)).await;
    /// let (_tx, rx, peer) = next.expect("never ends")?;
    /// assert_eq!(peer.pid, std::process::id() as i32);
    /// assert_eq!(rx.recv().await?, 7);
    /// # Ok(())
    /// # }
    /// ```
    pub fn incoming<Tx, Rx>(&self) -> AsyncIncoming<'_, Tx, Rx> {
        AsyncIncoming {
            listener: self,
            _types: PhantomData,
        }
    }
}

/// Registers an accepted connection's two halves with the current runtime.
fn async_duplex<Tx, Rx>(
    socket: RawSocket,
    peer: Credentials,
) -> Result<(AsyncSender<Tx>, AsyncReceiver<Rx>, Credentials)> {
    let socket = Arc::new(socket);
    let (tx, rx) =
        duplex_from_blocking(Sender::from_raw(socket.clone()), Receiver::from_raw(socket))?;
    Ok((tx, rx, peer))
}

/// The endless [`Stream`] of [`AsyncListener::incoming`]: admitted connections as typed
/// async endpoints with the peer's credentials.
pub struct AsyncIncoming<'a, Tx, Rx> {
    listener: &'a AsyncListener,
    _types: PhantomData<fn() -> (Tx, Rx)>,
}

impl<Tx, Rx> Stream for AsyncIncoming<'_, Tx, Rx> {
    type Item = Result<(AsyncSender<Tx>, AsyncReceiver<Rx>, Credentials)>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let accepted = ready!(self.listener.poll_accept_raw(cx));
        Poll::Ready(Some(
            accepted.and_then(|(socket, peer)| async_duplex(socket, peer)),
        ))
    }
}

impl<Tx, Rx> FusedStream for AsyncIncoming<'_, Tx, Rx> {
    fn is_terminated(&self) -> bool {
        false
    }
}

impl<Tx, Rx> std::fmt::Debug for AsyncIncoming<'_, Tx, Rx> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncIncoming")
            .field("listener", self.listener)
            .finish()
    }
}

impl AsFd for AsyncListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}
