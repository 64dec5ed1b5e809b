//! # memfile-ipc
//!
//! Typed channels over Unix `SOCK_SEQPACKET` sockets that carry sealed memfds
//! ([`Frozen`](memfile_core::Frozen)) and other fds inside serde messages.
//!
//! This crate is `memfile::ipc` in the `memfile` crate, the documented entry point, and
//! the examples use those paths: `memfile::ipc::channel` is `memfile_ipc::channel`.
//!
//! - [`channel`] makes a connected [`Sender`]/[`Receiver`] pair; [`spawn`] starts a child
//!   process connected to this one ([`from_parent`] in the child); [`Listener`] and
//!   [`connect`] connect unrelated processes by a path or abstract name
//!   ([`connect_with_policy`] also checks who the server is; [`retry_connect`] waits for a
//!   server that is still starting). A refused peer never ends an accept:
//!   [`Listener::incoming`] loops keep going. [`ReceiverSet`] serves many receivers and
//!   listeners on one thread.
//! - A message is any `serde` type. Its big parts go as fds, not bytes: a field of type
//!   [`Fd<Frozen>`](Fd) (or a bare `Frozen` with `#[serde(with = "memfile::ipc::fd")]`) travels
//!   as a sealed memfd that the receiver maps read-only, verified immutable before the
//!   message exists. `MemFile`, `OwnedFd`, and [`Sender`]/[`Receiver`] (reply channels)
//!   travel the same way.
//! - A message whose encoding does not fit into one packet is written to a sealed memfd and
//!   sent as an fd ("spilled"); there is no size ceiling but [`Limits`].
//! - Every packet carries a fingerprint of its message type's serde shape: a receiver of
//!   another type (different definitions, or `connect::<Tx, Rx>` / `accept::<Tx, Rx>` with
//!   the type parameters swapped) rejects it with [`Error::TypeMismatch`], naming both
//!   types, instead of decoding garbage ([`message_shape`], [`Sender::without_type_check`]).
//! - Channels are bounded: a [`Receiver`] grants its peer a [`Window`] of messages and
//!   bytes in flight (default 1024 and 256 MiB, counting the buffers messages carry), and
//!   the peer's [`Sender`] waits when it is used up (`try_send` reports [`Error::Full`]).
//!   [`Publisher`] sends one message to many subscribers, each over its own bounded
//!   channel, with a [`FullPolicy`] for slow ones.
//! - Nothing a peer sends makes this crate panic, hang, leak an fd or allocate without
//!   bound: every bad packet is one [`Error`] variant, naming the fd and what was wrong, and
//!   the channel stays usable.
//!
//! The wire format is specified byte by byte in `docs/protocol.md`.
//!
//! ## Feature flags
//!
//! All off by default; none changes the wire protocol, so peers may differ in features.
//!
//! - **`tokio`**: the module `memfile::ipc::tokio`, async endpoints (`AsyncSender`,
//!   `AsyncReceiver`, also a `futures_core::Stream`, and `AsyncListener`) on a tokio
//!   runtime, with cancel-safe `recv`, and conversions to and from the blocking endpoints.
//! - **`tracing`**: `tracing` events (target `memfile_ipc`): connections accepted (`info`,
//!   with the peer's pid/uid/gid) or refused by the credential policy (`warn`), peers
//!   closing the connection (`debug`), and every rejected message with the reason, i.e.
//!   the [`Error`]'s `Display` (`warn`, with the peer's credentials). Without the
//!   feature these calls compile to nothing.
//!
//! ## Public dependency types
//!
//! `serde` (1.x) traits in message bounds and in [`fd`]; `memfile-core` types (`Frozen`,
//! `MemFile`, `FrozenErrorKind`). With `tokio`: the `futures_core::Stream` (0.3) impl and
//! `std::task::Context` in `poll_recv`; tokio's runtime is required but none of its types
//! appears in a signature. No `nix`, `libc` or `bincode` type is public.
//!
//! ```
//! use memfile::Frozen;
//! use memfile::ipc::{channel, Fd, Sender};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Frame {
//!     number: u64,
//!     pixels: Fd<Frozen>,
//!     done: Sender<u64>,
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (tx, rx) = channel::<Frame>()?;
//! let (done_tx, done_rx) = channel::<u64>()?;
//!
//! // Producer: fill a buffer once, freeze it, send it (the bytes are not copied).
//! let pixels = Frozen::build("frame", 1 << 20, |buf| buf.fill(0x80))?;
//! tx.send(&Frame { number: 1, pixels: pixels.into(), done: done_tx })?;
//!
//! // Consumer (normally another process): a read-only view of the same memory.
//! let frame = rx.recv()?;
//! assert!(frame.pixels.iter().all(|&b| b == 0x80));
//! frame.done.send(&frame.number)?;
//! assert_eq!(done_rx.recv()?, 1);
//! # Ok(())
//! # }
//! ```

// docs.rs builds with `--cfg docsrs` (see Cargo.toml): badges on feature-gated items.
#![cfg_attr(docsrs, feature(doc_cfg))]
// Every rustdoc example compiles without warnings (unused results, imports, variables).
#![doc(test(attr(deny(warnings))))]

mod error;
pub use error::{Error, Operation, Result};
mod trace;

// Transport: packets with fds, listening and connecting, peer credentials, child processes.
mod cred;
mod listener;
mod process;
pub mod raw;
pub use cred::{CredentialCheck, CredentialPolicy, Credentials};
pub use listener::{
    Listener, connect_abstract_raw, connect_abstract_raw_with_policy, connect_raw,
    connect_raw_with_policy,
};
pub use process::{ChildProcess, FD_ENV, INODE_ENV, raw_from_parent, spawn_raw};

// Typed channels: packet header, codec, fds inside messages, endpoints, receive limits.
mod channel;
mod closer;
mod codec;
pub mod fd;
mod fingerprint;
mod limits;
mod wire;
pub use channel::{
    IntoIter, Iter, Receiver, Sender, channel, connect, connect_abstract, from_parent, spawn,
};
mod connect;
pub use connect::{connect_abstract_with_policy, connect_with_policy, retry_connect};
mod accept;
pub use accept::Incoming;
mod flow;
pub mod select;
pub use flow::{InFlight, Window};
mod publisher;
pub mod stream;
pub use fd::Fd;
pub use fingerprint::{message_fingerprint, message_shape};
pub use limits::Limits;
pub use publisher::{FullPolicy, Published, Publisher, SubscriberId};
pub use select::ReceiverSet;

// Async endpoints (feature `tokio`).
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use crate::tokio::{AsyncListener, AsyncReceiver, AsyncSender};
