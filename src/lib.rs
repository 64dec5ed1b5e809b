//! # memfile
//!
//! Sealed Linux memfds made safe, and typed channels that move them between
//! processes.
//!
//! This facade re-exports [`memfile_core`] at its root (so code written for the
//! `memfile` 0.3 crate keeps working with `use memfile::...`) and
//! [`memfile_ipc`] as [`memfile::ipc`](crate::ipc).
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

pub use memfile_core::*;

/// Typed IPC channels over Unix sockets that carry sealed buffers and fds.
pub use memfile_ipc as ipc;

/// The README's code samples, compiled and run as doctests so they never rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
