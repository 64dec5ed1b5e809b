//! [`StreamProducer`]: the pool's owner. Loans free slots, publishes filled ones to every
//! consumer, and takes releases (and consumers' deaths) back.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use memfile_core::{LiveView, LiveWriter};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::slots::{Holds, Slots};
use super::{MAX_SLOTS, ToConsumer, ToProducer, stride_for};
use crate::flow::Wait;
use crate::select::{Event, Key, ReceiverSet};
use crate::{Error, Fd, FullPolicy, Operation, Published, Receiver, Result, Sender, SubscriberId};

/// One consumer as the producer sees it: its endpoints (`E`: what the blocking or the async
/// producer needs) and the slots it holds.
#[derive(Debug)]
pub(crate) struct Consumer<E> {
    pub(crate) id: SubscriberId,
    pub(crate) ends: E,
    pub(crate) holds: Holds,
    pub(crate) skipped: u64,
}

/// What the blocking and the async producer share: the pool, its slots, the consumers, the
/// policy.
pub(crate) struct Core<E> {
    writer: LiveWriter,
    pub(crate) slots: Slots,
    count: usize,
    slot_len: usize,
    stride: usize,
    pub(crate) consumers: Vec<Consumer<E>>,
    next_id: u64,
    pub(crate) policy: FullPolicy,
    pub(crate) quota: usize,
    pub(crate) bad_releases: u64,
}

/// What a publish should do with one consumer.
pub(crate) enum Target {
    /// Send it the frame.
    Send,
    /// Skip it (it holds its quota; `Skip`).
    Skip,
    /// Drop it (it holds its quota; `Disconnect`).
    Remove,
}

impl<E> Core<E> {
    pub(crate) fn new(slots: usize, slot_len: usize) -> Result<Core<E>> {
        let invalid = |what: String| Error::Io {
            op: "creating a stream pool",
            fd: None,
            source: io::Error::new(io::ErrorKind::InvalidInput, what),
        };
        if slots == 0 || slots > MAX_SLOTS {
            return Err(invalid(format!(
                "{slots} slots: a pool has 1 to {MAX_SLOTS}"
            )));
        }
        if slot_len == 0 {
            return Err(invalid(
                "slot length 0: a slot holds at least one byte".into(),
            ));
        }
        let stride = stride_for(slot_len)
            .filter(|s| u64::try_from(*s).is_ok())
            .ok_or_else(|| invalid(format!("slot length {slot_len} is too large")))?;
        let len = stride
            .checked_mul(slots)
            .filter(|&l| isize::try_from(l).is_ok())
            .ok_or_else(|| invalid(format!("{slots} slots of {slot_len} bytes overflow")))?;
        let mut writer = LiveWriter::new("memfile-stream", len)
            .map_err(|e| Error::io("creating a stream pool", None, e))?;
        allocate(&mut writer)
            .map_err(|e| Error::io("allocating a stream pool", Some(raw(&writer)), e))?;
        Ok(Core {
            writer,
            slots: Slots::new(slots),
            count: slots,
            slot_len,
            stride,
            consumers: Vec::new(),
            next_id: 0,
            policy: FullPolicy::Block,
            quota: (slots / 2).max(1),
            bad_releases: 0,
        })
    }

    /// The pool message for a new consumer (a fresh read-only view of the pool to send).
    pub(crate) fn pool_message<M>(&self) -> Result<ToConsumer<M>> {
        let fd = self.writer.try_clone_fd().map_err(|e| {
            Error::io(
                "duplicating the stream pool's fd",
                Some(raw(&self.writer)),
                e,
            )
        })?;
        let view = LiveView::from_fd(fd).map_err(|e| Error::bad_buffer(0, e))?;
        Ok(ToConsumer::Pool {
            pool: Fd::new(view),
            slots: self.count as u32,
            slot_len: self.slot_len as u64,
            stride: self.stride as u64,
        })
    }

    pub(crate) fn add(&mut self, ends: E) -> SubscriberId {
        let id = SubscriberId(self.next_id);
        self.next_id += 1;
        self.consumers.push(Consumer {
            id,
            ends,
            holds: Holds::new(self.count),
            skipped: 0,
        });
        id
    }

    /// Removes consumer `at`, releasing what it held.
    pub(crate) fn remove_at(&mut self, at: usize) -> Consumer<E> {
        let mut c = self.consumers.swap_remove(at);
        self.slots.release_all(&mut c.holds);
        c
    }

    pub(crate) fn position(&self, id: SubscriberId) -> Option<usize> {
        self.consumers.iter().position(|c| c.id == id)
    }

    /// Applies a consumer's release; a release of a frame it does not hold is counted and
    /// otherwise ignored.
    pub(crate) fn release(&mut self, at: usize, msg: ToProducer) {
        let ToProducer::Release { slot, seq } = msg;
        if !self.slots.release(&mut self.consumers[at].holds, slot, seq) {
            self.bad_releases += 1;
        }
    }

    pub(crate) fn check_len(&self, len: usize) -> Result<()> {
        if len > self.slot_len {
            return Err(Error::FrameTooLarge {
                len: len as u64,
                slot_len: self.slot_len as u64,
            });
        }
        Ok(())
    }

    pub(crate) fn target(&self, at: usize) -> Target {
        let held = self.consumers[at].holds.count();
        match self.policy {
            FullPolicy::Block => Target::Send,
            _ if held < self.quota => Target::Send,
            FullPolicy::Skip => Target::Skip,
            FullPolicy::Disconnect => Target::Remove,
        }
    }

    pub(crate) fn bytes_mut(&mut self, slot: u32, len: usize) -> &mut [u8] {
        let start = slot as usize * self.stride;
        &mut self.writer[start..start + len]
    }

    pub(crate) fn bytes(&self, slot: u32, len: usize) -> &[u8] {
        let start = slot as usize * self.stride;
        &self.writer[start..start + len]
    }

    pub(crate) fn slot_len(&self) -> usize {
        self.slot_len
    }

    pub(crate) fn slot_count(&self) -> usize {
        self.count
    }

    /// Ends the publish of the frame in `slot` with what sending it to each consumer came
    /// to: delivered ones hold the slot, skipped ones are counted, removed ones are dropped
    /// (their ends are returned, for the caller to unregister).
    pub(crate) fn finish_publish(
        &mut self,
        slot: u32,
        outcomes: Vec<(SubscriberId, Outcome)>,
    ) -> (Result<Published>, Vec<E>) {
        let mut report = Published::default();
        let mut removed = Vec::new();
        let mut first_error = None;
        for (id, outcome) in outcomes {
            let Some(at) = self.position(id) else {
                continue;
            };
            match outcome {
                Outcome::Delivered => {
                    let c = &mut self.consumers[at];
                    self.slots.delivered(slot, &mut c.holds);
                    report.delivered += 1;
                }
                Outcome::Skipped => {
                    self.consumers[at].skipped += 1;
                    report.skipped.push(id);
                }
                Outcome::Removed => {
                    removed.push(self.remove_at(at).ends);
                    report.removed.push(id);
                }
                Outcome::MessageError(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.slots.end_publish(slot);
        let result = match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        };
        (result, removed)
    }
}

/// What sending one frame to one consumer came to.
pub(crate) enum Outcome {
    Delivered,
    Skipped,
    Removed,
    /// An error of the message itself (the same for every consumer): nothing more is sent.
    MessageError(Error),
}

impl Outcome {
    /// Classifies a send's result under `policy`.
    pub(crate) fn of(result: Result<()>, policy: FullPolicy) -> Outcome {
        match result {
            Ok(()) => Outcome::Delivered,
            Err(Error::Full | Error::WouldBlock) if policy == FullPolicy::Skip => Outcome::Skipped,
            Err(e) if e.is_message_error() => Outcome::MessageError(e),
            // Full under Disconnect, gone, or failed.
            Err(_) => Outcome::Removed,
        }
    }

    pub(crate) fn is_message_error(&self) -> bool {
        matches!(self, Outcome::MessageError(_))
    }
}

fn raw(writer: &LiveWriter) -> i32 {
    std::os::fd::AsRawFd::as_raw_fd(writer)
}

/// Allocates every page of the pool now, through its writable mapping (so that under shmem
/// huge pages the pages are huge where the mapping asks for it), falling back to
/// `fallocate` on kernels without `MADV_POPULATE_WRITE` (before 5.14). The first round of
/// frames then costs what every later one does, and a consumer can check that the pool has
/// no holes (reading a hole would allocate memory on the consumer's account).
fn allocate(writer: &mut LiveWriter) -> io::Result<()> {
    let len = writer.len();
    let ptr = writer.as_mut_ptr();
    // SAFETY: `ptr..ptr + len` is the writer's own writable mapping (alive: borrowed
    // mutably); MADV_POPULATE_WRITE only faults its pages in, it changes no byte.
    let r = unsafe { libc::madvise(ptr.cast(), len, libc::MADV_POPULATE_WRITE) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINVAL) {
        return Err(e);
    }
    nix::fcntl::fallocate(
        writer.as_fd(),
        nix::fcntl::FallocateFlags::empty(),
        0,
        len as libc::off_t,
    )
    .map_err(io::Error::from)
}

/// The producer of a stream: owns the pool of slots, loans free ones to fill in place, and
/// sends filled ones to every consumer (see the [module docs](super)).
///
/// Each consumer is a connection added with [`add_consumer`](Self::add_consumer), which sends
/// it the pool at once. Then, per frame: [`loan`](Self::loan) a slot (waiting while every slot
/// is held; [`loan_timeout`](Self::loan_timeout) and [`try_loan`](Self::try_loan) bound the
/// wait), write it through the [`SlotMut`] (`&mut [u8]`), and
/// [`publish`](SlotMut::publish) it with its metadata `M`. [`send`](Self::send) does all three
/// for bytes that already sit in a buffer (one copy into the slot).
///
/// A slot is never loaned while any consumer holds it: the producer writes only slots that
/// every consumer has released (or that no consumer got), so consumers that copy out see
/// whole frames and consumers that read in place ([`InPlace`](super::InPlace)) may trust the
/// bytes not to change while they hold them.
///
/// Releases and consumers' deaths are seen whenever the producer looks: each loan first takes
/// every message that has arrived, then waits for more only if no slot is free.
pub struct StreamProducer<M> {
    core: Core<(Sender<ToConsumer<M>>, Key)>,
    set: ReceiverSet<ToProducer>,
}

impl<M> StreamProducer<M> {
    /// A pool of `slots` slots (1 to [`MAX_SLOTS`]) of frames of up to `slot_len` bytes,
    /// allocated in full now (`slots × slot_len` rounded up to whole pages, or to whole 2 MiB
    /// pages from 2 MiB up). No consumers yet.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (`InvalidInput`) for 0 or more than [`MAX_SLOTS`] slots, a `slot_len` of
    /// 0, or a size that overflows; [`Error::Io`] when the memfd cannot be created, mapped,
    /// sealed or allocated (`ENOMEM`, `EMFILE`, `ENOSPC`, a kernel before 5.1 without
    /// `FutureWrite`).
    pub fn new(slots: usize, slot_len: usize) -> Result<StreamProducer<M>> {
        Ok(StreamProducer {
            core: Core::new(slots, slot_len)?,
            set: ReceiverSet::new(),
        })
    }

    /// What to do with a consumer that already holds its [quota](Self::with_quota) of slots
    /// when a frame is published: [`FullPolicy::Block`] (the default) sends it every frame,
    /// so that the producer waits for the slowest consumer when the pool runs out;
    /// [`FullPolicy::Skip`] does not send it this frame (counted:
    /// [`skipped`](Self::skipped)); [`FullPolicy::Disconnect`] drops it.
    #[must_use]
    pub fn with_policy(mut self, policy: FullPolicy) -> StreamProducer<M> {
        self.core.policy = policy;
        self
    }

    /// How many slots one consumer may hold before the [policy](Self::with_policy) applies
    /// to it (`Skip`, `Disconnect`; `Block` ignores it). Default: half the slots, at least 1.
    /// Clamped to 1 ..= slots.
    #[must_use]
    pub fn with_quota(mut self, slots: usize) -> StreamProducer<M> {
        self.core.quota = slots.clamp(1, self.core.slot_count());
        self
    }

    /// The number of slots.
    pub fn slots(&self) -> usize {
        self.core.slot_count()
    }

    /// The largest frame.
    pub fn slot_len(&self) -> usize {
        self.core.slot_len()
    }

    /// Slots that nobody holds, as of the last look at the consumers' messages.
    pub fn free_slots(&self) -> usize {
        self.core.slots.free()
    }

    /// The consumers now.
    pub fn consumers(&self) -> Vec<SubscriberId> {
        self.core.consumers.iter().map(|c| c.id).collect()
    }

    /// How many frames consumer `id` was skipped for ([`FullPolicy::Skip`]); `None` if it is
    /// not a consumer (any more).
    pub fn skipped(&self, id: SubscriberId) -> Option<u64> {
        self.core
            .consumers
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.skipped)
    }

    /// Messages from consumers that were not a valid release: a release of a frame the
    /// consumer did not hold (stale, repeated or invented), or a packet its receiver refused
    /// (another type, garbage). They were ignored; the consumer stays.
    pub fn bad_releases(&self) -> u64 {
        self.core.bad_releases
    }

    /// Removes consumer `id` (closing the connection: its sender and receiver are dropped),
    /// releasing what it held; `false` if it was not a consumer.
    pub fn remove_consumer(&mut self, id: SubscriberId) -> bool {
        match self.core.position(id) {
            Some(at) => {
                let c = self.core.remove_at(at);
                self.set.remove(c.ends.1);
                true
            }
            None => false,
        }
    }
}

impl<M: Serialize + DeserializeOwned + 'static> StreamProducer<M> {
    /// Adds a consumer: `tx` and `rx` are the two directions of its connection. Sends it the
    /// pool now ([`ToConsumer::Pool`]); it gets every frame published from then on.
    ///
    /// # Errors
    ///
    /// As [`Sender::send`] for the pool message ([`Error::Disconnected`] if the consumer is
    /// already gone); [`Error::Io`] (`EMFILE`) when the pool's fd cannot be duplicated.
    pub fn add_consumer(
        &mut self,
        tx: Sender<ToConsumer<M>>,
        rx: Receiver<ToProducer>,
    ) -> Result<SubscriberId> {
        tx.send(&self.core.pool_message()?)?;
        let key = self.set.add(rx, |m| m);
        Ok(self.core.add((tx, key)))
    }

    /// Loans a free slot for a frame of `len` bytes (at most [`slot_len`](Self::slot_len)),
    /// waiting while every slot is held by some consumer.
    ///
    /// The slot's bytes are whatever an earlier frame left there (not zeroed): write all `len`
    /// of them. Dropping the [`SlotMut`] without publishing gives the slot back.
    ///
    /// # Errors
    ///
    /// [`Error::FrameTooLarge`] for `len` above the slot length; [`Error::Io`] when `poll`
    /// fails. A consumer that goes away or misbehaves is removed (its slots come back), not
    /// an error.
    pub fn loan(&mut self, len: usize) -> Result<SlotMut<'_, M>> {
        self.loan_until(len, Wait::Forever)
    }

    /// Like [`loan`](Self::loan), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] (operation [`Operation::Loan`]) when no slot came free in time;
    /// otherwise as [`loan`](Self::loan).
    pub fn loan_timeout(&mut self, len: usize, timeout: Duration) -> Result<SlotMut<'_, M>> {
        let wait = Instant::now()
            .checked_add(timeout)
            .map_or(Wait::Forever, Wait::Until);
        self.loan_until(len, wait)
    }

    /// Like [`loan`](Self::loan), without waiting.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] when every slot is held; otherwise as [`loan`](Self::loan).
    pub fn try_loan(&mut self, len: usize) -> Result<SlotMut<'_, M>> {
        self.loan_until(len, Wait::No)
    }

    /// Copies `bytes` into a loaned slot and publishes it with `meta`: [`loan`](Self::loan)
    /// plus [`publish`](SlotMut::publish).
    ///
    /// # Errors
    ///
    /// As [`loan`](Self::loan) and [`publish`](SlotMut::publish).
    pub fn send(&mut self, bytes: &[u8], meta: M) -> Result<Published> {
        let mut slot = self.loan(bytes.len())?;
        slot.copy_from_slice(bytes);
        slot.publish(meta)
    }

    /// Like [`send`](Self::send), waiting at most `timeout` for a free slot.
    ///
    /// # Errors
    ///
    /// As [`loan_timeout`](Self::loan_timeout) and [`publish`](SlotMut::publish).
    pub fn send_timeout(&mut self, bytes: &[u8], meta: M, timeout: Duration) -> Result<Published> {
        let mut slot = self.loan_timeout(bytes.len(), timeout)?;
        slot.copy_from_slice(bytes);
        slot.publish(meta)
    }

    /// Like [`send`](Self::send), without waiting for a free slot.
    ///
    /// # Errors
    ///
    /// As [`try_loan`](Self::try_loan) and [`publish`](SlotMut::publish).
    pub fn try_send(&mut self, bytes: &[u8], meta: M) -> Result<Published> {
        let mut slot = self.try_loan(bytes.len())?;
        slot.copy_from_slice(bytes);
        slot.publish(meta)
    }

    /// Takes every release (and every consumer's end) that has arrived, without waiting.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `poll` fails.
    pub fn poll_releases(&mut self) -> Result<()> {
        loop {
            match self.set.try_select() {
                Ok(event) => self.handle(event),
                Err(Error::WouldBlock | Error::Disconnected { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn handle(&mut self, event: Event<ToProducer>) {
        let at = |core: &Core<(Sender<ToConsumer<M>>, Key)>, key: Key| {
            core.consumers.iter().position(|c| c.ends.1 == key)
        };
        match event {
            Event::Message(key, msg) => {
                if let Some(i) = at(&self.core, key) {
                    self.core.release(i, msg);
                }
            }
            // A packet the receiver refused (garbage, a wrong type): not a release.
            Event::Error(_, _) => self.core.bad_releases += 1,
            Event::Closed(key, _) => {
                if let Some(i) = at(&self.core, key) {
                    self.core.remove_at(i);
                }
            }
        }
    }

    fn loan_until(&mut self, len: usize, wait: Wait) -> Result<SlotMut<'_, M>> {
        self.core.check_len(len)?;
        self.poll_releases()?;
        let slot = loop {
            if let Some(slot) = self.core.slots.take() {
                break slot;
            }
            let event = match wait {
                Wait::No => return Err(Error::Full),
                Wait::Forever => self.set.select(),
                Wait::Until(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.set.select_timeout(left).map_err(|e| match e {
                        Error::Timeout { .. } => Error::Timeout {
                            op: Operation::Loan,
                            fd: None,
                        },
                        e => e,
                    })
                }
            };
            match event {
                Ok(event) => self.handle(event),
                // No consumer left: every slot is free again (next round of the loop).
                Err(Error::Disconnected { .. }) if self.core.slots.free() > 0 => {}
                Err(e) => return Err(e),
            }
        };
        Ok(SlotMut {
            producer: self,
            slot,
            len,
            published: false,
        })
    }

    fn publish(&mut self, slot: u32, len: usize, meta: M) -> Result<Published> {
        let seq = self.core.slots.begin_publish(slot);
        let msg = ToConsumer::Frame {
            slot,
            seq,
            len: len as u64,
            meta,
        };
        let policy = self.core.policy;
        let mut outcomes = Vec::with_capacity(self.core.consumers.len());
        for at in 0..self.core.consumers.len() {
            let c = &self.core.consumers[at];
            let outcome = match self.core.target(at) {
                Target::Skip => Outcome::Skipped,
                Target::Remove => Outcome::Removed,
                // Under Block, a consumer has at most `slots` (≤ 1024, the default window)
                // frames in flight: the send waits only for its socket buffer.
                Target::Send if policy == FullPolicy::Block => {
                    Outcome::of(c.ends.0.send(&msg), policy)
                }
                Target::Send => Outcome::of(c.ends.0.try_send(&msg), policy),
            };
            let stop = outcome.is_message_error();
            outcomes.push((c.id, outcome));
            if stop {
                break;
            }
        }
        let (result, removed) = self.core.finish_publish(slot, outcomes);
        for (_, key) in removed {
            self.set.remove(key);
        }
        result
    }
}

impl<M> fmt::Debug for StreamProducer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamProducer")
            .field("slots", &self.core.slot_count())
            .field("slot_len", &self.core.slot_len())
            .field("free", &self.core.slots.free())
            .field("consumers", &self.core.consumers.len())
            .field("policy", &self.core.policy)
            .field("quota", &self.core.quota)
            .finish()
    }
}

/// A loaned slot: `len` bytes of the pool that only this value writes, until it is
/// [published](SlotMut::publish) (then consumers read it) or dropped (then it is free again).
///
/// Derefs to `&mut [u8]` of the frame's length. The bytes are not zeroed: they are whatever
/// the slot's previous frame left.
pub struct SlotMut<'a, M> {
    producer: &'a mut StreamProducer<M>,
    slot: u32,
    len: usize,
    published: bool,
}

impl<M> SlotMut<'_, M> {
    /// The slot's index in the pool.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The largest length this frame can have (the pool's slot length).
    pub fn capacity(&self) -> usize {
        self.producer.core.slot_len()
    }

    /// Changes the frame's length (for a frame whose size is known only after writing it).
    ///
    /// # Errors
    ///
    /// [`Error::FrameTooLarge`] above [`capacity`](Self::capacity).
    pub fn set_len(&mut self, len: usize) -> Result<()> {
        self.producer.core.check_len(len)?;
        self.len = len;
        Ok(())
    }
}

impl<M: Serialize + DeserializeOwned + 'static> SlotMut<'_, M> {
    /// Sends the frame, with `meta`, to every consumer (by the producer's
    /// [policy](StreamProducer::with_policy)); the slot is free again once each of them has
    /// released it.
    ///
    /// # Errors
    ///
    /// An error of the message itself ([`Error::MessageTooLarge`], [`Error::Codec`]: `meta`
    /// does not encode), reported by the first send; nothing more is sent then. A consumer
    /// whose connection fails is removed (listed in [`Published::removed`]), not an error.
    pub fn publish(mut self, meta: M) -> Result<Published> {
        self.published = true;
        let (slot, len) = (self.slot, self.len);
        self.producer.publish(slot, len, meta)
    }
}

impl<M> Deref for SlotMut<'_, M> {
    type Target = [u8];

    /// # Panics
    ///
    /// In a child forked after the producer was created (the pool's writable mapping is not
    /// inherited; see [`LiveWriter`]).
    fn deref(&self) -> &[u8] {
        self.producer.core.bytes(self.slot, self.len)
    }
}

impl<M> DerefMut for SlotMut<'_, M> {
    /// # Panics
    ///
    /// As [`Deref`].
    fn deref_mut(&mut self) -> &mut [u8] {
        self.producer.core.bytes_mut(self.slot, self.len)
    }
}

impl<M> Drop for SlotMut<'_, M> {
    fn drop(&mut self) {
        if !self.published {
            self.producer.core.slots.put_back(self.slot);
        }
    }
}

impl<M> fmt::Debug for SlotMut<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotMut")
            .field("slot", &self.slot)
            .field("len", &self.len)
            .finish()
    }
}
