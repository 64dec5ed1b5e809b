//! Waiting on many receivers and listeners at once, on one thread: [`ReceiverSet`].
//!
//! The set owns its sources ([`Receiver`]s of any message types, and [`Listener`]s) and
//! turns what each one delivers into the caller's own type `M` with a function given when
//! the source is added (typically an enum variant: `set.add(rx, Msg::Request)`), so that one
//! `match` handles every kind of source. It waits with `poll(2)` and then takes at most one
//! message (or connection) per ready source with the non-blocking `try_recv` /
//! `try_accept`, so a peer can neither block the set (nothing waits on a peer's data but
//! the `poll`) nor starve the other sources (each round serves every ready source once,
//! starting from a different source each round).
//!
//! Why `poll(2)` rather than epoll: the set is rebuilt on every wait from what it owns,
//! so adding and removing are plain vector operations, a source can never be left
//! registered after it is dropped, and two receivers sharing one socket need no special
//! case. The cost is one `pollfd` per source per round (a round serves every ready source),
//! which is small next to a message's own cost for sets of up to a few thousand sources.
//! (nix's `poll` is used; nothing here is hand-written below it.)

use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::de::DeserializeOwned;

use crate::{Credentials, Error, Listener, Operation, Receiver, Result, Sender};

/// Names one source in a [`ReceiverSet`]; returned by [`add`](ReceiverSet::add) and
/// [`add_listener`](ReceiverSet::add_listener). Keys are never reused within a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(u64);

/// What [`ReceiverSet::select`] found.
#[derive(Debug)]
pub enum Event<M> {
    /// A receiver delivered a message, or a listener accepted a connection; mapped to `M`
    /// by the function given to [`add`](ReceiverSet::add) or
    /// [`add_listener`](ReceiverSet::add_listener). The source stays in the set.
    Message(Key, M),
    /// A receive failed for one message (the packet was rejected: [`Error::Protocol`],
    /// [`Error::Codec`], a limit, ...; see [`Receiver::recv`]), or a listener's accept
    /// failed ([`Error::Io`], e.g. `EMFILE`; or [`Error::PeerRejected`] when the listener
    /// [reports refusals](Listener::report_refusals)). The source stays in the set and
    /// will deliver its next message or connection. (A listener out of fds, `EMFILE`,
    /// stays ready and reports this on every wait until an fd is freed: drop a client, or
    /// [`remove`](ReceiverSet::remove) the listener for a while.)
    Error(Key, Error),
    /// The source is gone and has been **removed** from the set; this is reported once
    /// per source. The error says why: [`Error::Disconnected`] when the receiver's peer
    /// closed its end (after every message it had sent was delivered), or the
    /// [`Error::Io`] with which the receiver's socket failed (it would fail for ever).
    /// Listeners are never closed by the set.
    Closed(Key, Error),
}

/// A source of events: one receiver or listener with its mapping into `M`.
trait Source<M>: Send {
    /// The fd whose readability announces the next event.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Takes the next message or connection without waiting ([`Error::WouldBlock`]: none).
    fn step(&mut self) -> Result<M>;
    /// The source ends when this error comes (a receiver's), or never (a listener's).
    fn ends_on(&self, error: &Error) -> bool;
    /// The listener, for a listener source.
    fn listener(&mut self) -> Option<&mut Listener> {
        None
    }
    /// The type of what [`into_any`](Self::into_any) returns.
    fn inner_type(&self) -> TypeId;
    /// The receiver or listener, to be downcast.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

struct ReceiverSource<T, F> {
    receiver: Receiver<T>,
    map: F,
}

impl<T, M, F> Source<M> for ReceiverSource<T, F>
where
    T: DeserializeOwned + 'static,
    F: FnMut(T) -> M + Send,
{
    fn fd(&self) -> BorrowedFd<'_> {
        self.receiver.as_fd()
    }

    fn step(&mut self) -> Result<M> {
        self.receiver.try_recv().map(&mut self.map)
    }

    fn ends_on(&self, error: &Error) -> bool {
        // As `Receiver::iter`: the end of the connection, or a socket that itself failed.
        matches!(error, Error::Disconnected { .. } | Error::Io { .. })
    }

    fn inner_type(&self) -> TypeId {
        TypeId::of::<Receiver<T>>()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        Box::new(self.receiver)
    }
}

struct ListenerSource<Tx, Rx, F> {
    listener: Listener,
    map: F,
    _types: std::marker::PhantomData<fn() -> (Tx, Rx)>,
}

impl<Tx, Rx, M, F> Source<M> for ListenerSource<Tx, Rx, F>
where
    Tx: 'static,
    Rx: 'static,
    F: FnMut(Sender<Tx>, Receiver<Rx>, Credentials) -> M + Send,
{
    fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    fn step(&mut self) -> Result<M> {
        let (tx, rx, peer) = self.listener.try_accept_with_credentials()?;
        Ok((self.map)(tx, rx, peer))
    }

    fn ends_on(&self, _: &Error) -> bool {
        false
    }

    fn listener(&mut self) -> Option<&mut Listener> {
        Some(&mut self.listener)
    }

    fn inner_type(&self) -> TypeId {
        TypeId::of::<Listener>()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        Box::new(self.listener)
    }
}

struct Entry<M> {
    key: Key,
    source: Box<dyn Source<M>>,
}

/// A set of receivers (of any message types) and listeners that one thread waits on
/// together: the blocking way to serve many clients without a thread per client.
///
/// - **Sources**: [`add`](Self::add) takes a [`Receiver<T>`] and a function from `T` to
///   the set's event type `M`; [`add_listener`](Self::add_listener) takes a [`Listener`]
///   and a function from a new connection (typed endpoints and the peer's credentials) to
///   `M`. Each returns a [`Key`] that names the source in [`Event`]s. The set owns what it
///   is given: a receiver whose socket is shared with a [`Sender`] (the two halves of a
///   duplex connection) works as usual, the sender stays with the caller and can reply.
/// - **Waiting**: [`select`](Self::select), [`select_timeout`](Self::select_timeout) and
///   [`try_select`](Self::try_select) return one [`Event`] at a time. Readiness comes from
///   `poll(2)`; then the source's non-blocking `try_recv` / `try_accept` takes one message
///   or connection, so nothing a peer does can make the set wait on that peer.
/// - **Fairness**: each `poll` round serves every ready source once before polling again,
///   starting from a different source each round: a busy receiver cannot starve the
///   others.
/// - **Adding and removing** take `&mut self`, so they happen between two waits, for
///   example while handling the event that accepted a connection. To feed the set from
///   other threads, add a channel's receiver to it and send it [`Receiver`]s (they travel
///   over channels as fds) or anything else.
/// - **Ends**: a receiver whose peer disconnected (after its last message), or whose
///   socket failed, is reported once as [`Event::Closed`] and dropped from the set. A
///   rejected message is [`Event::Error`] and the receiver stays. A listener stays until
///   [`remove`](Self::remove)d; refused peers never show up (unless it
///   [reports refusals](Listener::report_refusals)).
///
/// # Examples
///
/// One thread serving every client of a listener:
///
/// ```
/// use memfile::ipc::select::{Event, ReceiverSet};
/// use memfile::ipc::{connect_abstract, Credentials, Listener, Receiver, Sender};
/// use std::collections::HashMap;
///
/// enum In {
///     Client(Sender<usize>, Receiver<String>, Credentials),
///     Request(String),
/// }
///
/// let name = format!("memfile-doc-set-{}", std::process::id());
/// let mut set = ReceiverSet::new();
/// set.add_listener(Listener::bind_abstract(&name)?, In::Client);
///
/// let server = std::thread::spawn(move || -> memfile::ipc::Result<usize> {
///     let mut clients = HashMap::new();
///     let mut served = 0;
///     while served < 3 {
///         match set.select()? {
///             Event::Message(_, In::Client(tx, rx, _peer)) => {
///                 clients.insert(set.add(rx, In::Request), tx);
///             }
///             Event::Message(key, In::Request(text)) => {
///                 // `try_send`: a client that does not read its replies cannot block
///                 // the server; it is dropped instead.
///                 if clients[&key].try_send(&text.len()).is_err() {
///                     clients.remove(&key);
///                     set.remove(key);
///                 }
///                 served += 1;
///             }
///             Event::Error(key, error) => eprintln!("{key:?}: {error}"),
///             Event::Closed(key, _) => {
///                 clients.remove(&key);
///             }
///         }
///     }
///     Ok(served)
/// });
///
/// let clients: Vec<_> = (0..3)
///     .map(|_| connect_abstract::<String, usize>(&name))
///     .collect::<Result<_, _>>()?;
/// for (i, (tx, _)) in clients.iter().enumerate() {
///     tx.send(&"x".repeat(i))?;
/// }
/// for (i, (_, rx)) in clients.iter().enumerate() {
///     assert_eq!(rx.recv()?, i);
/// }
/// assert_eq!(server.join().unwrap()?, 3);
/// # Ok::<(), memfile::ipc::Error>(())
/// ```
pub struct ReceiverSet<M> {
    /// The sources, in no particular order (`remove` swaps the last one in).
    entries: Vec<Entry<M>>,
    /// Where each key sits in `entries`.
    index: HashMap<Key, usize>,
    next_key: u64,
    /// Sources found ready by the last `poll` and not served yet this round.
    ready: VecDeque<Key>,
    /// Where the next round starts scanning `entries`.
    start: usize,
}

impl<M> ReceiverSet<M> {
    /// An empty set.
    pub fn new() -> ReceiverSet<M> {
        ReceiverSet {
            entries: Vec::new(),
            index: HashMap::new(),
            next_key: 0,
            ready: VecDeque::new(),
            start: 0,
        }
    }

    fn insert(&mut self, source: Box<dyn Source<M>>) -> Key {
        let key = Key(self.next_key);
        self.next_key += 1;
        self.index.insert(key, self.entries.len());
        self.entries.push(Entry { key, source });
        key
    }

    /// Adds a receiver; each message `t` it delivers is reported as
    /// [`Event::Message`]`(key, map(t))`.
    ///
    /// The receiver keeps its [`Limits`](crate::Limits). A receiver that has already seen
    /// its peer disconnect is reported as [`Event::Closed`] by the next wait.
    pub fn add<T, F>(&mut self, receiver: Receiver<T>, map: F) -> Key
    where
        T: DeserializeOwned + 'static,
        F: FnMut(T) -> M + Send + 'static,
    {
        self.insert(Box::new(ReceiverSource { receiver, map }))
    }

    /// Adds a listener; each connection it admits is reported as
    /// [`Event::Message`]`(key, map(sender, receiver, peer_credentials))` (typically, the
    /// caller then [`add`](Self::add)s the receiver and keeps the sender to reply).
    ///
    /// The listener's credential policy applies as in
    /// [`Listener::try_accept_with_credentials`]: refused peers are closed, traced and
    /// counted, and do not show up, unless the listener
    /// [reports refusals](Listener::report_refusals) (then each is an [`Event::Error`]).
    pub fn add_listener<Tx, Rx, F>(&mut self, listener: Listener, map: F) -> Key
    where
        Tx: 'static,
        Rx: 'static,
        F: FnMut(Sender<Tx>, Receiver<Rx>, Credentials) -> M + Send + 'static,
    {
        self.insert(Box::new(ListenerSource {
            listener,
            map,
            _types: std::marker::PhantomData,
        }))
    }

    /// Removes (and drops) the source `key`; `false` if it is not in the set (removed
    /// before, or reported [closed](Event::Closed)). To get the source back instead, see
    /// [`take_receiver`](Self::take_receiver) and [`take_listener`](Self::take_listener).
    ///
    /// Dropping a receiver closes its socket only when no [`Sender`] shares it: to hang up
    /// on a client, drop its sender too.
    pub fn remove(&mut self, key: Key) -> bool {
        self.take(key).is_some()
    }

    fn take(&mut self, key: Key) -> Option<Box<dyn Source<M>>> {
        let at = self.index.remove(&key)?;
        let entry = self.entries.swap_remove(at);
        if let Some(moved) = self.entries.get(at) {
            self.index.insert(moved.key, at);
        }
        Some(entry.source)
    }

    /// Removes the receiver `key` and gives it back (to hand the connection to another
    /// thread, say); `None`, leaving the set as it was, if `key` is not a `Receiver<T>`
    /// of this set.
    ///
    /// ```
    /// use memfile::ipc::{channel, ReceiverSet};
    ///
    /// let (tx, rx) = channel::<u32>()?;
    /// let mut set = ReceiverSet::new();
    /// let key = set.add(rx, |n| n);
    /// assert!(set.take_receiver::<String>(key).is_none()); // not a Receiver<String>
    /// let rx = set.take_receiver::<u32>(key).expect("a Receiver<u32>");
    /// assert!(set.is_empty());
    /// tx.send(&5)?;
    /// assert_eq!(rx.recv()?, 5);
    /// # Ok::<(), memfile::ipc::Error>(())
    /// ```
    pub fn take_receiver<T: 'static>(&mut self, key: Key) -> Option<Receiver<T>> {
        self.take_as::<Receiver<T>>(key)
    }

    /// Removes the listener `key` and gives it back; `None`, leaving the set as it was,
    /// if `key` is not a listener of this set.
    pub fn take_listener(&mut self, key: Key) -> Option<Listener> {
        self.take_as::<Listener>(key)
    }

    fn take_as<S: 'static>(&mut self, key: Key) -> Option<S> {
        let at = *self.index.get(&key)?;
        if self.entries[at].source.inner_type() != TypeId::of::<S>() {
            return None;
        }
        let any = self.take(key)?.into_any();
        // Cannot fail: the type was checked above.
        any.downcast::<S>().ok().map(|s| *s)
    }

    /// The listener added as `key` (for its [`refused_count`](Listener::refused_count), or
    /// to change its policy); `None` if `key` is not a listener of this set.
    pub fn listener_mut(&mut self, key: Key) -> Option<&mut Listener> {
        let at = *self.index.get(&key)?;
        self.entries[at].source.listener()
    }

    /// Whether `key` is in the set.
    pub fn contains(&self, key: Key) -> bool {
        self.index.contains_key(&key)
    }

    /// How many sources the set holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set holds no source.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Waits for the next event.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] when the set is empty (nothing could ever arrive: the last
    /// receiver may just have been reported [closed](Event::Closed)); [`Error::Io`] when
    /// `poll` fails (e.g. `ENOMEM`). What goes wrong with one source is an [`Event`], not
    /// an error.
    pub fn select(&mut self) -> Result<Event<M>> {
        self.select_until(Wait::Forever)
    }

    /// Like [`select`](Self::select), but waits at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when no event came in time; otherwise as
    /// [`select`](Self::select).
    pub fn select_timeout(&mut self, timeout: Duration) -> Result<Event<M>> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.select_until(Wait::Until(deadline)),
            None => self.select_until(Wait::Forever),
        }
    }

    /// Like [`select`](Self::select), but does not wait.
    ///
    /// # Errors
    ///
    /// [`Error::WouldBlock`] when no source has anything now; otherwise as
    /// [`select`](Self::select).
    pub fn try_select(&mut self) -> Result<Event<M>> {
        self.select_until(Wait::No)
    }

    fn select_until(&mut self, wait: Wait) -> Result<Event<M>> {
        let mut polled = false;
        loop {
            if let Some(event) = self.serve_ready() {
                return Ok(event);
            }
            if self.entries.is_empty() {
                return Err(Error::Disconnected {
                    op: Operation::Receive,
                    fd: None,
                    peer_pid: None,
                });
            }
            let timeout = match wait {
                Wait::Forever => PollTimeout::NONE,
                // One round at most: a source that looked ready but had nothing (another
                // thread took it) must not make `try_select` spin.
                Wait::No if polled => return Err(Error::WouldBlock),
                Wait::No => PollTimeout::ZERO,
                Wait::Until(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() && polled {
                        return Err(Error::Timeout {
                            op: Operation::Receive,
                            fd: None,
                        });
                    }
                    let ms = left.as_micros().div_ceil(1000);
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                }
            };
            polled = true;
            self.poll_round(timeout)?;
        }
    }

    /// Serves the sources found ready, in order, until one has an event.
    fn serve_ready(&mut self) -> Option<Event<M>> {
        while let Some(key) = self.ready.pop_front() {
            // Removed since the poll.
            let Some(&at) = self.index.get(&key) else {
                continue;
            };
            let source = &mut self.entries[at].source;
            match source.step() {
                Ok(message) => return Some(Event::Message(key, message)),
                Err(Error::WouldBlock) => continue,
                Err(error) if source.ends_on(&error) => {
                    self.remove(key);
                    return Some(Event::Closed(key, error));
                }
                Err(error) => return Some(Event::Error(key, error)),
            }
        }
        None
    }

    /// One `poll` over every source; queues the ready ones, starting the scan at a
    /// different source each round.
    fn poll_round(&mut self, timeout: PollTimeout) -> Result<()> {
        let mut fds: Vec<PollFd<'_>> = self
            .entries
            .iter()
            .map(|entry| PollFd::new(entry.source.fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                let fd = self.entries.first().map(|e| e.source.fd().as_raw_fd());
                return Err(Error::io("poll", fd, e));
            }
        }
        // Any event counts: POLLIN, but also POLLHUP/POLLERR, which the source's
        // non-blocking step turns into `Disconnected` or the socket's error.
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let n = self.entries.len();
        let start = self.start % n;
        self.start = start + 1;
        self.ready.extend(
            (start..n)
                .chain(0..start)
                .filter(|&i| ready[i])
                .map(|i| self.entries[i].key),
        );
        Ok(())
    }
}

/// How long `select_until` may wait.
#[derive(Clone, Copy)]
enum Wait {
    Forever,
    No,
    Until(Instant),
}

impl<M> Default for ReceiverSet<M> {
    fn default() -> ReceiverSet<M> {
        ReceiverSet::new()
    }
}

impl<M> fmt::Debug for ReceiverSet<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fds: Vec<_> = self
            .entries
            .iter()
            .map(|e| (e.key, e.source.fd().as_raw_fd()))
            .collect();
        f.debug_struct("ReceiverSet")
            .field("sources", &fds)
            .field("ready", &self.ready)
            .finish()
    }
}
