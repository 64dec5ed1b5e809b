//! [`Publisher`]: one message to many subscribers, each over its own bounded channel, with a
//! policy for a subscriber whose window is full.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::{Error, Result, Sender};

/// What [`Publisher::publish`] does with a subscriber whose window (or socket buffer) is
/// full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Wait until it has room (at most the publisher's
    /// [`block_timeout`](Publisher::with_block_timeout), after which it is disconnected).
    /// A slow subscriber slows every other one down: the lock-step choice.
    Block,
    /// Skip it for this message, and count the skip ([`Publisher::skipped`]); it gets the
    /// next message that finds room.
    Skip,
    /// Disconnect it (drop its sender): it sees the end of the stream.
    Disconnect,
}

/// Identifies a subscriber of a [`Publisher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(pub(crate) u64);

/// What one [`Publisher::publish`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Subscribers the message was sent to.
    pub delivered: usize,
    /// Subscribers skipped because they were full ([`FullPolicy::Skip`]).
    pub skipped: Vec<SubscriberId>,
    /// Subscribers removed: gone (disconnected, or their socket failed), full under
    /// [`FullPolicy::Disconnect`], or past the block timeout.
    pub removed: Vec<SubscriberId>,
}

struct Subscriber<T> {
    id: SubscriberId,
    tx: Sender<T>,
    skipped: u64,
}

struct List<T> {
    next_id: u64,
    subscribers: Vec<Subscriber<T>>,
}

/// Sends each message to every subscriber, each over its own (bounded) [`Sender`].
///
/// A message typically carries a `Frozen` ([`Fd<Frozen>`](crate::Fd)): every subscriber
/// maps the same sealed memory, so N subscribers of a 64 MiB frame cost 64 MiB, not N
/// times that. (A large *serialized* payload, by contrast, is encoded and spilled once per
/// subscriber: keep big data in buffers.)
///
/// Subscribers join ([`subscribe`](Self::subscribe), e.g. with the sender half of a
/// connection a [`Listener`](crate::Listener) accepted) and leave
/// ([`unsubscribe`](Self::unsubscribe)) at any time, also while another thread publishes.
/// A subscriber that is gone (its process died, its receiver was dropped) is removed at the
/// next message and never holds the others up; one that is merely slow is handled by the
/// [`FullPolicy`].
///
/// ```
/// use memfile::Frozen;
/// use memfile::ipc::{channel, Fd, FullPolicy, Publisher, Window};
///
/// let publisher = Publisher::<Fd<Frozen>>::new(FullPolicy::Skip);
/// let (tx1, rx1) = channel()?;
/// let (tx2, rx2) = channel()?;
/// let rx2 = rx2.with_window(Window::new(1, 1 << 30)); // a slow one
/// let fast = publisher.subscribe(tx1);
/// let slow = publisher.subscribe(tx2);
/// for n in 0..3u8 {
///     let frame = Frozen::from_bytes("frame", &[n; 4096])?;
///     publisher.publish(&frame.into())?;
///     assert_eq!(rx1.recv()?[0], n);
/// }
/// assert_eq!(rx2.recv()?[0], 0); // it got the first, then was full
/// assert_eq!(publisher.skipped(slow), Some(2));
/// assert_eq!(publisher.skipped(fast), Some(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Publisher<T> {
    policy: FullPolicy,
    block_timeout: Option<Duration>,
    list: Mutex<List<T>>,
}

impl<T> Publisher<T> {
    /// A publisher without subscribers, applying `policy` to full ones.
    pub fn new(policy: FullPolicy) -> Publisher<T> {
        Publisher {
            policy,
            block_timeout: None,
            list: Mutex::new(List {
                next_id: 0,
                subscribers: Vec::new(),
            }),
        }
    }

    /// With [`FullPolicy::Block`]: a subscriber that has no room within `timeout` is
    /// disconnected (default: wait as long as it takes).
    #[must_use]
    pub fn with_block_timeout(mut self, timeout: Duration) -> Publisher<T> {
        self.block_timeout = Some(timeout);
        self
    }

    /// The policy for full subscribers.
    pub fn policy(&self) -> FullPolicy {
        self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, List<T>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a subscriber; it gets every message published from now on.
    pub fn subscribe(&self, tx: Sender<T>) -> SubscriberId {
        let mut list = self.lock();
        let id = SubscriberId(list.next_id);
        list.next_id += 1;
        list.subscribers.push(Subscriber { id, tx, skipped: 0 });
        id
    }

    /// Removes a subscriber (dropping its sender); `false` if it was not subscribed (any
    /// more).
    pub fn unsubscribe(&self, id: SubscriberId) -> bool {
        let mut list = self.lock();
        let before = list.subscribers.len();
        list.subscribers.retain(|s| s.id != id);
        list.subscribers.len() != before
    }

    /// The subscribers now.
    pub fn subscribers(&self) -> Vec<SubscriberId> {
        self.lock().subscribers.iter().map(|s| s.id).collect()
    }

    /// How many messages subscriber `id` was skipped for; `None` if it is not subscribed.
    pub fn skipped(&self, id: SubscriberId) -> Option<u64> {
        let list = self.lock();
        list.subscribers
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.skipped)
    }
}

impl<T: Serialize + serde::Deserialize<'static>> Publisher<T> {
    /// Sends `msg` to every subscriber, applying the [`FullPolicy`] to full ones and
    /// removing those that are gone.
    ///
    /// The subscriber list is not locked while sending: others may subscribe or
    /// unsubscribe meanwhile (a subscriber added during a publish gets the next message).
    ///
    /// # Errors
    ///
    /// A message-level error, the same for every subscriber ([`Error::MessageTooLarge`],
    /// [`Error::TooManyFds`], [`Error::Codec`]), as soon as the first send reports it;
    /// nothing more is sent then. Errors of one subscriber's connection only remove it.
    pub fn publish(&self, msg: &T) -> Result<Published> {
        let targets: Vec<(SubscriberId, Sender<T>)> = self
            .lock()
            .subscribers
            .iter()
            .map(|s| (s.id, s.tx.clone()))
            .collect();
        let mut report = Published::default();
        for (id, tx) in targets {
            let result = match self.policy {
                FullPolicy::Block => match self.block_timeout {
                    Some(timeout) => tx.send_timeout(msg, timeout),
                    None => tx.send(msg),
                },
                FullPolicy::Skip | FullPolicy::Disconnect => tx.try_send(msg),
            };
            match result {
                Ok(()) => report.delivered += 1,
                Err(Error::Full | Error::WouldBlock) if self.policy == FullPolicy::Skip => {
                    report.skipped.push(id);
                }
                Err(e) if e.is_message_error() => return Err(e),
                // Full under Disconnect, past the block timeout, gone, or failed.
                Err(_) => report.removed.push(id),
            }
        }
        if !report.skipped.is_empty() || !report.removed.is_empty() {
            let mut list = self.lock();
            list.subscribers.retain(|s| !report.removed.contains(&s.id));
            for s in &mut list.subscribers {
                if report.skipped.contains(&s.id) {
                    s.skipped += 1;
                }
            }
        }
        Ok(report)
    }
}

impl<T> fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("policy", &self.policy)
            .field("block_timeout", &self.block_timeout)
            .field("subscribers", &self.lock().subscribers.len())
            .finish()
    }
}
