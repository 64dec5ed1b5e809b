//! The raw transport: one `AF_UNIX` `SOCK_SEQPACKET` packet = bytes + fds, atomically.
//!
//! This layer knows nothing about messages or codecs; the typed channels are built on it,
//! and it is usable on its own. Its guarantees:
//!
//! - every fd it creates or receives is close-on-exec (`SOCK_CLOEXEC`, `MSG_CMSG_CLOEXEC`),
//!   so nothing leaks into a child that another thread `exec`s;
//! - sending never raises `SIGPIPE` (`MSG_NOSIGNAL`): a closed peer is
//!   [`Error::Disconnected`], on both sides;
//! - a received packet is complete or an error: the control buffer holds the kernel's
//!   maximum of [`MAX_FDS_PER_PACKET`] fds, and `MSG_TRUNC` / `MSG_CTRUNC` become
//!   [`Error::Truncated`] after every fd that did arrive has been closed (an fd whose
//!   `close` might block, such as a lingering TCP socket, on a closer thread: see
//!   `docs/security.md`);
//! - received fds are [`OwnedFd`]s from the moment `recvmsg` returns, so no path leaks them;
//! - `EINTR` is retried everywhere.
//!
//! ```
//! use std::io::IoSlice;
//! use std::os::fd::AsFd;
//! use memfile::ipc::raw::{RawSocket, RecvMode};
//!
//! let (a, b) = RawSocket::pair()?;
//! let file = std::fs::File::open("/dev/null").unwrap();
//! a.send(&[IoSlice::new(b"hello "), IoSlice::new(b"world")], &[file.as_fd()])?;
//!
//! let mut buf = [0u8; 64];
//! let mut fds = Vec::new();
//! let n = b.recv(&mut buf, &mut fds, RecvMode::Blocking)?;
//! assert_eq!(&buf[..n], b"hello world");
//! assert_eq!(fds.len(), 1);
//!
//! drop(a);
//! assert!(matches!(
//!     b.recv(&mut buf, &mut fds, RecvMode::Blocking),
//!     Err(memfile::ipc::Error::Disconnected { .. })
//! ));
//! # Ok::<(), memfile::ipc::Error>(())
//! ```

use std::io::{self, IoSlice, IoSliceMut};
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, SockaddrLike, SockaddrStorage,
    getsockname, getsockopt, sendmsg, socketpair, sockopt,
};

use crate::cred::Credentials;
use crate::error::{Error, Operation, Result};

/// The most fds one packet can carry: the kernel's `SCM_MAX_FD`.
///
/// A sender asking for more gets [`Error::TooManyFds`] before anything is sent.
pub const MAX_FDS_PER_PACKET: usize = 253;

/// Size of a control buffer that holds one `SCM_RIGHTS` message of `MAX_FDS_PER_PACKET` fds.
const CMSG_BUF_LEN: usize = {
    let payload = (MAX_FDS_PER_PACKET * mem::size_of::<RawFd>()) as u32;
    // SAFETY: CMSG_SPACE is plain arithmetic on its argument; 253 * 4 fits in a c_uint.
    unsafe { libc::CMSG_SPACE(payload) as usize }
};

/// The control buffer, aligned like a `cmsghdr` (which holds a `size_t`): the kernel writes
/// headers into it and `CMSG_FIRSTHDR`/`CMSG_NXTHDR` read them in place. It lives on the
/// stack of each `recv` call (about 1 KiB), so receiving never allocates for it.
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BUF_LEN]);

/// How [`RawSocket::recv`] waits for a packet.
///
/// `#[non_exhaustive]`: other ways to wait may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvMode {
    /// Wait as long as it takes.
    Blocking,
    /// Do not wait: [`Error::WouldBlock`] when no packet is queued.
    NonBlocking,
    /// Wait until this instant at most, then [`Error::Timeout`]. A packet that is already
    /// queued is returned even if the instant has passed.
    Deadline(Instant),
}

/// One end of a connected `AF_UNIX` `SOCK_SEQPACKET` socket (close-on-exec).
///
/// All methods take `&self`: several threads may send and receive at once. Each send is one
/// packet, which the kernel delivers whole and never interleaves with another thread's.
#[derive(Debug)]
pub struct RawSocket {
    fd: OwnedFd,
    /// Flow-control state of the typed endpoints made on this socket in this process.
    flow: crate::flow::Flow,
}

/// Checks that `fd` is an `AF_UNIX` `SOCK_SEQPACKET` socket (`SO_TYPE`, `getsockname`).
///
/// The fd may be anything a peer chose: `SO_TYPE` comes first because it answers at once
/// for any fd (`ENOTSOCK` for a file, even one of a FUSE daemon that never answers), and
/// `getsockname` (which may take the socket's lock) is asked only of `SOCK_SEQPACKET`
/// sockets.
pub(crate) fn check_seqpacket(fd: BorrowedFd<'_>) -> Result<()> {
    let raw = fd.as_raw_fd();
    // Neither call waits: both answer from the socket itself (ENOTSOCK for anything else).
    let ty = getsockopt(&fd, sockopt::SockType)
        .map_err(|e| Error::io("getsockopt(SO_TYPE)", Some(raw), e))?;
    let addr: SockaddrStorage =
        getsockname(raw).map_err(|e| Error::io("getsockname", Some(raw), e))?;
    let family = addr.family();
    if ty == SockType::SeqPacket && family == Some(AddressFamily::Unix) {
        // A listening socket carries no packets: accept from it instead (`Listener`).
        let listening = getsockopt(&fd, sockopt::AcceptConn)
            .map_err(|e| Error::io("getsockopt(SO_ACCEPTCONN)", Some(raw), e))?;
        if !listening {
            return Ok(());
        }
        return Err(Error::io(
            "RawSocket::from_fd",
            Some(raw),
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {raw} is a listening AF_UNIX SOCK_SEQPACKET socket, not a connection"),
            ),
        ));
    }
    let what = match family {
        Some(f) => format!("{f:?}"),
        None => "unknown-family".to_owned(),
    };
    Err(Error::io(
        "RawSocket::from_fd",
        Some(raw),
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {raw} is a {what} {ty:?} socket, not an AF_UNIX SOCK_SEQPACKET one"),
        ),
    ))
}

/// `Err(Errno::ECONNRESET)` etc. from a socket call on a peer that went away.
fn is_disconnect(e: Errno) -> bool {
    matches!(e, Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN)
}

impl RawSocket {
    /// A connected pair of sockets: `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `socketpair` fails (for example `EMFILE`: out of fds).
    pub fn pair() -> Result<(RawSocket, RawSocket)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::io("socketpair", None, e))?;
        Ok((RawSocket::from_accepted(a), RawSocket::from_accepted(b)))
    }

    /// Wraps an fd that must be an `AF_UNIX` `SOCK_SEQPACKET` socket, and marks it
    /// close-on-exec.
    ///
    /// This is how a socket that arrived inside a message (or was inherited) becomes usable:
    /// the socket type is checked with `getsockopt(SO_TYPE)`, the family with
    /// `getsockname`, and a listening socket (`SO_ACCEPTCONN`) is refused.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the fd when it is not a socket (`ENOTSOCK`), or when it is a
    /// socket of another family or type, or a listening socket (`InvalidInput`, the message
    /// says which); the fd is closed then.
    pub fn from_fd(fd: OwnedFd) -> Result<RawSocket> {
        check_seqpacket(fd.as_fd())?;
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .map_err(|e| Error::io("fcntl(F_SETFD)", Some(fd.as_raw_fd()), e))?;
        Ok(RawSocket::from_accepted(fd))
    }

    /// Wraps a socket this crate just created (`socket`/`accept4` with `SOCK_CLOEXEC`, type
    /// `SOCK_SEQPACKET`, family `AF_UNIX`), skipping the checks of [`from_fd`](Self::from_fd).
    pub(crate) fn from_accepted(fd: OwnedFd) -> RawSocket {
        RawSocket {
            fd,
            flow: crate::flow::Flow::default(),
        }
    }

    /// The flow-control state of this connection (see `flow.rs`).
    pub(crate) fn flow(&self) -> &crate::flow::Flow {
        &self.flow
    }

    /// Gives up the wrapper and returns the socket fd.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Sends one packet made of all `iov` slices and all `fds`, waiting while the socket's
    /// send buffer is full.
    ///
    /// The fds are duplicated into the peer (`SCM_RIGHTS`); the caller keeps its own.
    /// `MSG_NOSIGNAL` is always set, `EINTR` is retried.
    ///
    /// # Errors
    ///
    /// - [`Error::TooManyFds`] when `fds.len() > MAX_FDS_PER_PACKET` (nothing is sent);
    /// - [`Error::Disconnected`] when the peer has closed its end (`EPIPE`, `ECONNRESET`,
    ///   `ENOTCONN`);
    /// - [`Error::Io`] for other failures, e.g. `EMSGSIZE` when the packet is larger than
    ///   the send buffer ([`send_buffer_size`](Self::send_buffer_size)) allows, or
    ///   `ETOOMANYREFS` when fds in flight exceed `RLIMIT_NOFILE`.
    pub fn send(&self, iov: &[IoSlice<'_>], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.send_impl(iov, fds, false)
    }

    /// Like [`send`](Self::send), but never waits (`MSG_DONTWAIT`).
    ///
    /// # Errors
    ///
    /// [`Error::WouldBlock`] when the send buffer is full right now; otherwise the same as
    /// [`send`](Self::send).
    pub fn try_send(&self, iov: &[IoSlice<'_>], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.send_impl(iov, fds, true)
    }

    fn send_impl(&self, iov: &[IoSlice<'_>], fds: &[BorrowedFd<'_>], dontwait: bool) -> Result<()> {
        if fds.len() > MAX_FDS_PER_PACKET {
            return Err(Error::TooManyFds {
                count: fds.len(),
                max: MAX_FDS_PER_PACKET,
            });
        }
        let mut raw_fds = [0 as RawFd; MAX_FDS_PER_PACKET];
        for (slot, fd) in raw_fds.iter_mut().zip(fds) {
            *slot = fd.as_raw_fd();
        }
        let rights = [ControlMessage::ScmRights(&raw_fds[..fds.len()])];
        // An empty SCM_RIGHTS message is pointless; leave the control part out instead.
        let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
        let mut flags = MsgFlags::MSG_NOSIGNAL;
        if dontwait {
            flags |= MsgFlags::MSG_DONTWAIT;
        }
        let total: usize = iov.iter().map(|s| s.len()).sum();
        let sock = self.fd.as_raw_fd();
        loop {
            match sendmsg::<()>(sock, iov, cmsgs, flags, None) {
                // SOCK_SEQPACKET sends all or nothing; anything else would be a kernel bug,
                // but report it rather than pretend the packet went out.
                Ok(n) if n == total => return Ok(()),
                Ok(n) => {
                    return Err(Error::io(
                        "sendmsg",
                        Some(sock),
                        io::Error::new(
                            io::ErrorKind::WriteZero,
                            format!("sent {n} of {total} bytes of a SOCK_SEQPACKET packet"),
                        ),
                    ));
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) if dontwait => return Err(Error::WouldBlock),
                // A blocking send on a socket someone set O_NONBLOCK on: wait for room.
                Err(Errno::EAGAIN) => self.wait(PollFlags::POLLOUT, PollTimeout::NONE)?,
                Err(e) if is_disconnect(e) => return Err(self.disconnected(Operation::Send)),
                Err(e) => return Err(Error::io("sendmsg", Some(sock), e)),
            }
        }
    }

    /// Receives one packet: its bytes into `buf`, its fds appended to `fds`.
    ///
    /// `buf.len()` is the largest packet accepted; a longer one is an error, not a partial
    /// read. The returned count is the packet's length. Received fds are close-on-exec
    /// (`MSG_CMSG_CLOEXEC`) and owned by `fds`. Several threads may call `recv` at once;
    /// each packet goes to exactly one of them.
    ///
    /// A packet of zero bytes and no fds is `Ok(0)` while the peer is connected. At the
    /// syscall level it looks exactly like end-of-file, so it is told apart by asking
    /// `poll` whether the peer has hung up and, if it has, whether packets with bytes are
    /// still queued behind this one; only if the peer's last packets are empty and it closes
    /// before we look are they reported as [`Error::Disconnected`]. (The typed layer never
    /// sends empty packets.)
    ///
    /// # Errors
    ///
    /// - [`Error::Disconnected`] when the peer has closed and every packet has been read;
    /// - [`Error::Truncated`] when the packet was longer than `buf` (`MSG_TRUNC`) or carried
    ///   more fds than the control buffer holds (`MSG_CTRUNC`); the packet is consumed, the
    ///   fds that did arrive are closed (one whose `close` might block, such as a lingering
    ///   TCP socket, on a closer thread, so that this call never waits for it) and `fds` is
    ///   as it was;
    /// - [`Error::WouldBlock`] with [`RecvMode::NonBlocking`] when no packet is queued;
    /// - [`Error::Timeout`] when a [`RecvMode::Deadline`] passes;
    /// - [`Error::Io`] when `recvmsg` or `poll` fails otherwise.
    pub fn recv(&self, buf: &mut [u8], fds: &mut Vec<OwnedFd>, mode: RecvMode) -> Result<usize> {
        let dontwait = !matches!(mode, RecvMode::Blocking);
        let mut reset_seen = false;
        loop {
            let step = self.recv_once(buf, fds, dontwait);
            if let Err(Error::Truncated { .. }) = &step {
                // Its fds went to the closer; a waiting call gives it a moment.
                match mode {
                    RecvMode::Blocking => crate::closer::settle(None),
                    RecvMode::Deadline(deadline) => crate::closer::settle(Some(deadline)),
                    RecvMode::NonBlocking => {}
                }
            }
            match step? {
                Step::Packet(n) => return Ok(n),
                // EOF, or an empty packet: see the doc comment above.
                Step::Empty => {
                    return if self.peer_hung_up()? && !self.bytes_queued()? {
                        Err(self.disconnected(Operation::Receive))
                    } else {
                        Ok(0)
                    };
                }
                Step::Errno(Errno::EINTR) => continue,
                Step::Errno(Errno::EAGAIN) => match mode {
                    RecvMode::NonBlocking => return Err(Error::WouldBlock),
                    RecvMode::Blocking => self.wait(PollFlags::POLLIN, PollTimeout::NONE)?,
                    RecvMode::Deadline(deadline) => self.wait_until(PollFlags::POLLIN, deadline)?,
                },
                // A peer that closed with packets of ours unread (e.g. flow-control credits)
                // leaves ECONNRESET pending, which the kernel reports before the packets it
                // sent us; reading it clears it, so read on: its packets come, then EOF.
                Step::Errno(Errno::ECONNRESET) if !reset_seen => reset_seen = true,
                Step::Errno(e) if is_disconnect(e) => {
                    return Err(self.disconnected(Operation::Receive));
                }
                Step::Errno(e) => return Err(Error::io("recvmsg", Some(self.fd.as_raw_fd()), e)),
            }
        }
    }

    /// One `recvmsg` call, with `MSG_CMSG_CLOEXEC` (and `MSG_DONTWAIT` if asked).
    ///
    /// Written against `libc` rather than `nix::sys::socket::recvmsg` because nix 0.32's
    /// `RecvMsg::cmsgs()` refuses to iterate when `MSG_CTRUNC` is set, which would leave the
    /// fds that did arrive unreachable (leaked); here every arrived fd becomes an `OwnedFd`
    /// right after the call, before any flag is examined.
    fn recv_once(&self, buf: &mut [u8], fds: &mut Vec<OwnedFd>, dontwait: bool) -> Result<Step> {
        let sock = self.fd.as_raw_fd();
        let mut cmsg = CmsgBuf([0; CMSG_BUF_LEN]);
        let mut iov = [IoSliceMut::new(buf)];
        // SAFETY: msghdr is a plain C struct of integers and pointers; all-zero is valid
        // (no name, no iovecs, no control buffer) and every field we need is set below.
        let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
        // IoSliceMut is guaranteed ABI-compatible with `struct iovec` on Unix.
        hdr.msg_iov = iov.as_mut_ptr().cast();
        hdr.msg_iovlen = iov.len() as _;
        hdr.msg_control = cmsg.0.as_mut_ptr().cast();
        hdr.msg_controllen = CMSG_BUF_LEN as _;
        let mut flags = libc::MSG_CMSG_CLOEXEC;
        if dontwait {
            flags |= libc::MSG_DONTWAIT;
        }
        // SAFETY: `hdr` points at one iovec covering `buf` and at `cmsg`, both exclusively
        // borrowed and alive for the whole call, with their true lengths.
        let n = unsafe { libc::recvmsg(sock, &mut hdr, flags) };
        if n < 0 {
            return Ok(Step::Errno(Errno::last()));
        }
        let before = fds.len();
        // SAFETY: `hdr` was just filled by a successful recvmsg and its control buffer
        // `cmsg` is alive and untouched since; the fds in it are ours and nobody else's.
        unsafe { take_fds(&hdr, fds) };
        let bytes = hdr.msg_flags & libc::MSG_TRUNC != 0;
        let lost_fds = hdr.msg_flags & libc::MSG_CTRUNC != 0;
        if bytes || lost_fds {
            // Closes every fd of this packet, where a blocking `close` cannot stall us.
            crate::closer::close(fds.drain(before..));
            return Err(Error::Truncated {
                fd: sock,
                bytes,
                fds: lost_fds,
            });
        }
        if n == 0 && fds.len() == before {
            return Ok(Step::Empty);
        }
        Ok(Step::Packet(n as usize))
    }

    /// Waits for `events` on the socket until `deadline` at most; returns early on EINTR
    /// (the caller loops and tries again).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when `deadline` has passed (checked before waiting, so a caller
    /// that loops on it always ends); [`Error::Io`] when `poll` fails.
    pub(crate) fn wait_until(&self, events: PollFlags, deadline: Instant) -> Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let op = if events.contains(PollFlags::POLLOUT) {
                Operation::Send
            } else {
                Operation::Receive
            };
            return Err(Error::Timeout {
                op,
                fd: Some(self.fd.as_raw_fd()),
            });
        }
        // Round up, so that we never spin on a zero-millisecond poll.
        let ms = left.as_micros().div_ceil(1000);
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        self.wait(events, timeout)
    }

    /// Waits for `events` on the socket; returns early on EINTR (the caller loops).
    fn wait(&self, events: PollFlags, timeout: PollTimeout) -> Result<()> {
        let mut pfd = [PollFd::new(self.fd.as_fd(), events)];
        match poll(&mut pfd, timeout) {
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(e) => Err(Error::io("poll", Some(self.fd.as_raw_fd()), e)),
        }
    }

    /// Whether packets holding bytes are queued for reading (`FIONREAD`, alias `SIOCINQ`,
    /// which sums the bytes of every queued packet on a Unix `SOCK_SEQPACKET` socket): tells
    /// an empty packet that a closing peer sent before others from end-of-file.
    fn bytes_queued(&self) -> Result<bool> {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD stores one int through the pointer, which points at `queued`.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::FIONREAD, &mut queued) };
        if r < 0 {
            let fd = self.fd.as_raw_fd();
            return Err(Error::io("ioctl(FIONREAD)", Some(fd), Errno::last()));
        }
        Ok(queued > 0)
    }

    /// Whether the peer has shut down its sending side (closed, or died).
    fn peer_hung_up(&self) -> Result<bool> {
        // nix 0.32 has no POLLRDHUP constant, and `PollFd::revents()` returns None when it is
        // set, so use poll's count instead: we ask for POLLRDHUP only, and POLLHUP/POLLERR are
        // always reported, so any ready fd means the peer hung up (or the socket failed).
        let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
        let mut pfd = [PollFd::new(self.fd.as_fd(), rdhup)];
        loop {
            match poll(&mut pfd, PollTimeout::ZERO) {
                Ok(ready) => return Ok(ready > 0),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::io("poll", Some(self.fd.as_raw_fd()), e)),
            }
        }
    }

    /// [`Error::Disconnected`] for `op` on this socket, with the peer's pid where known (see
    /// the variant's doc): looked up only now, on the way out.
    pub(crate) fn disconnected(&self, op: Operation) -> Error {
        let peer_pid = self
            .peer_credentials()
            .ok()
            .map(|c| c.pid)
            .filter(|&pid| pid > 0 && pid != std::process::id() as i32);
        Error::Disconnected {
            op,
            fd: Some(self.fd.as_raw_fd()),
            peer_pid,
        }
    }

    /// The peer's pid, uid and gid as recorded by the kernel (`SO_PEERCRED`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `getsockopt` fails (it does not for a connected Unix socket).
    pub fn peer_credentials(&self) -> Result<Credentials> {
        getsockopt(&self.fd, sockopt::PeerCredentials)
            .map(Credentials::from_nix)
            .map_err(|e| Error::io("getsockopt(SO_PEERCRED)", Some(self.fd.as_raw_fd()), e))
    }

    /// The socket's send buffer size in bytes (`SO_SNDBUF`, as the kernel reports it, i.e.
    /// doubled for bookkeeping overhead). A packet much larger than this fails with
    /// `EMSGSIZE`; the typed layer derives its inline-message limit from it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `getsockopt` fails.
    pub fn send_buffer_size(&self) -> Result<usize> {
        getsockopt(&self.fd, sockopt::SndBuf)
            .map_err(|e| Error::io("getsockopt(SO_SNDBUF)", Some(self.fd.as_raw_fd()), e))
    }
}

impl AsFd for RawSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for RawSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<RawSocket> for OwnedFd {
    fn from(s: RawSocket) -> OwnedFd {
        s.fd
    }
}

/// What one `recvmsg` call produced, short of an error that ends `recv`.
enum Step {
    /// A packet of this many bytes (and possibly fds).
    Packet(usize),
    /// Zero bytes and no fds: end-of-file or an empty packet.
    Empty,
    /// `recvmsg` failed with this errno (EINTR and EAGAIN are handled by the caller).
    Errno(Errno),
}

/// Moves every fd of every `SCM_RIGHTS` control message in `hdr` into `fds`.
///
/// # Safety
///
/// `hdr` must have been filled by a successful `recvmsg`, its control buffer must still be
/// alive and unmodified, and the fds in it must not be owned by anything else (each one
/// becomes an `OwnedFd` and is closed when that is dropped).
unsafe fn take_fds(hdr: &libc::msghdr, fds: &mut Vec<OwnedFd>) {
    // msg_controllen is a size_t on glibc but a socklen_t on musl.
    #[allow(clippy::unnecessary_cast)]
    let end = (hdr.msg_control as usize).saturating_add(hdr.msg_controllen as usize);
    // SAFETY: the caller guarantees `hdr` describes a live control buffer whose length the
    // kernel set; CMSG_FIRSTHDR only reads those two fields.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !c.is_null() {
        // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR return null or a header that lies entirely within
        // the control buffer, which is aligned for cmsghdr (CmsgBuf is align(8)).
        let (level, ty, len) = unsafe { ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len as usize) };
        if level == libc::SOL_SOCKET && ty == libc::SCM_RIGHTS {
            // SAFETY: `c` is a valid header (see above); CMSG_DATA is pointer arithmetic.
            let data = unsafe { libc::CMSG_DATA(c) };
            // SAFETY: CMSG_LEN is arithmetic on its argument.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            // The kernel sets cmsg_len to the fds it really installed (fewer on MSG_CTRUNC);
            // also never read past the end of what it wrote.
            let room = end.saturating_sub(data as usize);
            let count = len.saturating_sub(header).min(room) / mem::size_of::<RawFd>();
            for i in 0..count {
                // SAFETY: i < count, so the int lies within the kernel-written data of this
                // control message; the data need not be aligned for RawFd.
                let raw = unsafe { data.cast::<RawFd>().add(i).read_unaligned() };
                // SAFETY: the kernel just installed this fd in our table for us alone.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `hdr` and `c` are valid as above; CMSG_NXTHDR checks against msg_controllen.
        c = unsafe { libc::CMSG_NXTHDR(hdr, c) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_buffer_is_what_nix_would_size_for_253_fds() {
        assert_eq!(
            CMSG_BUF_LEN,
            nix::cmsg_space!([RawFd; MAX_FDS_PER_PACKET]).len()
        );
        assert_eq!(
            mem::align_of::<CmsgBuf>(),
            mem::align_of::<libc::cmsghdr>().max(8)
        );
    }
}
