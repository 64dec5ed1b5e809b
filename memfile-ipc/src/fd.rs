//! File descriptors as ordinary message fields.
//!
//! A message field that holds an fd is encoded as a `u32`: its index in the fd list of the
//! packet that carries the message (the `SCM_RIGHTS` control message). Two ways to write
//! such a field:
//!
//! - the wrapper [`Fd<T>`], which derefs to `T`:
//!   `struct Msg { frame: Fd<Frozen>, log: Option<Fd<OwnedFd>> }`;
//! - a bare field with `#[serde(with = "memfile_ipc::fd")]`:
//!   `struct Msg { #[serde(with = "memfile_ipc::fd")] frame: Frozen }`
//!   (through the facade crate: `#[serde(with = "memfile::ipc::fd")]`). For an optional or
//!   repeated fd use `Option<Fd<T>>`, `Vec<Fd<T>>`.
//!
//! `T` is any [`FdKind`]: [`Frozen`] (verified sealed and mapped before the message
//! exists), [`MemFile`], [`OwnedFd`] (anything at all) and [`RawSocket`]. [`Sender`] and
//! [`Receiver`] are serializable directly, without either of the above (reply channels).
//!
//! While a [`Sender`] encodes a message, a thread-local table collects the fds of these
//! fields; while a [`Receiver`] decodes one, a thread-local table holds the fds that arrived.
//! An index out of range or used twice is an error, and every fd nobody claimed is closed.
//! Outside a channel (e.g. `serde_json::to_string`) these fields fail to encode.
//!
//! ```
//! use memfile_core::Frozen;
//! use memfile_ipc::{channel, fd::Fd};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Frame {
//!     number: u64,
//!     #[serde(with = "memfile_ipc::fd")]
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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use memfile_core::{Frozen, MemFile};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::raw::RawSocket;
use crate::{Error, Result};

// ---------------------------------------------------------------------------------------
// The thread-local tables.

/// Fds collected while encoding one message, in index order.
struct EncodeTable {
    fds: Vec<RawFd>,
    error: Option<Error>,
}

/// Fds that arrived with the packet being decoded.
struct DecodeTable {
    fds: Vec<Option<OwnedFd>>,
    /// Bytes of `Frozen` buffers this message may still map.
    mapped_budget: u64,
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

    /// The collected fds, in index order. They are borrowed from the message being sent:
    /// the caller must keep that message borrowed until it no longer uses them.
    pub(crate) fn finish(mut self) -> Vec<RawFd> {
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

/// An active decode table; unclaimed fds are closed and the previous table restored when
/// this is dropped, also while unwinding.
pub(crate) struct DecodeScope {
    previous: Option<DecodeTable>,
    active: bool,
}

impl DecodeScope {
    pub(crate) fn begin(fds: Vec<OwnedFd>, mapped_budget: u64) -> DecodeScope {
        let table = DecodeTable {
            fds: fds.into_iter().map(Some).collect(),
            mapped_budget,
            error: None,
        };
        DecodeScope {
            previous: DECODE.with(|t| t.borrow_mut().replace(table)),
            active: true,
        }
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
        // Dropping the table closes every fd nobody claimed.
        let _table = DECODE.try_with(|t| {
            t.try_borrow_mut()
                .ok()
                .map(|mut t| std::mem::replace(&mut *t, previous))
        });
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

/// Records `fd` in the active encode table and serializes its index.
pub(crate) fn serialize_fd<S: Serializer>(
    fd: BorrowedFd<'_>,
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
        table.fds.push(fd.as_raw_fd());
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

/// A type that travels as an fd inside a message: [`Frozen`], [`MemFile`], [`OwnedFd`],
/// [`RawSocket`]. Use it through [`Fd<T>`] or `#[serde(with = "memfile_ipc::fd")]`.
///
/// Sealed: the checks a received fd must pass are part of each kind's contract.
pub trait FdKind: Sized + private::Sealed {
    /// What a received fd must be, for error messages.
    #[doc(hidden)]
    const EXPECTED: &'static str;

    /// The fd to send.
    #[doc(hidden)]
    fn borrow_fd(&self) -> BorrowedFd<'_>;

    /// Checks and converts a received fd. `index` is its place in the packet, `budget` the
    /// bytes the message may still map (to be reduced by what this maps).
    #[doc(hidden)]
    fn from_received(fd: OwnedFd, index: usize, budget: &mut u64) -> Result<Self>;

    /// Bytes of shared memory this value carries, counted against a bounded channel's
    /// byte window (`flow.rs`): a buffer's size, 0 for other fds.
    #[doc(hidden)]
    fn carried_bytes(&self) -> u64 {
        0
    }
}

impl private::Sealed for Frozen {}
/// Received: verified with [`Frozen::from_fd_with_max_len`] (seals ⊇ `Write | Shrink`,
/// mapped read-only) against the message's remaining mapped-bytes budget.
impl FdKind for Frozen {
    const EXPECTED: &'static str = "a sealed memfd (seals Write and Shrink)";

    fn borrow_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }

    fn from_received(fd: OwnedFd, index: usize, budget: &mut u64) -> Result<Self> {
        let frozen =
            Frozen::from_fd_with_max_len(fd, *budget).map_err(|e| Error::bad_buffer(index, e))?;
        *budget = budget.saturating_sub(frozen.len() as u64);
        Ok(frozen)
    }

    fn carried_bytes(&self) -> u64 {
        self.len() as u64
    }
}

impl private::Sealed for MemFile {}
/// Received: must be a memfd ([`MemFile::from_fd`]); it may be writable and unsealed.
impl FdKind for MemFile {
    const EXPECTED: &'static str = "a memfd";

    fn borrow_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }

    fn from_received(fd: OwnedFd, index: usize, _budget: &mut u64) -> Result<Self> {
        MemFile::from_fd(fd).map_err(|e| Error::BadFdKind {
            index,
            expected: Self::EXPECTED,
            detail: e.to_string(),
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

    fn borrow_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }

    fn from_received(fd: OwnedFd, _index: usize, _budget: &mut u64) -> Result<Self> {
        Ok(fd)
    }
}

impl private::Sealed for RawSocket {}
/// Received: must be an `AF_UNIX` `SOCK_SEQPACKET` socket ([`RawSocket::from_fd`]).
impl FdKind for RawSocket {
    const EXPECTED: &'static str = "an AF_UNIX SOCK_SEQPACKET socket";

    fn borrow_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }

    fn from_received(fd: OwnedFd, index: usize, _budget: &mut u64) -> Result<Self> {
        RawSocket::from_fd(fd).map_err(|e| Error::BadFdKind {
            index,
            expected: Self::EXPECTED,
            detail: e.to_string(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// `#[serde(with = "memfile_ipc::fd")]`

/// Serializes an [`FdKind`] field as an fd of the message: `#[serde(with = "memfile_ipc::fd")]`.
///
/// # Errors
///
/// Fails (with [`Error::FdOutsideChannel`] reported to the sender) when not called by a
/// [`Sender`](crate::Sender), or with [`Error::TooManyFds`] past 253 fds.
pub fn serialize<T: FdKind, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    crate::flow::carry(value.carried_bytes());
    serialize_fd(value.borrow_fd(), serializer)
}

/// Deserializes an [`FdKind`] field from the fds of the message being received:
/// `#[serde(with = "memfile_ipc::fd")]`.
///
/// # Errors
///
/// The receiver reports [`Error::FdIndexOutOfRange`], [`Error::FdIndexReused`],
/// [`Error::BadBuffer`] (a `Frozen` field whose fd is not sealed, not a memfd, or over the
/// mapped-bytes budget) or [`Error::BadFdKind`]; outside a [`Receiver`](crate::Receiver)
/// this always fails.
pub fn deserialize<'de, T: FdKind, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error> {
    deserialize_fd(deserializer, T::from_received)
}

// ---------------------------------------------------------------------------------------
// `Fd<T>`

/// A message field holding an fd of kind `T` ([`Frozen`], [`MemFile`], [`OwnedFd`],
/// [`RawSocket`]); derefs to `T`.
///
/// ```
/// use std::os::fd::OwnedFd;
/// use memfile_ipc::{channel, fd::Fd};
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
