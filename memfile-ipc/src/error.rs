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
}

impl Error {
    /// An `Io` error from a `nix` errno.
    pub(crate) fn io(op: &'static str, fd: Option<RawFd>, source: impl Into<io::Error>) -> Error {
        Error::Io { op, fd, source: source.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, fd: Some(fd), source } => write!(f, "{op} on fd {fd} failed: {source}"),
            Error::Io { op, fd: None, source } => write!(f, "{op} failed: {source}"),
            Error::Disconnected => f.write_str("the peer closed the connection"),
            Error::Timeout => f.write_str("timed out"),
            Error::WouldBlock => f.write_str("the operation would block"),
            Error::Truncated { fd, bytes, fds } => write!(
                f,
                "packet on fd {fd} was truncated by the kernel ({}); the fds that arrived were closed",
                match (bytes, fds) {
                    (true, true) => "bytes and fds lost",
                    (true, false) => "bytes lost",
                    _ => "fds lost",
                }
            ),
            Error::TooManyFds { count, max } => write!(f, "{count} fds in one packet, at most {max} allowed"),
            Error::PeerRejected { pid, uid, gid, reason } => {
                write!(f, "peer pid {pid} uid {uid} gid {gid} rejected: {reason}")
            }
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
            Error::WouldBlock => io::ErrorKind::WouldBlock,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}
