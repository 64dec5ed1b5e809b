//! [`StreamReceiver`]: a stream's consumer. Verifies the pool once, then receives frames
//! that it holds until they are dropped ([`Frame`]), and sends the releases back.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use memfile_core::LiveView;
use serde::de::DeserializeOwned;

use super::{MAX_SLOTS, ToConsumer, ToProducer};
use crate::flow::Wait;
use crate::{Error, Receiver, Result, Sender};

mod private {
    pub trait Sealed {}
}

/// How a [`StreamReceiver`] reads its frames: [`CopyOut`] or [`InPlace`].
pub trait ReadMode: private::Sealed + Send + Sync + 'static {}

/// Frames are read by copy ([`Frame::copy_into`], [`Frame::read_at`]): sound whatever the
/// producer does. The default.
#[derive(Debug, Clone, Copy)]
pub struct CopyOut;
impl private::Sealed for CopyOut {}
impl ReadMode for CopyOut {}

/// Frames are also `&[u8]` into the slot ([`Frame`] derefs): only for a producer the
/// consumer trusts ([`StreamReceiver::new_in_place`]).
#[derive(Debug, Clone, Copy)]
pub struct InPlace;
impl private::Sealed for InPlace {}
impl ReadMode for InPlace {}

/// The pool as this consumer verified it.
#[derive(Debug)]
struct Pool {
    view: LiveView,
    slots: usize,
    slot_len: usize,
    stride: usize,
}

#[derive(Debug)]
struct State {
    /// The frame this consumer holds in each slot.
    held: Vec<Option<u64>>,
    /// Releases not sent yet (the producer's side was full), one per slot at most: a
    /// producer that follows the protocol cannot hand a slot over again before it has the
    /// release, so a second one for the same slot replaces the first.
    pending: Vec<Option<u64>>,
}

/// What the receiver and its frames share: the way back to the producer.
#[derive(Debug)]
struct Shared {
    tx: Sender<ToProducer>,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the release of `seq` in `slot`, or keeps it for later when the producer's side
    /// is full. Never waits: it runs in `Frame::drop`.
    fn release(&self, slot: usize, seq: u64) -> Result<()> {
        let mut state = self.lock();
        if state.held[slot] == Some(seq) {
            state.held[slot] = None;
        }
        self.flush(&mut state)?;
        match self.tx.try_send(&ToProducer::Release {
            slot: slot as u32,
            seq,
        }) {
            Err(Error::Full | Error::WouldBlock) => {
                state.pending[slot] = Some(seq);
                Ok(())
            }
            other => other,
        }
    }

    /// Sends what is pending, until the producer's side is full.
    fn flush(&self, state: &mut State) -> Result<()> {
        for slot in 0..state.pending.len() {
            let Some(seq) = state.pending[slot] else {
                continue;
            };
            match self.tx.try_send(&ToProducer::Release {
                slot: slot as u32,
                seq,
            }) {
                Ok(()) => state.pending[slot] = None,
                Err(Error::Full | Error::WouldBlock) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn has_pending(&self) -> bool {
        self.lock().pending.iter().any(Option::is_some)
    }
}

/// A stream's consumer (see the [module docs](super)): receives [`Frame`]s, each a slot of
/// the producer's pool that this consumer holds until it drops the frame.
///
/// Built from the two directions of a connection to the producer: frames come in on `rx`,
/// releases go back on `tx`. The first message must be the pool ([`ToConsumer::Pool`]); the
/// receiver verifies it before it maps anything: a memfd (the fd's [`Limits`](crate::Limits)
/// bound its size: `max_mapped_bytes`) sealed at least `Shrink` (nothing can make a read
/// fault) and `FutureWrite` or `Write` (nobody but the producer's existing mapping can
/// write), with no hole (unless the receiver's limits
/// [allow sparse buffers](crate::Limits::allow_sparse_buffers)), large enough for its slots.
///
/// In the default [`CopyOut`] mode, frames are read by copy: sound whatever the producer
/// does; if it broke the protocol and wrote a slot it had handed over, the copy would mix old
/// and new bytes, but never crash or read out of bounds. [`InPlace`] adds `&[u8]` access.
///
/// A frame that breaks the protocol (a slot out of range, a length above the slot length,
/// a slot handed over again while this consumer still holds it, a frame before the pool, a
/// second pool) is an [`Error::Protocol`] naming what was wrong; the receiver stays usable.
pub struct StreamReceiver<M, R: ReadMode = CopyOut> {
    rx: Receiver<ToConsumer<M>>,
    shared: Arc<Shared>,
    pool: Option<Arc<Pool>>,
    _mode: PhantomData<R>,
}

impl<M> StreamReceiver<M, CopyOut> {
    /// A consumer that reads frames by copy, over the connection `tx` (to the producer) and
    /// `rx` (from it). Receives nothing yet: the pool comes with the first receive.
    pub fn new(tx: Sender<ToProducer>, rx: Receiver<ToConsumer<M>>) -> StreamReceiver<M, CopyOut> {
        StreamReceiver::with_mode(tx, rx)
    }
}

impl<M> StreamReceiver<M, InPlace> {
    /// A consumer whose frames are also `&[u8]` views of their slots (no copy).
    ///
    /// # Safety
    ///
    /// The producer at the other end must never write a slot from the moment it hands it
    /// over in a [`ToConsumer::Frame`] until this consumer has released it (dropped the
    /// [`Frame`]). [`StreamProducer`](super::StreamProducer) of this crate keeps that promise
    /// (a slot is loaned only when every consumer has released it); a peer in another
    /// language must follow the protocol in `docs/protocol.md` ("Streams") to the letter.
    ///
    /// The kernel does not enforce this: the pool is sealed so that nobody *but* the
    /// producer can write it and nobody can shrink it (so a read can never fault), but the
    /// producer's own mapping stays writable. This is the trust that a `Frozen` does not
    /// need: a producer that breaks the promise changes bytes behind a live `&[u8]`, which
    /// is undefined behaviour in this process. For a producer you do not trust, use
    /// [`StreamReceiver::new`] (copy-out). See `docs/safety.md`, "Streams".
    pub unsafe fn new_in_place(
        tx: Sender<ToProducer>,
        rx: Receiver<ToConsumer<M>>,
    ) -> StreamReceiver<M, InPlace> {
        StreamReceiver::with_mode(tx, rx)
    }
}

impl<M, R: ReadMode> StreamReceiver<M, R> {
    fn with_mode(tx: Sender<ToProducer>, rx: Receiver<ToConsumer<M>>) -> StreamReceiver<M, R> {
        StreamReceiver {
            rx,
            shared: Arc::new(Shared {
                tx,
                state: Mutex::new(State {
                    held: Vec::new(),
                    pending: Vec::new(),
                }),
            }),
            pool: None,
            _mode: PhantomData,
        }
    }

    /// The pool's slot count and slot length, once the pool has arrived.
    pub fn pool(&self) -> Option<(usize, usize)> {
        self.pool.as_ref().map(|p| (p.slots, p.slot_len))
    }

    /// The frames this consumer holds now.
    pub fn held(&self) -> usize {
        self.shared
            .lock()
            .held
            .iter()
            .filter(|h| h.is_some())
            .count()
    }

    /// The receiving half (e.g. to change its limits or window before the first receive).
    pub fn receiver_mut(&mut self) -> &mut Receiver<ToConsumer<M>> {
        &mut self.rx
    }

    /// Checks a received message; `None` for the pool (taken), the frame otherwise.
    pub(crate) fn accept(&mut self, msg: ToConsumer<M>) -> Result<Option<Frame<M, R>>> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&self.rx));
        let protocol = |detail: String| Error::Protocol {
            detail,
            fd: Some(fd),
        };
        match msg {
            ToConsumer::Pool {
                pool,
                slots,
                slot_len,
                stride,
            } => {
                if self.pool.is_some() {
                    return Err(protocol("a second stream pool: a stream has one".into()));
                }
                let view = pool.into_inner();
                let slots = slots as usize;
                if slots == 0 || slots > MAX_SLOTS {
                    return Err(protocol(format!(
                        "stream pool of {slots} slots: 1 to {MAX_SLOTS} allowed"
                    )));
                }
                if slot_len == 0 || slot_len > stride {
                    return Err(protocol(format!(
                        "stream pool slot length {slot_len} with stride {stride}: needs 1 ≤ slot length ≤ stride"
                    )));
                }
                let needed = stride.checked_mul(slots as u64);
                if needed.is_none_or(|n| n > view.len() as u64) {
                    return Err(protocol(format!(
                        "stream pool of {slots} slots × stride {stride} does not fit its memfd ({} bytes)",
                        view.len()
                    )));
                }
                // Both fit the file's length (checked), hence usize.
                let pool = Pool {
                    view,
                    slots,
                    slot_len: slot_len as usize,
                    stride: stride as usize,
                };
                let mut state = self.shared.lock();
                state.held = vec![None; slots];
                state.pending = vec![None; slots];
                drop(state);
                self.pool = Some(Arc::new(pool));
                Ok(None)
            }
            ToConsumer::Frame {
                slot,
                seq,
                len,
                meta,
            } => {
                let Some(pool) = &self.pool else {
                    return Err(protocol(format!(
                        "stream frame (slot {slot}) before the pool"
                    )));
                };
                let s = slot as usize;
                if s >= pool.slots {
                    return Err(protocol(format!(
                        "stream frame in slot {slot}: the pool has {}",
                        pool.slots
                    )));
                }
                let mut state = self.shared.lock();
                if let Some(held) = state.held[s] {
                    return Err(protocol(format!(
                        "stream frame {seq} in slot {slot}, which this consumer still holds (frame {held})"
                    )));
                }
                if len > pool.slot_len as u64 {
                    drop(state);
                    // Hand the slot back: the frame is refused, not held.
                    self.shared.release(s, seq)?;
                    return Err(protocol(format!(
                        "stream frame {seq} of {len} bytes in slot {slot}: slots hold {}",
                        pool.slot_len
                    )));
                }
                state.held[s] = Some(seq);
                Ok(Some(Frame {
                    pool: Arc::clone(pool),
                    shared: Arc::clone(&self.shared),
                    slot: s,
                    seq,
                    len: len as usize,
                    meta: Some(meta),
                    released: false,
                    _mode: PhantomData,
                }))
            }
        }
    }

    /// Sends the releases that are still pending.
    pub(crate) fn flush(&self) -> Result<()> {
        let mut state = self.shared.lock();
        self.shared.flush(&mut state)
    }

    pub(crate) fn has_pending(&self) -> bool {
        self.shared.has_pending()
    }
}

impl<M: DeserializeOwned, R: ReadMode> StreamReceiver<M, R> {
    /// Waits for the next frame (the first call also takes the pool).
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv`] ([`Error::Disconnected`] once the producer is gone and every
    /// frame it sent was received); [`Error::BadBuffer`] for a pool memfd that fails the
    /// checks; [`Error::Protocol`] for a message that breaks the stream protocol. The
    /// receiver stays usable after an error for one message.
    pub fn recv(&mut self) -> Result<Frame<M, R>> {
        self.recv_until(Wait::Forever)
    }

    /// Like [`recv`](Self::recv), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when no frame came in time; otherwise as [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Frame<M, R>> {
        let wait = Instant::now()
            .checked_add(timeout)
            .map_or(Wait::Forever, Wait::Until);
        self.recv_until(wait)
    }

    /// Takes the next frame if one has arrived.
    ///
    /// # Errors
    ///
    /// [`Error::WouldBlock`] when none has; otherwise as [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<Frame<M, R>> {
        self.recv_until(Wait::No)
    }

    fn recv_until(&mut self, wait: Wait) -> Result<Frame<M, R>> {
        /// While releases are pending, wait in slices this long and retry sending them.
        const RETRY: Duration = Duration::from_millis(10);
        loop {
            self.flush()?;
            let msg = match wait {
                Wait::No => self.rx.try_recv(),
                Wait::Forever if !self.has_pending() => self.rx.recv(),
                Wait::Forever => match self.rx.recv_timeout(RETRY) {
                    Err(Error::Timeout { .. }) => continue,
                    other => other,
                },
                Wait::Until(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let slice = if self.has_pending() {
                        left.min(RETRY)
                    } else {
                        left
                    };
                    match self.rx.recv_timeout(slice) {
                        Err(Error::Timeout { .. }) if Instant::now() < deadline => continue,
                        other => other,
                    }
                }
            }?;
            if let Some(frame) = self.accept(msg)? {
                return Ok(frame);
            }
        }
    }
}

impl<M, R: ReadMode> fmt::Debug for StreamReceiver<M, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReceiver")
            .field("mode", &std::any::type_name::<R>())
            .field("pool", &self.pool())
            .field("held", &self.held())
            .finish()
    }
}

/// One received frame: slot `slot` of the pool, `len` bytes, with the producer's metadata.
/// The consumer holds the slot until the frame is dropped (or
/// [released](Frame::release)), and the producer does not reuse it meanwhile.
///
/// Read it by copy: [`copy_into`](Frame::copy_into) (into a buffer you reuse: the fast way),
/// [`to_vec`](Frame::to_vec), [`read_at`](Frame::read_at). In [`InPlace`] mode it also derefs
/// to `&[u8]`.
pub struct Frame<M, R: ReadMode = CopyOut> {
    pool: Arc<Pool>,
    shared: Arc<Shared>,
    slot: usize,
    seq: u64,
    len: usize,
    /// `None` only after `into_meta`.
    meta: Option<M>,
    /// Released by `release` (not to be released again on drop).
    released: bool,
    _mode: PhantomData<R>,
}

impl<M, R: ReadMode> Frame<M, R> {
    /// The frame's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot it is in.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Its sequence number (unique per producer, increasing).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The producer's metadata.
    pub fn meta(&self) -> &M {
        self.meta
            .as_ref()
            .expect("meta is taken only by into_meta, which consumes the frame")
    }

    /// Releases the frame and returns its metadata.
    pub fn into_meta(mut self) -> M {
        self.meta.take().expect("meta is taken only here")
    }

    fn offset(&self) -> usize {
        self.slot * self.pool.stride
    }

    /// Copies the bytes from `offset` into `buf`, as many as fit and exist (0 at or past the
    /// end), like [`LiveView::read_at`]: volatile loads, so a producer writing meanwhile
    /// (breaking the protocol) can tear the copy, nothing more.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
        if offset >= self.len {
            return 0;
        }
        let n = buf.len().min(self.len - offset);
        self.pool
            .view
            .read_at(self.offset() + offset, &mut buf[..n])
    }

    /// Replaces `buf`'s contents with the frame's bytes (one copy; `buf`'s capacity is
    /// reused, so a consumer that keeps one buffer allocates nothing after the first frame).
    pub fn copy_into(&self, buf: &mut Vec<u8>) {
        // Only bytes past the old length are zeroed (once per size, not per frame): the copy
        // overwrites the rest.
        buf.truncate(self.len);
        buf.resize(self.len, 0);
        self.read_at(0, buf);
    }

    /// The frame's bytes in a new `Vec` (see [`copy_into`](Self::copy_into) to reuse one).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.copy_into(&mut v);
        v
    }

    /// Releases the slot now, reporting a failure that dropping would ignore.
    ///
    /// # Errors
    ///
    /// As [`Sender::try_send`] on the way back to the producer, except a full one (the
    /// release is then sent by the receiver's next call): [`Error::Disconnected`] when the
    /// producer is gone.
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.shared.release(self.slot, self.seq)
    }
}

impl<M, R: ReadMode> Drop for Frame<M, R> {
    fn drop(&mut self) {
        if !self.released {
            // A producer that is gone needs no release; a full one gets it later.
            let _ = self.shared.release(self.slot, self.seq);
        }
    }
}

impl<M> std::ops::Deref for Frame<M, InPlace> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let start = self.offset();
        // SAFETY: the receiver was made with `new_in_place`, whose caller promised that the
        // producer does not write a slot it handed over until this consumer releases it;
        // this frame holds the slot (it is released in `drop`), and the slice borrows the
        // frame. The range was checked against the pool when the frame arrived (slot below
        // `slots`, `len` ≤ `slot_len` ≤ `stride`, `slots × stride` ≤ the file's length).
        let bytes = unsafe { self.pool.view.trusted_slice(start..start + self.len) };
        bytes.unwrap_or(&[])
    }
}

impl<M: fmt::Debug, R: ReadMode> fmt::Debug for Frame<M, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("slot", &self.slot)
            .field("seq", &self.seq)
            .field("len", &self.len)
            .field("meta", &self.meta)
            .finish()
    }
}
