//! A listening `SOCK_SEQPACKET` socket on a filesystem path or a Linux abstract name, and
//! `connect` to either.
//!
//! ```
//! use memfile::ipc::{Listener, connect_raw};
//!
//! let dir = std::env::temp_dir().join(format!("memfile-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("sock");
//! let listener = Listener::bind(&path)?;
//! let client = connect_raw(&path)?;
//! let (server, peer) = listener.accept_raw()?;
//! assert_eq!(peer.pid, std::process::id() as i32);
//! drop(listener); // removes the socket file
//! assert!(!path.exists());
//! # drop((client, server));
//! # std::fs::remove_dir(&dir).unwrap();
//! # Ok::<(), memfile::ipc::Error>(())
//! ```

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept4, bind, connect, listen, socket,
};
use nix::sys::stat::{Mode, fchmod};

use crate::cred::{CredentialPolicy, Credentials};
use crate::error::{Error, Operation, Result};
use crate::raw::RawSocket;
use crate::trace;

/// Where a [`Listener`] is bound.
#[derive(Debug)]
enum Name {
    /// A socket file, and the (device, inode) it had right after `bind`, so that `Drop`
    /// removes that file and not one that replaced it since.
    Path { path: PathBuf, id: (u64, u64) },
    /// A Linux abstract name (without the leading NUL).
    Abstract(Vec<u8>),
}

/// A listening Unix `SOCK_SEQPACKET` socket that checks every peer's credentials.
///
/// Bind it to a path ([`bind`](Self::bind)) or to an abstract name
/// ([`bind_abstract`](Self::bind_abstract)); peers reach it with [`connect_raw`] or
/// [`connect_abstract_raw`] (or the typed `connect`), or, to check who is listening
/// before sending anything, with [`connect_raw_with_policy`] and
/// [`connect_abstract_raw_with_policy`] (typed: `connect_with_policy`). Clients started
/// at the same time as the server wait for it with
/// [`retry_connect`](crate::retry_connect). `bind` returns once the socket listens: from
/// then on `connect` succeeds (and waits in the backlog until an `accept` takes it).
///
/// Each accepted connection's `SO_PEERCRED` is checked against the [`CredentialPolicy`]
/// (default: [`SameUid`](CredentialPolicy::SameUid)). A **refused peer does not end an
/// accept**: its connection is closed (the peer sees [`Error::Disconnected`]), the
/// refusal is traced (feature `tracing`, a `warn` event) and counted
/// ([`refused_count`](Self::refused_count)), and the call goes on waiting for the next
/// peer, so that no local process can stop a server loop by connecting once. A caller
/// that wants to see each refusal sets [`report_refusals`](Self::report_refusals): every
/// form of accept then returns [`Error::PeerRejected`] for it instead.
///
/// The accept forms, typed and raw, blocking and async, all follow this rule:
/// `accept` waits past refused peers; `accept_timeout` waits past them until its
/// deadline, then returns [`Error::Timeout`]; `try_accept` returns
/// [`Error::WouldBlock`] when only refused peers were pending (having closed them);
/// [`incoming`](Self::incoming) yields only admitted peers.
///
/// Dropping a path listener removes its socket file.
///
/// # Examples
///
/// A server thread answering clients in a loop that no refused peer can end; the clients
/// check that the server runs as our own user before sending anything
/// ([`connect_with_policy`](crate::connect_with_policy)):
///
/// ```
/// use memfile::ipc::{CredentialPolicy, Listener, connect_with_policy};
///
/// let dir = std::env::temp_dir().join(format!("memfile-doc-listener-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("server.sock");
/// let listener = Listener::bind(&path)?; // mode 0600; peers must have our uid (SameUid)
///
/// let server = std::thread::spawn(move || -> memfile::ipc::Result<()> {
///     // Send `usize`, receive `String`. Refused peers never show up here: they are
///     // closed, traced and counted, and the loop goes on.
///     for connection in listener.incoming::<usize, String>().take(2) {
///         let (tx, rx, client) = connection?; // `client`: who connected (SO_PEERCRED)
///         assert_eq!(client.pid, std::process::id() as i32);
///         let request = rx.recv()?;
///         tx.send(&request.len())?;
///     }
///     assert_eq!(listener.refused_count(), 0);
///     Ok(()) // the listener is dropped here and removes the socket file
/// });
///
/// for word in ["hello", "memfile"] {
///     let (tx, rx) = connect_with_policy::<String, usize>(&path, CredentialPolicy::SameUid)?;
///     tx.send(&word.to_owned())?;
///     assert_eq!(rx.recv()?, word.len());
/// }
/// server.join().unwrap()?;
/// assert!(!path.exists());
/// # std::fs::remove_dir(&dir).unwrap();
/// # Ok::<(), memfile::ipc::Error>(())
/// ```
#[derive(Debug)]
pub struct Listener {
    /// Non-blocking, so that several threads may accept at once without one of them
    /// blocking in `accept` after another took the connection `poll` announced.
    fd: OwnedFd,
    name: Name,
    policy: CredentialPolicy,
    /// Return refused peers as [`Error::PeerRejected`] instead of waiting on.
    report_refusals: bool,
    /// Peers refused so far (shared by every thread accepting on this listener).
    refused: AtomicU64,
}

/// Attaches the path to an OS error, so that "No such file or directory" says which.
fn path_err(op: &'static str, fd: Option<RawFd>, path: &Path, e: impl Into<io::Error>) -> Error {
    let e: io::Error = e.into();
    Error::io(
        op,
        fd,
        io::Error::new(e.kind(), format!("{}: {e}", path.display())),
    )
}

fn abstract_err(
    op: &'static str,
    fd: Option<RawFd>,
    name: &[u8],
    e: impl Into<io::Error>,
) -> Error {
    let e: io::Error = e.into();
    let shown = String::from_utf8_lossy(name);
    Error::io(
        op,
        fd,
        io::Error::new(e.kind(), format!("abstract name @{shown}: {e}")),
    )
}

fn seqpacket_socket(flags: SockFlag) -> Result<OwnedFd> {
    socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        flags | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::io("socket", None, e))
}

/// `connect`, retried on EINTR (a Unix connect that was interrupted did not happen).
fn connect_retry(fd: &OwnedFd, addr: &UnixAddr) -> nix::Result<()> {
    loop {
        match connect(fd.as_raw_fd(), addr) {
            Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

impl Listener {
    /// Binds a listening socket to a filesystem path, creating the socket file with mode
    /// 0600 (less if the umask says so).
    ///
    /// The mode is set with `fchmod` on the socket *before* `bind`: Linux creates the socket
    /// file with the socket inode's mode (minus the umask), so the file never exists with
    /// a more permissive mode, and neither the process-wide umask nor a rename dance is
    /// needed. The mode is checked after `bind` all the same.
    ///
    /// **Ready when it returns**: `bind` calls `listen` before returning, so a `connect`
    /// made after `bind` returned (from this process, or from one it signals) succeeds at
    /// once, even before the first `accept`: the connection waits in the backlog. A server
    /// may announce readiness (print a line, write a pid file, fork its clients) right
    /// after `bind`. Clients that may start first use
    /// [`retry_connect`](crate::retry_connect).
    ///
    /// If a socket file is already there and connecting to it is refused (its listener is
    /// gone: a stale file from a process that died), it is removed and the bind retried.
    /// Anything else at the path is left alone. (A live listener sees that probe as one
    /// connection that closes at once.)
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the path when:
    /// - the path exists and is not a socket (`AddrInUse`; the file is not touched);
    /// - a live listener is bound there (`AddrInUse`: connecting to it succeeded or its
    ///   backlog is full);
    /// - the existing socket cannot be probed (e.g. `EACCES`, or `EPROTOTYPE` for a socket
    ///   of another type, which is alive);
    /// - `socket`, `fchmod`, `bind` or `listen` fail (e.g. the directory does not exist, or
    ///   the path is longer than the 107 bytes a Unix address holds).
    pub fn bind(path: impl AsRef<Path>) -> Result<Listener> {
        let path = path.as_ref();
        // Bind with the path as given (an absolute one might exceed the 107 bytes a Unix
        // address holds), but remember it absolute, so that Drop finds the file even if the
        // current directory changes meanwhile.
        let remembered = match std::env::current_dir() {
            Ok(cwd) if path.is_relative() => cwd.join(path),
            _ => path.to_owned(),
        };
        let addr = UnixAddr::new(path).map_err(|e| path_err("bind", None, path, e))?;
        let fd = seqpacket_socket(SockFlag::SOCK_NONBLOCK)?;
        let raw = fd.as_raw_fd();
        fchmod(&fd, Mode::S_IRUSR | Mode::S_IWUSR)
            .map_err(|e| path_err("fchmod", Some(raw), path, e))?;
        // One retry after removing a stale file is enough; a second EADDRINUSE means
        // somebody else is binding the same path concurrently, which we report.
        let mut removed_stale = false;
        loop {
            match bind(raw, &addr) {
                Ok(()) => break,
                Err(Errno::EADDRINUSE) if !removed_stale => {
                    remove_if_stale(path)?;
                    removed_stale = true;
                }
                Err(e) => return Err(path_err("bind", Some(raw), path, e)),
            }
        }
        // From here on the file is ours: build the Listener first so that Drop removes the
        // file if anything below fails.
        let meta = std::fs::symlink_metadata(path);
        let meta = match meta {
            Ok(m) => m,
            Err(e) => {
                // Someone removed (or replaced) it already; nothing of ours to clean up.
                return Err(path_err("stat", None, path, e));
            }
        };
        let listener = Listener {
            fd,
            name: Name::Path {
                path: remembered,
                id: (meta.dev(), meta.ino()),
            },
            policy: CredentialPolicy::default(),
            report_refusals: false,
            refused: AtomicU64::new(0),
        };
        if meta.mode() & 0o077 != 0 {
            return Err(path_err(
                "bind",
                Some(raw),
                path,
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "socket file got mode {:o}, expected 0600",
                        meta.mode() & 0o7777
                    ),
                ),
            ));
        }
        listen(&listener.fd, Backlog::MAXCONN)
            .map_err(|e| path_err("listen", Some(raw), path, e))?;
        Ok(listener)
    }

    /// Binds a listening socket to a Linux abstract name (`name` without the leading NUL;
    /// at most 107 bytes).
    ///
    /// Abstract names live in the network namespace, not in the filesystem: they have **no
    /// file permissions**, and any process in the same network namespace can connect. The
    /// credential policy (default [`SameUid`](CredentialPolicy::SameUid)) is then the only
    /// protection, so think twice before setting [`AnyUid`](CredentialPolicy::AnyUid). The
    /// name disappears when the listener is dropped; there is no stale-file problem.
    ///
    /// Like [`bind`](Self::bind), it returns once the socket listens: `connect` succeeds
    /// from then on.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the abstract name when it is in use (`EADDRINUSE`), too long,
    /// or `socket`/`bind`/`listen` fail.
    pub fn bind_abstract(name: impl AsRef<[u8]>) -> Result<Listener> {
        let name = name.as_ref();
        let addr = UnixAddr::new_abstract(name).map_err(|e| abstract_err("bind", None, name, e))?;
        let fd = seqpacket_socket(SockFlag::SOCK_NONBLOCK)?;
        let raw = fd.as_raw_fd();
        bind(raw, &addr).map_err(|e| abstract_err("bind", Some(raw), name, e))?;
        listen(&fd, Backlog::MAXCONN).map_err(|e| abstract_err("listen", Some(raw), name, e))?;
        Ok(Listener {
            fd,
            name: Name::Abstract(name.to_owned()),
            policy: CredentialPolicy::default(),
            report_refusals: false,
            refused: AtomicU64::new(0),
        })
    }

    /// Replaces the credential policy (builder style).
    pub fn credential_policy(mut self, policy: CredentialPolicy) -> Listener {
        self.policy = policy;
        self
    }

    /// Replaces the credential policy.
    pub fn set_credential_policy(&mut self, policy: CredentialPolicy) {
        self.policy = policy;
    }

    /// The credential policy in force.
    pub fn policy(&self) -> &CredentialPolicy {
        &self.policy
    }

    /// Whether refused peers are returned as errors (builder style); default `false`.
    ///
    /// With `false` (the default), every accept closes a refused peer's connection,
    /// traces and counts it ([`refused_count`](Self::refused_count)) and goes on waiting,
    /// so that a server loop written with `?` cannot be ended by whoever connects. With
    /// `true`, every accept form (typed and raw, blocking, `_timeout`, `try_`, async,
    /// [`incoming`](Self::incoming) and a [`ReceiverSet`](crate::ReceiverSet)) returns
    /// [`Error::PeerRejected`] for each refused peer instead (still closed, traced and
    /// counted): for a caller that logs or rate-limits refusals itself.
    ///
    /// ```
    /// use memfile::ipc::{connect_abstract_raw, CredentialPolicy, Error, Listener};
    ///
    /// let name = format!("memfile-doc-report-{}", std::process::id());
    /// let listener = Listener::bind_abstract(&name)?
    ///     .credential_policy(CredentialPolicy::Uids(vec![])) // nobody gets in
    ///     .report_refusals(true);
    /// let _peer = connect_abstract_raw(&name)?;
    /// assert!(matches!(listener.accept_raw(), Err(Error::PeerRejected { .. })));
    /// assert_eq!(listener.refused_count(), 1);
    /// # Ok::<(), memfile::ipc::Error>(())
    /// ```
    #[must_use]
    pub fn report_refusals(mut self, report: bool) -> Listener {
        self.report_refusals = report;
        self
    }

    /// Sets whether refused peers are returned as errors; see
    /// [`report_refusals`](Self::report_refusals).
    pub fn set_report_refusals(&mut self, report: bool) {
        self.report_refusals = report;
    }

    /// Whether refused peers are returned as errors; see
    /// [`report_refusals`](Self::report_refusals).
    pub fn reports_refusals(&self) -> bool {
        self.report_refusals
    }

    /// How many peers the credential policy has refused since the listener was bound
    /// (whether or not they were [reported](Self::report_refusals)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use memfile::ipc::{connect_abstract_raw, CredentialPolicy, Error, Listener};
    ///
    /// let name = format!("memfile-doc-refused-{}", std::process::id());
    /// let listener = Listener::bind_abstract(&name)?.credential_policy(CredentialPolicy::Uids(vec![]));
    /// let _peer = connect_abstract_raw(&name)?;
    /// // The refused peer is closed and counted; the accept keeps waiting until its deadline.
    /// let r = listener.accept_raw_timeout(Duration::from_millis(20));
    /// assert!(matches!(r, Err(Error::Timeout { .. })));
    /// assert_eq!(listener.refused_count(), 1);
    /// # Ok::<(), memfile::ipc::Error>(())
    /// ```
    pub fn refused_count(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The socket file's path, for a listener made with [`bind`](Self::bind).
    pub fn local_path(&self) -> Option<&Path> {
        match &self.name {
            Name::Path { path, .. } => Some(path),
            Name::Abstract(_) => None,
        }
    }

    /// The abstract name (without the leading NUL), for a listener made with
    /// [`bind_abstract`](Self::bind_abstract).
    pub fn abstract_name(&self) -> Option<&[u8]> {
        match &self.name {
            Name::Path { .. } => None,
            Name::Abstract(name) => Some(name),
        }
    }

    /// Waits for a connection whose peer the credential policy admits; returns it with the
    /// peer's credentials.
    ///
    /// Refused peers are closed, traced and counted on the way
    /// ([`refused_count`](Self::refused_count)), and the wait goes on (unless
    /// [`report_refusals`](Self::report_refusals) is set).
    ///
    /// # Errors
    ///
    /// - [`Error::PeerRejected`], only with [`report_refusals`](Self::report_refusals),
    ///   when the policy refuses the peer: its connection has been closed (the peer sees
    ///   [`Error::Disconnected`]) and the listener can accept again;
    /// - [`Error::Io`] when `accept4`, `poll` or `getsockopt(SO_PEERCRED)` fail (e.g.
    ///   `EMFILE`: out of fds; the pending connection stays queued, so retrying at once
    ///   fails the same way until an fd is freed).
    pub fn accept_raw(&self) -> Result<(RawSocket, Credentials)> {
        self.accept_until(None, false)
    }

    /// Like [`accept_raw`](Self::accept_raw), but does not wait.
    ///
    /// Refused peers that were pending are closed and counted on the way.
    ///
    /// # Errors
    ///
    /// [`Error::WouldBlock`] when no connection is pending, or only refused ones were;
    /// otherwise as [`accept_raw`](Self::accept_raw).
    pub fn try_accept_raw(&self) -> Result<(RawSocket, Credentials)> {
        self.accept_until(None, true)
    }

    /// Like [`accept_raw`](Self::accept_raw), but waits at most `timeout`.
    ///
    /// Refused peers are closed and counted on the way; the wait goes on until the
    /// deadline.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when no admitted peer came in time; otherwise as
    /// [`accept_raw`](Self::accept_raw).
    pub fn accept_raw_timeout(&self, timeout: Duration) -> Result<(RawSocket, Credentials)> {
        // An unrepresentable deadline (centuries away) is the same as waiting forever.
        self.accept_until(Some(Instant::now().checked_add(timeout)), false)
    }

    /// `deadline`: None = forever, Some(None) = too far to represent (forever too).
    fn accept_until(
        &self,
        deadline: Option<Option<Instant>>,
        nonblocking: bool,
    ) -> Result<(RawSocket, Credentials)> {
        let raw = self.fd.as_raw_fd();
        loop {
            let conn = self.accept_one(deadline, nonblocking)?;
            let conn = RawSocket::from_accepted(conn);
            let peer = conn.peer_credentials()?;
            let Err(reason) = self.policy.check(&peer) else {
                trace::accepted(raw, conn.as_raw_fd(), &peer);
                return Ok((conn, peer));
            };
            drop(conn);
            self.refused.fetch_add(1, Ordering::Relaxed);
            let error = Error::PeerRejected {
                pid: peer.pid,
                uid: peer.uid,
                gid: peer.gid,
                reason,
            };
            trace::refused(raw, &error);
            if self.report_refusals {
                return Err(error);
            }
            // A stream of refused peers must not keep a timed accept past its deadline.
            if let Some(Some(deadline)) = deadline {
                if Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        op: Operation::Accept,
                        fd: Some(raw),
                    });
                }
            }
        }
    }

    /// One `accept4`, waiting for a pending connection as `deadline`/`nonblocking` say.
    fn accept_one(&self, deadline: Option<Option<Instant>>, nonblocking: bool) -> Result<OwnedFd> {
        let raw = self.fd.as_raw_fd();
        loop {
            match accept4(&self.fd, SockFlag::SOCK_CLOEXEC) {
                Ok(conn) => return Ok(conn),
                // ECONNABORTED: the peer gave up before we got to it; wait for the next one.
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(Errno::EAGAIN) if nonblocking => return Err(Error::WouldBlock),
                Err(Errno::EAGAIN) => {
                    let timeout = match deadline.flatten() {
                        None => PollTimeout::NONE,
                        Some(deadline) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                return Err(Error::Timeout {
                                    op: Operation::Accept,
                                    fd: Some(raw),
                                });
                            }
                            let ms = left.as_micros().div_ceil(1000);
                            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                        }
                    };
                    let mut pfd = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
                    match poll(&mut pfd, timeout) {
                        Ok(_) | Err(Errno::EINTR) => continue,
                        Err(e) => return Err(Error::io("poll", Some(raw), e)),
                    }
                }
                Err(e) => return Err(Error::io("accept4", Some(raw), e)),
            }
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for Listener {
    /// Removes the socket file, if it is still the one this listener created.
    fn drop(&mut self) {
        if let Name::Path { path, id } = &self.name {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if (meta.dev(), meta.ino()) == *id {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

/// Removes the file at `path` if it is a socket nobody listens on any more.
///
/// "Nobody listens" is decided by connecting to it: `ECONNREFUSED` means the socket file
/// outlived its listener. Between the probe and the `unlink` another process could replace
/// the file; the (device, inode) is compared right before unlinking to keep that window as
/// small as the filesystem API allows (there is no "unlink if inode is X" syscall).
///
/// Known limit: a listener that another process has bound but not yet `listen`ed on also
/// refuses connections, so two processes binding the same path at the same instant may
/// both succeed, the first one left without a file. Binding one path from several
/// processes at once is a configuration error either way.
fn remove_if_stale(path: &Path) -> Result<()> {
    let in_use = |what: String| {
        path_err(
            "bind",
            None,
            path,
            io::Error::new(io::ErrorKind::AddrInUse, what),
        )
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        // Gone in the meantime: the retried bind will tell.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(path_err("stat", None, path, e)),
    };
    if !meta.file_type().is_socket() {
        return Err(in_use(
            "the path exists and is not a socket; not touching it".to_owned(),
        ));
    }
    // Non-blocking, so that a live listener with a full backlog gives EAGAIN instead of
    // making us wait.
    let probe = seqpacket_socket(SockFlag::SOCK_NONBLOCK)?;
    let addr = UnixAddr::new(path).map_err(|e| path_err("connect", None, path, e))?;
    match connect_retry(&probe, &addr) {
        Err(Errno::ECONNREFUSED) => {}
        Err(Errno::ENOENT) => return Ok(()),
        Ok(()) | Err(Errno::EAGAIN) => {
            return Err(in_use(
                "another listener is alive on this socket".to_owned(),
            ));
        }
        Err(e) => {
            return Err(path_err(
                "connect (probing an existing socket)",
                None,
                path,
                e,
            ));
        }
    }
    drop(probe);
    match std::fs::symlink_metadata(path) {
        Ok(now) if (now.dev(), now.ino()) == (meta.dev(), meta.ino()) => std::fs::remove_file(path)
            .or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| path_err("unlink (stale socket)", None, path, e)),
        // Replaced or removed since we probed it: let the retried bind decide.
        _ => Ok(()),
    }
}

/// Connects to a [`Listener`] bound to `path`.
///
/// This does **not** check who is listening: whatever process bound `path` first gets the
/// connection and everything sent over it. Prefer [`connect_raw_with_policy`] with
/// [`CredentialPolicy::SameUid`] unless the directory holding `path` is writable only by
/// processes you trust.
///
/// The connection may be refused by the listener's credential policy after the fact: the
/// first `recv` then reports [`Error::Disconnected`]. While the listener's backlog is full,
/// this waits (as `connect(2)` does on a blocking Unix socket).
///
/// # Errors
///
/// [`Error::Io`] naming the path: `ENOENT` (no such socket file), `ECONNREFUSED` (no
/// listener), `EACCES` (the socket file's mode forbids us), `EPROTOTYPE` (not a
/// `SOCK_SEQPACKET` listener), or a path too long for a Unix address.
pub fn connect_raw(path: impl AsRef<Path>) -> Result<RawSocket> {
    let path = path.as_ref();
    let addr = UnixAddr::new(path).map_err(|e| path_err("connect", None, path, e))?;
    let fd = seqpacket_socket(SockFlag::empty())?;
    connect_retry(&fd, &addr).map_err(|e| path_err("connect", Some(fd.as_raw_fd()), path, e))?;
    Ok(RawSocket::from_accepted(fd))
}

/// Connects to a [`Listener`] bound to the abstract `name` (without the leading NUL).
///
/// This does **not** check who is listening, and any local process (in the same network
/// namespace) can bind an abstract name first: prefer [`connect_abstract_raw_with_policy`]
/// with [`CredentialPolicy::SameUid`].
///
/// # Errors
///
/// [`Error::Io`] naming the abstract name: `ECONNREFUSED` (nobody listens there),
/// `EPROTOTYPE` (not a `SOCK_SEQPACKET` listener), or a name longer than 107 bytes.
pub fn connect_abstract_raw(name: impl AsRef<[u8]>) -> Result<RawSocket> {
    let name = name.as_ref();
    let addr = UnixAddr::new_abstract(name).map_err(|e| abstract_err("connect", None, name, e))?;
    let fd = seqpacket_socket(SockFlag::empty())?;
    connect_retry(&fd, &addr)
        .map_err(|e| abstract_err("connect", Some(fd.as_raw_fd()), name, e))?;
    Ok(RawSocket::from_accepted(fd))
}

/// Like [`connect_raw`], but first checks who is listening: the server's `SO_PEERCRED`
/// (the credentials of the process that called `listen`) is read right after `connect` and
/// judged by `policy` before anything is sent.
///
/// This is how a client makes sure its buffers go to the intended server and not to
/// whoever bound the path first (a path in a shared directory such as `/tmp` can be taken
/// by anyone). [`CredentialPolicy::SameUid`] is the usual choice.
///
/// A server that is refused sees a connection that closes without a message.
///
/// # Errors
///
/// [`Error::PeerRejected`] naming the server's pid, uid and gid when `policy` refuses it
/// (the socket is closed); otherwise as [`connect_raw`], or [`Error::Io`] when
/// `getsockopt(SO_PEERCRED)` fails.
pub fn connect_raw_with_policy(
    path: impl AsRef<Path>,
    policy: CredentialPolicy,
) -> Result<RawSocket> {
    check_server(connect_raw(path)?, &policy)
}

/// Like [`connect_abstract_raw`], but checks the listening process's credentials against
/// `policy` first, as [`connect_raw_with_policy`] does.
///
/// Abstract names have no permissions and any local process can bind one, so this check
/// is the only way to know who is at the other end.
///
/// # Errors
///
/// [`Error::PeerRejected`] when `policy` refuses the server (the socket is closed);
/// otherwise as [`connect_abstract_raw`], or [`Error::Io`] when
/// `getsockopt(SO_PEERCRED)` fails.
pub fn connect_abstract_raw_with_policy(
    name: impl AsRef<[u8]>,
    policy: CredentialPolicy,
) -> Result<RawSocket> {
    check_server(connect_abstract_raw(name)?, &policy)
}

/// Judges a freshly connected socket's server by `policy`; drops (closes) it if refused.
fn check_server(socket: RawSocket, policy: &CredentialPolicy) -> Result<RawSocket> {
    // For a connected Unix socket the kernel records the listener's credentials as of its
    // `listen` call: the server cannot forge them.
    let server = socket.peer_credentials()?;
    match policy.check(&server) {
        Ok(()) => Ok(socket),
        Err(reason) => {
            drop(socket);
            let error = Error::PeerRejected {
                pid: server.pid,
                uid: server.uid,
                gid: server.gid,
                reason,
            };
            // Not traced: the caller gets the error (the `tracing` events are about what
            // a listener decides on its own).
            Err(error)
        }
    }
}
