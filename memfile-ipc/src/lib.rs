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
pub use cred::{CredentialCheck, CredentialPolicy, Credentials};
pub use listener::{Listener, connect_abstract_raw, connect_raw};
pub use process::{ChildProcess, FD_ENV, INODE_ENV, raw_from_parent, spawn_raw};

// --- owned by the typed-channel work: wire.rs, codec.rs, fd.rs, channel.rs, limits.rs ---
mod wire;
mod codec;
pub mod fd;
mod channel;
mod limits;
pub use channel::{
    IntoIter, Iter, Receiver, Sender, channel, connect, connect_abstract, from_parent, spawn,
};
pub use fd::Fd;
pub use limits::Limits;
