//! Flow control: a receiver grants its peer a [`Window`] of messages and bytes in flight,
//! and credits back what the application has taken; a sender waits while its budget is
//! used up.
//!
//! Credits travel as *control packets* on the same connection (header flag `0x0002`,
//! specified in `docs/protocol.md`, "Flow control (v2)"). The state of one connection lives
//! in its [`RawSocket`] (one per process), shared by the [`Sender`](crate::Sender)s and
//! [`Receiver`](crate::Receiver)s made on it, because on a duplex connection either half
//! may read the control packet the other half is waiting for: whoever reads one applies it.
//!
//! The rules, in short (`docs/design.md`, "Flow control", has the reasons):
//!
//! - A sender is **unbounded until the peer announces a window**; a receiver announces its
//!   window on its first `recv`, or at once when the application sets one
//!   ([`Receiver::with_window`](crate::Receiver::with_window)). A peer that never announces
//!   (a version 1 or foreign peer) is sent to as before.
//! - The sender counts every message it sent with its cost (payload bytes, spilled or not,
//!   plus the sizes of the `Frozen` and `MemFile` buffers it carries) in a queue; a credit
//!   says how many messages the application took, oldest first. A message is "taken" once
//!   the application asks for the next one (or the receiver answers a probe after it).
//! - When the messages or bytes in flight reach half the window, the sender asks for a
//!   credit (a *probe*); the receiver answers every probe it reads. A receiver sends nothing
//!   on its own but its announcement, so a connection below half its window costs no extra
//!   packet at all.
//! - A message that fits no window (larger than the byte window) still goes, alone.
//! - A [`Sender`](crate::Sender) that crosses a process boundary inside a message is no
//!   longer flow-controlled, neither the copy received nor the clones left behind (only
//!   one process may read a connection's credits). A [`Receiver`](crate::Receiver) that
//!   crosses announces its window afresh and the sender forgets what was in flight.
//! - Control packets are sent without waiting; when the socket is full they are kept and
//!   sent at the next chance (a receiver that has one pending waits for room as well as for
//!   packets, so two peers blocked on full sockets cannot wait on each other for ever).

use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::MsgFlags;

use crate::raw::{RawSocket, RecvMode};
use crate::wire::{self, HEADER_LEN};
use crate::{Error, Operation, Result};

/// Length of a control packet's payload.
pub(crate) const CONTROL_LEN: usize = 24;
/// Control flag: the `window_*` fields announce the receiver's window.
const C_WINDOW: u32 = 1;
/// Control flag: the sender forgets what it counted in flight (a new receiver took over).
const C_RESET: u32 = 2;
/// Control flag: a sender asks for a credit.
const C_PROBE: u32 = 4;
const C_KNOWN: u32 = C_WINDOW | C_RESET | C_PROBE;
/// The most messages our sender keeps in flight, whatever window the peer announces (its
/// queue of costs is 8 bytes per message in flight).
const MAX_PEER_MESSAGES: u32 = 1 << 16;
/// Control packets a blocking send attempt or a deadline receive reads in a row before it
/// looks at its clock again: a peer that keeps the socket full of them cannot keep
/// `send_timeout`, `try_send` or `recv_timeout` from returning.
const CONTROL_RUN: usize = 64;

/// How long a waiting sender sleeps at most before it tries again to send a probe that
/// did not fit into a full socket (the socket gives no event for "room for my probe" while
/// another thread is the reader).
const RETRY_SLICE: Duration = Duration::from_millis(50);

/// How long a blocked sender lets a message of the peer sit unread at the head of its
/// socket before it sends without credit. Credits queue behind the peer's messages, so a
/// side whose application never receives would otherwise never see them (and its sender
/// would wait for ever although the peer credited everything); past this grace the sender
/// behaves as without flow control (the socket buffer still bounds it) until the head moves.
const HEAD_OF_LINE_GRACE: Duration = Duration::from_millis(200);

/// How much a receiver lets its peer have in flight: messages sent but not yet taken by the
/// application, and their bytes (payload plus the `Frozen`/`MemFile` buffers they carry).
///
/// The receiver announces it; the peer's sender waits when it is used up. The default,
/// 1024 messages and 256 MiB, keeps an 8 MiB-frame producer 32 frames ahead of its consumer
/// (far more than a pipeline needs to run at full speed) while bounding the shared memory
/// pinned by a slow consumer.
///
/// ```
/// use memfile::ipc::{channel, Error, Window};
///
/// let (tx, rx) = channel::<u32>()?;
/// let rx = rx.with_window(Window::new(2, 1 << 20));
/// tx.try_send(&1)?;
/// tx.try_send(&2)?;
/// assert!(matches!(tx.try_send(&3), Err(Error::Full)));
/// assert_eq!(rx.recv()?, 1);
/// assert_eq!(rx.recv()?, 2);
/// // Asking for the next message credits the two taken.
/// assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
/// tx.try_send(&3)?;
/// # Ok::<(), memfile::ipc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// 0 = unbounded.
    messages: u32,
    bytes: u64,
}

impl Window {
    /// Messages in flight by default.
    pub const DEFAULT_MESSAGES: u32 = 1024;
    /// Bytes in flight by default: 256 MiB.
    pub const DEFAULT_BYTES: u64 = 256 << 20;

    /// A window of `messages` messages and `bytes` bytes (each at least 1).
    pub fn new(messages: u32, bytes: u64) -> Window {
        Window {
            messages: messages.max(1),
            bytes: bytes.max(1),
        }
    }

    /// No window: the peer's sender is not bounded (as in protocol version 1).
    pub fn unbounded() -> Window {
        Window {
            messages: 0,
            bytes: 0,
        }
    }

    /// Whether this is [`unbounded`](Self::unbounded).
    pub fn is_unbounded(&self) -> bool {
        self.messages == 0
    }

    /// The messages in flight it allows (`None`: unbounded).
    pub fn messages(&self) -> Option<u32> {
        (!self.is_unbounded()).then_some(self.messages)
    }

    /// The bytes in flight it allows (`None`: unbounded).
    pub fn bytes(&self) -> Option<u64> {
        (!self.is_unbounded()).then_some(self.bytes)
    }
}

impl Default for Window {
    fn default() -> Window {
        Window::new(Window::DEFAULT_MESSAGES, Window::DEFAULT_BYTES)
    }
}

/// What a sender has in flight on its connection, as its process counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    /// Messages sent and not yet credited.
    pub messages: u32,
    /// Their bytes (payload plus carried buffers).
    pub bytes: u64,
    /// The window the peer announced; `None` while it announced none (unbounded).
    pub window: Option<Window>,
}

/// Who reads the socket right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    None,
    /// A non-blocking step (a peek, one `recvmsg`): over in microseconds.
    Short,
    /// A receiver blocked in `recvmsg`: it applies whatever control packet comes.
    Long,
}

#[derive(Debug)]
struct State {
    // --- our sending direction ---
    /// The window the peer announced, if any.
    peer_window: Option<Window>,
    /// A sender of this connection was sent to another process, or this one was received:
    /// no flow control for our sending direction.
    handed_off: bool,
    /// Cost of every message in flight, oldest first.
    costs: VecDeque<u64>,
    in_flight_bytes: u64,
    /// A probe should go out (it did not fit, or is due).
    probe_due: bool,
    /// A probe went out and no credit came since.
    probe_sent: bool,
    // --- our receiving direction ---
    window: Window,
    /// The announcement (flags `C_WINDOW`, maybe `C_RESET`) to send, if any.
    announce_due: Option<u32>,
    /// Messages taken off the socket and handed to the application, not yet counted.
    held: u32,
    /// Since when a blocked sender has seen a message of the peer unread at the head of
    /// the socket (reset when the head moves or budget is found).
    stuck_since: Option<Instant>,
    /// Messages taken, not yet credited.
    unreported: u32,
    /// A probe was read: send a credit.
    credit_due: bool,
    // --- the socket ---
    reader: Reader,
    /// Threads or tasks waiting for a change (credit, the reader role, a packet taken).
    waiters: usize,
    wakers: Vec<Waker>,
}

/// The flow-control state of one connection in this process (inside its [`RawSocket`]).
pub(crate) struct Flow {
    state: Mutex<State>,
    changed: Condvar,
}

impl Default for Flow {
    fn default() -> Flow {
        Flow {
            state: Mutex::new(State {
                peer_window: None,
                handed_off: false,
                costs: VecDeque::new(),
                in_flight_bytes: 0,
                probe_due: false,
                probe_sent: false,
                window: Window::default(),
                announce_due: None,
                held: 0,
                stuck_since: None,
                unreported: 0,
                credit_due: false,
                reader: Reader::None,
                waiters: 0,
                wakers: Vec::new(),
            }),
            changed: Condvar::new(),
        }
    }
}

impl fmt::Debug for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state.try_lock() {
            Ok(s) => f
                .debug_struct("Flow")
                .field("peer_window", &s.peer_window)
                .field("in_flight", &s.costs.len())
                .field("window", &s.window)
                .finish(),
            Err(_) => f.write_str("Flow { .. }"),
        }
    }
}

/// How a call waits: a sender for budget, a stream for a free slot or a frame.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Not at all: [`Error::Full`] (a sender, a stream's loan) or [`Error::WouldBlock`].
    No,
    Forever,
    Until(Instant),
}

/// A reservation of budget for one message: [`sent`](Reserved::sent) once it went out;
/// dropped otherwise (the send failed, or an async send was cancelled), it gives the budget
/// back.
#[derive(Debug)]
#[must_use]
pub(crate) struct Reserved<'a> {
    socket: &'a RawSocket,
    /// `None`: unbounded, nothing was counted.
    cost: Option<u64>,
}

impl Reserved<'_> {
    /// The message went out: keep it counted, and send a probe if one is due.
    pub(crate) fn sent(mut self) {
        self.cost = None;
        let flow = self.socket.flow();
        let due = {
            let s = flow.lock();
            s.probe_due || s.credit_due || s.announce_due.is_some()
        };
        if due {
            flow.flush(self.socket);
        }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let Some(cost) = self.cost else { return };
        let flow = self.socket.flow();
        let mut s = flow.lock();
        if let Some(i) = s.costs.iter().rposition(|&c| c == cost) {
            s.costs.remove(i);
            s.in_flight_bytes = s.in_flight_bytes.saturating_sub(cost);
        }
        s.wake(&flow.changed);
    }
}

/// Why [`Flow::try_acquire`] could not reserve budget.
enum Short {
    /// Nothing more to read now: wait for the socket.
    Empty,
    /// Someone else must act first (the head packet is a message, or another thread reads):
    /// wait for a change.
    Others,
    /// Control packets keep coming: look at the clock, then try again at once.
    Busy,
    /// A message of the peer sits unread at the head of the socket, in front of any credit:
    /// wait for a change, but at most until this instant (then send without credit, see
    /// [`HEAD_OF_LINE_GRACE`]).
    Stuck(Instant),
}

impl State {
    fn bounded(&self) -> Option<Window> {
        if self.handed_off {
            None
        } else {
            self.peer_window
        }
    }

    fn fits(&self, cost: u64) -> bool {
        match self.bounded() {
            None => true,
            Some(w) => {
                (self.costs.len() as u64) < u64::from(w.messages)
                    && (self.costs.is_empty()
                        || self.in_flight_bytes.saturating_add(cost) <= w.bytes)
            }
        }
    }

    fn at_half(&self) -> bool {
        match self.bounded() {
            None => false,
            Some(w) => {
                self.costs.len() as u64 >= u64::from(w.messages).div_ceil(2)
                    || self.in_flight_bytes >= w.bytes.div_ceil(2)
            }
        }
    }

    /// Applies a control packet's payload.
    fn apply(&mut self, flags: u32, consumed: u32, window: Window) {
        if flags & C_PROBE != 0 {
            // About our receiving direction: the peer's sender asks for a credit.
            self.credit_due = true;
        }
        if flags == C_PROBE && consumed == 0 {
            return;
        }
        // A credit or an announcement from the peer's receiver: about our sending direction.
        if flags & C_RESET != 0 {
            self.costs.clear();
            self.in_flight_bytes = 0;
        }
        if flags & C_WINDOW != 0 {
            // Capped: the queue of costs holds one entry per message in flight, so a peer
            // announcing `u32::MAX` and never crediting would make it grow with every
            // message sent.
            self.peer_window = (!window.is_unbounded())
                .then(|| Window::new(window.messages.min(MAX_PEER_MESSAGES), window.bytes));
            // The queue of costs never holds more than the window's messages: allocate it
            // once here, not while sending.
            let room = window.messages.min(MAX_PEER_MESSAGES) as usize;
            self.costs.reserve(room.saturating_sub(self.costs.len()));
        }
        for _ in 0..consumed {
            match self.costs.pop_front() {
                Some(c) => self.in_flight_bytes = self.in_flight_bytes.saturating_sub(c),
                None => break,
            }
        }
        self.probe_sent = false;
        if self.at_half() {
            self.probe_due = true;
        }
    }

    fn wake(&mut self, changed: &Condvar) {
        if self.waiters > 0 {
            changed.notify_all();
        }
        for w in self.wakers.drain(..) {
            w.wake();
        }
    }
}

/// A control packet: header with `FLAG_CONTROL`, then the 24-byte payload.
fn control_packet(flags: u32, consumed: u32, window: Window) -> [u8; HEADER_LEN + CONTROL_LEN] {
    let mut p = [0u8; HEADER_LEN + CONTROL_LEN];
    p[..HEADER_LEN].copy_from_slice(&wire::control_header(CONTROL_LEN as u64));
    let b = &mut p[HEADER_LEN..];
    b[0..4].copy_from_slice(&flags.to_le_bytes());
    b[4..8].copy_from_slice(&consumed.to_le_bytes());
    b[8..12].copy_from_slice(&window.messages.to_le_bytes());
    // 12..16 reserved, zero.
    b[16..24].copy_from_slice(&window.bytes.to_le_bytes());
    p
}

/// Parses a control packet's payload: `(flags, consumed, window)`.
fn parse_control(payload: &[u8]) -> Result<(u32, u32, Window)> {
    let proto = |detail: String| Err(Error::Protocol { detail, fd: None });
    if payload.len() != CONTROL_LEN {
        return proto(format!(
            "control packet payload is {} bytes, must be {CONTROL_LEN}",
            payload.len()
        ));
    }
    let u32_at = |i: usize| u32::from_le_bytes(payload[i..i + 4].try_into().expect("4 bytes"));
    let flags = u32_at(0);
    if flags & !C_KNOWN != 0 {
        return proto(format!(
            "control packet has unknown flags {:#x} (known: {C_KNOWN:#x})",
            flags & !C_KNOWN
        ));
    }
    if u32_at(12) != 0 {
        return proto("control packet's reserved field is not 0".into());
    }
    let bytes = u64::from_le_bytes(payload[16..24].try_into().expect("8 bytes"));
    let window = match u32_at(8) {
        0 => Window::unbounded(),
        m => Window::new(m, bytes),
    };
    Ok((flags, u32_at(4), window))
}

impl Flow {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters only: keep going with them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(
        &self,
        mut s: MutexGuard<'a, State>,
        until: Option<Instant>,
    ) -> MutexGuard<'a, State> {
        s.waiters += 1;
        let slice = Instant::now() + RETRY_SLICE;
        let until = until.map_or(slice, |u| u.min(slice));
        let left = until.saturating_duration_since(Instant::now());
        let mut s = self
            .changed
            .wait_timeout(s, left)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
        s.waiters -= 1;
        s
    }

    // --- receiving side -------------------------------------------------------------------

    /// A receiver was made on this connection with `window`; `eager`: announce it now,
    /// else on the first `recv`.
    pub(crate) fn receiver_created(&self, socket: &RawSocket, window: Window, eager: bool) {
        {
            let mut s = self.lock();
            s.window = window;
            s.announce_due = Some(C_WINDOW | C_RESET);
        }
        if eager {
            self.flush(socket);
        }
    }

    /// The receiver's window changed: announce it (at once if the socket has room).
    pub(crate) fn set_window(&self, socket: &RawSocket, window: Window) {
        {
            let mut s = self.lock();
            s.window = window;
            let flags = s.announce_due.unwrap_or(0) | C_WINDOW;
            s.announce_due = Some(flags);
        }
        self.flush(socket);
    }

    pub(crate) fn window(&self) -> Window {
        self.lock().window
    }

    /// Sends whatever control packets are due, without waiting. Returns whether some are
    /// still due (the socket was full).
    pub(crate) fn flush(&self, socket: &RawSocket) -> bool {
        let mut s = self.lock();
        let mut packets: [Option<[u8; HEADER_LEN + CONTROL_LEN]>; 3] = [None; 3];
        if let Some(flags) = s.announce_due {
            // An announcement carries the credit too.
            packets[0] = Some(control_packet(flags, s.unreported, s.window));
        } else if s.credit_due {
            packets[0] = Some(control_packet(0, s.unreported, s.window));
        }
        if s.probe_due {
            packets[1] = Some(control_packet(C_PROBE, 0, Window::unbounded()));
        }
        if packets.iter().all(Option::is_none) {
            return false;
        }
        // Sent under the lock (non-blocking, microseconds), so that counters and packets
        // stay in the same order.
        let mut pending = false;
        if let Some(p) = packets[0] {
            match socket.try_send(&[IoSlice::new(&p)], &[]) {
                Err(Error::WouldBlock) => pending = true,
                // Sent; or the peer cannot take it at all (gone): then drop it, rather than
                // wait for room that never comes.
                _ => {
                    s.announce_due = None;
                    s.credit_due = false;
                    s.unreported = 0;
                }
            }
        }
        if let Some(p) = packets[1] {
            match socket.try_send(&[IoSlice::new(&p)], &[]) {
                Err(Error::WouldBlock) => pending = true,
                _ => {
                    s.probe_due = false;
                    s.probe_sent = true;
                }
            }
        }
        pending
    }

    /// Whether control packets wait to be sent (the socket was full).
    pub(crate) fn due(&self) -> bool {
        let s = self.lock();
        s.announce_due.is_some() || s.credit_due || s.probe_due
    }

    /// Receives the next message packet into `buf`/`fds`, applying (and skipping) control
    /// packets, and counting the previous message as taken.
    pub(crate) fn recv(
        &self,
        socket: &RawSocket,
        buf: &mut [u8],
        fds: &mut Vec<std::os::fd::OwnedFd>,
        mode: RecvMode,
    ) -> Result<usize> {
        {
            // The message handed out by the previous call is taken now.
            let mut s = self.lock();
            s.unreported = s.unreported.saturating_add(std::mem::take(&mut s.held));
        }
        let mut controls = 0usize;
        loop {
            let pending = self.flush(socket);
            let deadline = match mode {
                RecvMode::Deadline(d) => Some(d),
                _ => None,
            };
            // Take the reader role.
            let mut s = self.lock();
            while s.reader != Reader::None {
                if matches!(mode, RecvMode::NonBlocking) && s.reader == Reader::Long {
                    return Err(Error::WouldBlock);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Error::Timeout {
                        op: Operation::Receive,
                        fd: Some(socket.as_raw_fd()),
                    });
                }
                s = self.wait(s, deadline);
            }
            // Block in the kernel only when nothing of ours waits for room in the socket.
            let long = matches!(mode, RecvMode::Blocking) && !pending;
            s.reader = if long { Reader::Long } else { Reader::Short };
            drop(s);
            let step_mode = if long {
                RecvMode::Blocking
            } else {
                RecvMode::NonBlocking
            };
            let result = socket.recv(buf, fds, step_mode);
            let mut s = self.lock();
            s.reader = Reader::None;
            s.wake(&self.changed);
            match result {
                Ok(n) if wire::is_control(&buf[..n]) => {
                    let applied = wire::parse_control_header(&buf[..n], fds.len())
                        .and_then(|()| parse_control(&buf[HEADER_LEN..n]));
                    // A peer's fd on a control packet may block in `close` (a lingering TCP
                    // socket): closed where that cannot stall this call.
                    crate::closer::close(fds.drain(..));
                    match applied {
                        Ok((flags, consumed, window)) => {
                            s.apply(flags, consumed, window);
                            s.wake(&self.changed);
                            controls += 1;
                            if controls % CONTROL_RUN == 0
                                && deadline.is_some_and(|d| Instant::now() >= d)
                            {
                                return Err(Error::Timeout {
                                    op: Operation::Receive,
                                    fd: Some(socket.as_raw_fd()),
                                });
                            }
                        }
                        // A malformed control packet is an error for this call, like any
                        // other bad packet.
                        Err(e) => return Err(e),
                    }
                }
                Ok(n) => {
                    s.held = s.held.saturating_add(1);
                    return Ok(n);
                }
                Err(Error::WouldBlock) => {
                    drop(s);
                    match mode {
                        RecvMode::NonBlocking => return Err(Error::WouldBlock),
                        RecvMode::Blocking => {
                            wait_socket(socket, pending, None, Operation::Receive)?
                        }
                        RecvMode::Deadline(d) => {
                            wait_socket(socket, pending, Some(d), Operation::Receive)?
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    // --- sending side ---------------------------------------------------------------------

    /// A sender of this connection was serialized into a message (it goes to another
    /// process), or this connection's sender was received in one: stop flow control for
    /// our sending direction.
    pub(crate) fn hand_off(&self) {
        let mut s = self.lock();
        s.handed_off = true;
        s.costs.clear();
        s.in_flight_bytes = 0;
        s.wake(&self.changed);
    }

    pub(crate) fn in_flight(&self) -> InFlight {
        let s = self.lock();
        InFlight {
            messages: s.costs.len() as u32,
            bytes: s.in_flight_bytes,
            window: s.bounded(),
        }
    }

    /// Reserves budget for a message of `cost` bytes, waiting as `wait` says.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] (`Wait::No`), [`Error::Timeout`], [`Error::Disconnected`] (seen
    /// while reading control packets), [`Error::Io`].
    pub(crate) fn acquire<'a>(
        &self,
        socket: &'a RawSocket,
        cost: u64,
        wait: Wait,
    ) -> Result<Reserved<'a>> {
        loop {
            let short = match self.try_acquire(socket, cost, None, Some(CONTROL_RUN))? {
                Ok(r) => return Ok(r),
                Err(short) => short,
            };
            let until = match wait {
                Wait::No => return Err(Error::Full),
                Wait::Forever => None,
                Wait::Until(d) => {
                    if Instant::now() >= d {
                        return Err(Error::Timeout {
                            op: Operation::Send,
                            fd: Some(socket.as_raw_fd()),
                        });
                    }
                    Some(d)
                }
            };
            match short {
                Short::Busy => {}
                Short::Empty => {
                    // In slices: a receiver thread of this connection may read the credit
                    // first (it wakes the condition variable, not this poll).
                    let pending = self.due();
                    let slice = Instant::now() + RETRY_SLICE;
                    let until = Some(until.map_or(slice, |u| u.min(slice)));
                    match wait_socket(socket, pending, until, Operation::Send) {
                        Ok(()) | Err(Error::Timeout { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Short::Others => {
                    let s = self.lock();
                    drop(self.wait(s, until));
                }
                Short::Stuck(at) => {
                    let s = self.lock();
                    let until = Some(until.map_or(at, |u| u.min(at)));
                    drop(self.wait(s, until));
                }
            }
        }
    }

    /// One non-blocking attempt: reserve if the budget allows, else read the control
    /// packets that are queued (if nobody else reads) and try again. `waker` is registered
    /// for a change when the attempt fails.
    ///
    /// The outer `Result` is an error to report; the inner one says why nothing was
    /// reserved. `max_controls`: give up (as [`Short::Empty`], or unbounded before any
    /// announcement) after reading that many control packets, so that the caller looks at
    /// its clock (the async sender passes `None`: it must not wait for an edge that a
    /// queued packet will not raise).
    fn try_acquire<'a>(
        &self,
        socket: &'a RawSocket,
        cost: u64,
        waker: Option<&Waker>,
        max_controls: Option<usize>,
    ) -> Result<std::result::Result<Reserved<'a>, Short>> {
        let mut controls = 0usize;
        loop {
            let mut s = self.lock();
            // A sender that has not heard of a window yet looks for an announcement first
            // (one non-blocking peek per send until it comes; never after a hand-off).
            let look = s.peer_window.is_none() && !s.handed_off && s.reader == Reader::None;
            // A peer keeps the socket full of control packets: the caller looks at its clock
            // (and tries again at once if it may still wait); unbounded if none announced.
            let capped = max_controls.is_some_and(|m| controls >= m);
            if s.fits(cost) && (!look || capped) {
                s.stuck_since = None;
                if s.bounded().is_none() {
                    return Ok(Ok(Reserved { socket, cost: None }));
                }
                s.costs.push_back(cost);
                s.in_flight_bytes = s.in_flight_bytes.saturating_add(cost);
                if !s.probe_sent && s.at_half() {
                    s.probe_due = true;
                }
                return Ok(Ok(Reserved {
                    socket,
                    cost: Some(cost),
                }));
            }
            if capped {
                return Ok(Err(Short::Busy));
            }
            if look {
                s.reader = Reader::Short;
                drop(s);
                let head = peek_control(socket);
                let mut s = self.lock();
                s.reader = Reader::None;
                s.wake(&self.changed);
                match head {
                    Ok(Head::Control(flags, consumed, window)) => {
                        s.apply(flags, consumed, window);
                        controls += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                    // Nothing announced (yet): unbounded.
                    Ok(_) if s.peer_window.is_none() => {
                        return Ok(Ok(Reserved { socket, cost: None }));
                    }
                    Ok(_) => continue,
                }
            }
            if s.reader != Reader::None {
                if let Some(w) = waker {
                    s.wakers.push(w.clone());
                }
                return Ok(Err(Short::Others));
            }
            if !s.probe_sent {
                s.probe_due = true;
            }
            s.reader = Reader::Short;
            drop(s);
            let _ = self.flush(socket);
            let head = peek_control(socket);
            let mut s = self.lock();
            s.reader = Reader::None;
            match head {
                Ok(Head::Control(flags, consumed, window)) => {
                    s.stuck_since = None;
                    s.apply(flags, consumed, window);
                    s.wake(&self.changed);
                    controls += 1;
                    continue;
                }
                Ok(Head::Empty) => {
                    s.stuck_since = None;
                    if let Some(w) = waker {
                        s.wakers.push(w.clone());
                    }
                    s.wake(&self.changed);
                    return Ok(Err(Short::Empty));
                }
                Ok(Head::Message) => {
                    // Credits queue behind this message: if nobody takes it, send without
                    // credit after a grace (blocking senders only: an async sender has no
                    // timer here and waits for the receiver's wake-up).
                    let now = Instant::now();
                    let since = *s.stuck_since.get_or_insert(now);
                    if waker.is_none() && now.duration_since(since) >= HEAD_OF_LINE_GRACE {
                        s.costs.push_back(cost);
                        s.in_flight_bytes = s.in_flight_bytes.saturating_add(cost);
                        return Ok(Ok(Reserved {
                            socket,
                            cost: Some(cost),
                        }));
                    }
                    if let Some(w) = waker {
                        s.wakers.push(w.clone());
                    }
                    s.wake(&self.changed);
                    if waker.is_none() {
                        return Ok(Err(Short::Stuck(since + HEAD_OF_LINE_GRACE)));
                    }
                    return Ok(Err(Short::Others));
                }
                Err(e) => {
                    s.wake(&self.changed);
                    return Err(e);
                }
            }
        }
    }

    /// For the async sender: one attempt that registers `waker` when it fails. `Ok(None)`:
    /// wait for the socket to become readable (and for the waker); `Ok(Some(false))`: wait
    /// for the waker only.
    #[cfg(feature = "tokio")]
    pub(crate) fn poll_acquire<'a>(
        &self,
        socket: &'a RawSocket,
        cost: u64,
        waker: &Waker,
    ) -> Result<std::result::Result<Reserved<'a>, bool>> {
        Ok(match self.try_acquire(socket, cost, Some(waker), None)? {
            Ok(r) => Ok(r),
            Err(Short::Empty | Short::Busy) => Err(true),
            Err(Short::Others | Short::Stuck(_)) => Err(false),
        })
    }
}

/// What is at the head of the socket's queue.
enum Head {
    Empty,
    Message,
    Control(u32, u32, Window),
}

/// Looks at the next packet without taking it; a control packet is taken and parsed.
///
/// Must be called with the reader role held. `MSG_PEEK` without a control buffer installs
/// no fd (the kernel drops its duplicates when there is no room for them).
fn peek_control(socket: &RawSocket) -> Result<Head> {
    let fd = socket.as_raw_fd();
    let mut head = [0u8; HEADER_LEN];
    let n = loop {
        match nix::sys::socket::recv(fd, &mut head, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
            Ok(n) => break n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(Head::Empty),
            Err(Errno::ECONNRESET | Errno::EPIPE | Errno::ENOTCONN) => {
                return Err(socket.disconnected(Operation::Send));
            }
            Err(e) => return Err(Error::io("recv(MSG_PEEK)", Some(fd), e)),
        }
    };
    if n == 0 {
        // End of file, or an empty packet: let `recv` tell (and take it).
        let mut fds = Vec::new();
        return match socket.recv(&mut [0u8; 1], &mut fds, RecvMode::NonBlocking) {
            Err(Error::Disconnected { .. }) => Err(socket.disconnected(Operation::Send)),
            _ => Ok(Head::Message),
        };
    }
    if !wire::is_control(&head[..n]) {
        return Ok(Head::Message);
    }
    let mut packet = [0u8; HEADER_LEN + CONTROL_LEN];
    let mut fds = Vec::new();
    match socket.recv(&mut packet, &mut fds, RecvMode::NonBlocking) {
        Ok(n) => {
            let fd_count = fds.len();
            // Closed where a blocking `close` cannot stall the sender (see `closer`).
            crate::closer::close(fds);
            match wire::parse_control_header(&packet[..n], fd_count)
                .and_then(|()| parse_control(&packet[HEADER_LEN..n]))
            {
                Ok((flags, consumed, window)) => Ok(Head::Control(flags, consumed, window)),
                // A malformed control packet is dropped: it is no message of ours to report.
                Err(_) => Ok(Head::Empty),
            }
        }
        Err(Error::WouldBlock) => Ok(Head::Empty),
        Err(Error::Disconnected { .. }) => Err(socket.disconnected(Operation::Send)),
        // Truncated (a control packet with more bytes or fds than allowed): dropped.
        Err(Error::Truncated { .. }) => Ok(Head::Empty),
        Err(e) => Err(e),
    }
}

/// Waits until the socket is readable (or writable too, when `pending` control packets
/// wait for room), or `until`.
fn wait_socket(
    socket: &RawSocket,
    pending: bool,
    until: Option<Instant>,
    op: Operation,
) -> Result<()> {
    let mut events = PollFlags::POLLIN;
    if pending {
        events |= PollFlags::POLLOUT;
    }
    let timeout = match until {
        None => PollTimeout::NONE,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    op,
                    fd: Some(socket.as_raw_fd()),
                });
            }
            PollTimeout::try_from(left.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX)
        }
    };
    let mut pfd = [PollFd::new(std::os::fd::AsFd::as_fd(socket), events)];
    match poll(&mut pfd, timeout) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(Error::io("poll", Some(socket.as_raw_fd()), e)),
    }
}

thread_local! {
    /// Bytes of `Frozen`/`MemFile` buffers the message being encoded on this thread carries.
    static CARRIED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Called by the fd encoder for each buffer a message carries.
pub(crate) fn carry(bytes: u64) {
    CARRIED.with(|c| c.set(c.get().saturating_add(bytes)));
}

/// Starts counting the carried bytes of a message; returns the count of an enclosing one.
pub(crate) fn begin_carry() -> u64 {
    CARRIED.with(|c| c.replace(0))
}

/// Ends counting: the carried bytes of this message; restores the enclosing count.
pub(crate) fn end_carry(outer: u64) -> u64 {
    CARRIED.with(|c| c.replace(outer))
}

/// Sends one message of `cost` bytes with `send` once the budget allows (waiting as `wait`
/// says); gives the budget back if `send` fails.
pub(crate) fn send_with_budget(
    socket: &RawSocket,
    cost: u64,
    wait: Wait,
    send: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let reserved = socket.flow().acquire(socket, cost, wait)?;
    send()?;
    reserved.sent();
    Ok(())
}
