//! The crate's one error type.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

/// `Result<T, memfile_ipc::Error>`.
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
    Disconnected,
    /// `recv_timeout` (or a blocking call with a timeout) ran out of time.
    Timeout,
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
    },
    /// An fd that must be a sealed buffer (a `Frozen` field, or the memfd of a spilled
    /// message) is not one: not a memfd, not sealed against writing and shrinking, or
    /// larger than allowed. The fd was closed (so that an error kept around holds no fd).
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
    /// sparse memfd (fewer bytes allocated than announced), ...
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// The peer speaks another version of the wire protocol.
    VersionMismatch {
        /// The version this crate speaks.
        ours: u16,
        /// The version in the peer's packet.
        theirs: u16,
    },
}

impl Error {
    /// A [`Error::BadBuffer`] for fd `index`, closing the rejected fd.
    pub(crate) fn bad_buffer(index: usize, error: memfile_core::FrozenError) -> Error {
        let detail = error.to_string();
        let (_closed, kind) = error.into_parts();
        Error::BadBuffer {
            index,
            kind,
            detail,
        }
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
            Error::Disconnected => f.write_str("the peer closed the connection"),
            Error::Timeout => f.write_str("timed out"),
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
            } => write!(f, "cannot encode message: {detail}"),
            Error::Codec {
                encoding: false,
                detail,
            } => write!(f, "cannot decode message: {detail}"),
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
            Error::Protocol { detail } => write!(f, "protocol error: {detail}"),
            Error::VersionMismatch { ours, theirs } => write!(
                f,
                "peer speaks wire protocol version {theirs}, this side speaks version {ours}"
            ),
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
            Error::Disconnected => io::ErrorKind::BrokenPipe,
            Error::Timeout => io::ErrorKind::TimedOut,
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
                Error::VersionMismatch { ours: 1, theirs: 7 },
                &["version 7", "version 1"],
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
                },
                &["decode", "eof"],
            ),
            (
                Error::Protocol {
                    detail: "bad magic".into(),
                },
                &["protocol", "bad magic"],
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
