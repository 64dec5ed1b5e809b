//! Streams of large frames through **reused** shared memory: a pool of slots that the
//! producer fills in place and consumers read, handed back and forth with small messages.
//!
//! # When to use which
//!
//! | | [`Frozen`](memfile_core::Frozen) per message | stream, copy-out ([`CopyOut`], the default) | stream, in place ([`InPlace`]) |
//! |---|---|---|---|
//! | reader gets | `&[u8]`, no copy | the bytes in its own memory (one copy) | `&[u8]` into the slot, no copy |
//! | can the producer change the bytes under the reader? | no: the kernel refuses (seals `Write` + `Shrink`) | it can write the slot, the copy is then torn; never a crash, never undefined behaviour | it must not: `unsafe` contract, the reader trusts the producer |
//! | holders of one buffer | any number, for ever, in any process | until the frame is released | until the frame is released |
//! | cost per frame | fresh pages (≈1 GB/s here at 4 KiB pages) | one memcpy out of warm pages | nothing but the reads |
//!
//! A sealed buffer is immutable for ever, so every `Frozen` needs new pages; a stream reuses
//! its pool, so after the first round every page is already allocated and warm. Choose:
//! - **sealed** (`Frozen` fields): the bytes must stay the same for any number of readers
//!   and for as long as they like, with no trust at all;
//! - **copy-out stream** ([`StreamReceiver::new`]): the fastest sound way to stream frames
//!   that each consumer reads once;
//! - **in-place stream** ([`StreamReceiver::new_in_place`], `unsafe`): no copy at all, for a
//!   consumer that trusts its producer not to write a slot it handed over (this crate's
//!   [`StreamProducer`] never does).
//!
//! # How it works
//!
//! The producer ([`StreamProducer`]) makes one memfd of `slots × stride` bytes, allocates
//! it in full, maps it writable and seals it `FutureWrite | Shrink | Grow | Seal`
//! ([`LiveWriter`](memfile_core::LiveWriter)): from then on its own mapping is the only one
//! that can ever write the file, and nobody can resize it. Each consumer gets the memfd
//! once, in the first message on its connection ([`ToConsumer::Pool`]), and checks the
//! seals before it maps anything ([`LiveView`]'s rules: a file that
//! could shrink would let the producer turn any read into `SIGBUS`; see `docs/safety.md`).
//!
//! For each frame the producer [loans](StreamProducer::loan) a free slot, fills it in
//! place and [publishes](SlotMut::publish) it: a [`ToConsumer::Frame`] message naming the
//! slot, a sequence number, the length and the caller's metadata `M` goes to every consumer.
//! A consumer [receives](StreamReceiver::recv) a [`Frame`], reads it, and drops it, which
//! sends [`ToProducer::Release`] back. A slot is free again when every consumer it went to
//! has released it, or has gone (a consumer's death releases everything it held). A slot is
//! never loaned while any consumer holds it.
//!
//! The messages travel over ordinary typed connections ([`channel`](crate::channel),
//! [`spawn`](crate::spawn), a [`Listener`](crate::Listener)) whose types are
//! [`ToConsumer<M>`] (producer to consumer) and [`ToProducer`] (back): with all their checks
//! (limits, type fingerprint, flow control). The protocol is in `docs/protocol.md`
//! ("Streams").
//!
//! ```
//! use memfile::ipc::{channel, stream::{StreamProducer, StreamReceiver}};
//!
//! # fn main() -> Result<(), memfile::ipc::Error> {
//! // Normally the two ends are in two processes (`spawn::<ToConsumer<u64>, ToProducer>`).
//! let (to_consumer, from_producer) = channel()?;
//! let (to_producer, from_consumer) = channel()?;
//! let mut producer = StreamProducer::<u64>::new(4, 1 << 20)?; // 4 slots of 1 MiB
//! producer.add_consumer(to_consumer, from_consumer)?;
//! let mut consumer = StreamReceiver::<u64>::new(to_producer, from_producer);
//!
//! let mut buf = Vec::new();
//! for n in 0..10u8 {
//!     let mut slot = producer.loan(1000)?; // waits while every slot is held
//!     slot.fill(n); // written in place: `slot` derefs to `&mut [u8]` of 1000 bytes
//!     slot.publish(u64::from(n))?;
//!
//!     let frame = consumer.recv()?;
//!     frame.copy_into(&mut buf); // one copy into memory the consumer owns
//!     assert_eq!(*frame.meta(), u64::from(n));
//!     drop(frame); // releases the slot
//!     assert!(buf.len() == 1000 && buf.iter().all(|&b| b == n));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Slow and dying consumers
//!
//! With several consumers, every frame goes to each of them. What a slow one costs is the
//! producer's [`FullPolicy`](crate::FullPolicy) ([`StreamProducer::with_policy`]):
//! `Block` (the default) delivers every frame to everyone, so the producer waits for the
//! slowest; `Skip` does not send a frame to a consumer that already holds its quota of
//! slots ([`StreamProducer::with_quota`], default half the pool), and `Disconnect` drops
//! such a consumer. A consumer whose connection closes (also by dying, even by `SIGKILL`)
//! releases its slots when the producer next looks (every loan does), and never holds the
//! others up.

mod consumer;
mod producer;
mod slots;

pub use consumer::{CopyOut, Frame, InPlace, ReadMode, StreamReceiver};
pub use producer::{SlotMut, StreamProducer};

use memfile_core::LiveView;
use serde::{Deserialize, Serialize};

use crate::Fd;

/// The most slots a pool may have. A consumer refuses a pool with more, so that a hostile
/// producer cannot make it allocate without bound for its per-slot bookkeeping (one word per
/// slot on each side).
pub const MAX_SLOTS: usize = 1024;

/// A message from a stream's producer to one consumer.
///
/// The first message on a connection is [`Pool`](ToConsumer::Pool), then only
/// [`Frame`](ToConsumer::Frame)s. Normally only [`StreamProducer`] makes these and
/// [`StreamReceiver`] reads them; the type is public so that connections can be named
/// (`spawn::<ToConsumer<M>, ToProducer>`) and peers in other languages can follow
/// `docs/protocol.md`.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToConsumer<M> {
    /// The pool: `slots` slots of at most `slot_len` bytes, slot `i` at offset `i × stride`
    /// of the memfd `pool` (which the consumer verifies: see [`LiveView`]).
    Pool {
        /// The pool's memfd, sealed at least `Shrink` and `FutureWrite` (or `Write`).
        pool: Fd<LiveView>,
        /// How many slots (1 to [`MAX_SLOTS`]).
        slots: u32,
        /// The largest frame (at least 1, at most `stride`).
        slot_len: u64,
        /// The distance between slots; `slots × stride` fits the file.
        stride: u64,
    },
    /// A frame of `len` bytes in slot `slot`; the consumer holds the slot until it sends
    /// [`ToProducer::Release`] with the same `slot` and `seq`.
    Frame {
        /// The slot (below the pool's `slots`).
        slot: u32,
        /// The frame's sequence number (unique per producer, increasing).
        seq: u64,
        /// Its length (at most the pool's `slot_len`).
        len: u64,
        /// The caller's metadata for the frame.
        meta: M,
    },
}

/// A message from a stream's consumer back to the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToProducer {
    /// The consumer is done with frame `seq` in slot `slot`: the slot may be reused once
    /// every other consumer it went to is done too.
    Release {
        /// The slot of the frame.
        slot: u32,
        /// The frame's sequence number.
        seq: u64,
    },
}

/// The distance between slots for frames of up to `slot_len` bytes: whole pages, and whole
/// 2 MiB huge pages from 2 MiB up (so that with shmem huge pages on, no huge page spans two
/// slots).
fn stride_for(slot_len: usize) -> Option<usize> {
    const HUGE: usize = 2 << 20;
    // SAFETY: sysconf reads a constant of the running system; no pointers involved.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let unit = if slot_len >= HUGE { HUGE } else { page };
    slot_len.checked_next_multiple_of(unit)
}
