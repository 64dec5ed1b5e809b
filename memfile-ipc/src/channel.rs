//! Typed endpoints: [`Sender`], [`Receiver`], [`channel`], and the typed ways to connect,
//! accept and spawn.

use std::cell::Cell;
use std::fmt;
use std::io::IoSlice;
use std::iter::FusedIterator;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use memfile_core::Frozen;
use nix::poll::PollFlags;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::closer::{self, PeerFds};
use crate::codec;
use crate::fd::{self, DecodeScope, EncodeScope, KeepOpen};
use crate::fingerprint;
use crate::flow::{self, InFlight, Wait, Window};
use crate::listener::{connect_abstract_raw, connect_raw};
use crate::process::{ChildProcess, raw_from_parent, spawn_raw};
use crate::raw::{MAX_FDS_PER_PACKET, RawSocket, RecvMode};
use crate::trace;
use crate::wire::{HEADER_LEN, Header};
use crate::{Credentials, Error, Limits, Result};

/// Packets the kernel accepts on a Unix datagram-style socket are at most `SO_SNDBUF - 32`
/// bytes (`unix_dgram_sendmsg`); keep a little more room than that.
const SNDBUF_OVERHEAD: usize = 64;
/// The receive buffer is at least this large, whatever the local send buffer says: a peer's
/// default send buffer (`net.core.wmem_default`, 208 KiB) must always fit.
const MIN_RECV_BUFFER: usize = 256 << 10;
/// Thread-local encode buffers up to this capacity are always kept for the next message.
const KEEP_BUFFER: usize = 4 << 20;
/// Larger ones, up to this capacity, are kept while messages keep using them: encoding into
/// a fresh 16 MiB `Vec` costs 15–22 ms of page faults here, into a warm one 9–14 ms.
const KEEP_LARGE_BUFFER: usize = 64 << 20;
/// A kept large buffer is freed after this many messages in a row that used less than a
/// quarter of it, so a thread that sent one big message does not hold the memory for ever.
const LARGE_BUFFER_IDLE_MESSAGES: u32 = 8;

thread_local! {
    static SEND_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// Messages in a row that used less than a quarter of a large kept buffer.
    static SEND_BUFFER_IDLE: Cell<u32> = const { Cell::new(0) };
    static RECV_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The payload bytes that go inline into one packet on `socket` under `limits`.
///
/// Derived (no [`Limits::inline_limit`] set): what the local send buffer takes, but never
/// more than a peer's receiver with default limits accepts (`MIN_RECV_BUFFER` bytes of
/// header and payload), whatever this side's `SO_SNDBUF` was raised to. Should the kernel
/// refuse a packet after all (`EMSGSIZE`, e.g. the buffer was shrunk later, or
/// `getsockopt` failed here), [`Packet::send`] spills it instead.
fn inline_limit(socket: &RawSocket, limits: &Limits) -> usize {
    limits.get_inline_limit().unwrap_or_else(|| {
        let sndbuf = socket.send_buffer_size().unwrap_or(MIN_RECV_BUFFER);
        sndbuf
            .saturating_sub(SNDBUF_OVERHEAD + HEADER_LEN)
            .min(MIN_RECV_BUFFER - HEADER_LEN)
    })
}

/// Creates a connected pair of typed endpoints over a `SOCK_SEQPACKET` socketpair.
///
/// Both ends may be moved to other threads, or one of them sent to another process inside a
/// message (reply channels) or handed to a child with [`spawn`].
///
/// # Errors
///
/// [`Error::Io`] when `socketpair` fails (e.g. out of fds).
///
/// # Examples
///
/// ```
/// let (tx, rx) = memfile::ipc::channel::<(u32, String)>()?;
/// tx.send(&(7, "seven".to_string()))?;
/// assert_eq!(rx.recv()?, (7, "seven".to_string()));
/// # Ok::<(), memfile::ipc::Error>(())
/// ```
pub fn channel<T>() -> Result<(Sender<T>, Receiver<T>)> {
    let (a, b) = RawSocket::pair()?;
    Ok((
        Sender::from_raw(Arc::new(a)),
        Receiver::from_raw(Arc::new(b)),
    ))
}

/// The sending half of a typed channel: encodes messages of type `T` and sends each as one
/// packet.
///
/// `Clone + Send + Sync`; any number of threads may send at once, each message arrives
/// whole (one `SOCK_SEQPACKET` packet). A message whose encoding is larger than the inline
/// limit is written to a sealed memfd and sent as an fd (see `docs/protocol.md`).
///
/// A `Sender` is itself serializable: put it in a message to hand the peer a way to reply.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use memfile::ipc::{channel, Sender};
///
/// // A request carries the sender the answer should go to.
/// let (requests, server) = channel::<(String, Sender<usize>)>()?;
/// let (reply_tx, reply_rx) = channel::<usize>()?;
/// let worker = std::thread::spawn(move || -> memfile::ipc::Result<()> {
///     for request in &server {
///         let (word, reply) = request?;
///         reply.send(&word.len())?;
///     }
///     Ok(())
/// });
/// requests.send(&("hello".to_string(), reply_tx.clone()))?;
/// assert_eq!(reply_rx.recv_timeout(Duration::from_secs(10))?, 5);
/// requests.try_send(&("hi".to_string(), reply_tx))?;
/// assert_eq!(reply_rx.recv()?, 2);
/// drop(requests); // the worker's loop ends
/// worker.join().unwrap()?;
/// # Ok::<(), memfile::ipc::Error>(())
/// ```
pub struct Sender<T> {
    socket: Arc<RawSocket>,
    limits: Limits,
    inline_limit: usize,
    /// Send `T`'s fingerprint (else 0, "not checked").
    type_check: bool,
    /// `T`'s fingerprint, once the first message needed it.
    fingerprint: OnceLock<u32>,
    _message: PhantomData<fn(&T)>,
}

impl<T> Sender<T> {
    /// Wraps a connected socket (shared with a [`Receiver`] for duplex use).
    pub fn from_raw(socket: Arc<RawSocket>) -> Sender<T> {
        let limits = Limits::default();
        let inline_limit = inline_limit(&socket, &limits);
        Sender {
            socket,
            limits,
            inline_limit,
            type_check: true,
            fingerprint: OnceLock::new(),
            _message: PhantomData,
        }
    }

    /// Sends fingerprint 0 ("not checked") instead of the message type's fingerprint, so
    /// that the receiver accepts the messages whatever its type: for a receiver whose type
    /// is not the sender's but reads the same bytes (a renamed type, a hand-written
    /// `Deserialize`, a peer in another language with a different type name).
    ///
    /// By default every message carries the fingerprint of `T` (see
    /// [`Error::TypeMismatch`] and `docs/protocol.md`), and a receiver of another type
    /// rejects it.
    ///
    /// ```
    /// use memfile::ipc::{channel, Error, Sender};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Celsius(f64);
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Fahrenheit(f64);
    ///
    /// let (tx, rx) = channel::<Fahrenheit>()?;
    /// // The same socket, used with another (wire-compatible) type.
    /// let tx: Sender<Celsius> = Sender::from_raw(tx.raw().clone());
    /// tx.send(&Celsius(21.0))?;
    /// assert!(matches!(rx.recv(), Err(Error::TypeMismatch { .. })));
    ///
    /// let tx = tx.without_type_check();
    /// tx.send(&Celsius(21.0))?;
    /// assert_eq!(rx.recv()?.0, 21.0);
    /// # Ok::<(), memfile::ipc::Error>(())
    /// ```
    #[must_use]
    pub fn without_type_check(mut self) -> Sender<T> {
        self.set_type_check(false);
        self
    }

    /// Turns sending the message type's fingerprint on or off, in place. See
    /// [`without_type_check`](Self::without_type_check).
    pub fn set_type_check(&mut self, on: bool) {
        self.type_check = on;
    }

    /// Replaces the limits this sender checks its messages against (the maximum message
    /// size, the maximum number of fds, the inline limit).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Sender<T> {
        self.set_limits(limits);
        self
    }

    /// Replaces the limits, in place. See [`with_limits`](Self::with_limits).
    pub fn set_limits(&mut self, limits: Limits) {
        self.inline_limit = inline_limit(&self.socket, &limits);
        self.limits = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Encoded messages up to this many bytes travel inside the packet; larger ones are
    /// spilled into a sealed memfd. [`Limits::inline_limit`] if set, else derived from the
    /// socket's send buffer and capped so that a packet never exceeds 256 KiB, what a peer's
    /// receiver with default limits accepts (whatever `SO_SNDBUF` this side has).
    pub fn inline_limit(&self) -> usize {
        self.inline_limit
    }

    /// The socket underneath.
    pub fn raw(&self) -> &Arc<RawSocket> {
        &self.socket
    }

    /// What this process has in flight on the connection (sent, not yet credited by the
    /// peer), and the window the peer announced (`None`: unbounded).
    pub fn in_flight(&self) -> InFlight {
        self.socket.flow().in_flight()
    }

    /// The process at the other end (`SO_PEERCRED`). For a [`channel`] or [`spawn`]
    /// socketpair this is the process that created the pair; for [`connect`] and
    /// `Listener::accept` it is the peer that connected or listened.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `getsockopt` fails.
    pub fn peer_credentials(&self) -> Result<Credentials> {
        self.socket.peer_credentials()
    }
}

impl<T: Serialize + Deserialize<'static>> Sender<T> {
    /// Sends one message, waiting while the peer's window is used up (a bounded channel:
    /// see [`Window`]) or the socket's buffer is full.
    ///
    /// The packet carries the fingerprint of `T` (unless turned off with
    /// [`without_type_check`](Self::without_type_check)), computed from `T`'s serde shape at
    /// the first message of this sender; a receiver of another type rejects it with
    /// [`Error::TypeMismatch`]. That is why `T` must be `Deserialize` too: the fingerprint
    /// describes the type as a receiver reads it.
    ///
    /// The fds of the message's fd fields are sent along (the message keeps its own);
    /// a spilled message's bytes go into a fresh sealed memfd. A message under the inline
    /// limit that the kernel still refuses as too large (`EMSGSIZE`: the socket's send
    /// buffer was shrunk after this sender was made) is spilled and sent that way.
    ///
    /// # Errors
    ///
    /// - [`Error::MessageTooLarge`]: the encoding exceeds
    ///   [`Limits::max_message_bytes`]; nothing was sent;
    /// - [`Error::TooManyFds`]: more fd fields than [`Limits::max_fds`] (or 253 in all);
    /// - [`Error::Codec`]: serde refused the value (e.g. a map with a non-serializable key);
    /// - [`Error::Disconnected`]: the receiving end is gone (`op` is
    ///   [`Operation::Send`](crate::Operation::Send));
    /// - [`Error::Io`]: creating the spill memfd or `sendmsg` failed otherwise.
    ///
    /// Every error that concerns the connection names this sender's socket
    /// ([`Error::fd`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use memfile::ipc::{Error, Operation};
    ///
    /// let (tx, rx) = memfile::ipc::channel::<Vec<u8>>()?;
    /// tx.send(&vec![1, 2, 3])?;
    /// drop(rx);
    /// let e = tx.send(&vec![4]).unwrap_err();
    /// assert!(matches!(e, Error::Disconnected { op: Operation::Send, .. }));
    /// # Ok::<(), memfile::ipc::Error>(())
    /// ```
    pub fn send(&self, msg: &T) -> Result<()> {
        self.send_with(msg, false)
    }

    /// Sends one message if the peer's window (see [`Window`]) and the socket's buffer have
    /// room now.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] when the peer's window is used up, [`Error::WouldBlock`] when the
    /// socket's buffer is full (nothing was sent either way); otherwise as
    /// [`send`](Self::send).
    pub fn try_send(&self, msg: &T) -> Result<()> {
        self.send_with(msg, true)
    }

    /// Sends one message, waiting at most `timeout` for room in the socket's buffer.
    ///
    /// The message is encoded once (a large one into a sealed memfd) before the clock
    /// matters; then it is sent whole as soon as the buffer has room (`poll` for
    /// `POLLOUT`, then a non-blocking `sendmsg`), or not at all.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when the window or the buffer had no room in time: nothing was sent
    /// (a packet is never sent in part), and the message can be sent again. Otherwise as
    /// [`send`](Self::send).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use memfile::ipc::Error;
    ///
    /// let (tx, rx) = memfile::ipc::channel::<Vec<u8>>()?;
    /// // Nobody reads: the socket's buffer fills up, then sending times out.
    /// let chunk = vec![7u8; 16 << 10];
    /// let timeout = Duration::from_millis(20);
    /// loop {
    ///     match tx.send_timeout(&chunk, timeout) {
    ///         Ok(()) => continue,
    ///         Err(Error::Timeout { .. }) => break,
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// // Reading makes room again.
    /// rx.recv()?;
    /// tx.send_timeout(&chunk, timeout)?;
    /// # Ok::<(), memfile::ipc::Error>(())
    /// ```
    pub fn send_timeout(&self, msg: &T, timeout: Duration) -> Result<()> {
        let deadline = Instant::now().checked_add(timeout);
        let mut buffer = take_send_buffer();
        let result = self
            .encode(msg, &mut buffer)
            .and_then(|mut packet| {
                let socket = &self.socket;
                match deadline {
                    Some(deadline) => {
                        flow::send_with_budget(socket, packet.cost, Wait::Until(deadline), || {
                            packet.send_until(socket, deadline)
                        })
                    }
                    None => flow::send_with_budget(socket, packet.cost, Wait::Forever, || {
                        packet.send(socket, false)
                    }),
                }
            })
            .map_err(|e| e.on_socket(self.socket.as_raw_fd()));
        recycle_send_buffer(buffer);
        trace::sent(&self.socket, &result);
        result
    }

    fn send_with(&self, msg: &T, nonblocking: bool) -> Result<()> {
        let mut buffer = take_send_buffer();
        let wait = if nonblocking { Wait::No } else { Wait::Forever };
        let result = self
            .encode(msg, &mut buffer)
            .and_then(|mut packet| {
                flow::send_with_budget(&self.socket, packet.cost, wait, || {
                    packet.send(&self.socket, nonblocking)
                })
            })
            .map_err(|e| e.on_socket(self.socket.as_raw_fd()));
        recycle_send_buffer(buffer);
        trace::sent(&self.socket, &result);
        result
    }

    /// Encodes `msg` into one packet (spilling it into a sealed memfd if it is too large to
    /// go inline), checking this sender's limits; nothing is sent yet. The blocking and the
    /// async sender both send through this, so a retried send never encodes twice.
    pub(crate) fn encode<'a>(&self, msg: &T, buffer: &'a mut Vec<u8>) -> Result<Packet<'a>> {
        buffer.clear();
        buffer.resize(HEADER_LEN, 0);
        let scope = EncodeScope::begin();
        let outer = flow::begin_carry();
        let encoded = codec::encode(msg, buffer, self.limits.get_max_message_bytes(), &scope);
        let carried = flow::end_carry(outer);
        encoded?;
        // Owned by the packet (clones or duplicates): whatever happens to `msg` meanwhile,
        // every retry sends these very files.
        let field_fds: Vec<KeepOpen> = scope.finish();
        let max_fds = self.limits.get_max_fds();
        if field_fds.len() > max_fds {
            return Err(Error::TooManyFds {
                count: field_fds.len(),
                max: max_fds,
            });
        }
        let payload_len = buffer.len() - HEADER_LEN;
        let fingerprint = self.fingerprint();
        let header = Header {
            spilled: false,
            fd_count: field_fds.len() as u32,
            payload_len: payload_len as u64,
            fingerprint,
        };
        buffer[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        let mut packet = Packet {
            encoded: &buffer[..],
            field_fds,
            fingerprint,
            spill: None,
            cost: (payload_len as u64).saturating_add(carried),
        };
        if payload_len > self.inline_limit {
            packet.spill()?;
        }
        Ok(packet)
    }

    /// What the header's fingerprint field carries: `T`'s fingerprint, or 0.
    fn fingerprint(&self) -> u32 {
        if self.type_check {
            *self.fingerprint.get_or_init(fingerprint::of::<T>)
        } else {
            fingerprint::UNCHECKED
        }
    }
}

/// Takes the calling thread's encode buffer (a send nested inside a `Serialize` impl, or a
/// second async send on this thread, simply gets a fresh one).
pub(crate) fn take_send_buffer() -> Vec<u8> {
    SEND_BUFFER.take()
}

/// Gives an encode buffer (still holding the message it encoded) back to the calling
/// thread, unless it is too large to keep: see [`KEEP_LARGE_BUFFER`].
pub(crate) fn recycle_send_buffer(mut buffer: Vec<u8>) {
    let capacity = buffer.capacity();
    if capacity > KEEP_BUFFER {
        let idle = if buffer.len() < capacity / 4 {
            SEND_BUFFER_IDLE.get() + 1
        } else {
            0
        };
        if capacity > KEEP_LARGE_BUFFER || idle >= LARGE_BUFFER_IDLE_MESSAGES {
            SEND_BUFFER_IDLE.set(0);
            return;
        }
        SEND_BUFFER_IDLE.set(idle);
    }
    buffer.clear();
    SEND_BUFFER.set(buffer);
}

/// One encoded message, ready to go out as one packet: from [`Sender::encode`].
pub(crate) struct Packet<'a> {
    /// The header of the inline packet, followed by the payload.
    encoded: &'a [u8],
    /// The fds of the message's fd fields, kept open by the packet itself.
    field_fds: Vec<KeepOpen>,
    /// The message type's fingerprint in the header.
    fingerprint: u32,
    /// Once the payload is spilled: the header that announces it, and the sealed memfd
    /// holding the payload (it goes last in the packet's fd list).
    spill: Option<([u8; HEADER_LEN], Frozen)>,
    /// What the message counts against a bounded channel's byte window: the payload plus
    /// the buffers its fields carry.
    pub(crate) cost: u64,
}

impl Packet<'_> {
    /// Moves the payload into a sealed memfd; the packet becomes the header and the fds.
    fn spill(&mut self) -> Result<()> {
        let fd_count = self.field_fds.len() + 1;
        if fd_count > MAX_FDS_PER_PACKET {
            return Err(Error::TooManyFds {
                count: fd_count,
                max: MAX_FDS_PER_PACKET,
            });
        }
        let payload = &self.encoded[HEADER_LEN..];
        let frozen = Frozen::from_bytes("memfile-ipc message", payload)
            .map_err(|e| Error::io("writing a spilled message to a memfd", None, e))?;
        let header = Header {
            spilled: true,
            fd_count: fd_count as u32,
            payload_len: payload.len() as u64,
            fingerprint: self.fingerprint,
        };
        self.spill = Some((header.to_bytes(), frozen));
        Ok(())
    }

    /// Sends the packet on `socket`; with `nonblocking`, [`Error::WouldBlock`] when the
    /// send buffer is full (the packet can then be sent again later).
    ///
    /// An inline packet the kernel refuses as too large (`EMSGSIZE`: the socket's send
    /// buffer is smaller than the inline limit assumed, e.g. lowered after the sender was
    /// made) is spilled and sent again, so it goes out all the same.
    pub(crate) fn send(&mut self, socket: &RawSocket, nonblocking: bool) -> Result<()> {
        match self.send_once(socket, nonblocking) {
            Err(Error::Io { source, .. })
                if self.spill.is_none() && source.raw_os_error() == Some(libc::EMSGSIZE) =>
            {
                self.spill()?;
                self.send_once(socket, nonblocking)
            }
            other => other,
        }
    }

    /// Sends the packet on `socket`, waiting for room until `deadline` at most.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when there was no room in time (nothing was sent); otherwise as
    /// [`send`](Self::send).
    pub(crate) fn send_until(&mut self, socket: &RawSocket, deadline: Instant) -> Result<()> {
        loop {
            match self.send(socket, true) {
                Err(Error::WouldBlock) => socket.wait_until(PollFlags::POLLOUT, deadline)?,
                done => return done,
            }
        }
    }

    fn send_once(&self, socket: &RawSocket, nonblocking: bool) -> Result<()> {
        let mut fds: Vec<BorrowedFd<'_>> = self.field_fds.iter().map(AsFd::as_fd).collect();
        let bytes = match &self.spill {
            Some((header, frozen)) => {
                fds.push(frozen.as_fd());
                &header[..]
            }
            None => self.encoded,
        };
        let iov = [IoSlice::new(bytes)];
        if nonblocking {
            socket.try_send(&iov, &fds)
        } else {
            socket.send(&iov, &fds)
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        Sender {
            socket: self.socket.clone(),
            limits: self.limits,
            inline_limit: self.inline_limit,
            type_check: self.type_check,
            fingerprint: self.fingerprint.clone(),
            _message: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("fd", &self.socket.as_raw_fd())
            .field("message", &std::any::type_name::<T>())
            .field("inline_limit", &self.inline_limit)
            .finish()
    }
}

impl<T> AsFd for Sender<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Sent as an fd: the peer gets a `Sender<T>` on the same connection (a reply channel).
///
/// Flow control: from then on, this connection's sending direction is unbounded in this
/// process (every clone of this sender), and in the receiving one; see [`Window`].
impl<T> Serialize for Sender<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.socket.flow().hand_off();
        fd::serialize_fd(|| Ok(KeepOpen::socket(&self.socket)), serializer)
    }
}

/// Received as an fd, which must be an `AF_UNIX` `SOCK_SEQPACKET` socket. Unbounded (the
/// process that sent it may still hold clones): see [`Window`].
impl<'de, T> Deserialize<'de> for Sender<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Sender<T>, D::Error> {
        let socket = fd::deserialize::<RawSocket, D>(deserializer)?;
        socket.flow().hand_off();
        Ok(Sender::from_raw(Arc::new(socket)))
    }
}

/// The receiving half of a typed channel: receives packets and decodes messages of type `T`.
///
/// Every packet is checked against the wire protocol and the receiver's [`Limits`] before it
/// is decoded; fd fields are verified (a `Frozen` must be sealed) before the message exists;
/// fds nobody claimed, and those of a refused packet or field, are closed without ever
/// blocking the receiver (one whose `close` might block, such as a lingering TCP socket or
/// a FUSE file, is closed on a closer thread; see `docs/security.md`). A bad packet is an error for that one call: the next
/// `recv` reads the next packet.
///
/// A `Receiver` is serializable too: sent in a message, it hands the peer this end of the
/// connection (drop your copy after sending it).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use memfile::Frozen;
/// use memfile::ipc::{channel, Error, Fd};
///
/// let (tx, rx) = channel::<(u64, Fd<Frozen>)>()?;
/// let big = Frozen::from_bytes("table", &[1u8; 1 << 20]).unwrap();
/// tx.send(&(1, big.into()))?; // the buffer travels as an fd: no copy
/// let (n, table) = rx.recv()?;
/// assert_eq!((n, table.len()), (1, 1 << 20));
///
/// // Nothing queued: try_recv and recv_timeout return instead of waiting.
/// assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
/// let r = rx.recv_timeout(Duration::from_millis(10));
/// assert!(matches!(r, Err(Error::Timeout { .. })));
///
/// drop(tx);
/// assert!(matches!(rx.recv(), Err(Error::Disconnected { .. })));
/// # Ok::<(), memfile::ipc::Error>(())
/// ```
pub struct Receiver<T> {
    socket: Arc<RawSocket>,
    limits: Limits,
    recv_capacity: usize,
    /// Compare the packets' fingerprints with `T`'s.
    type_check: bool,
    /// `T`'s fingerprint, once the first packet needed it.
    fingerprint: OnceLock<u32>,
    _message: PhantomData<fn() -> T>,
}

impl<T> Receiver<T> {
    /// Wraps a connected socket (shared with a [`Sender`] for duplex use).
    ///
    /// It grants the peer the default [`Window`], announced on the first `recv` (until
    /// then the peer's sender is unbounded), or at once by
    /// [`with_window`](Self::with_window).
    pub fn from_raw(socket: Arc<RawSocket>) -> Receiver<T> {
        let limits = Limits::default();
        let recv_capacity = Self::capacity(&socket, &limits);
        socket
            .flow()
            .receiver_created(&socket, Window::default(), false);
        Receiver {
            socket,
            limits,
            recv_capacity,
            type_check: true,
            fingerprint: OnceLock::new(),
            _message: PhantomData,
        }
    }

    /// Accepts messages whatever message-type fingerprint their packets carry: the bytes
    /// are decoded as `T` (and rejected with [`Error::Codec`] or an fd error if they are
    /// not one). For a sender whose type differs but whose bytes are a `T` (a renamed type,
    /// a hand-written `Serialize`, a foreign peer that computes another fingerprint).
    ///
    /// By default a packet whose fingerprint is neither 0 ("not checked") nor `T`'s is
    /// rejected with [`Error::TypeMismatch`].
    ///
    /// ```
    /// use memfile::ipc::{channel, Receiver};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Old { id: u64 }
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct New { key: u64 } // renamed field: another fingerprint, the same bytes
    ///
    /// let (tx, rx) = channel::<Old>()?;
    /// let rx: Receiver<New> = Receiver::from_raw(rx.raw().clone()).without_type_check();
    /// tx.send(&Old { id: 7 })?;
    /// assert_eq!(rx.recv()?.key, 7);
    /// # Ok::<(), memfile::ipc::Error>(())
    /// ```
    #[must_use]
    pub fn without_type_check(mut self) -> Receiver<T> {
        self.set_type_check(false);
        self
    }

    /// Turns the message-type check on or off, in place. See
    /// [`without_type_check`](Self::without_type_check).
    pub fn set_type_check(&mut self, on: bool) {
        self.type_check = on;
    }

    fn capacity(socket: &RawSocket, limits: &Limits) -> usize {
        // Cannot overflow (`Limits` clamps the inline limit to 1 GiB); saturate all the same.
        HEADER_LEN.saturating_add(inline_limit(socket, limits).max(MIN_RECV_BUFFER))
    }

    /// Replaces the limits incoming messages are checked against.
    ///
    /// ```
    /// use memfile::ipc::{channel, Error, Limits};
    ///
    /// let (tx, rx) = channel::<String>()?;
    /// let rx = rx.with_limits(Limits::default().max_message_bytes(16));
    /// tx.send(&"x".repeat(100))?;
    /// assert!(matches!(rx.recv(), Err(Error::MessageTooLarge { .. })));
    /// # Ok::<(), memfile::ipc::Error>(())
    /// ```
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Receiver<T> {
        self.set_limits(limits);
        self
    }

    /// Replaces the limits, in place. See [`with_limits`](Self::with_limits).
    pub fn set_limits(&mut self, limits: Limits) {
        self.recv_capacity = Self::capacity(&self.socket, &limits);
        self.limits = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Grants the peer `window`: how many messages and bytes it may have in flight that
    /// this side's application has not taken yet ([`Window::unbounded`]: no limit). The
    /// window belongs to the connection (every clone of this receiver in this process) and
    /// is announced to the peer at once if the socket has room, else with the next `recv`.
    ///
    /// ```
    /// use memfile::ipc::{channel, Window};
    ///
    /// let (tx, rx) = channel::<u64>()?;
    /// let rx = rx.with_window(Window::new(16, 64 << 20));
    /// tx.send(&1)?; // the sender has read the announcement by now
    /// assert_eq!(tx.in_flight().window, Some(Window::new(16, 64 << 20)));
    /// assert_eq!(rx.recv()?, 1);
    /// # Ok::<(), memfile::ipc::Error>(())
    /// ```
    #[must_use]
    pub fn with_window(self, window: Window) -> Receiver<T> {
        self.set_window(window);
        self
    }

    /// Grants the peer `window`, in place. See [`with_window`](Self::with_window).
    pub fn set_window(&self, window: Window) {
        self.socket.flow().set_window(&self.socket, window);
    }

    /// The window granted to the peer.
    pub fn window(&self) -> Window {
        self.socket.flow().window()
    }

    /// The socket underneath.
    pub fn raw(&self) -> &Arc<RawSocket> {
        &self.socket
    }

    /// The process at the other end (`SO_PEERCRED`); see [`Sender::peer_credentials`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `getsockopt` fails.
    pub fn peer_credentials(&self) -> Result<Credentials> {
        self.socket.peer_credentials()
    }
}

impl<T: DeserializeOwned> Receiver<T> {
    /// Waits for the next message.
    ///
    /// # Errors
    ///
    /// - [`Error::Disconnected`]: the peer closed its end and nothing is left to read (`op`
    ///   is [`Operation::Receive`](crate::Operation::Receive));
    /// - [`Error::TypeMismatch`]: the sender's message type is not `T` (its fingerprint
    ///   differs; see [`without_type_check`](Self::without_type_check));
    /// - [`Error::Protocol`] / [`Error::VersionMismatch`]: the packet does not follow the
    ///   wire protocol, or its spilled payload is a sparse memfd (a hole below its end:
    ///   a peer could make this side copy bytes it never wrote);
    /// - [`Error::MessageTooLarge`], [`Error::TooManyFds`]: over this receiver's [`Limits`];
    /// - [`Error::Truncated`]: larger than the receive buffer (a sender with a raised
    ///   inline limit);
    /// - [`Error::BadBuffer`]: a spilled payload or `Frozen` field is not a properly sealed
    ///   memfd (or over the mapped-bytes budget), or a `Frozen` field is sparse (kind
    ///   `Sparse`; see [`Limits::allow_sparse_buffers`]);
    /// - [`Error::BadFdKind`], [`Error::FdIndexOutOfRange`], [`Error::FdIndexReused`]: an
    ///   fd field does not match the fds that came;
    /// - [`Error::Codec`]: the bytes are not a `T`;
    /// - [`Error::HeapLimitExceeded`]: decoding it would need more heap than
    ///   [`Limits::heap_budget`] allows;
    /// - [`Error::Io`]: `recvmsg` failed otherwise.
    ///
    /// After any of these but `Disconnected` and `Io`, the receiver is still usable. Every
    /// error that concerns the connection names this receiver's socket ([`Error::fd`]).
    pub fn recv(&self) -> Result<T> {
        self.recv_mode(RecvMode::Blocking)
    }

    /// Takes the next message if one is queued.
    ///
    /// # Errors
    ///
    /// [`Error::WouldBlock`] when nothing is queued; otherwise as [`recv`](Self::recv).
    pub fn try_recv(&self) -> Result<T> {
        self.recv_mode(RecvMode::NonBlocking)
    }

    /// Waits at most `timeout` for the next message.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when none came in time; otherwise as [`recv`](Self::recv).
    ///
    /// ```
    /// use std::time::Duration;
    /// let (_tx, rx) = memfile::ipc::channel::<u8>()?;
    /// let r = rx.recv_timeout(Duration::from_millis(10));
    /// assert!(matches!(r, Err(memfile::ipc::Error::Timeout { .. })));
    /// # Ok::<(), memfile::ipc::Error>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T> {
        let mode = match Instant::now().checked_add(timeout) {
            Some(deadline) => RecvMode::Deadline(deadline),
            None => RecvMode::Blocking,
        };
        self.recv_mode(mode)
    }

    /// Iterates over incoming messages, waiting for each.
    ///
    /// An error for one message (a packet rejected for [`Error::Protocol`],
    /// [`Error::Codec`], [`Error::BadBuffer`], a limit, ...) is yielded and iteration goes
    /// on with the next packet. Iteration ends when the peer disconnects, and right after
    /// yielding an [`Error::Io`]: the socket itself failed (e.g. `EBADF`), and would fail
    /// the same way for ever.
    ///
    /// ```
    /// let (tx, rx) = memfile::ipc::channel::<u32>()?;
    /// for n in 1..=3 {
    ///     tx.send(&n)?;
    /// }
    /// drop(tx);
    /// let all: Vec<u32> = rx.iter().collect::<Result<_, _>>()?;
    /// assert_eq!(all, [1, 2, 3]);
    /// # Ok::<(), memfile::ipc::Error>(())
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            receiver: self,
            done: false,
        }
    }

    fn recv_mode(&self, mode: RecvMode) -> Result<T> {
        let mut buffer = RECV_BUFFER.take();
        if buffer.len() < self.recv_capacity {
            buffer.resize(self.recv_capacity, 0);
        }
        let result = self
            .receive_and_decode(&mut buffer[..self.recv_capacity], mode)
            .map_err(|e| e.on_socket(self.socket.as_raw_fd()));
        RECV_BUFFER.set(buffer);
        // Fds this call refused or nobody claimed went to the closer thread when they may
        // block in `close`; a waiting call gives it a moment (never past its deadline).
        match mode {
            RecvMode::Blocking => closer::settle(None),
            RecvMode::Deadline(deadline) => closer::settle(Some(deadline)),
            _ => {}
        }
        trace::received(&self.socket, &result);
        result
    }

    fn receive_and_decode(&self, buffer: &mut [u8], mode: RecvMode) -> Result<T> {
        // Owned from here on: every early return below closes them (through the closer).
        let mut fds = Vec::new();
        let n = self
            .socket
            .flow()
            .recv(&self.socket, buffer, &mut fds, mode)?;
        let mut fds = PeerFds::new(fds);
        let header = Header::parse(&buffer[..n], fds.len())?;
        self.check_type(header.fingerprint)?;
        let field_fds = fds.len() - usize::from(header.spilled);
        let max_fds = self.limits.get_max_fds();
        if field_fds > max_fds {
            return Err(Error::TooManyFds {
                count: field_fds,
                max: max_fds,
            });
        }
        let max = self.limits.get_max_message_bytes();
        if header.payload_len > max {
            return Err(Error::MessageTooLarge {
                size: header.payload_len,
                max,
            });
        }
        let budget = self.limits.get_max_mapped_bytes();
        if header.spilled {
            let index = fds.len() - 1;
            let memfd = fds.pop().expect("parse checked a spilled packet has an fd");
            let payload = Frozen::from_fd_with_max_len(memfd, header.payload_len)
                .map_err(|e| Error::bad_buffer(index, e))?;
            if payload.len() as u64 != header.payload_len {
                return Err(Error::Protocol {
                    fd: None,
                    detail: format!(
                        "spilled payload memfd (fd #{index}) holds {} bytes, header announces {}",
                        payload.len(),
                        header.payload_len
                    ),
                });
            }
            check_allocated(&payload, index)?;
            let scope = DecodeScope::begin(fds.into_inner(), budget)
                .allow_sparse_buffers(self.limits.get_allow_sparse_buffers());
            let heap = self.limits.heap_budget(header.payload_len);
            codec::decode(&payload, heap, &scope)
        } else {
            let scope = DecodeScope::begin(fds.into_inner(), budget)
                .allow_sparse_buffers(self.limits.get_allow_sparse_buffers());
            let heap = self.limits.heap_budget(header.payload_len);
            codec::decode(&buffer[HEADER_LEN..n], heap, &scope)
        }
    }

    /// Compares a packet's fingerprint with `T`'s; 0 on either side is "not checked".
    fn check_type(&self, received: u32) -> Result<()> {
        if !self.type_check || received == fingerprint::UNCHECKED {
            return Ok(());
        }
        let expected = *self.fingerprint.get_or_init(fingerprint::of::<T>);
        if expected == fingerprint::UNCHECKED || expected == received {
            return Ok(());
        }
        Err(Error::TypeMismatch {
            expected: std::any::type_name::<T>(),
            expected_fingerprint: expected,
            received: fingerprint::known_type(received),
            received_fingerprint: received,
            fd: None,
        })
    }
}

/// Checks that the spilled payload `payload` (fd #`index` of its packet) is allocated in
/// full, so that a peer cannot make this side fault in and copy bytes that cost it nothing.
///
/// A sparse sealed memfd of 2 GiB costs its sender no memory, yet decoding a `Vec<u8>` from
/// it would make the receiver allocate and copy 2 GiB. An honest sender writes every byte of
/// its spill memfd (`pwrite`, or a copy through a mapping, see `Frozen::from_bytes`).
/// The check is memfile-core's [`Frozen::first_hole`] (`lseek(SEEK_HOLE)`), exact on
/// tmpfs: `st_blocks` is not, as pages allocated past the end with
/// `fallocate(FALLOC_FL_KEEP_SIZE)` count there too and can hide holes below it. A hugetlb
/// spill is refused: hugetlbfs cannot report holes. The seals rule out punching holes later
/// (`fallocate` refuses `FALLOC_FL_PUNCH_HOLE` on a write-sealed memfd), so the check cannot
/// be raced. `Frozen` fields are checked the same way when they are decoded, unless
/// [`Limits::allow_sparse_buffers`] says otherwise; the spill never has that opt-out, as the
/// crate itself reads all of it.
fn check_allocated(payload: &Frozen, index: usize) -> Result<()> {
    let fd = payload.as_fd().as_raw_fd();
    let claimed = payload.len() as u64;
    let why = match payload.first_hole() {
        Ok(None) => return Ok(()),
        Ok(Some(hole)) => format!("its first hole is at offset {hole}"),
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
            "it is a hugetlb memfd, whose holes cannot be found".to_owned()
        }
        Err(e) => return Err(Error::io("lseek", Some(fd), e)),
    };
    Err(Error::Protocol {
        fd: None,
        detail: format!(
            "spilled payload memfd (fd #{index}, received as fd {fd}) does not have all of its \
             {claimed} bytes allocated ({why}): a sparse file makes the receiver pay for bytes \
             the sender never wrote"
        ),
    })
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("fd", &self.socket.as_raw_fd())
            .field("message", &std::any::type_name::<T>())
            .field("limits", &self.limits)
            .finish()
    }
}

impl<T> AsFd for Receiver<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Sent as an fd: the peer gets this end of the connection.
impl<T> Serialize for Receiver<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fd::serialize_fd(|| Ok(KeepOpen::socket(&self.socket)), serializer)
    }
}

/// Received as an fd, which must be an `AF_UNIX` `SOCK_SEQPACKET` socket.
impl<'de, T> Deserialize<'de> for Receiver<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Receiver<T>, D::Error> {
        let socket = fd::deserialize::<RawSocket, D>(deserializer)?;
        Ok(Receiver::from_raw(Arc::new(socket)))
    }
}

/// The next item of an iterator over `receiver`'s messages; `done` is set once it ends.
fn next_item<T: DeserializeOwned>(receiver: &Receiver<T>, done: &mut bool) -> Option<Result<T>> {
    if *done {
        return None;
    }
    match receiver.recv() {
        Err(Error::Disconnected { .. }) => {
            *done = true;
            None
        }
        Err(e @ Error::Io { .. }) => {
            *done = true;
            Some(Err(e))
        }
        other => Some(other),
    }
}

/// Iterator over a [`Receiver`]'s messages, from [`Receiver::iter`]: yields an error for a
/// single bad message and goes on; ends on [`Error::Disconnected`] and after an
/// [`Error::Io`].
pub struct Iter<'a, T> {
    receiver: &'a Receiver<T>,
    done: bool,
}

impl<T: DeserializeOwned> Iterator for Iter<'_, T> {
    type Item = Result<T>;
    fn next(&mut self) -> Option<Result<T>> {
        next_item(self.receiver, &mut self.done)
    }
}

impl<T: DeserializeOwned> FusedIterator for Iter<'_, T> {}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("receiver", self.receiver)
            .field("done", &self.done)
            .finish()
    }
}

/// Owning iterator over a [`Receiver`]'s messages; ends as [`Iter`] does.
pub struct IntoIter<T> {
    receiver: Receiver<T>,
    done: bool,
}

impl<T: DeserializeOwned> Iterator for IntoIter<T> {
    type Item = Result<T>;
    fn next(&mut self) -> Option<Result<T>> {
        next_item(&self.receiver, &mut self.done)
    }
}

impl<T: DeserializeOwned> FusedIterator for IntoIter<T> {}

impl<T> fmt::Debug for IntoIter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntoIter")
            .field("receiver", &self.receiver)
            .field("done", &self.done)
            .finish()
    }
}

impl<'a, T: DeserializeOwned> IntoIterator for &'a Receiver<T> {
    type Item = Result<T>;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T: DeserializeOwned> IntoIterator for Receiver<T> {
    type Item = Result<T>;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter {
            receiver: self,
            done: false,
        }
    }
}

/// A duplex pair over one socket: what [`connect`], `Listener::accept`, [`spawn`] and
/// [`from_parent`] return.
pub(crate) fn duplex<Tx, Rx>(socket: RawSocket) -> (Sender<Tx>, Receiver<Rx>) {
    let socket = Arc::new(socket);
    (Sender::from_raw(socket.clone()), Receiver::from_raw(socket))
}

/// Connects to a [`Listener`](crate::Listener) bound to a filesystem path; returns a duplex
/// pair of endpoints over the one connection: send `Tx`, receive `Rx`.
///
/// The socket closes when both endpoints (and their clones) are dropped.
///
/// This does **not** authenticate the server: whoever bound `path` first gets what you
/// send. Use [`connect_with_policy`](crate::connect_with_policy) (recommended policy:
/// [`SameUid`](crate::CredentialPolicy::SameUid)) unless only trusted processes can
/// create `path`.
///
/// # Errors
///
/// [`Error::Io`] when `socket` or `connect` fails (no such socket, nobody listening,
/// permission denied).
///
/// # Examples
///
/// ```
/// use memfile::ipc::{connect, Listener};
///
/// let dir = std::env::temp_dir().join(format!("memfile-ipc-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let listener = Listener::bind(dir.join("sock"))?;
/// let (tx, rx) = connect::<String, usize>(dir.join("sock"))?;
/// let (server_tx, server_rx) = listener.accept::<usize, String>()?;
/// tx.send(&"hello".to_string())?;
/// let got = server_rx.recv()?;
/// server_tx.send(&got.len())?;
/// assert_eq!(rx.recv()?, 5);
/// assert_eq!(server_tx.peer_credentials()?.pid, std::process::id() as i32);
/// # drop(listener); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), memfile::ipc::Error>(())
/// ```
pub fn connect<Tx, Rx>(path: impl AsRef<Path>) -> Result<(Sender<Tx>, Receiver<Rx>)> {
    Ok(duplex(connect_raw(path)?))
}

/// Connects to a [`Listener`](crate::Listener) bound to a Linux abstract socket name (see
/// [`Listener::bind_abstract`](crate::Listener::bind_abstract)); returns a duplex pair of
/// endpoints, as [`connect`].
///
/// This does **not** authenticate the server, and any local process can bind an abstract
/// name first: prefer [`connect_abstract_with_policy`](crate::connect_abstract_with_policy)
/// with [`SameUid`](crate::CredentialPolicy::SameUid).
///
/// # Errors
///
/// [`Error::Io`] when `socket` or `connect` fails (e.g. `ECONNREFUSED`: nobody listening).
pub fn connect_abstract<Tx, Rx>(name: impl AsRef<[u8]>) -> Result<(Sender<Tx>, Receiver<Rx>)> {
    Ok(duplex(connect_abstract_raw(name)?))
}

/// Starts `cmd` as a child process connected to this one; returns the child and a duplex pair
/// of endpoints: send `Tx` to the child, receive `Rx` from it.
///
/// Only the child's end of the socket is inherited (its number travels in the environment
/// variable `MEMFILE_IPC_FD`); the child takes it with [`from_parent::<Rx, Tx>()`](from_parent).
///
/// # Errors
///
/// [`Error::Io`] when the socketpair cannot be made or the program cannot be started.
///
/// # Examples
///
/// ```no_run
/// use std::process::Command;
///
/// // Parent:
/// let (mut child, tx, rx) = memfile::ipc::spawn::<String, u64>(&mut Command::new("worker"))?;
/// tx.send(&"job".to_string())?;
/// let answer: u64 = rx.recv()?;
/// println!("the worker answered {answer}");
/// child.wait()?;
///
/// // Child ("worker"): the types swap sides.
/// let (tx, rx) = memfile::ipc::from_parent::<u64, String>()?;
/// let job = rx.recv()?;
/// tx.send(&(job.len() as u64))?;
/// # Ok::<(), memfile::ipc::Error>(())
/// ```
pub fn spawn<Tx, Rx>(cmd: &mut Command) -> Result<(ChildProcess, Sender<Tx>, Receiver<Rx>)> {
    let (child, socket) = spawn_raw(cmd)?;
    let (tx, rx) = duplex(socket);
    Ok((child, tx, rx))
}

/// In a child started by [`spawn`]: takes the end of the socket the parent passed down and
/// returns a duplex pair of endpoints: send `Tx` to the parent, receive `Rx` from it.
///
/// Call it once. The environment variables (`MEMFILE_IPC_FD` and its inode check) are
/// removed only if this process has a single thread at that moment (changing the
/// environment while another thread may read it is unsound); otherwise they stay, and a
/// grandchild that inherits them is kept from adopting a wrong fd by the inode check. Call
/// it early in `main`, before starting threads, to get a clean environment.
///
/// # Errors
///
/// [`Error::Io`] (or the error [`RawSocket::from_fd`] gives) when this process was not
/// started by [`spawn`], the variable was already consumed, or the fd is not a
/// `SOCK_SEQPACKET` socket.
pub fn from_parent<Tx, Rx>() -> Result<(Sender<Tx>, Receiver<Rx>)> {
    Ok(duplex(raw_from_parent()?))
}
