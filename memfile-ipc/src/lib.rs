//! # memfile-ipc
//!
//! Typed channels over Unix `SOCK_SEQPACKET` sockets that carry sealed memfds
//! ([`memfile_core::Frozen`]) and other fds inside serde messages.

mod error;
pub use error::{Error, Result};

// --- owned by the transport work: raw.rs, listener.rs, cred.rs, process.rs ---
pub mod raw;
mod cred;
mod listener;
mod process;

// --- owned by the typed-channel work: wire.rs, codec.rs, fd.rs, channel.rs, limits.rs ---
mod wire;
mod codec;
pub mod fd;
mod channel;
mod limits;
