//! The crate's one error type.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

/// `Result<T, memfile::ipc::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong sending or receiving.
///
/// Nothing a peer sends makes this crate panic: every bad input is one of these variants.
/// `Display` says what happened and, where there is one, to which fd.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A syscall failed.
    Io {
        /// What was being done (`"sendmsg"`, `"recvmsg"`, `"bind"`, ...).
        op: &'static str,
        /// The socket (or other fd) it was done on, if any.
        fd: Option<RawFd>,
        /// The OS error.
        source: io::Error,
    },
    /// The peer closed its end (or died): no more messages will come, or be taken.
    ///
    /// Match it as `Error::Disconnected { .. }`.
    Disconnected {
        /// What found the peer gone: a [`Send`](Operation::Send) or a
        /// [`Receive`](Operation::Receive).
        op: Operation,
        /// The socket (connection) it was found on.
        fd: Option<RawFd>,
        /// The peer's pid as the kernel recorded it (`SO_PEERCRED`: the process that
        /// connected or listened, or that created a socketpair), where known. `None` when it
        /// is this process's own pid: for a socketpair this process made ([`channel`],
        /// [`spawn`]) the kernel names the creator, not the process holding the other end.
        ///
        /// [`channel`]: crate::channel
        /// [`spawn`]: crate::spawn
        peer_pid: Option<i32>,
    },
    /// A call with a time limit (`recv_timeout`, `send_timeout`, `accept_timeout`) ran out
    /// of time.
    ///
    /// Match it as `Error::Timeout { .. }`.
    Timeout {
        /// What was waiting.
        op: Operation,
        /// The socket it waited on.
        fd: Option<RawFd>,
    },
    /// A non-blocking call (`try_send`, `try_recv`) could not proceed now.
    WouldBlock,
    /// `try_send` on a bounded channel whose window is used up: the peer's application has
    /// not yet taken enough of the messages in flight (see [`Window`](crate::Window)).
    /// Nothing was sent; try again after it has.
    Full,
    /// The kernel cut the packet short (`MSG_TRUNC`: bytes, `MSG_CTRUNC`: fds). Every fd
    /// that did arrive was closed.
    Truncated {
        /// The socket it arrived on.
        fd: RawFd,
        /// `MSG_TRUNC` was set: payload bytes were lost.
        bytes: bool,
        /// `MSG_CTRUNC` was set: fds were lost.
        fds: bool,
    },
    /// A packet carried more fds than allowed.
    TooManyFds {
        /// How many fds it carried (or tried to send).
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The peer's credentials were refused (a `Listener`'s credential policy).
    PeerRejected {
        /// The peer's pid.
        pid: i32,
        /// The peer's uid.
        uid: u32,
        /// The peer's gid.
        gid: u32,
        /// Why it was refused.
        reason: String,
    },
    /// A message is larger than the configured maximum
    /// ([`Limits::max_message_bytes`](crate::Limits::max_message_bytes)). On the sending side
    /// nothing was sent; on the receiving side the packet and its fds were dropped.
    MessageTooLarge {
        /// The message's size in bytes (when sending: the bytes encoded when the limit was
        /// hit, a lower bound; encoding stops there).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// bincode could not encode or decode the message (a type mismatch between the peers,
    /// trailing bytes, a length that claims more bytes than the message has, ...).
    Codec {
        /// `true` while encoding (sending), `false` while decoding (receiving).
        encoding: bool,
        /// bincode's description of the problem.
        detail: String,
        /// The socket (connection) of the endpoint that was encoding or decoding.
        fd: Option<RawFd>,
    },
    /// Decoding the received message would need more heap than its budget
    /// ([`Limits::heap_budget`](crate::Limits::heap_budget)): a message much larger in
    /// memory than on the wire. Refused before the memory was allocated; its fds were closed.
    HeapLimitExceeded {
        /// The heap the decoder had charged when it stopped, with the charge it refused (a
        /// lower bound of what the whole message would need).
        at_least: u64,
        /// The budget.
        max: u64,
    },
    /// An fd that must be a sealed buffer (a `Frozen` field, or the memfd of a spilled
    /// message) is not one: not a memfd, not sealed against writing and shrinking,
    /// larger than allowed, or (a `Frozen` field, unless
    /// [`Limits::allow_sparse_buffers`](crate::Limits::allow_sparse_buffers)) sparse. The fd
    /// was closed (so that an error kept around holds no fd).
    BadBuffer {
        /// Its index in the packet's fd list.
        index: usize,
        /// What memfile-core found (e.g. `NotSealed { found, required }`).
        kind: memfile_core::FrozenErrorKind,
        /// memfile-core's description: the fd number, the seals found, the seals required.
        detail: String,
    },
    /// An fd in the message is not of the kind its field needs (e.g. a `MemFile` field got
    /// a pipe, a `Sender` field got something other than an `AF_UNIX` `SOCK_SEQPACKET`
    /// socket). The fd was closed.
    BadFdKind {
        /// Its index in the packet's fd list.
        index: usize,
        /// What the field needs.
        expected: &'static str,
        /// What was found instead.
        detail: String,
    },
    /// A field refers to an fd index the packet does not have.
    FdIndexOutOfRange {
        /// The index in the message.
        index: u64,
        /// How many fds the packet carried.
        count: usize,
    },
    /// Two fields refer to the same fd index (one fd cannot be owned twice).
    FdIndexReused {
        /// The index in the message.
        index: u64,
    },
    /// An fd field was encoded or decoded outside a channel (e.g. a message holding a
    /// `Frozen` serialized to JSON): fds only travel through this crate's endpoints.
    FdOutsideChannel,
    /// The packet does not follow the wire protocol (`docs/protocol.md`): bad magic, unknown
    /// flags, lengths or fd counts that differ from what arrived, a spilled payload in a
    /// sparse memfd (a hole below its end), ...
    Protocol {
        /// What was wrong.
        detail: String,
        /// The socket (connection) the packet arrived on.
        fd: Option<RawFd>,
    },
    /// The peer speaks another version of the wire protocol.
    VersionMismatch {
        /// The newest version this crate speaks (it receives versions 1 to `ours`).
        ours: u16,
        /// The version in the peer's packet.
        theirs: u16,
        /// The socket (connection) the packet arrived on.
        fd: Option<RawFd>,
    },
    /// A stream frame is longer than the pool's slots
    /// ([`StreamProducer::loan`](crate::stream::StreamProducer::loan), [`SlotMut::set_len`](crate::stream::SlotMut::set_len)).
    /// Nothing was loaned or changed.
    FrameTooLarge {
        /// The frame's length.
        len: u64,
        /// The pool's slot length, the largest frame.
        slot_len: u64,
    },
    /// The peer sent a message of another type than this receiver's: the packet's
    /// message-type fingerprint (see `docs/protocol.md`) differs from the receiver's. The
    /// packet and its fds were dropped; the receiver stays usable.
    ///
    /// The usual causes: the two programs were built from different definitions of the
    /// message type, or the type parameters of `connect::<Tx, Rx>` / `accept::<Tx, Rx>` /
    /// `spawn::<Tx, Rx>` are swapped on one side. Checking is turned off with
    /// [`Receiver::without_type_check`](crate::Receiver::without_type_check) (or on the
    /// sending side with [`Sender::without_type_check`](crate::Sender::without_type_check)).
    TypeMismatch {
        /// The receiver's message type (`std::any::type_name`).
        expected: &'static str,
        /// Its fingerprint.
        expected_fingerprint: u32,
        /// A type of this process whose fingerprint is the received one, if this process
        /// has used one (the wire carries only the fingerprint).
        received: Option<&'static str>,
        /// The fingerprint in the packet.
        received_fingerprint: u32,
        /// The socket (connection) the packet arrived on.
        fd: Option<RawFd>,
    },
}

/// What an endpoint was doing when an error happened (in [`Error::Disconnected`] and
/// [`Error::Timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Sending a message or packet.
    Send,
    /// Receiving one.
    Receive,
    /// Accepting a connection.
    Accept,
    /// Waiting for a free slot of a stream's pool
    /// ([`StreamProducer::loan_timeout`](crate::stream::StreamProducer::loan_timeout)).
    Loan,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Send => "send",
            Operation::Receive => "receive",
            Operation::Accept => "accept",
            Operation::Loan => "loan of a stream slot",
        })
    }
}

impl Error {
    /// A [`Error::BadBuffer`] for fd `index`, closing the rejected fd where a blocking
    /// `close` cannot stall the caller (see `closer.rs`).
    pub(crate) fn bad_buffer(index: usize, error: memfile_core::FrozenError) -> Error {
        let detail = error.to_string();
        let (fd, kind) = error.into_parts();
        crate::closer::close([fd]);
        Error::BadBuffer {
            index,
            kind,
            detail,
        }
    }

    /// The socket (connection) or other fd the error is about, where the error names one:
    /// the fd of an [`Io`](Error::Io), [`Disconnected`](Error::Disconnected),
    /// [`Timeout`](Error::Timeout), [`Truncated`](Error::Truncated),
    /// [`Protocol`](Error::Protocol), [`Codec`](Error::Codec),
    /// [`VersionMismatch`](Error::VersionMismatch) or [`TypeMismatch`](Error::TypeMismatch).
    ///
    /// ```
    /// use std::os::fd::{AsFd, AsRawFd};
    ///
    /// let (tx, rx) = memfile::ipc::channel::<u8>()?;
    /// let rx_fd = rx.as_fd().as_raw_fd();
    /// drop(tx);
    /// let e = rx.recv().unwrap_err();
    /// assert_eq!(e.fd(), Some(rx_fd));
    /// # Ok::<(), memfile::ipc::Error>(())
    /// ```
    pub fn fd(&self) -> Option<RawFd> {
        match self {
            Error::Io { fd, .. }
            | Error::Disconnected { fd, .. }
            | Error::Timeout { fd, .. }
            | Error::Protocol { fd, .. }
            | Error::Codec { fd, .. }
            | Error::VersionMismatch { fd, .. }
            | Error::TypeMismatch { fd, .. } => *fd,
            Error::Truncated { fd, .. } => Some(*fd),
            _ => None,
        }
    }

    /// Names `socket` as the connection of an error that does not name one yet (the
    /// endpoints call this on every error they return, so that the places that detect a
    /// problem need not know the socket).
    pub(crate) fn on_socket(mut self, socket: RawFd) -> Error {
        match &mut self {
            Error::Disconnected { fd, .. }
            | Error::Timeout { fd, .. }
            | Error::Protocol { fd, .. }
            | Error::Codec { fd, .. }
            | Error::VersionMismatch { fd, .. }
            | Error::TypeMismatch { fd, .. } => {
                fd.get_or_insert(socket);
            }
            _ => {}
        }
        self
    }

    /// An error of the message itself, the same whichever peer it goes to (it does not
    /// encode, is too large, carries too many fds), as opposed to one of the connection:
    /// fan-out ([`Publisher`](crate::Publisher), streams) stops at it instead of dropping
    /// the peer.
    pub(crate) fn is_message_error(&self) -> bool {
        matches!(
            self,
            Error::MessageTooLarge { .. } | Error::TooManyFds { .. } | Error::Codec { .. }
        )
    }

    /// An `Io` error from a `nix` errno.
    pub(crate) fn io(op: &'static str, fd: Option<RawFd>, source: impl Into<io::Error>) -> Error {
        Error::Io {
            op,
            fd,
            source: source.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io {
                op,
                fd: Some(fd),
                source,
            } => write!(f, "{op} on fd {fd} failed: {source}"),
            Error::Io {
                op,
                fd: None,
                source,
            } => write!(f, "{op} failed: {source}"),
            Error::Disconnected { op, fd, peer_pid } => {
                write!(f, "{op}{}: the peer", OnFd(*fd))?;
                if let Some(pid) = peer_pid {
                    write!(f, " (pid {pid})")?;
                }
                f.write_str(" closed the connection")
            }
            Error::Timeout { op, fd } => write!(f, "{op}{} timed out", OnFd(*fd)),
            Error::WouldBlock => f.write_str("the operation would block"),
            Error::Full => f.write_str(
                "the channel is full: the peer's window of messages or bytes in flight is used up",
            ),
            Error::Truncated { fd, bytes, fds } => write!(
                f,
                "packet on fd {fd} was truncated by the kernel ({}); the fds that arrived were closed",
                match (bytes, fds) {
                    (true, true) => "bytes and fds lost",
                    (true, false) => "bytes lost",
                    _ => "fds lost",
                }
            ),
            Error::FrameTooLarge { len, slot_len } => write!(
                f,
                "a stream frame of {len} bytes does not fit the pool's slots of {slot_len} bytes"
            ),
            Error::TooManyFds { count, max } => {
                write!(f, "{count} fds in one packet, at most {max} allowed")
            }
            Error::PeerRejected {
                pid,
                uid,
                gid,
                reason,
            } => {
                write!(f, "peer pid {pid} uid {uid} gid {gid} rejected: {reason}")
            }
            Error::MessageTooLarge { size, max } => {
                write!(
                    f,
                    "message of {size} bytes exceeds the limit of {max} bytes"
                )
            }
            Error::Codec {
                encoding: true,
                detail,
                fd,
            } => write!(f, "cannot encode message{}: {detail}", ForFd(*fd)),
            Error::HeapLimitExceeded { at_least, max } => write!(
                f,
                "decoding the message needs at least {at_least} bytes of heap, more than its \
                 budget of {max} bytes (Limits::max_heap_bytes)"
            ),
            Error::Codec {
                encoding: false,
                detail,
                fd,
            } => write!(f, "cannot decode message{}: {detail}", OnFd(*fd)),
            Error::BadBuffer { index, detail, .. } => {
                write!(
                    f,
                    "fd #{index} of the message is not an acceptable sealed buffer: {detail}"
                )
            }
            Error::BadFdKind {
                index,
                expected,
                detail,
            } => {
                write!(
                    f,
                    "fd #{index} of the message should be {expected}, but {detail}"
                )
            }
            Error::FdIndexOutOfRange { index, count } => write!(
                f,
                "message refers to fd #{index} but the packet carried {count} fd{}",
                if *count == 1 { "" } else { "s" }
            ),
            Error::FdIndexReused { index } => {
                write!(f, "message refers to fd #{index} more than once")
            }
            Error::FdOutsideChannel => f.write_str(
                "an fd field can only be encoded or decoded by a memfile-ipc Sender or Receiver",
            ),
            Error::Protocol { detail, fd } => write!(f, "protocol error{}: {detail}", OnFd(*fd)),
            Error::VersionMismatch { ours, theirs, fd } => write!(
                f,
                "peer{} speaks wire protocol version {theirs}, this side speaks versions 1 to {ours}",
                OnFd(*fd)
            ),
            Error::TypeMismatch {
                expected,
                expected_fingerprint,
                received,
                received_fingerprint,
                fd,
            } => {
                write!(
                    f,
                    "message type mismatch{}: this side receives `{expected}` (fingerprint \
                     {expected_fingerprint:#010x}), the peer sent ",
                    OnFd(*fd)
                )?;
                match received {
                    Some(name) => write!(f, "`{name}` (fingerprint {received_fingerprint:#010x})")?,
                    None => write!(f, "a type with fingerprint {received_fingerprint:#010x}")?,
                }
                f.write_str(
                    "; the peers use different message types (different definitions, or the \
                     Tx/Rx type parameters of connect/accept/spawn swapped on one side)",
                )
            }
        }
    }
}

/// `" on fd N"`, or nothing.
struct OnFd(Option<RawFd>);

impl fmt::Display for OnFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(fd) => write!(f, " on fd {fd}"),
            None => Ok(()),
        }
    }
}

/// `" for fd N"`, or nothing.
struct ForFd(Option<RawFd>);

impl fmt::Display for ForFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(fd) => write!(f, " for fd {fd}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io { source, .. } => source.kind(),
            Error::Disconnected { .. } => io::ErrorKind::BrokenPipe,
            Error::Timeout { .. } => io::ErrorKind::TimedOut,
            Error::WouldBlock | Error::Full => io::ErrorKind::WouldBlock,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_what_and_where() {
        let cases = [
            (
                Error::MessageTooLarge { size: 10, max: 5 },
                &["10", "5"][..],
            ),
            (
                Error::VersionMismatch {
                    ours: 2,
                    theirs: 7,
                    fd: Some(4),
                },
                &["version 7", "1 to 2", "fd 4"],
            ),
            (
                Error::Disconnected {
                    op: Operation::Send,
                    fd: Some(5),
                    peer_pid: Some(77),
                },
                &["send on fd 5", "pid 77", "closed"],
            ),
            (
                Error::Timeout {
                    op: Operation::Receive,
                    fd: Some(6),
                },
                &["receive on fd 6", "timed out"],
            ),
            (
                Error::TypeMismatch {
                    expected: "app::Request",
                    expected_fingerprint: 0x1234_5678,
                    received: Some("(u8, alloc::string::String)"),
                    received_fingerprint: 0xabcd_ef01,
                    fd: Some(8),
                },
                &[
                    "fd 8",
                    "app::Request",
                    "0x12345678",
                    "(u8, alloc::string::String)",
                    "0xabcdef01",
                    "swapped",
                ],
            ),
            (
                Error::FdIndexOutOfRange { index: 4, count: 2 },
                &["fd #4", "2 fds"],
            ),
            (
                Error::FdIndexReused { index: 3 },
                &["fd #3", "more than once"],
            ),
            (
                Error::BadFdKind {
                    index: 2,
                    expected: "a memfd",
                    detail: "fd 9 is a pipe".into(),
                },
                &["fd #2", "a memfd", "fd 9 is a pipe"],
            ),
            (
                Error::Codec {
                    encoding: false,
                    detail: "eof".into(),
                    fd: Some(3),
                },
                &["decode", "eof", "fd 3"],
            ),
            (
                Error::Protocol {
                    detail: "bad magic".into(),
                    fd: Some(9),
                },
                &["protocol", "bad magic", "on fd 9"],
            ),
        ];
        for (error, needles) in cases {
            let text = error.to_string();
            for needle in needles {
                assert!(text.contains(needle), "{text:?} lacks {needle:?}");
            }
        }
    }
}
