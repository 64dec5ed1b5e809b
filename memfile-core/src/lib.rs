//! # memfile-core
//!
//! Linux memfds ([`MemFile`], `memfd_create(2)`), file seals ([`Seal`], [`Seals`]), and
//! [`Frozen`]: a memfd whose contents can never change again, verified with the kernel, that
//! any process can read as a plain `&[u8]` — no copy, no `unsafe`, no SIGBUS — even when the
//! file came from a process it does not trust.
//!
//! Its items are re-exported at the root of the `memfile` crate, the documented entry
//! point, and the examples use those paths: `memfile::Frozen` is `memfile_core::Frozen`.
//!
//! ```
//! use memfile::{Frozen, MemFile, Seal};
//! use std::io::Write;
//!
//! // The producer writes a memfd and freezes it: seals Write | Shrink | Grow | Seal.
//! let mut file = MemFile::create_sealable("frame")?;
//! file.write_all(b"pixels...")?;
//! let frozen: Frozen = file.freeze()?;
//! assert_eq!(&frozen[..], b"pixels...");
//!
//! // A consumer gets a descriptor (normally over a Unix socket) and checks it again:
//! // only a file sealed against writing and shrinking is accepted.
//! let received = Frozen::from_fd_with_max_len(frozen.try_clone_fd()?, 1 << 20)?;
//! assert_eq!(&received[..], b"pixels...");
//! assert!(received.seals().contains(Seal::Write | Seal::Shrink));
//!
//! // A file that could still change is refused, and the descriptor handed back.
//! let open = MemFile::create_sealable("still-open")?;
//! let err = Frozen::from_fd(open.into_fd()).unwrap_err();
//! assert!(err.to_string().contains("required: Shrink | Write"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Why reading shared memory as `&[u8]` is sound here
//!
//! Mapping a file is normally `unsafe` in Rust (memmap2 says why): another process may
//! change the bytes while a `&[u8]` points at them, which breaks the promise that they do
//! not change, or truncate the file, which turns reads of the mapping into SIGBUS. Seals
//! take both away. `F_SEAL_WRITE` makes the kernel refuse every change of the contents:
//! `write`, hole punching, and every new writable shared mapping, and it cannot even be
//! added while a writable shared mapping exists (`EBUSY`), so once it is there no writer is
//! left anywhere. `F_SEAL_SHRINK` makes it refuse every shrink. Seals belong to the file,
//! not to a descriptor, hold for every process, and can never be removed.
//!
//! So [`Frozen::from_fd`] maps a descriptor only after checking that it is a memfd and
//! that `F_GET_SEALS` includes `Write` and `Shrink` (other seals may be there too); it reads
//! the size after the seals, so the size can only have grown since. `FutureWrite` alone is
//! refused: it leaves mappings that were writable before it writable. The mapping is
//! `PROT_READ` + `MAP_PRIVATE`: the file's own pages, no copy, and unlike a read-only
//! `MAP_SHARED` mapping it works on every kernel (those before 6.7 refuse it with `EPERM`
//! on a write-sealed file).
//!
//! Producers fill a file and freeze it with [`MemFile::freeze`], [`Frozen::from_bytes`]
//! (`pwrite`, the fastest for data already in memory), [`Frozen::build`] or
//! [`WritableRegion`] (in place, through a mapping this crate unmaps before sealing and
//! marks `MADV_DONTFORK`, so freezing never fails with `EBUSY` because of it). For bytes
//! that keep changing, [`LiveWriter`] and [`LiveView`] share them with one writer and
//! readers that only copy out or load atomically, never through `&[u8]`.
//!
//! The full argument — which seals, which mapping flags, which kernel versions, what
//! `FutureWrite` does not protect, what a process holding the same descriptor can and
//! cannot do — is in `docs/safety.md` in the repository.
//!
//! ## Into the rest of the ecosystem
//!
//! A [`Frozen`] reads through `std::io` with [`Frozen::reader`] (a [`FrozenReader`]:
//! `Read`, `BufRead` whose buffer is the mapping itself, and `Seek`), writes out from the
//! mapping with [`Frozen::write_to`], and becomes a child process's stdin with
//! [`Frozen::to_stdio`] (a descriptor of its own, at offset 0). A [`MemFile`] converts into
//! a `Stdio` too; that descriptor is a `dup` and shares the file offset with every other
//! copy, so rewind the file before handing it over.
//!
//! ## Feature flags
//!
//! All off by default; the default build depends on `nix`, `libc` and `memmap2` only (no
//! serde, no bincode, no sockets: those are in `memfile-ipc`).
//!
//! - `bytes`: `impl TryFrom<Frozen> for bytes::Bytes`, without copying (`Bytes::from_owner`:
//!   the `Bytes` points into the mapping and keeps it alive), so a frozen buffer can flow
//!   into hyper, tonic or tokio codecs. `TryFrom`: a failed lazy `mmap` is an error, not a
//!   panic.
//!
//! ## Public dependency types
//!
//! None of `nix`, `memmap2` or `libc` appears in a public signature: descriptors are
//! `std::os::fd` types (`OwnedFd`, `BorrowedFd`, `AsFd`), files `std::fs::File`, errors
//! `std::io::Error` or this crate's [`FromFdError`]/[`FrozenError`], and mappings stay
//! inside [`Frozen`], [`WritableRegion`] and the live types. So upgrading those crates is
//! not a breaking change here. `libc`'s constants only give the *values* of plain `u32`s:
//! [`Seal::bits`] and [`Seals::bits`] are the `F_SEAL_*` bits, [`HugeTlb::flag_bits`] the
//! `MFD_HUGE_*` bits, as the kernel defines them.
//!
//! The one exception is opt-in: with the `bytes` feature, `bytes::Bytes` (1.x) appears in
//! `impl TryFrom<Frozen> for Bytes`.
//!
//! ## Platforms
//!
//! Linux (5.1+ for `FutureWrite`, 6.3+ for `Exec`) and Android; FreeBSD behind `cfg`
//! (no `FutureWrite`, no `Exec`, so no [`LiveWriter`]/[`LiveView`]; no `/proc/self/fd`, so
//! no [`Frozen::open_reader`]/[`Frozen::to_stdio`]; writable mappings are kept from forked
//! children with `minherit(INHERIT_NONE)` instead of `MADV_DONTFORK`). Other systems get a
//! compile error.

// docs.rs builds with `--cfg docsrs` (see Cargo.toml): show "Available on crate feature
// ..." badges on the items marked `doc(cfg(...))`.
#![cfg_attr(docsrs, feature(doc_cfg))]
// Every rustdoc example compiles without warnings (unused results, imports, variables).
#![doc(test(attr(deny(warnings))))]

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
compile_error!(
    "memfile-core supports Linux, Android and FreeBSD only: it needs memfd_create and file sealing"
);

mod seal;
mod sys;

// Memfds: creating, sealing, converting.
mod memfile;
mod options;

pub use memfile::{FromFdError, MAX_NAME_LEN, MemFile};
pub use options::{CreateOptions, HugeTlb};

// Buffers: frozen (verified immutable), filled in place, live (owner keeps writing).
mod frozen;
mod live;
mod map;
mod region;

pub use frozen::{Frozen, FrozenError, FrozenErrorKind};
#[cfg(any(target_os = "linux", target_os = "android"))]
pub use live::{LiveView, LiveWriter};
pub use region::WritableRegion;

// The producer-side buffer pool (built on the public API above).
mod pool;
pub use pool::{FramePool, FramePoolOptions, FramePoolStats};

// A frozen buffer through `std::io` and (feature `bytes`) as `bytes::Bytes`.
#[cfg(feature = "bytes")]
mod bytes;
mod reader;

pub use reader::FrozenReader;

pub use seal::{Seal, Seals, SealsIter, SealsIterator};
