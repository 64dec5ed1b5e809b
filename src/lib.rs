//! # memfile
//!
//! Sealed Linux memfds made safe, and typed channels that move them between processes.
//!
//! This crate is the documented entry point: it re-exports the `memfile-core` crate at its
//! root, so code written for the `memfile` 0.3 crate keeps working with `use memfile::...`,
//! and the `memfile-ipc` crate as [`memfile::ipc`](crate::ipc), with their complete
//! documentation. Every example in the three crates uses these paths. The member crates
//! can also be used alone (`memfile-core` pulls in no serde, codec or socket code); their
//! items are the same types under the names `memfile_core::X` and `memfile_ipc::X`.
//!
//! - [`MemFile`], [`CreateOptions`], [`Seal`], [`Seals`]: create memfds, add and read seals.
//! - [`Frozen`]: a memfd verified (by the kernel's seals) to never change again, readable
//!   as a plain `&[u8]` without `unsafe`; built in place with [`Frozen::build`] or
//!   [`WritableRegion`], from bytes with [`Frozen::from_bytes`], or from a received fd with
//!   [`Frozen::from_fd`].
//! - [`LiveWriter`] / [`LiveView`]: the owner keeps writing, readers copy out.
//! - [`ipc`]: typed channels over Unix `SOCK_SEQPACKET` sockets; `Frozen` buffers, other
//!   fds and reply channels travel inside serde messages.
//!
//! The seed crate's example, unchanged:
//!
//! ```
//! use memfile::{MemFile, CreateOptions, Seal};
//! use std::io::Write;
//! # fn main() -> std::io::Result<()> {
//! let mut file = MemFile::create("foo", CreateOptions::new().allow_sealing(true))?;
//! file.write_all(b"Hello world!")?;
//! file.add_seals(Seal::Write | Seal::Shrink | Seal::Grow)?;
//! // From now on, all writes or attempts to created shared, writable memory mappings will fail.
//! # Ok(())
//! # }
//! ```
//!
//! And the reason this project exists: a buffer another process can map as `&[u8]`,
//! soundly, because the receiver checked the seals before mapping it.
//!
//! ```
//! use memfile::Frozen;
//! use memfile::ipc::{self, Fd};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (tx, rx) = ipc::channel::<Fd<Frozen>>()?;
//! tx.send(&Fd::new(Frozen::from_bytes("greeting", b"hello")?))?;
//! let received = rx.recv()?; // verified: seals include Write and Shrink, then mapped
//! assert_eq!(&received[..], b"hello");
//! # Ok(())
//! # }
//! ```
//!
//! Why that is sound (mapping a file is `unsafe` elsewhere because the file may change
//! or shrink underneath): a [`Frozen`] exists only for a memfd whose seals include `Write`
//! and `Shrink`, which the kernel enforces for every process and descriptor and never
//! lifts; its page says more, `docs/safety.md` says all.
//!
//! # Platforms
//!
//! Linux (`FutureWrite` needs 5.1, the `Exec` seal 6.3; older kernels fall back). The
//! `memfile-core` crate alone also builds for Android and for FreeBSD (there without
//! `FutureWrite` and `Exec`, hence without [`LiveWriter`]/[`LiveView`]); `memfile::ipc` uses
//! Linux's `SO_PEERCRED`. Rust 1.85 or newer.
//!
//! # Feature flags
//!
//! - `bytes`: `Frozen` converts into `bytes::Bytes` without copying.
//! - `tokio`: async endpoints (`ipc::tokio::{AsyncSender, AsyncReceiver, AsyncListener}`),
//!   with the same limits and errors, a cancel-safe `recv` and a `Stream` receiver.
//! - `tracing`: events on connection accept and close and on every rejected message,
//!   with the reason.
//!
//! The design, the wire protocol and the soundness argument are in the repository's
//! `docs/` directory (`design.md`, `protocol.md`, `safety.md`, `performance.md`).

#![cfg_attr(docsrs, feature(doc_cfg))]
// Every rustdoc example compiles without warnings (unused results, imports, variables).
#![doc(test(attr(deny(warnings))))]

// Inlined: this crate's documentation is the complete one, with `memfile::` paths; the
// member crates' own pages show the same items and examples.
#[doc(inline)]
pub use memfile_core::*;

#[doc(inline)]
pub use memfile_ipc as ipc;

/// The README's code samples, compiled and run as doctests so they never rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
