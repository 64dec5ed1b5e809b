//! File descriptors as ordinary message fields.
//!
//! A message field that holds an fd is encoded as a `u32`: its index in the fd list of the
//! packet that carries the message (the `SCM_RIGHTS` control message). Two ways to write
//! such a field:
//!
//! - the wrapper [`Fd<T>`], which derefs to `T`:
//!   `struct Msg { frame: Fd<Frozen>, log: Option<Fd<OwnedFd>> }`;
//! - a bare field with `#[serde(with = "memfile::ipc::fd")]`:
//!   `struct Msg { #[serde(with = "memfile::ipc::fd")] frame: Frozen }`
//!   (through the facade crate: `#[serde(with = "memfile::ipc::fd")]`). For an optional or
//!   repeated fd use `Option<Fd<T>>`, `Vec<Fd<T>>`.
//!
//! `T` is any [`FdKind`]: [`Frozen`] (verified sealed and mapped before the message
//! exists), [`LiveView`] (an owner-writable memfd, verified and mapped the same way, read by
//! copy), [`MemFile`], [`OwnedFd`] (anything at all) and [`RawSocket`]. [`Sender`] and
//! [`Receiver`] are serializable directly, without either of the above (reply channels).
//!
//! While a [`Sender`] encodes a message, a thread-local table collects the fds of these
//! fields; while a [`Receiver`] decodes one, a thread-local table holds the fds that arrived.
//! An index out of range or used twice is an error, and every fd nobody claimed is closed.
//! Outside a channel (e.g. `serde_json::to_string`) these fields fail to encode.
//!
//! ```
//! use memfile::Frozen;
//! use memfile::ipc::{channel, fd::Fd};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Frame {
//!     number: u64,
//!     #[serde(with = "memfile::ipc::fd")]
//!     pixels: Frozen,
//!     thumbnail: Option<Fd<Frozen>>,
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (tx, rx) = channel::<Frame>()?;
//! let pixels = Frozen::from_bytes("pixels", &[7; 4096])?;
//! tx.send(&Frame { number: 1, pixels, thumbnail: None })?;
//! let frame = rx.recv()?;
//! assert_eq!(frame.pixels[..], [7; 4096][..]);
//! # Ok(())
//! # }
//! ```
//!
//! [`Sender`]: crate::Sender
//! [`Receiver`]: crate::Receiver

use std::cell::RefCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use memfile_core::{Frozen, LiveView, MemFile};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::raw::RawSocket;
use crate::{Error, Result};

// ---------------------------------------------------------------------------------------
// The thread-local tables.

/// Fds collected while encoding one message, in index order, each kept open by the table
/// itself (never a bare number: a `Serialize` impl may drop the value it serialized, or
/// another thread may take it out of a `Mutex`, before the packet is sent).
struct EncodeTable {
    fds: Vec<KeepOpen>,
    error: Option<Error>,
}

/// Keeps one fd of a message being sent open, as that very file, from the moment its field
/// is encoded until the last `sendmsg` retry of the packet: a clone of a [`Frozen`] or of
/// the socket's `Arc` where the value is reference-counted (no syscall), else a duplicate
/// (`F_DUPFD_CLOEXEC`).
///
/// Public only because [`FdKind`] names it; nothing outside this crate can make or use one.
#[doc(hidden)]
pub struct KeepOpen(Kept);

enum Kept {
    Frozen(Frozen),
    Socket(Arc<RawSocket>),
    Dup(OwnedFd),
}

impl KeepOpen {
    /// Keeps `socket` open (an `Arc` clone: no syscall).
    pub(crate) fn socket(socket: &Arc<RawSocket>) -> KeepOpen {
        KeepOpen(Kept::Socket(socket.clone()))
    }

    /// Duplicates `fd` (`F_DUPFD_CLOEXEC`).
    fn dup(fd: BorrowedFd<'_>) -> Result<KeepOpen> {
        fd.try_clone_to_owned()
            .map(|fd| KeepOpen(Kept::Dup(fd)))
            .map_err(|e| Error::io("fcntl(F_DUPFD_CLOEXEC)", Some(fd.as_raw_fd()), e))
    }
}

impl AsFd for KeepOpen {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.0 {
            Kept::Frozen(frozen) => frozen.as_fd(),
            Kept::Socket(socket) => socket.as_fd(),
            Kept::Dup(fd) => fd.as_fd(),
        }
    }
}

impl fmt::Debug for KeepOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeepOpen")
            .field(&self.as_fd().as_raw_fd())
            .finish()
    }
}

/// Fds that arrived with the packet being decoded.
struct DecodeTable {
    fds: Vec<Option<OwnedFd>>,
    /// Bytes of `Frozen` buffers this message may still map.
    mapped_budget: u64,
    /// [`Limits::allow_sparse_buffers`](crate::Limits::allow_sparse_buffers): whether a
    /// `Frozen` field may have holes.
    allow_sparse: bool,
    error: Option<Error>,
}

thread_local! {
    static ENCODE: RefCell<Option<EncodeTable>> = const { RefCell::new(None) };
    static DECODE: RefCell<Option<DecodeTable>> = const { RefCell::new(None) };
}

/// An active encode table; the previous one (a send nested inside a `Serialize` impl) comes
/// back when this is finished or dropped, also while unwinding.
pub(crate) struct EncodeScope {
    previous: Option<EncodeTable>,
    active: bool,
}

impl EncodeScope {
    pub(crate) fn begin() -> EncodeScope {
        let table = EncodeTable {
            fds: Vec::new(),
            error: None,
        };
        EncodeScope {
            previous: ENCODE.with(|t| t.borrow_mut().replace(table)),
            active: true,
        }
    }

    /// The typed error a field raised (if any), taken out of the table.
    pub(crate) fn take_error(&self) -> Option<Error> {
        ENCODE.with(|t| t.borrow_mut().as_mut().and_then(|t| t.error.take()))
    }

    /// The collected fds, in index order, each kept open until the returned values drop.
    pub(crate) fn finish(mut self) -> Vec<KeepOpen> {
        self.end().map(|t| t.fds).unwrap_or_default()
    }

    fn end(&mut self) -> Option<EncodeTable> {
        if !std::mem::replace(&mut self.active, false) {
            return None;
        }
        let previous = self.previous.take();
        // `try_with`: this may run during thread teardown.
        ENCODE
            .try_with(|t| {
                t.try_borrow_mut()
                    .ok()
                    .and_then(|mut t| std::mem::replace(&mut *t, previous))
            })
            .ok()
            .flatten()
    }
}

impl Drop for EncodeScope {
    fn drop(&mut self) {
        self.end();
    }
}

impl fmt::Debug for EncodeScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncodeScope")
    }
}

/// An active decode table; unclaimed fds are closed (through `closer`: never blocking this
/// thread) and the previous table restored when this is dropped, also while unwinding.
pub(crate) struct DecodeScope {
    previous: Option<DecodeTable>,
    active: bool,
}

impl DecodeScope {
    pub(crate) fn begin(fds: Vec<OwnedFd>, mapped_budget: u64) -> DecodeScope {
        let table = DecodeTable {
            fds: fds.into_iter().map(Some).collect(),
            mapped_budget,
            allow_sparse: false,
            error: None,
        };
        DecodeScope {
            previous: DECODE.with(|t| t.borrow_mut().replace(table)),
            active: true,
        }
    }

    /// Lets `Frozen` fields of this message have holes
    /// ([`Limits::allow_sparse_buffers`](crate::Limits::allow_sparse_buffers)).
    pub(crate) fn allow_sparse_buffers(self, allow: bool) -> DecodeScope {
        DECODE.with(|t| {
            if let Some(table) = t.borrow_mut().as_mut() {
                table.allow_sparse = allow;
            }
        });
        self
    }

    /// The typed error a field raised (if any), taken out of the table.
    pub(crate) fn take_error(&self) -> Option<Error> {
        DECODE.with(|t| t.borrow_mut().as_mut().and_then(|t| t.error.take()))
    }

    fn end(&mut self) {
        if !self.active {
            return;
        }
        self.active = false;
        let previous = self.previous.take();
        let table = DECODE
            .try_with(|t| {
                t.try_borrow_mut()
                    .ok()
                    .and_then(|mut t| std::mem::replace(&mut *t, previous))
            })
            .ok()
            .flatten();
        // Every fd nobody claimed is closed where a blocking `close` cannot stall us.
        if let Some(table) = table {
            crate::closer::close(table.fds.into_iter().flatten());
        }
    }
}

impl Drop for DecodeScope {
    fn drop(&mut self) {
        self.end();
    }
}

impl fmt::Debug for DecodeScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DecodeScope")
    }
}

/// Records the fd that `keep` keeps open in the active encode table (which then owns
/// `keep` until the packet is sent or dropped) and serializes its index.
pub(crate) fn serialize_fd<S: Serializer>(
    keep: impl FnOnce() -> Result<KeepOpen>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let index = ENCODE.with(|t| -> Result<u32> {
        let mut t = t.borrow_mut();
        let table = t.as_mut().ok_or(Error::FdOutsideChannel)?;
        let index = table.fds.len();
        if index >= crate::raw::MAX_FDS_PER_PACKET {
            let e = Error::TooManyFds {
                count: index + 1,
                max: crate::raw::MAX_FDS_PER_PACKET,
            };
            return Err(e);
        }
        table.fds.push(keep()?);
        Ok(index as u32)
    });
    match index {
        Ok(index) => serializer.serialize_u32(index),
        Err(e) => {
            let message = e.to_string();
            ENCODE.with(|t| {
                if let Some(table) = t.borrow_mut().as_mut() {
                    table.error.get_or_insert(e);
                }
            });
            Err(serde::ser::Error::custom(message))
        }
    }
}

/// Deserializes an fd index, takes that fd out of the active decode table and converts it
/// with `convert` (which gets the fd, its index and the remaining mapped-bytes budget).
pub(crate) fn deserialize_fd<'de, D, T>(
    deserializer: D,
    convert: impl FnOnce(OwnedFd, usize, &mut u64) -> Result<T>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let index = u32::deserialize(deserializer)?;
    let result = take(index).and_then(|(fd, mut budget)| {
        let value = convert(fd, index as usize, &mut budget);
        DECODE.with(|t| {
            if let Some(table) = t.borrow_mut().as_mut() {
                table.mapped_budget = budget;
            }
        });
        value
    });
    result.map_err(|e| {
        let message = e.to_string();
        DECODE.with(|t| {
            if let Some(table) = t.borrow_mut().as_mut() {
                table.error.get_or_insert(e);
            }
        });
        serde::de::Error::custom(message)
    })
}

/// Takes fd `index` out of the active decode table, with the remaining mapped budget.
fn take(index: u32) -> Result<(OwnedFd, u64)> {
    DECODE.with(|t| {
        let mut t = t.borrow_mut();
        let table = t.as_mut().ok_or(Error::FdOutsideChannel)?;
        let count = table.fds.len();
        let slot = table
            .fds
            .get_mut(index as usize)
            .ok_or(Error::FdIndexOutOfRange {
                index: index.into(),
                count,
            })?;
        let fd = slot.take().ok_or(Error::FdIndexReused {
            index: index.into(),
        })?;
        Ok((fd, table.mapped_budget))
    })
}

// ---------------------------------------------------------------------------------------
// What can be an fd field.

mod private {
    pub trait Sealed {}
}

/// A type that travels as an fd inside a message: [`Frozen`], [`LiveView`], [`MemFile`],
/// [`OwnedFd`], [`RawSocket`]. Use it through [`Fd<T>`] or `#[serde(with = "memfile::ipc::fd")]`.
///
/// Sealed: the checks a received fd must pass are part of each kind's contract.
pub trait FdKind: Sized + private::Sealed {
    /// What a received fd must be, for error messages.
    #[doc(hidden)]
    const EXPECTED: &'static str;

    /// Keeps the fd to send open until the packet carrying it is gone: a clone where the
    /// value is reference-counted, else a duplicate of the fd.
    #[doc(hidden)]
    fn keep_open(&self) -> Result<KeepOpen>;

    /// Checks and converts a received fd. `index` is its place in the packet, `budget` the
    /// bytes the message may still map (to be reduced by what this maps).
    #[doc(hidden)]
    fn from_received(fd: OwnedFd, index: usize, budget: &mut u64) -> Result<Self>;

    /// How an fd field of this kind announces itself to the message-type tracer: the
    /// tracer's marker prefix, then the kind's name in the shape text (`fd<frozen>`, ...:
    /// `docs/protocol.md`).
    #[doc(hidden)]
    const SHAPE: &'static str;

    /// A value of this kind, made only while the message type's fingerprint is traced
    /// (the traced value is dropped right away).
    #[doc(hidden)]
    fn placeholder() -> Result<Self>;

    /// Bytes of shared memory this value carries, counted against a bounded channel's
    /// byte window (`flow.rs`): a buffer's size, 0 for other fds.
    #[doc(hidden)]
    fn carried_bytes(&self) -> u64 {
        0
    }
}

/// Whether the message being decoded lets `Frozen` fields have holes.
fn sparse_allowed() -> bool {
    DECODE.with(|t| t.borrow().as_ref().is_some_and(|t| t.allow_sparse))
}

impl private::Sealed for Frozen {}
/// Received: verified with [`Frozen::from_fd_fully_allocated`] (seals ⊇ `Write | Shrink`, no
/// hole below the end, not hugetlb; mapped read-only) against the message's remaining
/// mapped-bytes budget; with [`Limits::allow_sparse_buffers`](crate::Limits::allow_sparse_buffers),
/// with [`Frozen::from_fd_with_max_len`] (holes allowed).
impl FdKind for Frozen {
    const EXPECTED: &'static str = "a sealed memfd (seals Write and Shrink)";
    const SHAPE: &'static str = "\0memfile_ipc::fd::frozen";

    fn placeholder() -> Result<Self> {
        Frozen::from_bytes("memfile-ipc type trace", &[0])
            .map_err(|e| Error::io("creating a placeholder memfd", None, e))
    }

    /// A clone (an `Arc`: no syscall).
    fn keep_open(&self) -> Result<KeepOpen> {
        Ok(KeepOpen(Kept::Frozen(self.clone())))
    }

    fn from_received(fd: OwnedFd, index: usize, budget: &mut u64) -> Result<Self> {
        let frozen = if sparse_allowed() {
            Frozen::from_fd_with_max_len(fd, *budget)
        } else {
            Frozen::from_fd_fully_allocated(fd, *budget)
        }
        .map_err(|e| Error::bad_buffer(index, e))?;
        *budget = budget.saturating_sub(frozen.len() as u64);
        Ok(frozen)
    }

    fn carried_bytes(&self) -> u64 {
        self.len() as u64
    }
}

impl private::Sealed for LiveView {}
/// Received: verified with [`LiveView::from_fd_fully_allocated`] (seals ⊇ `Shrink` and one of
/// `FutureWrite`, `Write`; no hole below the end; mapped read-only and shared) against the
/// message's remaining mapped-bytes budget; with
/// [`Limits::allow_sparse_buffers`](crate::Limits::allow_sparse_buffers), with
/// [`LiveView::from_fd_with_max_len`] (holes allowed). The bytes may still change (their
/// one writer is the sender's [`LiveWriter`](memfile_core::LiveWriter)): read by copy.
impl FdKind for LiveView {
    const EXPECTED: &'static str = "a memfd sealed against resizing and foreign writes (seals Shrink and FutureWrite or Write)";
    const SHAPE: &'static str = "\0memfile_ipc::fd::live";

    fn placeholder() -> Result<Self> {
        let writer = memfile_core::LiveWriter::new("memfile-ipc type trace", 1)
            .map_err(|e| Error::io("creating a placeholder memfd", None, e))?;
        let fd = writer
            .try_clone_fd()
            .map_err(|e| Error::io("duplicating a placeholder memfd", None, e))?;
        LiveView::from_fd(fd).map_err(|e| Error::bad_buffer(0, e))
    }

    /// A duplicate of the fd.
    fn keep_open(&self) -> Result<KeepOpen> {
        KeepOpen::dup(self.as_fd())
    }

    fn from_received(fd: OwnedFd, index: usize, budget: &mut u64) -> Result<Self> {
        let view = if sparse_allowed() {
            LiveView::from_fd_with_max_len(fd, *budget)
        } else {
            LiveView::from_fd_fully_allocated(fd, *budget)
        }
        .map_err(|e| Error::bad_buffer(index, e))?;
        *budget = budget.saturating_sub(view.len() as u64);
        Ok(view)
    }

    fn carried_bytes(&self) -> u64 {
        self.len() as u64
    }
}

impl private::Sealed for MemFile {}
/// Received: must be a memfd ([`MemFile::from_fd`]); it may be writable and unsealed.
impl FdKind for MemFile {
    const EXPECTED: &'static str = "a memfd";
    const SHAPE: &'static str = "\0memfile_ipc::fd::memfile";

    fn placeholder() -> Result<Self> {
        MemFile::create_default("memfile-ipc type trace")
            .map_err(|e| Error::io("creating a placeholder memfd", None, e))
    }

    /// A duplicate of the fd.
    fn keep_open(&self) -> Result<KeepOpen> {
        KeepOpen::dup(self.as_fd())
    }

    fn from_received(fd: OwnedFd, index: usize, _budget: &mut u64) -> Result<Self> {
        // `MemFile::from_fd` asks `F_GET_SEALS` first (it answers at once, and only for tmpfs
        // and hugetlbfs files), and describes a refused fd without a call that can wait on
        // its file system (a FUSE daemon that never answers `fstat`).
        MemFile::from_fd(fd).map_err(|e| {
            let (error, fd) = e.into_parts();
            crate::closer::close([fd]);
            Error::BadFdKind {
                index,
                expected: Self::EXPECTED,
                detail: error.to_string(),
            }
        })
    }

    fn carried_bytes(&self) -> u64 {
        self.metadata().map_or(0, |m| m.len())
    }
}

impl private::Sealed for OwnedFd {}
/// Received: any fd at all, unchecked.
impl FdKind for OwnedFd {
    const EXPECTED: &'static str = "any fd";
    const SHAPE: &'static str = "\0memfile_ipc::fd::fd";

    fn placeholder() -> Result<Self> {
        MemFile::placeholder().map(OwnedFd::from)
    }

    /// A duplicate of the fd.
    fn keep_open(&self) -> Result<KeepOpen> {
        KeepOpen::dup(self.as_fd())
    }

    fn from_received(fd: OwnedFd, _index: usize, _budget: &mut u64) -> Result<Self> {
        Ok(fd)
    }
}

impl private::Sealed for RawSocket {}
/// Received: must be an `AF_UNIX` `SOCK_SEQPACKET` socket ([`RawSocket::from_fd`]).
impl FdKind for RawSocket {
    const EXPECTED: &'static str = "an AF_UNIX SOCK_SEQPACKET socket";
    const SHAPE: &'static str = "\0memfile_ipc::fd::socket";

    fn placeholder() -> Result<Self> {
        RawSocket::pair().map(|(a, _b)| a)
    }

    /// A duplicate of the fd.
    fn keep_open(&self) -> Result<KeepOpen> {
        KeepOpen::dup(self.as_fd())
    }

    fn from_received(fd: OwnedFd, index: usize, _budget: &mut u64) -> Result<Self> {
        // Checked on the borrowed fd first, so a refused one is closed through `closer`
        // (a lingering TCP socket's `close` can block); `SO_TYPE` comes first and answers
        // at once for any fd.
        if let Err(e) = crate::raw::check_seqpacket(fd.as_fd()) {
            crate::closer::close([fd]);
            return Err(Error::BadFdKind {
                index,
                expected: Self::EXPECTED,
                detail: e.to_string(),
            });
        }
        RawSocket::from_fd(fd).map_err(|e| Error::BadFdKind {
            index,
            expected: Self::EXPECTED,
            detail: e.to_string(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// `#[serde(with = "memfile_ipc::fd")]`

/// Serializes an [`FdKind`] field as an fd of the message: `#[serde(with = "memfile::ipc::fd")]`.
///
/// # Errors
///
/// Fails (with [`Error::FdOutsideChannel`] reported to the sender) when not called by a
/// [`Sender`](crate::Sender), with [`Error::TooManyFds`] past 253 fds, or with
/// [`Error::Io`] when the fd of a [`MemFile`], [`OwnedFd`] or [`RawSocket`] cannot be
/// duplicated (`EMFILE`). The packet keeps each fd open (a [`Frozen`] clone or a
/// duplicate) until it is sent, so the value may be dropped right after this returns.
pub fn serialize<T: FdKind, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    crate::flow::carry(value.carried_bytes());
    serialize_fd(|| value.keep_open(), serializer)
}

/// Deserializes an [`FdKind`] field from the fds of the message being received:
/// `#[serde(with = "memfile::ipc::fd")]`.
///
/// # Errors
///
/// The receiver reports [`Error::FdIndexOutOfRange`], [`Error::FdIndexReused`],
/// [`Error::BadBuffer`] (a `Frozen` field whose fd is not sealed, not a memfd, or over the
/// mapped-bytes budget) or [`Error::BadFdKind`]; outside a [`Receiver`](crate::Receiver)
/// this always fails.
pub fn deserialize<'de, T: FdKind, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error> {
    if crate::fingerprint::tracing() {
        return crate::fingerprint::trace_fd(deserializer, T::SHAPE, T::placeholder);
    }
    deserialize_fd(deserializer, T::from_received)
}

// ---------------------------------------------------------------------------------------
// `Fd<T>`

/// A message field holding an fd of kind `T` ([`Frozen`], [`MemFile`], [`OwnedFd`],
/// [`RawSocket`]); derefs to `T`.
///
/// ```
/// use std::os::fd::OwnedFd;
/// use memfile::ipc::{channel, fd::Fd};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (tx, rx) = channel::<Vec<Fd<OwnedFd>>>()?;
/// let file: OwnedFd = std::fs::File::open("/dev/null")?.into();
/// tx.send(&vec![Fd::new(file)])?;
/// let fds: Vec<OwnedFd> = rx.recv()?.into_iter().map(Fd::into_inner).collect();
/// assert_eq!(fds.len(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fd<T>(T);

impl<T> Fd<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Fd<T> {
        Fd(value)
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Fd<T> {
    fn from(value: T) -> Fd<T> {
        Fd(value)
    }
}

impl<T> Deref for Fd<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Fd<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: FdKind> Serialize for Fd<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize(&self.0, serializer)
    }
}

impl<'de, T: FdKind> Deserialize<'de> for Fd<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Fd<T>, D::Error> {
        deserialize(deserializer).map(Fd)
    }
}
