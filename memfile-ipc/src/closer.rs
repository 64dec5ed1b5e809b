//! Closing fds a peer chose, where a blocking `close` cannot stall the receiver.
//!
//! `close` can block: the last close of a TCP socket with `SO_LINGER {1, huge}` and unsent
//! data waits for the data to leave (up to the linger time), and every close of a FUSE file
//! waits for the FUSE daemon to answer its `FLUSH`. A hostile peer can attach such an fd to
//! any packet (as an extra fd nobody claims, as a field of the wrong kind, to a packet that
//! is refused), and the receiver must close it. So every fd a peer sent that the receiver
//! does not hand to the application is closed through [`close`]:
//!
//! - an fd that provably closes at once is closed right here: a tmpfs/hugetlbfs file
//!   (`F_GET_SEALS` answers: every memfd), a pipe or FIFO (`F_GETPIPE_SZ` answers). These
//!   two questions never block, whatever the fd is. Not an `AF_UNIX` socket: closing the
//!   last reference to one drops the fds in flight in its queue, and a lingering TCP socket
//!   among them blocks the closing thread;
//! - any other fd goes to a dedicated closer thread (`memfile-ipc-closer`), through a queue
//!   of [`QUEUE_BATCHES`] batches (one batch per packet, at most 253 fds).
//!
//! **When the queue is full** (the closer is stuck in a close that blocks, and more batches
//! came meanwhile), a batch gets a thread of its own, up to [`MAX_EXTRA_CLOSERS`] at once;
//! only beyond that, or if no thread can be started, is the batch closed on the calling
//! thread, as a last resort. Nothing waits for a lock while closing, so this cannot
//! deadlock. To stall a receiver that way a peer must first keep `1 + MAX_EXTRA_CLOSERS`
//! threads blocked and queue `QUEUE_BATCHES` further batches of such fds; each one holds an
//! open file of this process until its close completes, so the process's fd limit bounds
//! what the queue can hold in any case.
//!
//! **The fd count returns to its baseline** once the closes complete: as soon as the closer
//! runs for fds that close at once, when the linger time ends or the daemon answers for the
//! others.
//!
//! **Waiting for the closer.** A blocking or deadline receive ([`Receiver::recv`],
//! [`Receiver::recv_timeout`], `RawSocket::recv` with those modes) that handed fds to an
//! idle closer waits for it to finish them, at most [`SETTLE`] (and never past its
//! deadline), so that honest odd fds (`/dev/null`, a directory) are gone when the call
//! returns; if the closer was already busy, it does not wait at all. `try_recv` and the
//! async receiver never wait.
//!
//! [`Receiver::recv`]: crate::Receiver::recv
//! [`Receiver::recv_timeout`]: crate::Receiver::recv_timeout

use std::cell::Cell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, fcntl};

/// Batches the closer thread's queue holds.
pub(crate) const QUEUE_BATCHES: usize = 64;
/// Extra closer threads alive at once when the queue is full.
pub(crate) const MAX_EXTRA_CLOSERS: usize = 8;
/// The longest a blocking receive waits for an idle closer to finish what it handed over.
pub(crate) const SETTLE: Duration = Duration::from_millis(250);

struct Closer {
    queue: SyncSender<Vec<OwnedFd>>,
    /// Fds handed over and not closed yet; `settled` is notified when it drops to 0.
    pending: Mutex<usize>,
    settled: Condvar,
}

static CLOSER: OnceLock<Option<Closer>> = OnceLock::new();
static EXTRA_CLOSERS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread handed fds to an idle closer since it last settled.
    static HANDED_TO_IDLE: Cell<bool> = const { Cell::new(false) };
}

/// The closer thread, started on first use; `None` if it could not be started.
fn closer() -> Option<&'static Closer> {
    CLOSER
        .get_or_init(|| {
            let (queue, batches) = sync_channel::<Vec<OwnedFd>>(QUEUE_BATCHES);
            std::thread::Builder::new()
                .name("memfile-ipc-closer".into())
                .spawn(move || {
                    for batch in batches {
                        close_batch(batch);
                    }
                })
                .ok()?;
            Some(Closer {
                queue,
                pending: Mutex::new(0),
                settled: Condvar::new(),
            })
        })
        .as_ref()
}

/// Closes `batch` (this may block) and counts it done.
fn close_batch(batch: Vec<OwnedFd>) {
    let n = batch.len();
    drop(batch);
    if let Some(closer) = CLOSER.get().and_then(Option::as_ref) {
        let mut pending = closer.pending.lock().unwrap_or_else(|p| p.into_inner());
        *pending = pending.saturating_sub(n);
        if *pending == 0 {
            closer.settled.notify_all();
        }
    }
}

/// Whether closing `fd` cannot block (see the module docs). Each question answers at once
/// for any fd: an error (`EINVAL`, `EBADF`, `ENOTSOCK`) means "not that kind".
fn closes_at_once(fd: BorrowedFd<'_>) -> bool {
    // A memfd (only shmem and hugetlbfs answer `F_GET_SEALS`) or a pipe. Not an `AF_UNIX`
    // socket: releasing the last reference to one drops the fds queued in flight on it,
    // and the last close of one of those (a lingering TCP socket) runs on this thread
    // before `close` returns.
    fcntl(fd, FcntlArg::F_GET_SEALS).is_ok() || fcntl(fd, FcntlArg::F_GETPIPE_SZ).is_ok()
}

/// Closes fds that a peer chose, without blocking the caller on any of them (see the module
/// docs).
pub(crate) fn close(fds: impl IntoIterator<Item = OwnedFd>) {
    let deferred: Vec<OwnedFd> = fds
        .into_iter()
        .filter_map(|fd| {
            if closes_at_once(fd.as_fd()) {
                drop(fd);
                None
            } else {
                Some(fd)
            }
        })
        .collect();
    if deferred.is_empty() {
        return;
    }
    let Some(closer) = closer() else {
        // No thread can be started at all: the last resort.
        drop(deferred);
        return;
    };
    let n = deferred.len();
    {
        let mut pending = closer.pending.lock().unwrap_or_else(|p| p.into_inner());
        if *pending == 0 {
            // `try_with`: this may run while the thread's locals are being torn down.
            let _ = HANDED_TO_IDLE.try_with(|h| h.set(true));
        }
        *pending += n;
    }
    let batch = match closer.queue.try_send(deferred) {
        Ok(()) => return,
        Err(TrySendError::Full(batch) | TrySendError::Disconnected(batch)) => batch,
    };
    // The closer is stuck and its queue full: a thread of its own for this batch.
    if EXTRA_CLOSERS.fetch_add(1, Ordering::AcqRel) < MAX_EXTRA_CLOSERS {
        let spawned = std::thread::Builder::new()
            .name("memfile-ipc-closer-extra".into())
            .spawn(move || {
                close_batch(batch);
                EXTRA_CLOSERS.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_ok() {
            return;
        }
        // Not started: the closure, and the batch in it, was dropped here, on this thread
        // (the last resort).
        EXTRA_CLOSERS.fetch_sub(1, Ordering::AcqRel);
        settle_count(closer, n);
        return;
    }
    EXTRA_CLOSERS.fetch_sub(1, Ordering::AcqRel);
    // Last resort: every closer is busy and the queue is full.
    close_batch_counted(closer, batch);
}

/// Closes `batch` on this thread and counts it done.
fn close_batch_counted(closer: &Closer, batch: Vec<OwnedFd>) {
    let n = batch.len();
    drop(batch);
    settle_count(closer, n);
}

fn settle_count(closer: &Closer, n: usize) {
    let mut pending = closer.pending.lock().unwrap_or_else(|p| p.into_inner());
    *pending = pending.saturating_sub(n);
    if *pending == 0 {
        closer.settled.notify_all();
    }
}

/// If this thread handed fds to an idle closer since its last call, waits until the closer
/// has closed everything it holds, at most [`SETTLE`] and never past `deadline`.
pub(crate) fn settle(deadline: Option<Instant>) {
    if !HANDED_TO_IDLE
        .try_with(|h| h.replace(false))
        .unwrap_or(false)
    {
        return;
    }
    let Some(closer) = CLOSER.get().and_then(Option::as_ref) else {
        return;
    };
    let mut until = Instant::now() + SETTLE;
    if let Some(deadline) = deadline {
        until = until.min(deadline);
    }
    let mut pending = closer.pending.lock().unwrap_or_else(|p| p.into_inner());
    while *pending > 0 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        pending = match closer.settled.wait_timeout(pending, left) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}

/// Fds a peer sent, owned until they are handed on; whatever is left when this is dropped
/// (an early return, a refused packet) is closed through [`close`].
#[derive(Debug, Default)]
pub(crate) struct PeerFds(Vec<OwnedFd>);

impl PeerFds {
    pub(crate) fn new(fds: Vec<OwnedFd>) -> PeerFds {
        PeerFds(fds)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn pop(&mut self) -> Option<OwnedFd> {
        self.0.pop()
    }

    /// The fds, handed on: the caller now closes them (through [`close`]).
    pub(crate) fn into_inner(mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for PeerFds {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            close(std::mem::take(&mut self.0));
        }
    }
}
